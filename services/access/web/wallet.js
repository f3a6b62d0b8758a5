// Red envelopes and the wallet: sending one from a chat, grabbing and opening it (two
// steps, as in WeChat: a grab reserves a share, the open works out the amount), the list
// of who got how much, and the wallet's balance and history. Money is in cents on the
// wire; it is shown as yuan with two decimals and typed the same way, converted without
// floating point.

import { ApiError, explain } from "./api.js";
import { api, emit, guarded, learnProfiles, nameOf, on, randomHex, state } from "./state.js";
import { $, h, fill, when } from "./view.js";

/** Cents as a person reads them: ¥12.34. */
export function money(cents) {
  const c = BigInt(Math.trunc(Number(cents)));
  const sign = c < 0n ? "-" : "";
  const a = c < 0n ? -c : c;
  return `${sign}¥${a / 100n}.${String(a % 100n).padStart(2, "0")}`;
}

/** "12", "12.3" or "12.34" yuan as cents; null when it is not such an amount. */
export function toCents(text) {
  const m = /^\s*(\d{1,7})(?:\.(\d{1,2}))?\s*$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] ?? "").padEnd(2, "0"));
}

/** The card a chat message carrying an envelope shows. */
export function renderEnvelope(m) {
  const e = m.envelope;
  const ref = { sender: Number(e.sender), seq: Number(e.seq) };
  const mine = Number(m.from) === state.uid;
  const result = h("div", { class: "envelope-result" });
  const button = h("button", { type: "button", class: "envelope-open" }, mine ? "Details" : "Open");
  button.addEventListener("click", async () => {
    if (mine || button.dataset.opened) return details(ref, result);
    if (await grabAndOpen(ref, result)) {
      button.dataset.opened = "1";
      button.textContent = "Details";
    }
  });
  return h("div", { class: "envelope", "data-envelope": `${ref.sender}.${ref.seq}` },
    h("strong", { class: "greeting" }, m.text),
    h("span", { class: "detail" }, `Red envelope · ${money(e.total)} in ${e.shares} share${e.shares === 1 ? "" : "s"}`),
    button,
    result,
  );
}

/** Shows who got how much (and what I got) in `el`. */
async function details(ref, el, note = "") {
  try {
    const v = await api.call("envelope.get", ref);
    await learnProfiles(v.takers.map((t) => t.uid));
    fill(el,
      note ? h("p", { class: "got" }, note) : null,
      h("p", { class: "detail" },
        `${v.takers.length} of ${v.shares} opened` + (v.expired ? " · expired" : "") +
        (v.remaining && !v.expired ? ` · ${money(v.remaining)} left` : "")),
      h("ol", { class: "takers" }, v.takers.map((t) =>
        h("li", { "data-uid": t.uid }, h("span", { class: "who" }, nameOf(t.uid)), " ", money(t.amount)))),
    );
  } catch (e) {
    fill(el, note ? h("p", { class: "got" }, note) : null, h("p", { class: "error" }, explain(e)));
  }
}

/** Grabs a share, opens it, and shows the amount and the takers; true once it is settled
 * (opened now or before, or nothing left to open). */
async function grabAndOpen(ref, el) {
  fill(el, h("p", { class: "detail" }, "Opening…"));
  try {
    await api.call("envelope.grab", ref);
    const r = await api.call("envelope.open", ref);
    await details(ref, el, `You got ${money(r.amount)}`);
    emit("wallet-changed");
    return true;
  } catch (e) {
    const why = e instanceof ApiError ? e.reason : "";
    const note = {
      already_grabbed: "You opened this one already",
      all_taken: "Too late: every share is taken",
      expired: "This envelope has expired",
    }[why];
    if (note) await details(ref, el, note);
    else fill(el, h("p", { class: "error" }, explain(e)));
    return Boolean(note);
  }
}

$("envelope-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = state.open;
  if (!key) return;
  const [kind, id] = key.split(":");
  await guarded("envelope-error", async () => {
    const total = toCents($("envelope-amount").value);
    if (total === null) throw new Error("Type an amount like 8.88");
    const body = { total, greeting: $("envelope-greeting").value, transfer_id: randomHex() };
    if (kind === "g") {
      body.group_id = Number(id);
      body.shares = Number($("envelope-shares").value || 1);
    } else {
      body.to = Number(id);
    }
    await api.call("envelope.send", body);
    $("envelope-compose").open = false;
    $("envelope-amount").value = "";
    $("envelope-greeting").value = "";
    emit("wallet-changed");
    emit("sync-now");
  });
});

/** Shows the share count only where it means something (a group). */
on("chat-opened", (key) => {
  $("envelope-shares-label").hidden = !key?.startsWith("g:");
});

export async function refreshWallet() {
  await guarded("wallet-error", async () => {
    const [b, history] = await Promise.all([
      api.call("wallet.balance", {}),
      api.call("wallet.history", { limit: 20 }),
    ]);
    $("wallet-balance").textContent = money(b.balance);
    const label = {
      top_up: "Test money added",
      envelope_sent: "Red envelope sent",
      envelope_opened: "Red envelope opened",
      envelope_refund: "Red envelope expired: the rest came back",
    };
    fill($("wallet-history"),
      history.entries.length === 0 ? h("li", { class: "empty" }, "No movements yet.") : null,
      history.entries.map((e) => h("li", { "data-kind": e.kind },
        h("span", { class: "who" }, label[e.kind] ?? e.kind),
        h("span", { class: e.change < 0 ? "out" : "in" }, money(e.change)),
        h("time", {}, when(e.at_ms)),
        h("span", { class: "detail" }, `balance ${money(e.balance_after)}`),
      )));
  });
}

$("wallet-topup").addEventListener("click", async () => {
  await guarded("wallet-error", async () => {
    await api.call("wallet.topup", { amount: 10000, transfer_id: randomHex() });
    await refreshWallet();
  });
});

on("wallet-changed", () => {
  if (state.tab === "wallet") refreshWallet();
});
