// Signing in, up and out, the session kept in sessionStorage (this origin only), and
// the long connection: its state and what its pushes ask for.

import { ApiError, Live, explain } from "./api.js";
import { SESSION, api, badge, guarded, on, state } from "./state.js";
import { loadProfile } from "./profile.js";
import { refreshContacts } from "./contacts.js";
import { loadHistory, sync } from "./chats.js";
import { reloadFeed } from "./moments.js";
import { showTab } from "./tabs.js";
import { solve } from "./proof.js";
import { $, showError } from "./view.js";

function saveSession(uid, token) {
  sessionStorage.setItem(SESSION, JSON.stringify({ uid, token }));
}

export async function signedIn(uid, token) {
  api.token = token;
  state.uid = Number(uid);
  saveSession(uid, token);
  $("auth").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  loadHistory();
  await Promise.all([loadProfile(), refreshContacts()]);
  await sync();
  state.live = new Live(api, onPush, onLiveState);
  state.live.open();
  showTab(state.tab);
}

export function signedOut(message) {
  state.live?.close();
  state.live = null;
  api.token = null;
  sessionStorage.removeItem(SESSION);
  Object.assign(state, {
    uid: 0,
    syncKey: "",
    chats: new Map(),
    seen: new Set(),
    profiles: new Map(),
    groups: new Map(),
    friends: [],
    requests: [],
    open: null,
    feed: { author: 0, cursor: "", posts: [] },
  });
  $("app").hidden = true;
  $("auth").hidden = false;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  showError("login-error", message ?? "");
}

function onLiveState(s) {
  const el = $("live");
  el.className = `live ${s === "live" ? "on" : "off"}`;
  el.textContent = s;
  if (s === "live") sync();
}

function onPush(kind, body) {
  switch (kind) {
    case "sync":
      sync();
      break;
    case "friend_request":
    case "friend_accepted":
      refreshContacts();
      break;
    case "moment":
      if (state.tab === "moments") reloadFeed();
      else badge("badge-moments", "•");
      break;
    case "session_ended":
      signedOut("Your session ended; log in again.");
      break;
    default:
      break;
  }
}

on("session-lost", signedOut);

/**
 * Signs in as `name`, presenting this browser's credential for that account if it has
 * one (a known device is never locked out by someone guessing the password elsewhere),
 * and keeps the credential the answer carries.
 */
async function signIn(name, password) {
  const key = `svrkit.credential.${name.toLowerCase()}`;
  const device = localStorage.getItem(key) ?? undefined;
  let r;
  try {
    r = await api.call("login", { name, password, device });
  } catch (e) {
    // Sign-in is busy and this browser has no credential: pay with a solved puzzle.
    if (!(e instanceof ApiError && e.reason === "proof_required")) throw e;
    showError("login-error", "Sign-in is busy; proving this is a person's browser…");
    const { challenge, bits } = await api.call("login.challenge", { name });
    const proof = await solve(challenge, bits);
    r = await api.call("login", { name, password, device, proof });
    showError("login-error", "");
  }
  if (r.device) localStorage.setItem(key, r.device);
  return r;
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("login-name").value.trim();
  const password = $("login-password").value;
  await guarded("login-error", async () => {
    const r = await signIn(name, password);
    $("login-password").value = "";
    await signedIn(r.uid, r.token);
  });
});

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("register-name").value.trim();
  const password = $("register-password").value;
  const nickname = $("register-nickname").value.trim();
  await guarded("register-error", async () => {
    await api.call("register", { name, password, nickname });
    const r = await signIn(name, password);
    $("register-password").value = "";
    await signedIn(r.uid, r.token);
  });
});

$("logout").addEventListener("click", async () => {
  try {
    await api.call("logout");
  } catch {
    // Signed out here whatever the server says.
  }
  signedOut("");
});

/** Resumes the session this tab kept, if it is still valid. */
export async function start() {
  const saved = sessionStorage.getItem(SESSION);
  if (!saved) return;
  try {
    const { uid, token } = JSON.parse(saved);
    api.token = token;
    await api.call("profile.get");
    await signedIn(uid, token);
  } catch (e) {
    signedOut(e instanceof ApiError ? explain(e) : "");
  }
}
