// The chats tab: conversations kept on this device (the server's mailbox is a sync queue
// trimmed once every device has synced), synced with the SyncKey, read marks, sending.

import { ApiError } from "./api.js";
import { KEEP_PER_CHAT, MAX_SYNC_PAGES, api, badge, deviceId, emit, guarded, learnGroup, learnProfiles, nameOf, on, randomHex, state } from "./state.js";
import { showProfile } from "./profile.js";
import { renderEnvelope } from "./wallet.js";
import { $, h, fill, when, checked } from "./view.js";

function historyKey() {
  return `svrkit.history.${state.uid}`;
}

export function loadHistory() {
  try {
    const saved = JSON.parse(localStorage.getItem(historyKey()) ?? "null");
    if (!saved) return;
    state.syncKey = saved.syncKey ?? "";
    for (const m of saved.messages ?? []) {
      if (state.seen.has(m.msg_id)) continue;
      state.seen.add(m.msg_id);
      const key = chatKey(m);
      if (!state.chats.has(key)) state.chats.set(key, []);
      state.chats.get(key).push(m);
    }
  } catch {
    localStorage.removeItem(historyKey());
  }
}

function saveHistory() {
  const messages = [];
  for (const list of state.chats.values()) messages.push(...list.slice(-KEEP_PER_CHAT));
  try {
    localStorage.setItem(historyKey(), JSON.stringify({ syncKey: state.syncKey, messages }));
  } catch {
    // Storage full: the history stays in memory for this visit.
  }
}

function chatKey(m) {
  if (Number(m.group_id)) return `g:${m.group_id}`;
  return `u:${Number(m.from) === state.uid ? m.to : m.from}`;
}

function readMark(key) {
  return Number(localStorage.getItem(`svrkit.read.${state.uid}.${key}`) ?? 0);
}

function markRead(key) {
  const list = state.chats.get(key) ?? [];
  if (list.length) localStorage.setItem(`svrkit.read.${state.uid}.${key}`, String(list[list.length - 1].seq));
}

function unread(key) {
  const mark = readMark(key);
  return (state.chats.get(key) ?? []).filter((m) => Number(m.seq) > mark && Number(m.from) !== state.uid).length;
}

/**
 * One page after the SyncKey. A key the server no longer takes (of an older format, or
 * its messages trimmed away) starts over from the empty key: what comes again is
 * recognised by its msg_id and shown once.
 */
async function syncPage() {
  try {
    return await api.call("sync", { sync_key: state.syncKey, device: deviceId() });
  } catch (e) {
    if (e instanceof ApiError && state.syncKey && ["bad_sync_key", "sync_key_expired"].includes(e.reason)) {
      state.syncKey = "";
      return api.call("sync", { sync_key: "", device: deviceId() });
    }
    throw e;
  }
}

/** Fetches everything newer than the SyncKey; one sync at a time, repeated if asked meanwhile. */
export async function sync() {
  if (!state.uid) return;
  if (state.syncing) {
    state.resync = true;
    return state.syncing;
  }
  state.syncing = (async () => {
    do {
      state.resync = false;
      const fresh = [];
      await guarded("compose-error", async () => {
        for (let page = 0; page < MAX_SYNC_PAGES; page++) {
          const r = await syncPage();
          for (const m of r.messages) {
            if (state.seen.has(m.msg_id)) continue;
            state.seen.add(m.msg_id);
            const key = chatKey(m);
            if (!state.chats.has(key)) state.chats.set(key, []);
            state.chats.get(key).push(m);
            fresh.push(m);
          }
          if (r.profile) showProfile(r.profile);
          if (r.contacts?.length) emit("contacts-changed");
          state.syncKey = r.sync_key;
          // Saved before the next request presents the key (which lets the server trim).
          saveHistory();
          if (!r.has_more) break;
        }
      });
      const names = [...state.chats.values()].flatMap((list) => list.slice(-1).flatMap((m) => [m.from, m.to]));
      await learnProfiles(names);
      for (const key of state.chats.keys()) if (key.startsWith("g:")) await learnGroup(Number(key.slice(2)));
      if (fresh.length) {
        await learnProfiles(fresh.flatMap((m) => [m.from, m.to]));
        for (const gid of new Set(fresh.map((m) => Number(m.group_id)).filter(Boolean))) await learnGroup(gid);
        for (const list of state.chats.values()) list.sort((a, b) => Number(a.seq) - Number(b.seq));
      }
      renderChats();
    } while (state.resync && state.uid);
  })();
  try {
    await state.syncing;
  } finally {
    state.syncing = null;
  }
}

function chatTitle(key) {
  const [kind, id] = key.split(":");
  if (kind === "g") return state.groups.get(Number(id))?.name || `Group ${id}`;
  return nameOf(id);
}

export function renderChats() {
  if (state.open && state.tab === "chats" && document.visibilityState === "visible") markRead(state.open);
  const keys = [...state.chats.keys()].sort((a, b) => {
    const last = (k) => Number(state.chats.get(k).at(-1)?.sent_ms ?? 0);
    return last(b) - last(a);
  });
  let total = 0;
  fill(
    $("chat-list"),
    keys.length === 0 ? h("li", { class: "empty" }, "No chats yet: open one from Contacts.") : null,
    keys.map((key) => {
      const count = unread(key);
      total += count;
      const last = state.chats.get(key).at(-1);
      return h("li", { "data-chat": key, class: key === state.open ? "open" : "", on: { click: () => openChat(key) } },
        h("span", { class: "who" }, chatTitle(key)),
        count ? h("span", { class: "badge unread" }, count) : null,
        last ? h("span", { class: "detail" }, (last.envelope ? "[Red envelope] " : "") + last.text.slice(0, 60)) : null,
      );
    }),
  );
  badge("badge-chats", total);
  renderConversation();
}

function renderConversation() {
  const key = state.open;
  $("compose-form").hidden = !key;
  if (!key) {
    $("conversation-title").textContent = "Pick a chat";
    fill($("messages"));
    return;
  }
  const group = key.startsWith("g:") ? state.groups.get(Number(key.slice(2))) : null;
  $("conversation-title").textContent = group
    ? `${chatTitle(key)} (${group.members.map(nameOf).join(", ")})`
    : chatTitle(key);
  const list = $("messages");
  fill(list, (state.chats.get(key) ?? []).map((m) => {
    const mine = Number(m.from) === state.uid;
    return h("li", { class: mine ? "message mine" : "message", "data-seq": m.seq },
      group && !mine ? h("span", { class: "who" }, nameOf(m.from)) : null,
      m.envelope ? renderEnvelope(m) : h("span", { class: "text" }, m.text),
      h("time", {}, when(m.sent_ms)),
    );
  }));
  list.scrollTop = list.scrollHeight;
}

export function openChat(key) {
  state.open = key;
  if (!state.chats.has(key)) state.chats.set(key, []);
  emit("chat-opened", key);
  emit("show-tab", "chats");
  $("compose-text").focus();
}

$("compose-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = state.open;
  const text = $("compose-text").value;
  if (!key || !text.trim()) return;
  const client_msg_id = randomHex();
  const [kind, id] = key.split(":");
  await guarded("compose-error", async () => {
    if (kind === "g") await api.call("group.send", { group_id: Number(id), text, client_msg_id });
    else await api.call("message.send", { to: Number(id), text, client_msg_id });
    $("compose-text").value = "";
    await sync();
  });
});

$("group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const members = checked($("group-members")).map(Number);
  await guarded("group-error", async () => {
    const r = await api.call("group.create", { name: $("group-name").value.trim(), members });
    state.groups.set(Number(r.group.group_id), r.group);
    $("new-group").open = false;
    $("group-name").value = "";
    openChat(`g:${r.group.group_id}`);
  });
});

document.addEventListener("visibilitychange", () => {
  if (state.uid) renderChats();
});

on("open-chat", openChat);
on("sync-now", sync);
