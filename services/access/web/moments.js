// The Moments tab: the timeline or an album, posting with visibility, likes, comments.

import { api, emit, guarded, learnProfiles, nameOf, on, state } from "./state.js";
import { $, h, fill, when, checked } from "./view.js";

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

export async function reloadFeed(author = state.feed.author) {
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

on("show-album", (uid) => {
  emit("show-tab", "moments");
  reloadFeed(uid);
});
