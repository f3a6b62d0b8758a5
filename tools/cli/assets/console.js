// The cluster console: polls /api/cluster every second; rates come from the
// difference between two polls of the same instance.

import { callRow, cell, fact, historyCharts, waterfall } from "./widgets.js";

const $ = (id) => document.getElementById(id);
let previous = new Map(); // instance id -> { totals, at }



/** Requests, errors, server faults, sheds, worst p99, in-flight and DAGOR level of one /status. */
function totals(status) {
  const t = { requests: 0, errors: 0, faults: 0, shed: 0, p99: 0, inFlight: status?.in_flight ?? 0, level: null, dagor: false };
  for (const server of status?.servers ?? []) {
    for (const m of server.methods) {
      t.requests += m.requests;
      t.errors += m.errors;
      t.faults += m.faults ?? 0;
      t.p99 = Math.max(t.p99, m.p99_latency_ms);
    }
    if (server.admission) {
      t.dagor = true;
      if (server.admission.level) t.level = server.admission.level;
      for (const s of server.admission.shed_by_business_priority) t.shed += s.shed;
    }
  }
  return t;
}

function perSecond(now, before, seconds) {
  if (before === undefined || seconds <= 0) return null;
  return Math.max(0, (now - before) / seconds);
}

/**
 * Errors (or server faults) as a share of the requests the instance answered: every
 * request counts once, run or shed before its handler.
 */
function share(eps, rps) {
  if (eps === null) return "–";
  if (rps <= 0) return eps > 0 ? `${eps.toFixed(1)}/s` : "0 %";
  return `${Math.min(100, (100 * eps) / rps).toFixed(1)} %`;
}

function render(doc, at) {
  const next = new Map();
  const byService = new Map();
  for (const i of doc.instances) {
    if (!byService.has(i.service)) byService.set(i.service, []);
    byService.get(i.service).push(i);
  }
  const rows = [];
  let ready = 0;
  let overloaded = 0;
  let clusterRps = 0;
  for (const service of [...byService.keys()].sort()) {
    const list = byService.get(service).sort((a, b) =>
      (a.version === "gray") - (b.version === "gray") || a.id.localeCompare(b.id));
    const head = document.createElement("tr");
    head.className = "service";
    head.dataset.service = service;
    const readyHere = list.filter((i) => i.health === "ready").length;
    head.append(cell(service), cell(""), cell(`${readyHere}/${list.length} ready`));
    for (let k = 0; k < 9; k++) head.append(cell(""));
    rows.push(head);
    for (const i of list) {
      const t = totals(i.status);
      const before = previous.get(i.id);
      const seconds = before ? (at - before.at) / 1000 : 0;
      const rps = perSecond(t.requests, before?.t.requests, seconds);
      const eps = perSecond(t.errors, before?.t.errors, seconds);
      const fps = perSecond(t.faults, before?.t.faults, seconds);
      const sps = perSecond(t.shed, before?.t.shed, seconds);
      next.set(i.id, { t, at });
      if (i.health === "ready") ready++;
      if (t.level) overloaded++;
      clusterRps += rps ?? 0;
      const tr = document.createElement("tr");
      tr.dataset.instance = i.id;
      tr.classList.add("pick");
      if (i.id === selected) tr.classList.add("selected");
      tr.addEventListener("click", (e) => {
        if (e.target.closest("a")) return;
        select(i.id);
      });
      tr.dataset.level = t.level ? `${t.level.business}:${t.level.user}` : "none";
      if (i.version === "gray") tr.className = "gray";
      const address = i.admin
        ? Object.assign(document.createElement("a"), { href: `http://${i.admin}/`, textContent: i.address })
        : i.address;
      const version = i.version === "gray" && i.gray_users ? `gray (${i.gray_users})` : i.version;
      tr.append(
        cell(i.id),
        cell(version),
        cell(i.health, i.health === "ready" ? "good-text" : "bad-text"),
        cell(rps === null ? "–" : rps.toFixed(1), "num"),
        cell(share(eps, rps), eps > 0 ? "num bad" : "num"),
        cell(share(fps, rps), fps > 0 ? "num bad" : "num"),
        // A percentile of no requests would be an old one: none shown while idle.
        cell(rps > 0 ? t.p99.toFixed(2) : "–", "num"),
        cell(t.inFlight, "num"),
        cell(t.dagor ? (t.level ? `B ${t.level.business} · U ${t.level.user}` : "admits all") : "off", t.level ? "bad" : ""),
        cell(sps === null ? "–" : sps.toFixed(1), sps > 0 ? "num bad" : "num"),
        cell(i.restarts ?? "–", i.restarts ? "num bad" : "num"),
        cell(address),
      );
      rows.push(tr);
    }
  }
  previous = next;
  $("cluster").tBodies[0].replaceChildren(...rows);
  $("totals").replaceChildren(
    fact("services", byService.size),
    fact("instances", doc.instances.length),
    fact("ready", ready, ready === doc.instances.length ? "good" : "bad"),
    fact("requests/s", clusterRps.toFixed(0)),
    fact("shedding (DAGOR)", overloaded, overloaded ? "bad" : "good"),
  );
  const summary = $("summary");
  summary.textContent = ready === doc.instances.length ? "all ready" : `${doc.instances.length - ready} not ready`;
  summary.className = `pill ${ready === doc.instances.length ? "good" : "bad"}`;
}

/**
 * Every replicated shard (a store's /status "shards" section): which replica leads it,
 * the term, each replica's role and applied index, and the furthest follower's lag.
 */
function renderShards(doc) {
  const shards = new Map(); // service + shard -> { service, shard, replicas }
  for (const i of doc.instances) {
    for (const s of i.status?.shards ?? []) {
      const key = `${i.service}#${s.shard}`;
      if (!shards.has(key)) shards.set(key, { service: i.service, shard: s.shard, replicas: [] });
      shards.get(key).replicas.push({ id: i.id, ...s });
    }
  }
  const rows = [...shards.values()]
    .sort((a, b) => a.service.localeCompare(b.service) || a.shard - b.shard)
    .map((g) => {
      g.replicas.sort((a, b) => a.id.localeCompare(b.id));
      const leader = g.replicas.find((r) => r.role === "leader");
      const term = Math.max(...g.replicas.map((r) => r.term ?? 0));
      const lags = Object.values(leader?.follower_lag ?? {});
      const lag = lags.length ? Math.max(...lags) : null;
      const tr = document.createElement("tr");
      tr.dataset.service = g.service;
      tr.dataset.shard = String(g.shard + 1);
      tr.append(
        cell(g.service),
        cell(String(g.shard + 1), "num"),
        cell(leader ? leader.id : "none", leader ? "good-text" : "bad-text"),
        cell(String(term), "num"),
        cell(g.replicas.map((r) => `${r.id} ${r.role}${r.rejoining ? " (rejoining)" : ""} @${r.applied ?? 0}/${r.committed ?? 0}`).join(" · ")),
        cell(lag === null ? "–" : String(lag), lag > 100 ? "num bad" : "num"),
      );
      return tr;
    });
  $("shards").tBodies[0].replaceChildren(...rows);
  $("shards-section").hidden = rows.length === 0;
}

let selected = null;

/** Shows an instance's charts and recent requests, refreshed while it stays chosen. */
function select(id) {
  selected = id;
  $("detail").hidden = false;
  $("detail-title").textContent = `${id}: the last 15 minutes`;
  for (const tr of document.querySelectorAll("#cluster tr[data-instance]")) {
    tr.classList.toggle("selected", tr.dataset.instance === id);
  }
  refreshDetail();
}

async function refreshDetail() {
  if (!selected) return;
  const id = encodeURIComponent(selected);
  try {
    const [history, rpcz] = await Promise.all([
      fetch(`/api/history?instance=${id}`, { cache: "no-store" }).then((r) => r.json()),
      fetch(`/api/rpcz?instance=${id}`, { cache: "no-store" }).then((r) => r.json()),
    ]);
    $("detail-charts").replaceChildren(...historyCharts(history));
    $("detail-charts").dataset.points = String(history.points?.length ?? 0);
    $("detail-recent").tBodies[0].replaceChildren(...(rpcz.recent ?? []).slice(0, 30).map((c) => callRow(c, showTrace)));
    $("detail-slowest").tBodies[0].replaceChildren(...(rpcz.slowest ?? []).map((c) => callRow(c, showTrace)));
  } catch (e) {
    $("error").textContent = `The instance could not be read: ${e.message}`;
  }
}

/** Draws a trace from the calls every instance kept of it. */
async function showTrace(trace) {
  const response = await fetch(`/api/trace?id=${encodeURIComponent(trace)}`, { cache: "no-store" });
  const doc = await response.json();
  const title = document.createElement("h2");
  title.textContent = `Trace ${trace}`;
  $("trace").replaceChildren(title, waterfall(doc.calls ?? []));
  $("trace").dataset.trace = trace;
  $("trace").dataset.calls = String(doc.calls?.length ?? 0);
}

setInterval(refreshDetail, 5000);

async function poll() {
  try {
    const response = await fetch("/api/cluster", { cache: "no-store" });
    const doc = await response.json();
    if (!response.ok) throw new Error(doc.error ?? `HTTP ${response.status}`);
    $("error").textContent = "";
    render(doc, Date.now());
    renderShards(doc);
  } catch (e) {
    $("error").textContent = `The registry could not be read: ${e.message}`;
  }
  setTimeout(poll, 1000);
}

poll();
