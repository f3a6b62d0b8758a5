// The admin page: polls /status every second and shows rates from the differences.

import { callRow, cell, fact, historyCharts, waterfall } from "./widgets.js";

const $ = (id) => document.getElementById(id);
let previous = null;



function rate(now, before, seconds) {
  if (before === undefined || seconds <= 0) return "–";
  return ((now - before) / seconds).toFixed(1);
}

function uptime(secs) {
  const s = Math.floor(secs);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function render(status, at) {
  const seconds = previous ? (at - previous.at) / 1000 : 0;
  const before = new Map();
  const shedBefore = new Map();
  for (const server of previous?.status.servers ?? []) {
    for (const m of server.methods) before.set(`${m.service}/${m.method}`, m);
    for (const s of server.admission?.shed_by_business_priority ?? []) shedBefore.set(s.business_priority, s.shed);
  }
  document.title = `${status.service} · svrkit admin`;
  $("title").textContent = `${status.service} · ${status.instance_id}`;
  const state = $("state");
  state.textContent = status.ready ? "ready" : "not ready";
  state.className = `pill ${status.ready ? "good" : "bad"}`;
  $("facts").replaceChildren(
    fact("version", status.version_label, status.version_label === "gray" ? "gray" : ""),
    fact("config version", status.config_version ?? "–"),
    fact("uptime", uptime(status.uptime_secs)),
    fact("connections", status.connections),
    fact("in flight", status.in_flight),
  );
  const admission = status.servers.map((s) => s.admission).find(Boolean);
  const level = admission?.level;
  $("admission").replaceChildren(
    fact("DAGOR level", admission ? (level ? `B ${level.business} · U ${level.user}` : "admits all") : "off", level ? "bad" : "good"),
    fact("queuing (last window)", admission ? `${admission.queue_mean_ms.toFixed(2)} ms` : "–"),
    fact("overloaded", admission ? (admission.overloaded ? "yes" : "no") : "–", admission?.overloaded ? "bad" : ""),
  );
  $("admission").dataset.level = level ? `${level.business}:${level.user}` : "none";
  $("sheds").tBodies[0].replaceChildren(
    ...(admission?.shed_by_business_priority ?? []).map((s) => {
      const tr = document.createElement("tr");
      tr.append(cell(s.business_priority), cell(s.shed, "num"), cell(rate(s.shed, shedBefore.get(s.business_priority), seconds), "num"));
      return tr;
    }),
  );
  const rows = [];
  for (const server of status.servers) {
    for (const m of server.methods) {
      const key = `${m.service}/${m.method}`;
      const b = before.get(key);
      const tr = document.createElement("tr");
      tr.dataset.method = key;
      tr.append(
        cell(key),
        cell(rate(m.requests, b?.requests, seconds), "num"),
        cell(rate(m.errors, b?.errors, seconds), m.errors > (b?.errors ?? m.errors) ? "num bad" : "num"),
        cell(m.requests, "num"),
        cell(m.errors, "num"),
        cell(m.faults ?? 0, m.faults ? "num bad" : "num"),
        cell(m.in_flight, "num"),
        cell(m.p50_latency_ms.toFixed(2), "num"),
        cell(m.p99_latency_ms.toFixed(2), "num"),
      );
      rows.push(tr);
    }
  }
  $("methods").tBodies[0].replaceChildren(...rows);
  previous = { status, at };
}

async function poll() {
  try {
    const response = await fetch("/status", { cache: "no-store" });
    render(await response.json(), Date.now());
  } catch (e) {
    const state = $("state");
    state.textContent = "unreachable";
    state.className = "pill bad";
  }
  setTimeout(poll, 1000);
}

poll();

async function pollHistory() {
  try {
    const response = await fetch("/history", { cache: "no-store" });
    const doc = await response.json();
    const figures = historyCharts(doc);
    $("charts").replaceChildren(...figures);
    $("charts").dataset.points = String(doc.points.length);
  } catch (e) {
    // The status poll already says the instance is unreachable.
  }
  setTimeout(pollHistory, 5000);
}

async function showTrace(id) {
  const response = await fetch(`/rpcz?trace=${encodeURIComponent(id)}`, { cache: "no-store" });
  const doc = await response.json();
  const seen = new Set();
  const calls = [...doc.recent, ...doc.slowest].filter((c) => !seen.has(c.span_id) && seen.add(c.span_id));
  const title = document.createElement("h2");
  title.textContent = `Trace ${id} in this process`;
  $("trace").replaceChildren(title, waterfall(calls));
  $("trace").dataset.trace = id;
}

async function pollRpcz() {
  try {
    const response = await fetch("/rpcz", { cache: "no-store" });
    const doc = await response.json();
    $("recent").tBodies[0].replaceChildren(...doc.recent.slice(0, 50).map((c) => callRow(c, showTrace)));
    $("slowest").tBodies[0].replaceChildren(...doc.slowest.map((c) => callRow(c, showTrace)));
  } catch (e) {
    // As above.
  }
  setTimeout(pollRpcz, 2000);
}

pollHistory();
pollRpcz();
