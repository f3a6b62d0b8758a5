// The contacts tab: friends, requests, finding someone by name, and the friend pickers
// of the group and post forms.

import { api, badge, emit, guarded, nameOf, on, state } from "./state.js";
import { $, h, fill } from "./view.js";

export async function refreshContacts() {
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
        h("button", { type: "button", class: "chat", on: { click: () => emit("open-chat", `u:${uid}`) } }, "Chat"),
        h("button", { type: "button", class: "album", on: { click: () => emit("show-album", uid) } }, "Moments"),
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
      friend: [h("button", { type: "button", class: "chat", on: { click: () => emit("open-chat", `u:${uid}`) } }, "Chat")],
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

on("contacts-changed", refreshContacts);
