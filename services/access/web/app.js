// The web client: sign-in, contacts, chats (live: a push says "sync", the client syncs
// with its SyncKey), Moments and the profile. The session token lives in sessionStorage
// (this origin only). As in WeChat, the server's mailbox is a sync queue, not an
// archive — what every device has synced is trimmed — so chat history is kept on the
// device: messages, the SyncKey and read marks in localStorage, per user.

import { Api, ApiError, Live, explain } from "./api.js";
import { $, h, fill, when, showError, checked } from "./view.js";

const SESSION = "svrkit.session";
const MAX_SYNC_PAGES = 50;
/** Messages kept per chat on this device. */
const KEEP_PER_CHAT = 500;

/** 16 random hex digits (crypto.randomUUID needs a secure context; this does not). */
function randomHex() {
  return [...crypto.getRandomValues(new Uint8Array(8))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** This browser's device id: one per browser, so devices do not trim each other's. */
function deviceId() {
  let id = localStorage.getItem("svrkit.device");
  if (!id) {
    id = `web-${randomHex()}`;
    localStorage.setItem("svrkit.device", id);
  }
  return id;
}

const api = new Api();
const state = {
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

// ---------- names ----------

function nameOf(uid) {
  const p = state.profiles.get(Number(uid));
  if (!p) return `#${uid}`;
  return p.nickname || p.name || `#${uid}`;
}

async function learnProfiles(uids) {
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

async function learnGroup(gid) {
  if (state.groups.has(gid)) return;
  try {
    const r = await api.call("group.info", { group_id: gid });
    state.groups.set(gid, r.group);
    await learnProfiles(r.group.members);
  } catch {
    state.groups.set(gid, { group_id: gid, name: `Group ${gid}`, members: [] });
  }
}

// ---------- history on this device ----------

function historyKey() {
  return `svrkit.history.${state.uid}`;
}

function loadHistory() {
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

// ---------- session ----------

function saveSession(uid, token) {
  sessionStorage.setItem(SESSION, JSON.stringify({ uid, token }));
}

async function signedIn(uid, token) {
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

function signedOut(message) {
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

/** Runs `f`; an API error shows in `errorId`; a lost session signs out. */
async function guarded(errorId, f) {
  showError(errorId, "");
  try {
    return await f();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && state.uid) {
      signedOut(explain(e));
    } else {
      showError(errorId, explain(e));
    }
    return undefined;
  }
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

// ---------- auth forms ----------

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("login-name").value.trim();
  const password = $("login-password").value;
  await guarded("login-error", async () => {
    const r = await api.call("login", { name, password });
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
    const r = await api.call("login", { name, password });
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

// ---------- tabs ----------

function badge(id, value) {
  const el = $(id);
  el.hidden = !value;
  el.textContent = value ? String(value) : "";
}

function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === tab);
  }
  for (const s of document.querySelectorAll("main#app > section.tab")) {
    s.hidden = s.id !== `tab-${tab}`;
  }
  if (tab === "moments") {
    badge("badge-moments", "");
    reloadFeed();
  } else if (tab === "contacts") {
    refreshContacts();
  } else if (tab === "chats") {
    renderChats();
  }
}

for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => showTab(b.dataset.tab));
}

// ---------- profile ----------

const FIELDS = ["nickname", "avatar", "region", "signature", "phone"];
const PRIVATE = ["region", "signature", "phone"];

async function loadProfile() {
  await guarded("profile-error", async () => {
    const r = await api.call("profile.get");
    showProfile(r.profile);
  });
}

function showProfile(p) {
  state.profiles.set(Number(p.uid), p);
  $("whoami").textContent = `${p.nickname || p.name} (${p.name})`;
  $("profile-name").textContent = p.name;
  $("profile-uid").textContent = p.uid;
  for (const f of FIELDS) $(`profile-${f}`).value = p[f] ?? "";
  for (const f of PRIVATE) $(`private-${f}`).checked = p.private_fields.includes(f);
}

$("profile-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("profile-saved").textContent = "";
  await guarded("profile-error", async () => {
    const body = {};
    for (const f of FIELDS) body[f] = $(`profile-${f}`).value.trim();
    body.private_fields = PRIVATE.filter((f) => $(`private-${f}`).checked);
    const r = await api.call("profile.update", body);
    showProfile(r.profile);
    $("profile-saved").textContent = "Saved.";
  });
});

// ---------- contacts ----------

async function refreshContacts() {
  await guarded("contacts-error", async () => {
    const [friends, requests] = await Promise.all([
      api.call("friends.list"),
      api.call("friends.requests"),
    ]);
    state.friends = friends.friends.filter((f) => f.profile);
    for (const f of state.friends) state.profiles.set(Number(f.profile.uid), f.profile);
    state.requests = requests.requests;
    for (const r of state.requests) if (r.profile) state.profiles.set(Number(r.from), r.profile);
    renderContacts();
    renderFriendPickers();
  });
}

function renderContacts() {
  badge("badge-contacts", state.requests.length);
  fill(
    $("requests"),
    state.requests.length === 0 ? h("li", { class: "empty" }, "No requests.") : null,
    state.requests.map((r) =>
      h("li", { "data-uid": r.from },
        h("span", { class: "who" }, nameOf(r.from)),
        r.greeting ? h("q", {}, r.greeting) : null,
        h("button", { type: "button", class: "accept", on: { click: () => relate("friends.accept", r.from) } }, "Accept"),
        h("button", { type: "button", class: "reject", on: { click: () => relate("friends.reject", r.from) } }, "Reject"),
      ),
    ),
  );
  fill(
    $("friends"),
    state.friends.length === 0 ? h("li", { class: "empty" }, "No friends yet: search for someone by name.") : null,
    state.friends.map((f) => {
      const uid = Number(f.profile.uid);
      return h("li", { "data-uid": uid },
        h("span", { class: "who" }, nameOf(uid)),
        h("span", { class: "detail" }, [f.profile.region, f.profile.signature].filter(Boolean).join(" · ")),
        h("button", { type: "button", class: "chat", on: { click: () => openChat(`u:${uid}`) } }, "Chat"),
        h("button", { type: "button", class: "album", on: { click: () => { showTab("moments"); reloadFeed(uid); } } }, "Moments"),
        h("button", { type: "button", class: "remove", on: { click: () => relate("friends.remove", uid) } }, "Remove"),
        h("button", { type: "button", class: "block", on: { click: () => relate("friends.block", uid) } }, "Block"),
      );
    }),
  );
}

async function relate(action, peer, extra = {}) {
  await guarded("contacts-error", async () => {
    await api.call(action, { peer, ...extra });
    await refreshContacts();
  });
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  fill($("search-result"));
  const name = $("search-name").value.trim();
  await guarded("search-error", async () => {
    const { profile } = await api.call("user.find", { name });
    const uid = Number(profile.uid);
    state.profiles.set(uid, profile);
    const { relations } = await api.call("relation.check", { peers: [uid] });
    const relation = relations[String(uid)] ?? "none";
    const greeting = h("input", { id: "greeting", placeholder: "Say hello", maxlength: 256 });
    const actions = {
      none: [greeting, h("button", { type: "button", class: "add-friend", on: { click: () => relate("friends.request", uid, { greeting: greeting.value }).then(() => searchAgain()) } }, "Add friend")],
      request_received: [h("button", { type: "button", class: "accept", on: { click: () => relate("friends.accept", uid).then(() => searchAgain()) } }, "Accept request")],
      request_sent: [h("span", { class: "note" }, "Request sent")],
      friend: [h("button", { type: "button", class: "chat", on: { click: () => openChat(`u:${uid}`) } }, "Chat")],
      blocked: [h("button", { type: "button", class: "unblock", on: { click: () => relate("friends.unblock", uid).then(() => searchAgain()) } }, "Unblock")],
    };
    fill($("search-result"),
      h("div", { class: "card", "data-uid": uid },
        h("strong", {}, profile.nickname || profile.name), ` @${profile.name}`,
        uid === state.uid ? h("span", { class: "note" }, " (you)") : null,
        h("p", { class: "detail" }, [profile.region, profile.signature].filter(Boolean).join(" · ")),
        uid === state.uid ? null : h("div", { class: "row" }, actions[relation] ?? []),
      ),
    );
  });
});

function searchAgain() {
  $("search-form").requestSubmit();
}

function renderFriendPickers() {
  const boxes = () =>
    state.friends.map((f) =>
      h("label", { class: "check" },
        h("input", { type: "checkbox", value: f.profile.uid }), nameOf(f.profile.uid)),
    );
  fill($("group-members"), h("legend", {}, "Members"), boxes());
  fill($("post-listed"), h("legend", {}, "Friends"), boxes());
}

// ---------- chats ----------

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

/** Fetches everything newer than the SyncKey; one sync at a time, repeated if asked meanwhile. */
async function sync() {
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
          const r = await api.call("sync", { sync_key: state.syncKey, device: deviceId() });
          for (const m of r.messages) {
            if (state.seen.has(m.msg_id)) continue;
            state.seen.add(m.msg_id);
            const key = chatKey(m);
            if (!state.chats.has(key)) state.chats.set(key, []);
            state.chats.get(key).push(m);
            fresh.push(m);
          }
          if (r.profile) showProfile(r.profile);
          if (r.contacts?.length) refreshContacts();
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

function renderChats() {
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
        last ? h("span", { class: "detail" }, last.text.slice(0, 60)) : null,
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
      h("span", { class: "text" }, m.text),
      h("time", {}, when(m.sent_ms)),
    );
  }));
  list.scrollTop = list.scrollHeight;
}

function openChat(key) {
  state.open = key;
  if (!state.chats.has(key)) state.chats.set(key, []);
  showTab("chats");
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

// ---------- moments ----------

$("post-visibility").addEventListener("change", () => {
  $("post-listed").hidden = $("post-visibility").value === "all_friends";
});

$("post-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const visibility = $("post-visibility").value;
  const body = { text: $("post-text").value, visibility };
  if (visibility !== "all_friends") body.listed = checked($("post-listed")).map(Number);
  await guarded("post-error", async () => {
    await api.call("moments.post", body);
    $("post-text").value = "";
    await reloadFeed(state.feed.author);
  });
});

$("feed-mine").addEventListener("click", () => reloadFeed(state.uid));
$("feed-timeline").addEventListener("click", () => reloadFeed(0));
$("feed-more").addEventListener("click", () => loadFeed(false));

async function reloadFeed(author = state.feed.author) {
  state.feed = { author: Number(author) || 0, cursor: "", posts: [] };
  await loadFeed(true);
}

async function loadFeed(fresh) {
  const { author, cursor } = state.feed;
  await guarded("feed-error", async () => {
    const r = author
      ? await api.call("moments.album", { author, cursor, limit: 20 })
      : await api.call("moments.timeline", { cursor, limit: 20 });
    if (fresh) state.feed.posts = [];
    state.feed.posts.push(...r.posts);
    state.feed.cursor = r.next_cursor;
    await learnProfiles(r.posts.flatMap((p) => [p.author, ...p.likes.map((l) => l.from), ...p.comments.map((c) => c.from)]));
    renderFeed();
  });
}

function renderFeed() {
  const { author, posts, cursor } = state.feed;
  $("feed-title").textContent = author ? `${author === state.uid ? "My" : `${nameOf(author)}'s`} album` : "Timeline";
  $("feed-timeline").hidden = !author;
  $("feed-mine").hidden = author === state.uid;
  $("feed-more").hidden = !cursor;
  fill($("feed"),
    posts.length === 0 ? h("p", { class: "empty" }, author ? "No posts." : "Nothing yet: post something, or make friends.") : null,
    posts.map(renderPost));
}

function renderPost(p) {
  const ref = { author: Number(p.author), seq: Number(p.seq) };
  const mine = ref.author === state.uid;
  const liked = p.likes.some((l) => Number(l.from) === state.uid);
  const input = h("input", { class: "comment-text", placeholder: "Comment", maxlength: 1000, required: true });
  const act = (action, extra = {}) => () => guarded("feed-error", async () => {
    await api.call(action, { ...ref, ...extra });
    await refreshPost(ref);
  });
  return h("article", { class: "post", "data-post": `${ref.author}:${ref.seq}` },
    h("header", {},
      h("a", { href: "#", class: "who", on: { click: (e) => { e.preventDefault(); reloadFeed(ref.author); } } }, nameOf(ref.author)),
      h("time", {}, when(p.created_ms)),
      mine && p.visibility !== "all_friends" ? h("span", { class: "note" }, p.visibility === "only" ? " · only some friends" : " · hidden from some") : null,
    ),
    h("p", { class: "text" }, p.text),
    p.likes.length ? h("p", { class: "likes" }, "♥ ", p.likes.map((l) => nameOf(l.from)).join(", ")) : null,
    h("ul", { class: "comments" }, p.comments.map((c) =>
      h("li", { "data-comment": c.comment_id },
        h("span", { class: "who" }, nameOf(c.from)), ": ", c.text,
        Number(c.from) === state.uid || mine
          ? h("button", { type: "button", class: "link uncomment", on: { click: act("moments.uncomment", { comment_id: c.comment_id }) } }, "delete")
          : null,
      ))),
    h("div", { class: "row" },
      h("button", { type: "button", class: liked ? "unlike" : "like", on: { click: act(liked ? "moments.unlike" : "moments.like") } }, liked ? "Unlike" : "Like"),
      h("form", { class: "comment-form", on: { submit: (e) => { e.preventDefault(); act("moments.comment", { text: input.value })(); } } },
        input, h("button", { type: "submit" }, "Comment")),
      mine ? h("button", { type: "button", class: "delete", on: { click: () => guarded("feed-error", async () => {
        await api.call("moments.delete", { seq: ref.seq });
        await reloadFeed();
      }) } }, "Delete") : null,
    ),
  );
}

async function refreshPost(ref) {
  const r = await api.call("moments.get", ref);
  await learnProfiles([...r.post.likes.map((l) => l.from), ...r.post.comments.map((c) => c.from)]);
  const i = state.feed.posts.findIndex((p) => Number(p.author) === ref.author && Number(p.seq) === ref.seq);
  if (i >= 0) state.feed.posts[i] = r.post;
  renderFeed();
}

// ---------- start ----------

async function start() {
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

start();
