// Small builders shared by svrkit's pages (the admin page and the cluster console).

/** A table cell holding `content` (text, or a node). */
export function cell(content, cls) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  if (cls) td.className = cls;
  return td;
}

/** A headline figure: `value` large, `label` under it. */
export function fact(label, value, cls) {
  const div = document.createElement("div");
  div.className = `fact ${cls ?? ""}`;
  const b = document.createElement("b");
  b.textContent = value;
  const span = document.createElement("span");
  span.textContent = label;
  div.append(b, span);
  return div;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs ?? {})) el.setAttribute(k, v);
  return el;
}

function clock(t) {
  return new Date(t).toLocaleTimeString([], { hour12: false });
}

function number(v) {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/**
 * A line chart of `series` — [{ name, cls, points: [[t ms, value], ...] }] — drawn as SVG
 * with the largest value and the time span on its axes; hovering shows the values at the
 * nearest point.
 */
export function chart(title, series, unit) {
  const W = 360, H = 130, LEFT = 34, RIGHT = 6, TOP = 8, BOTTOM = 18;
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.chart = title;
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const times = series[0]?.points.map((p) => p[0]) ?? [];
  const all = series.flatMap((s) => s.points.map((p) => p[1]));
  const t0 = times[0] ?? 0, t1 = times[times.length - 1] ?? 1;
  const top = Math.max(...all, 0) || 1;
  const x = (t) => LEFT + (t1 === t0 ? 0 : ((t - t0) / (t1 - t0)) * (W - LEFT - RIGHT));
  const y = (v) => TOP + (1 - v / top) * (H - TOP - BOTTOM);
  plot.append(
    svg("line", { x1: LEFT, y1: TOP, x2: LEFT, y2: H - BOTTOM, class: "axis" }),
    svg("line", { x1: LEFT, y1: H - BOTTOM, x2: W - RIGHT, y2: H - BOTTOM, class: "axis" }),
  );
  const label = (text, attrs) => {
    const t = svg("text", attrs);
    t.textContent = text;
    return t;
  };
  plot.append(
    label(number(top), { x: LEFT - 3, y: TOP + 8, class: "tick end" }),
    label("0", { x: LEFT - 3, y: H - BOTTOM, class: "tick end" }),
  );
  if (times.length) {
    plot.append(
      label(clock(t0), { x: LEFT, y: H - 4, class: "tick" }),
      label(clock(t1), { x: W - RIGHT, y: H - 4, class: "tick end" }),
    );
  }
  for (const s of series) {
    plot.append(svg("polyline", {
      points: s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      class: `line ${s.cls}`,
    }));
    // Few points: each one visible (a single point draws no line).
    if (s.points.length <= 60) {
      for (const [t, v] of s.points) {
        plot.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2, class: `dot ${s.cls}` }));
      }
    }
  }
  const cursor = svg("line", { x1: 0, y1: TOP, x2: 0, y2: H - BOTTOM, class: "cursor", visibility: "hidden" });
  plot.append(cursor);
  const tip = document.createElement("div");
  tip.className = "tip";
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const key = document.createElement("span");
    key.className = `key ${s.cls}`;
    key.textContent = s.name;
    legend.append(key);
  }
  const show = (clientX) => {
    if (!times.length) return;
    const box = plot.getBoundingClientRect();
    const px = ((clientX - box.left) / box.width) * W;
    let i = 0;
    for (let k = 1; k < times.length; k++) if (Math.abs(x(times[k]) - px) < Math.abs(x(times[i]) - px)) i = k;
    cursor.setAttribute("x1", x(times[i]));
    cursor.setAttribute("x2", x(times[i]));
    cursor.setAttribute("visibility", "visible");
    tip.textContent = `${clock(times[i])} · ` +
      series.map((s) => `${s.name} ${number(s.points[i]?.[1] ?? 0)}${unit}`).join(" · ");
    figure.classList.add("hovered");
  };
  plot.addEventListener("mousemove", (e) => show(e.clientX));
  plot.addEventListener("mouseleave", () => {
    cursor.setAttribute("visibility", "hidden");
    tip.textContent = "";
    figure.classList.remove("hovered");
  });
  figure.append(caption, plot, legend, tip);
  return figure;
}

/**
 * Charts of a /history document: per method, requests/s with errors/s and faults/s, and
 * p50/p99; for the server, DAGOR's sheds/s and level.
 */
export function historyCharts(doc) {
  const points = doc.points ?? [];
  const methods = [...new Set(points.flatMap((p) => p.methods.map((m) => m.method)))].sort();
  const figures = [];
  for (const method of methods) {
    const of = (field) => points.map((p) => [p.t, p.methods.find((m) => m.method === method)?.[field] ?? 0]);
    figures.push(
      chart(`${method} · calls/s`, [
        { name: "requests", cls: "a", points: of("rps") },
        { name: "errors", cls: "b", points: of("eps") },
        { name: "faults", cls: "c", points: of("fps") },
      ], "/s"),
      chart(`${method} · latency`, [
        { name: "p50", cls: "a", points: of("p50") },
        { name: "p99", cls: "b", points: of("p99") },
      ], " ms"),
    );
  }
  if (points.length) {
    figures.push(chart("DAGOR", [
      { name: "shed/s", cls: "b", points: points.map((p) => [p.t, p.sheds_per_s]) },
      { name: "level (business)", cls: "c", points: points.map((p) => [p.t, p.level?.business ?? 0]) },
    ], ""));
  }
  return figures;
}

/** A table row of one call from /rpcz; `onTrace(id)` runs when its trace id is clicked. */
export function callRow(call, onTrace) {
  const tr = document.createElement("tr");
  tr.dataset.trace = call.trace_id;
  const trace = document.createElement("a");
  trace.href = `#trace=${call.trace_id}`;
  trace.textContent = call.trace_id;
  trace.className = "trace";
  trace.addEventListener("click", (e) => {
    e.preventDefault();
    onTrace(call.trace_id);
  });
  tr.append(
    cell(new Date(call.at_unix_us / 1000).toLocaleTimeString([], { hour12: false })),
    cell(call.method),
    cell(call.caller || "–"),
    cell(call.code, call.code === "ok" ? "good-text" : "bad-text"),
    cell(call.latency_ms.toFixed(2), "num"),
    cell(call.protocol),
    cell(trace),
  );
  return tr;
}

/**
 * A trace as a waterfall: one bar per call (`{ at_unix_us, latency_ms, method, where }`),
 * placed by when it started and as long as it took, nested under its caller's span.
 */
export function waterfall(calls) {
  const div = document.createElement("div");
  div.className = "waterfall";
  if (!calls.length) {
    div.textContent = "No call of this trace is kept any more.";
    return div;
  }
  const start = Math.min(...calls.map((c) => c.at_unix_us));
  const end = Math.max(...calls.map((c) => c.at_unix_us + c.latency_ms * 1000));
  const span = Math.max(1, end - start);
  const depth = new Map();
  for (const c of [...calls].sort((a, b) => a.at_unix_us - b.at_unix_us)) {
    depth.set(c.span_id, (depth.get(c.parent_span_id) ?? -1) + 1);
  }
  for (const c of [...calls].sort((a, b) => a.at_unix_us - b.at_unix_us)) {
    const row = document.createElement("div");
    row.className = "span";
    row.dataset.span = c.span_id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${"· ".repeat(depth.get(c.span_id) ?? 0)}${c.method}${c.where ? ` @ ${c.where}` : ""}`;
    const lane = svg("svg", { viewBox: "0 0 1000 14", preserveAspectRatio: "none", class: "lane" });
    const left = ((c.at_unix_us - start) / span) * 1000;
    const width = Math.max(2, ((c.latency_ms * 1000) / span) * 1000);
    lane.append(svg("rect", { x: left, y: 2, width, height: 10, class: c.code === "ok" ? "bar" : "bar bad" }));
    const ms = document.createElement("span");
    ms.className = "ms";
    ms.textContent = `${c.latency_ms.toFixed(2)} ms · ${c.code}`;
    row.append(name, lane, ms);
    div.append(row);
  }
  return div;
}
