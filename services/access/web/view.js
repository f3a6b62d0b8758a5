// Small DOM helpers. Text always goes in as text (never as HTML), so nothing a user
// typed can become markup.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/**
 * Makes an element: h("li", { class: "x", "data-id": 1, on: { click: f } }, "text", child).
 * Children that are null, undefined or false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "on") {
      for (const [event, f] of Object.entries(value)) el.addEventListener(event, f);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "text") {
      el.textContent = value;
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

/** A time as a person reads it: the hour today, the date otherwise. */
export function when(ms) {
  const d = new Date(Number(ms));
  const now = new Date();
  return d.toDateString() === now.toDateString()
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** Shows `message` in the error element `id` (empty clears it). */
export function showError(id, message) {
  const el = $(id);
  if (el) el.textContent = message ?? "";
}

/** Reads the values of a set of checkboxes named by value. */
export function checked(container) {
  return [...container.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
}
