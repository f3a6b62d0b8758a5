// What every part of the web client shares: the API, the signed-in user's state, names
// of people and groups, and a small event bus through which the parts ask each other
// for things ("open-chat", "show-tab", "contacts-changed", "show-album", "session-lost")
// without importing each other.

import { Api, ApiError, explain } from "./api.js";
import { $, showError } from "./view.js";

export const SESSION = "svrkit.session";
export const MAX_SYNC_PAGES = 50;
/** Messages kept per chat on this device. */
export const KEEP_PER_CHAT = 500;

/** 16 random hex digits (crypto.randomUUID needs a secure context; this does not). */
export function randomHex() {
  return [...crypto.getRandomValues(new Uint8Array(8))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** This browser's device id: one per browser, so devices do not trim each other's. */
export function deviceId() {
  let id = localStorage.getItem("svrkit.device");
  if (!id) {
    id = `web-${randomHex()}`;
    localStorage.setItem("svrkit.device", id);
  }
  return id;
}

export const api = new Api();
export const state = {
  uid: 0,
  live: null,
  syncKey: "",
  syncing: null,
  resync: false,
  chats: new Map(), // "u:UID" | "g:GID" -> [message] by seq
  seen: new Set(), // msg_id
  profiles: new Map(), // uid -> profile
  groups: new Map(), // gid -> group
  friends: [],
  requests: [],
  open: null,
  tab: "chats",
  feed: { author: 0, cursor: "", posts: [] },
};

const handlers = new Map();

/** Calls `f` whenever `name` is emitted. */
export function on(name, f) {
  if (!handlers.has(name)) handlers.set(name, []);
  handlers.get(name).push(f);
}

/** Tells every handler of `name`. */
export function emit(name, ...args) {
  for (const f of handlers.get(name) ?? []) f(...args);
}

export function nameOf(uid) {
  const p = state.profiles.get(Number(uid));
  if (!p) return `#${uid}`;
  return p.nickname || p.name || `#${uid}`;
}

export async function learnProfiles(uids) {
  const missing = [...new Set(uids.map(Number))].filter((u) => u && !state.profiles.has(u));
  for (let i = 0; i < missing.length; i += 100) {
    try {
      const r = await api.call("profile.get", { uids: missing.slice(i, i + 100) });
      for (const p of r.profiles) state.profiles.set(Number(p.uid), p);
    } catch {
      // Names fall back to uids.
    }
  }
}

export async function learnGroup(gid) {
  if (state.groups.has(gid)) return;
  try {
    const r = await api.call("group.info", { group_id: gid });
    state.groups.set(gid, r.group);
    await learnProfiles(r.group.members);
  } catch {
    state.groups.set(gid, { group_id: gid, name: `Group ${gid}`, members: [] });
  }
}

/** Runs `f`; an API error shows in `errorId`; a lost session is reported ("session-lost"). */
export async function guarded(errorId, f) {
  showError(errorId, "");
  try {
    return await f();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && state.uid) {
      emit("session-lost", explain(e));
    } else {
      showError(errorId, explain(e));
    }
    return undefined;
  }
}


/** Shows `value` on the badge `id` (hidden when there is none). */
export function badge(id, value) {
  const el = $(id);
  el.hidden = !value;
  el.textContent = value ? String(value) : "";
}
