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
