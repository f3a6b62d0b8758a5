//! Moments scenarios through the access tier: who sees which post, like and comment (a
//! visibility matrix over every setting and relation); deletion; idempotent likes;
//! pagination while posts arrive; a pull author merged with pushed posts; a crash in the
//! middle of a fan-out.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svrkit_testkit::PATIENCE;
use wx_client::Ws;

use super::messaging::befriend;
use crate::harness::{Backend, User, call, refused, unique};

/// A post's (author, seq).
type PostId = (u64, u64);

fn id_of(post: &Value) -> PostId {
    (
        post["author"].as_u64().expect("author"),
        post["seq"].as_u64().expect("seq"),
    )
}

async fn post(backend: &Backend, author: &User, body: Value) -> PostId {
    let reply = call(&backend.http, "moments.post", body, Some(&author.token)).await;
    id_of(&reply)
}

/// Every post of `user`'s timeline, page by page (`limit` each), newest first.
async fn timeline(backend: &Backend, user: &User, limit: u32) -> Vec<Value> {
    pages(backend, user, "moments.timeline", json!({ "limit": limit })).await
}

async fn pages(backend: &Backend, user: &User, action: &str, mut body: Value) -> Vec<Value> {
    let mut all = Vec::new();
    for _ in 0..100 {
        let page = call(&backend.http, action, body.clone(), Some(&user.token)).await;
        all.extend(page["posts"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => body["cursor"] = json!(c),
            _ => return all,
        }
    }
    panic!("{action} never ended");
}

fn ids(posts: &[Value]) -> BTreeSet<PostId> {
    posts.iter().map(id_of).collect()
}

/// Waits until `user`'s timeline holds every one of `wanted`.
async fn until_in_timeline(backend: &Backend, user: &User, wanted: &[PostId]) {
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let got = ids(&timeline(backend, user, 50).await);
        if wanted.iter().all(|w| got.contains(w)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}'s timeline still lacks some of {wanted:?}: {got:?}",
            user.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `a` and `b` stop being friends (`a` removes `b`).
async fn unfriend(backend: &Backend, a: &User, b: &User) {
    call(
        &backend.http,
        "friends.remove",
        json!({ "peer": b.uid }),
        Some(&a.token),
    )
    .await;
}

/// The matrix: Alice posts to all friends, to only Lena, and to all but Xavier. Fred,
/// Lena and Xavier stay friends; Sam is a stranger; Bea is blocked by Alice, Ugo removes
/// Alice and Rita removes her and befriends her again, all after the posts reached their
/// timelines. Fred comments, Lena likes; Xavier is Fred's friend, Lena is not.
pub async fn visibility_matrix(backend: &Backend) {
    let http = &backend.http;
    let alice = backend.user(&unique("alice")).await;
    let names = ["fred", "lena", "xavier", "sam", "bea", "ugo", "rita"];
    let mut users = Vec::new();
    for n in names {
        users.push(backend.user(&unique(n)).await);
    }
    let [fred, lena, xavier, sam, bea, ugo, rita] = <[User; 7]>::try_from(users).expect("seven");
    for u in [&fred, &lena, &xavier, &bea, &ugo, &rita] {
        befriend(backend, &alice, u).await;
    }
    befriend(backend, &fred, &xavier).await;
    let ta = Some(alice.token.as_str());

    let all = post(
        backend,
        &alice,
        json!({ "text": "to everyone", "media": ["m1", "m2"] }),
    )
    .await;
    let only = post(
        backend,
        &alice,
        json!({ "text": "just lena", "visibility": "only", "listed": [lena.uid] }),
    )
    .await;
    let except = post(
        backend,
        &alice,
        json!({ "text": "not xavier", "visibility": "except", "listed": [xavier.uid] }),
    )
    .await;
    // Pushed where the setting admitted, before any relation changes.
    until_in_timeline(backend, &alice, &[all, only, except]).await;
    for (u, wanted) in [
        (&fred, vec![all, except]),
        (&lena, vec![all, only, except]),
        (&xavier, vec![all]),
        (&bea, vec![all, except]),
        (&ugo, vec![all, except]),
        (&rita, vec![all, except]),
    ] {
        until_in_timeline(backend, u, &wanted).await;
    }
    call(http, "friends.block", json!({ "peer": bea.uid }), ta).await;
    unfriend(backend, &ugo, &alice).await;
    unfriend(backend, &rita, &alice).await;
    befriend(backend, &rita, &alice).await;

    // Interactions: Fred comments on the post to everyone, Lena likes it.
    let body = |p: PostId| json!({ "author": p.0, "seq": p.1 });
    let mut c = body(all);
    c["text"] = json!("nice, from fred");
    call(http, "moments.comment", c, Some(&fred.token)).await;
    call(http, "moments.like", body(all), Some(&lena.token)).await;

    let expected: [(&User, Vec<PostId>); 8] = [
        (&alice, vec![all, only, except]),
        (&fred, vec![all, except]),
        (&lena, vec![all, only, except]),
        (&xavier, vec![all]),
        (&sam, vec![]),
        (&bea, vec![]),
        (&ugo, vec![]),
        (&rita, vec![all, except]),
    ];
    for (viewer, wanted) in &expected {
        let wanted: BTreeSet<PostId> = wanted.iter().copied().collect();
        let tv = Some(viewer.token.as_str());
        // Get: each post, seen or refused with not_visible.
        for p in [all, only, except] {
            let answer = http
                .call("moments.get", &body(p), tv)
                .await
                .expect("an answer");
            if wanted.contains(&p) {
                assert!(
                    answer.ok(),
                    "{} should see {p:?}: {}",
                    viewer.name,
                    answer.body
                );
            } else {
                assert_eq!(
                    (answer.status, answer.reason()),
                    (403, "not_visible"),
                    "{} must not see {p:?}: {}",
                    viewer.name,
                    answer.body
                );
            }
        }
        // The timeline agrees (Alice's posts in it), and so does the album.
        let seen: BTreeSet<PostId> = ids(&timeline(backend, viewer, 2).await)
            .into_iter()
            .filter(|p| p.0 == alice.uid)
            .collect();
        assert_eq!(seen, wanted, "{}'s timeline", viewer.name);
        let album = http
            .call(
                "moments.album",
                &json!({ "author": alice.uid, "limit": 2 }),
                tv,
            )
            .await
            .expect("an answer");
        if wanted.is_empty() {
            assert_eq!(
                (album.status, album.reason()),
                (403, "not_friend"),
                "{}: {}",
                viewer.name,
                album.body
            );
        } else {
            let album = pages(
                backend,
                viewer,
                "moments.album",
                json!({ "author": alice.uid, "limit": 2 }),
            )
            .await;
            assert_eq!(ids(&album), wanted, "{}'s view of the album", viewer.name);
        }
        // Strangers to a post can neither like nor comment on it.
        for p in [all, only, except] {
            if !wanted.contains(&p) {
                refused(http, "moments.like", body(p), tv, 403, "permission_denied").await;
                let mut c = body(p);
                c["text"] = json!("let me in");
                let answer =
                    refused(http, "moments.comment", c, tv, 403, "permission_denied").await;
                assert_eq!(answer.reason(), "not_visible");
            }
        }
    }

    // Who sees Fred's comment and Lena's like on the post to everyone.
    let view = |u: &User| {
        let tv = Some(u.token.clone());
        let b = body(all);
        async move { call(http, "moments.get", b, tv.as_deref()).await["post"].clone() }
    };
    let froms = |v: &Value, key: &str| -> BTreeSet<u64> {
        v[key]
            .as_array()
            .map(|l| l.iter().filter_map(|x| x["from"].as_u64()).collect())
            .unwrap_or_default()
    };
    let a = view(&alice).await;
    assert_eq!(froms(&a, "comments"), BTreeSet::from([fred.uid]));
    assert_eq!(froms(&a, "likes"), BTreeSet::from([lena.uid]));
    assert_eq!(
        a["visibility"], "all_friends",
        "the author sees the setting"
    );
    let x = view(&xavier).await;
    assert_eq!(
        froms(&x, "comments"),
        BTreeSet::from([fred.uid]),
        "Fred is Xavier's friend"
    );
    assert!(froms(&x, "likes").is_empty(), "Lena is not Xavier's friend");
    assert!(
        x.get("visibility").is_none(),
        "only the author sees the setting"
    );
    let l = view(&lena).await;
    assert!(
        froms(&l, "comments").is_empty(),
        "Fred is not Lena's friend"
    );
    assert_eq!(
        froms(&l, "likes"),
        BTreeSet::from([lena.uid]),
        "her own like"
    );
    let f = view(&fred).await;
    assert_eq!(froms(&f, "comments"), BTreeSet::from([fred.uid]));
    assert!(froms(&f, "likes").is_empty());
    // Fred unfriends Xavier: his comment disappears for Xavier at once.
    unfriend(backend, &fred, &xavier).await;
    assert!(froms(&view(&xavier).await, "comments").is_empty());
}

/// Likes are idempotent; comments, replies and their deletion; only the author deletes a
/// post, and a deleted post is gone everywhere at once; bad input is refused precisely and
/// the service keeps serving.
pub async fn likes_comments_deletion_and_refusals(backend: &Backend) {
    let http = &backend.http;
    let carol = backend.user(&unique("carol")).await;
    let dan = backend.user(&unique("dan")).await;
    befriend(backend, &carol, &dan).await;
    let (tc, td) = (Some(carol.token.as_str()), Some(dan.token.as_str()));
    let p = post(backend, &carol, json!({ "text": "hello moments" })).await;
    let body = json!({ "author": p.0, "seq": p.1 });
    until_in_timeline(backend, &dan, &[p]).await;

    // Carol is online: Dan's like and comment reach her as `moment` pushes.
    let mut ws = Ws::connect(backend.ws[0], &carol.token)
        .await
        .expect("connect")
        .expect("auth");
    assert_eq!(
        call(http, "moments.like", body.clone(), td).await["changed"],
        true
    );
    let push = ws.push(PATIENCE).await.expect("a moment push");
    assert_eq!(
        (&push["push"], &push["body"]["type"], &push["body"]["from"]),
        (&json!("moment"), &json!("like"), &json!(dan.uid)),
        "{push}"
    );
    assert_eq!(
        call(http, "moments.like", body.clone(), td).await["changed"],
        false
    );
    let likes = call(http, "moments.get", body.clone(), tc).await["post"]["likes"].clone();
    assert_eq!(likes.as_array().map(Vec::len), Some(1), "{likes}");
    assert_eq!(
        call(http, "moments.unlike", body.clone(), td).await["changed"],
        true
    );
    assert_eq!(
        call(http, "moments.unlike", body.clone(), td).await["changed"],
        false
    );

    let mut c = body.clone();
    c["text"] = json!("first!");
    let first = call(http, "moments.comment", c.clone(), td).await["comment"].clone();
    let first_id = first["comment_id"].as_u64().expect("comment id");
    let push = ws.push(PATIENCE).await.expect("a moment push");
    assert_eq!(
        (
            &push["push"],
            &push["body"]["type"],
            &push["body"]["comment_id"]
        ),
        (&json!("moment"), &json!("comment"), &json!(first_id)),
        "{push}"
    );
    drop(ws);
    let mut reply = body.clone();
    reply["text"] = json!("thanks");
    reply["reply_to"] = json!(first_id);
    let second = call(http, "moments.comment", reply.clone(), tc).await["comment"].clone();
    assert_eq!(second["reply_to"], first_id);
    reply["reply_to"] = json!(999);
    refused(http, "moments.comment", reply, tc, 404, "not_found").await;
    let mut un = body.clone();
    un["comment_id"] = json!(first_id);
    let answer = refused(
        http,
        "moments.uncomment",
        un.clone(),
        tc,
        403,
        "permission_denied",
    )
    .await;
    assert_eq!(answer.reason(), "not_author");
    call(http, "moments.uncomment", un, td).await;
    let comments = call(http, "moments.get", body.clone(), tc).await["post"]["comments"].clone();
    assert_eq!(comments.as_array().map(Vec::len), Some(1), "{comments}");

    // Bad input: each refused with its reason; nothing is stored.
    let long = "x".repeat(2_001);
    let cases = [
        (json!({ "text": long }), "text_too_long"),
        (json!({ "text": "" }), "empty_post"),
        (
            json!({ "text": "m", "media": (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>() }),
            "too_many_media",
        ),
        (json!({ "text": "m", "media": [""] }), "bad_media"),
    ];
    for (bad, reason) in cases {
        let answer = refused(http, "moments.post", bad, tc, 400, "invalid_argument").await;
        assert_eq!(answer.reason(), reason, "{}", answer.body);
    }
    refused(
        http,
        "moments.post",
        json!({ "text": "v", "visibility": "secret" }),
        tc,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "moments.post",
        json!({ "text": 5 }),
        tc,
        400,
        "invalid_argument",
    )
    .await;
    let mut long_comment = body.clone();
    long_comment["text"] = json!("y".repeat(501));
    let answer = refused(
        http,
        "moments.comment",
        long_comment,
        td,
        400,
        "invalid_argument",
    )
    .await;
    assert_eq!(answer.reason(), "text_too_long");
    let answer = refused(
        http,
        "moments.timeline",
        json!({ "cursor": "nope" }),
        tc,
        400,
        "invalid_argument",
    )
    .await;
    assert_eq!(answer.reason(), "bad_cursor");
    refused(
        http,
        "moments.get",
        json!({ "author": carol.uid }),
        tc,
        400,
        "invalid_argument",
    )
    .await;
    refused(
        http,
        "moments.timeline",
        json!({}),
        None,
        401,
        "unauthenticated",
    )
    .await;
    let album = pages(backend, &carol, "moments.album", json!({})).await;
    assert_eq!(
        ids(&album),
        BTreeSet::from([p]),
        "refused posts left nothing behind"
    );

    // Only the author deletes; then the post is gone for everyone, the author included.
    let answer = refused(
        http,
        "moments.delete",
        body.clone(),
        td,
        403,
        "permission_denied",
    )
    .await;
    assert_eq!(answer.reason(), "not_author");
    call(http, "moments.delete", json!({ "seq": p.1 }), tc).await;
    call(http, "moments.delete", json!({ "seq": p.1 }), tc).await;
    for (user, t) in [(&carol, tc), (&dan, td)] {
        assert!(
            ids(&timeline(backend, user, 10).await).is_empty(),
            "{}",
            user.name
        );
        let answer = refused(
            http,
            "moments.get",
            body.clone(),
            t,
            403,
            "permission_denied",
        )
        .await;
        assert_eq!(answer.reason(), "not_visible");
        refused(
            http,
            "moments.like",
            body.clone(),
            t,
            403,
            "permission_denied",
        )
        .await;
    }
    assert!(
        pages(
            backend,
            &dan,
            "moments.album",
            json!({ "author": carol.uid })
        )
        .await
        .is_empty()
    );
}

/// Paging a timeline three at a time while new posts arrive: every post exactly once, in
/// order; the new ones are on a fresh first page.
pub async fn pagination_is_stable_while_posts_arrive(backend: &Backend) {
    let http = &backend.http;
    let eve = backend.user(&unique("eve")).await;
    let vic = backend.user(&unique("vic")).await;
    befriend(backend, &eve, &vic).await;
    let mut posted = Vec::new();
    for i in 0..7 {
        posted.push(post(backend, &eve, json!({ "text": format!("post {i}") })).await);
    }
    until_in_timeline(backend, &vic, &posted).await;
    let tv = Some(vic.token.as_str());
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for page in 0..10 {
        let reply = call(
            http,
            "moments.timeline",
            json!({ "limit": 3, "cursor": cursor }),
            tv,
        )
        .await;
        seen.extend(reply["posts"].as_array().cloned().unwrap_or_default());
        if page == 0 {
            // Two new posts arrive (and reach the timeline) between pages; Vic, online,
            // is told of the first.
            let mut ws = Ws::connect(backend.ws[1], &vic.token)
                .await
                .expect("connect")
                .expect("auth");
            let new = [
                post(backend, &eve, json!({ "text": "new 1" })).await,
                post(backend, &eve, json!({ "text": "new 2" })).await,
            ];
            let push = ws.push(PATIENCE).await.expect("a moment push");
            assert_eq!(
                (
                    &push["push"],
                    &push["body"]["type"],
                    &push["body"]["author"]
                ),
                (&json!("moment"), &json!("post"), &json!(eve.uid)),
                "{push}"
            );
            until_in_timeline(backend, &vic, &new).await;
        }
        cursor = reply["next_cursor"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if cursor.is_empty() {
            break;
        }
    }
    let seen: Vec<PostId> = seen.iter().map(id_of).collect();
    let newest_first: Vec<PostId> = posted.iter().rev().copied().collect();
    assert_eq!(
        seen, newest_first,
        "every post once, newest first, none of the new"
    );
    let fresh = call(http, "moments.timeline", json!({ "limit": 2 }), tv).await;
    let texts: Vec<&str> = fresh["posts"]
        .as_array()
        .map(|l| l.iter().filter_map(|p| p["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts, ["new 2", "new 1"]);
}

/// A gray release sets Paula's push threshold to 1: her posts (to two friends) are pulled,
/// Quinn's are pushed; Vera, friend of both, reads them merged by time, and a pulled post
/// still obeys its visibility and the relation.
pub async fn pull_authors_merge_with_pushed_posts(backend: &Backend) {
    let paula = backend.user(&unique("paula")).await;
    let quinn = backend.user(&unique("quinn")).await;
    let vera = backend.user(&unique("vera")).await;
    let walt = backend.user(&unique("walt")).await;
    for (a, b) in [(&paula, &vera), (&paula, &walt), (&quinn, &vera)] {
        befriend(backend, a, b).await;
    }
    let dir = backend
        .registry
        .strip_prefix("dir:")
        .expect("the embedded registry");
    let store = svrkit::discovery::EmbeddedRegistry::new(dir);
    svrkit::config::publish_gray(
        &store,
        "wx.moments.Moments",
        r#"{"push_threshold": 1}"#,
        svrkit::config::Selector::Uids(vec![paula.uid]),
    )
    .await
    .expect("publish");
    // The service follows the configuration live; until it has, Paula's posts are pushed.
    let deadline = Instant::now() + PATIENCE;
    let first_pulled = loop {
        let reply = call(
            &backend.http,
            "moments.post",
            json!({ "text": "probe" }),
            Some(&paula.token),
        )
        .await;
        if reply["pushed"] == false {
            break id_of(&reply);
        }
        assert!(Instant::now() < deadline, "the threshold never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut expected = vec![first_pulled];
    for i in 0..3 {
        let q = post(backend, &quinn, json!({ "text": format!("quinn {i}") })).await;
        let reply = call(
            &backend.http,
            "moments.post",
            json!({ "text": format!("paula {i}") }),
            Some(&paula.token),
        )
        .await;
        assert_eq!(reply["pushed"], false);
        expected.extend([q, id_of(&reply)]);
    }
    let hidden = call(
        &backend.http,
        "moments.post",
        json!({ "text": "not for vera", "visibility": "except", "listed": [vera.uid] }),
        Some(&paula.token),
    )
    .await;
    until_in_timeline(backend, &vera, &expected).await;
    let got = timeline(backend, &vera, 3).await;
    let mine: Vec<PostId> = got
        .iter()
        .map(id_of)
        .filter(|p| expected.contains(p) || *p == id_of(&hidden))
        .collect();
    let newest_first: Vec<PostId> = expected.iter().rev().copied().collect();
    assert_eq!(
        mine, newest_first,
        "merged by time, the excluded one left out"
    );
    let times: Vec<u64> = got
        .iter()
        .filter_map(|p| p["created_ms"].as_u64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // Walt sees the hidden one, pulled too; after Paula removes Vera, Vera sees none.
    until_in_timeline(backend, &walt, &[id_of(&hidden)]).await;
    unfriend(backend, &paula, &vera).await;
    let left: Vec<PostId> = timeline(backend, &vera, 10)
        .await
        .iter()
        .map(id_of)
        .filter(|p| p.0 == paula.uid)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The moments process aborts right after writing the first timeline batch of a post's
/// fan-out; restarted, it finishes the job: every friend's timeline gets the post.
pub async fn fanout_survives_a_crash(backend: &mut Backend) {
    let author = backend.user(&unique("ivy")).await;
    let mut friends = Vec::new();
    for i in 0..9 {
        let friend = backend.user(&unique(&format!("f{i}"))).await;
        befriend(backend, &author, &friend).await;
        friends.push(friend);
    }
    // The abort may beat the answer; the post is in the album either way (it is written
    // before the fan-out starts).
    let _ = backend
        .http
        .call(
            "moments.post",
            &json!({ "text": "survive" }),
            Some(&author.token),
        )
        .await;
    assert!(
        backend.restart_after_exit("moments-1", &["WX_FAILPOINT_MOMENTS_ABORT_AFTER"]),
        "the failpoint aborted the fan-out"
    );
    let album = pages(backend, &author, "moments.album", json!({})).await;
    assert_eq!(album.len(), 1, "{album:?}");
    let post = id_of(&album[0]);
    for f in &friends {
        until_in_timeline(backend, f, &[post]).await;
    }
    until_in_timeline(backend, &author, &[post]).await;
}

/// Whatever a stranger may not see answers exactly as if it did not exist: every action
/// on a post (one with likes and comments) gets the answer a missing post gets, so a
/// stranger cannot list which posts exist or have comments.
pub async fn strangers_learn_nothing_of_posts_they_may_not_see(backend: &Backend) {
    let carol = backend.session("carol").await;
    let dan = backend.session("dan").await;
    let eve = backend.session("eve").await;
    carol.befriend(&dan).await;
    let posted = carol.post(json!({ "text": "friends only" })).await;
    let (author, seq) = (
        posted["author"].as_u64().expect("author"),
        posted["seq"].as_u64().expect("seq"),
    );
    let real = json!({ "author": author, "seq": seq });
    until_in_timeline(backend, &dan, &[(author, seq)]).await;
    dan.call("moments.like", real.clone()).await;
    let comment = dan
        .call(
            "moments.comment",
            json!({ "author": author, "seq": seq, "text": "hi" }),
        )
        .await["comment"]["comment_id"]
        .as_u64()
        .expect("a comment");
    let missing = json!({ "author": author, "seq": seq + 1_000 });
    let with = |post: &Value, extra: Value| {
        let mut body = post.clone();
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    for (action, extra) in [
        ("moments.uncomment", json!({ "comment_id": comment })),
        ("moments.unlike", json!({})),
        ("moments.like", json!({})),
        ("moments.comment", json!({ "text": "x" })),
        ("moments.get", json!({})),
    ] {
        let on_real = eve
            .refused(action, with(&real, extra.clone()), 403, "permission_denied")
            .await;
        let on_missing = eve
            .refused(action, with(&missing, extra), 403, "permission_denied")
            .await;
        assert_eq!(on_real.reason(), "not_visible", "{action}");
        assert_eq!(
            (on_real.reason(), on_real.body["error"]["message"].clone()),
            (
                on_missing.reason(),
                on_missing.body["error"]["message"].clone()
            ),
            "{action}: a stranger tells an existing post from a missing one"
        );
    }
    // Nothing the stranger tried changed the post.
    let seen = dan.call("moments.get", real).await;
    assert_eq!(seen["post"]["likes"].as_array().map(Vec::len), Some(1));
    assert_eq!(seen["post"]["comments"].as_array().map(Vec::len), Some(1));
}
