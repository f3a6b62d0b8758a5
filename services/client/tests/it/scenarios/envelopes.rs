//! Red envelopes and the wallet through the access tier: money moves once per transfer
//! id, an envelope arrives as a chat message, a crowd never oversells it, crashes lose
//! nothing acknowledged, and every refusal has its own reason and moves nothing. After
//! each, the operator's audit finds the money invariant holding.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use svrkit_testkit::PATIENCE;
use wx_api::wallet::{AuditReply, AuditRequest, WalletClient};
use wx_client::Http;

use super::messaging::{befriend, sync_all};
use crate::harness::{Backend, User, call, refused, unique};

/// The operator's audit of every wallet shard once it is settled (two rounds agree) and
/// no credit is in flight (credits of openings reach their wallets within moments, or in
/// the sweep's next round after a crash); it must balance.
pub async fn audit(backend: &Backend) -> AuditReply {
    let wallet = WalletClient::new(backend.operator_channel("wx.wallet.Wallet", 1).await);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let reply = wallet.audit(AuditRequest {}).await.expect("the audit");
        if reply.settled {
            assert!(
                reply.balanced,
                "the money invariant does not hold: {reply:?}"
            );
            if reply.in_flight == 0 {
                return reply;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "credits stay in flight or the audit never settles: {reply:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `user`'s balance in cents.
pub async fn balance(http: &Http, user: &User) -> u64 {
    call(http, "wallet.balance", json!({}), Some(&user.token)).await["balance"]
        .as_u64()
        .expect("a balance")
}

/// Waits until `user`'s balance is `cents` (a credit reaches a wallet just after its
/// opening is answered).
async fn until_balance(http: &Http, user: &User, cents: u64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let now = balance(http, user).await;
        if now == cents {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}'s balance stays {now}, not {cents}",
            user.name
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn top_up(amount: u64, id: &str) -> Value {
    json!({ "amount": amount, "transfer_id": id })
}

fn named(e: &Value) -> Value {
    json!({ "sender": e["envelope"]["sender"], "seq": e["envelope"]["seq"] })
}

/// The reason of a refused call.
async fn reason_of(
    http: &Http,
    action: &str,
    body: Value,
    user: &User,
    status: u16,
    code: &str,
) -> String {
    refused(http, action, body, Some(&user.token), status, code)
        .await
        .reason()
        .to_string()
}

/// Top-ups, a one-to-one envelope from send to open, the ledger, and every refusal with
/// its reason, nothing moved by any of them.
pub async fn money_moves_once_and_refusals_move_nothing(backend: &Backend) {
    let http = &backend.http;
    let alice = backend.user(&unique("alice")).await;
    let bob = backend.user(&unique("bob")).await;
    let stranger = backend.user(&unique("stranger")).await;
    befriend(backend, &alice, &bob).await;
    let ta = Some(alice.token.as_str());

    let first = call(http, "wallet.topup", top_up(1_000, "top-1"), ta).await;
    assert_eq!(
        (first["balance"].as_u64(), first["applied"].as_bool()),
        (Some(1_000), Some(true))
    );
    let again = call(http, "wallet.topup", top_up(1_000, "top-1"), ta).await;
    assert_eq!(
        (again["balance"].as_u64(), again["applied"].as_bool()),
        (Some(1_000), Some(false))
    );
    for (body, reason) in [
        (top_up(0, "top-2"), "bad_amount"),
        (top_up(1_000_001, "top-2"), "bad_amount"),
        (top_up(5, ""), "bad_transfer_id"),
        (top_up(5, &"x".repeat(65)), "bad_transfer_id"),
        // The service's own ids (a credit of an envelope, a refund) cannot be taken.
        (
            top_up(5, &format!("envelope:{}:1", alice.uid)),
            "bad_transfer_id",
        ),
    ] {
        assert_eq!(
            reason_of(http, "wallet.topup", body, &alice, 400, "invalid_argument").await,
            reason
        );
    }
    assert_eq!(
        reason_of(
            http,
            "wallet.topup",
            top_up(7, "top-1"),
            &alice,
            409,
            "already_exists"
        )
        .await,
        "transfer_id_reused"
    );

    // Every refused send: its reason, and the balance untouched.
    let send = |to: u64, total: u64, extra: Value| {
        let mut body = json!({ "to": to, "total": total, "transfer_id": unique("send") });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    for (body, status, code, reason) in [
        (
            send(bob.uid, 1_001, json!({})),
            409,
            "failed_precondition",
            "insufficient_funds",
        ),
        (
            send(bob.uid, 0, json!({})),
            400,
            "invalid_argument",
            "bad_amount",
        ),
        (
            send(bob.uid, 20_001, json!({})),
            400,
            "invalid_argument",
            "bad_amount",
        ),
        (
            send(bob.uid, 100, json!({ "shares": 2 })),
            400,
            "invalid_argument",
            "too_many_shares",
        ),
        (
            send(stranger.uid, 100, json!({})),
            403,
            "permission_denied",
            "not_friend",
        ),
        (
            send(alice.uid, 100, json!({})),
            403,
            "permission_denied",
            "not_friend",
        ),
        (
            send(bob.uid, 100, json!({ "greeting": "福".repeat(51) })),
            400,
            "invalid_argument",
            "greeting_too_long",
        ),
        (
            send(bob.uid, 100, json!({ "transfer_id": "" })),
            400,
            "invalid_argument",
            "bad_transfer_id",
        ),
        (
            json!({ "total": 100, "transfer_id": "no-chat" }),
            400,
            "invalid_argument",
            "bad_chat",
        ),
    ] {
        assert_eq!(
            reason_of(http, "envelope.send", body.clone(), &alice, status, code).await,
            reason,
            "{body}"
        );
    }
    assert_eq!(balance(http, &alice).await, 1_000, "no refusal moved money");

    // A one-to-one envelope: the money leaves at once, the envelope arrives as a message.
    let body = json!({ "to": bob.uid, "total": 250, "greeting": "Lunch is on me", "transfer_id": "env-1" });
    let sent = call(http, "envelope.send", body.clone(), ta).await;
    let retried = call(http, "envelope.send", body, ta).await;
    assert_eq!(
        sent["envelope"], retried["envelope"],
        "a retry is the same envelope"
    );
    assert_eq!(balance(http, &alice).await, 750, "paid once");
    let envelope = named(&sent);
    let (messages, _) = sync_all(backend, &bob, "phone", "").await;
    let carrying: Vec<&Value> = messages
        .iter()
        .filter(|m| m["envelope"]["seq"] == envelope["seq"])
        .collect();
    assert_eq!(carrying.len(), 1, "one message carries it: {messages:?}");
    assert_eq!(carrying[0]["text"], "Lunch is on me");
    assert_eq!(carrying[0]["envelope"]["total"], 250);

    // Only the friend grabs; open only after a grab; each step once.
    let tb = Some(bob.token.as_str());
    assert_eq!(
        reason_of(
            http,
            "envelope.grab",
            envelope.clone(),
            &stranger,
            403,
            "permission_denied"
        )
        .await,
        "not_member"
    );
    assert_eq!(
        reason_of(
            http,
            "envelope.get",
            envelope.clone(),
            &stranger,
            403,
            "permission_denied"
        )
        .await,
        "not_member"
    );
    assert_eq!(
        reason_of(
            http,
            "envelope.grab",
            envelope.clone(),
            &alice,
            403,
            "permission_denied"
        )
        .await,
        "not_member",
        "a one-to-one envelope is the friend's"
    );
    assert_eq!(
        reason_of(
            http,
            "envelope.open",
            envelope.clone(),
            &bob,
            409,
            "failed_precondition"
        )
        .await,
        "not_grabbed"
    );
    let grabbed = call(http, "envelope.grab", envelope.clone(), tb).await;
    assert_eq!(
        (grabbed["shares"].as_u64(), grabbed["taken"].as_u64()),
        (Some(1), Some(1))
    );
    let opened = call(http, "envelope.open", envelope.clone(), tb).await;
    assert_eq!(
        opened["amount"], 250,
        "the last share takes all that is left"
    );
    let reopened = call(http, "envelope.open", envelope.clone(), tb).await;
    assert_eq!(
        reopened["amount"], 250,
        "opening again answers the same amount"
    );
    assert_eq!(
        reason_of(
            http,
            "envelope.grab",
            envelope.clone(),
            &bob,
            409,
            "already_exists"
        )
        .await,
        "already_grabbed"
    );
    until_balance(http, &bob, 250).await;
    let seen = call(http, "envelope.get", envelope.clone(), ta).await;
    assert_eq!(seen["takers"][0]["uid"], bob.uid);
    assert_eq!(seen["takers"][0]["amount"], 250);
    assert_eq!(seen["remaining"], 0);
    for bad in [
        json!({ "sender": alice.uid, "seq": 999 }),
        json!({ "sender": 424242, "seq": 1 }),
    ] {
        assert_eq!(
            reason_of(http, "envelope.grab", bad, &bob, 404, "not_found").await,
            "no_envelope"
        );
    }
    refused(
        http,
        "envelope.grab",
        json!({ "sender": "x" }),
        tb,
        400,
        "invalid_argument",
    )
    .await;

    // Each wallet's ledger, newest first.
    let history = call(http, "wallet.history", json!({}), ta).await;
    let kinds: Vec<&str> = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["envelope_sent", "top_up"]);
    let bobs = call(http, "wallet.history", json!({}), tb).await;
    assert_eq!(bobs["entries"][0]["kind"], "envelope_opened");
    assert_eq!(bobs["entries"][0]["change"], 250);
    let paged = call(http, "wallet.history", json!({ "limit": 1 }), ta).await;
    let next = paged["next_before"].as_u64().expect("a next page");
    let rest = call(
        http,
        "wallet.history",
        json!({ "limit": 1, "before": next }),
        ta,
    )
    .await;
    assert_eq!(rest["entries"][0]["kind"], "top_up");
    assert_eq!(rest["next_before"], 0);

    let books = audit(backend).await;
    assert!(books.minted >= 1_000);
}

/// Calls `action` until it is not refused `overloaded` (the password checks' queue is
/// bounded: a crowd signing up at once is told to come back), a bounded number of times.
async fn call_through_overload(http: &Http, action: &str, body: Value) -> Value {
    for attempt in 1..=50u64 {
        let answer = http.call(action, &body, None).await.expect("an answer");
        if answer.code() != "overloaded" {
            assert!(answer.ok(), "{action}: {} {}", answer.status, answer.body);
            return answer.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20 * attempt.min(10))).await;
    }
    panic!("{action} stayed overloaded");
}

/// `members` users who signed up a few at a time, each befriending `owner`; then a group
/// of them all.
async fn group_of(backend: &Backend, owner: &User, members: usize) -> (u64, Vec<User>) {
    let mut joining = tokio::task::JoinSet::new();
    // As many sign-ups at once as the hashing threads take without a queue.
    let gate = Arc::new(tokio::sync::Semaphore::new(4));
    for i in 0..members {
        let (http, owner, gate) = (backend.http, owner.clone(), Arc::clone(&gate));
        let name = unique(&format!("g{i}"));
        joining.spawn(async move {
            let password = "correct horse battery";
            let (reply, session) = {
                let _turn = gate.acquire().await.expect("open");
                let credentials = json!({ "name": name, "password": password });
                (
                    call_through_overload(&http, "register", credentials.clone()).await,
                    call_through_overload(&http, "login", credentials).await,
                )
            };
            let user = User {
                name,
                uid: reply["uid"].as_u64().expect("uid"),
                token: session["token"].as_str().expect("token").to_string(),
            };
            call(
                &http,
                "friends.request",
                json!({ "peer": owner.uid }),
                Some(&user.token),
            )
            .await;
            call(
                &http,
                "friends.accept",
                json!({ "peer": user.uid }),
                Some(&owner.token),
            )
            .await;
            user
        });
    }
    let mut users = Vec::new();
    while let Some(user) = joining.join_next().await {
        users.push(user.expect("joined"));
    }
    let ids: Vec<u64> = users.iter().map(|u| u.uid).collect();
    let created = call(
        &backend.http,
        "group.create",
        json!({ "name": "new year", "members": ids }),
        Some(&owner.token),
    )
    .await;
    (
        created["group"]["group_id"].as_u64().expect("group id"),
        users,
    )
}

/// What one grabber got: the amount of an acknowledged open, or the reason it got none.
type Got = Result<u64, String>;

/// Grabs then opens `envelope` as `user`, retrying what did not answer (both steps are
/// idempotent) a bounded number of times.
async fn grab_and_open(http: Http, user: User, envelope: Value) -> (u64, Got) {
    let token = Some(user.token.as_str());
    let mut grabbed = false;
    for attempt in 0..40u64 {
        let action = if grabbed {
            "envelope.open"
        } else {
            "envelope.grab"
        };
        let Ok(answer) = http.call(action, &envelope, token).await else {
            tokio::time::sleep(std::time::Duration::from_millis(25 * attempt.min(8))).await;
            continue;
        };
        if answer.ok() {
            if grabbed {
                return (
                    user.uid,
                    Ok(answer.body["amount"].as_u64().expect("an amount")),
                );
            }
            grabbed = true;
            continue;
        }
        match answer.code() {
            // Not processed, or not known to be: the same step again.
            "unavailable" | "deadline_exceeded" | "overloaded" | "resource_exhausted"
                if answer.reason() != "all_taken" =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(25 * attempt.min(8))).await;
            }
            _ => return (user.uid, Err(answer.reason().to_string())),
        }
    }
    panic!("{} got no definite answer", user.name);
}

/// Checks a crowd's outcome against the envelope and the wallets: exactly `shares`
/// acknowledged opens adding up to `total`, every other grabber told `all_taken`, each
/// taker's wallet holding what they were told (once), and the books balanced.
async fn check_crowd(
    backend: &Backend,
    sender: &User,
    users: &[User],
    envelope: &Value,
    got: &HashMap<u64, Got>,
    shares: usize,
    total: u64,
) {
    let opened: HashMap<u64, u64> = got
        .iter()
        .filter_map(|(uid, g)| g.as_ref().ok().map(|a| (*uid, *a)))
        .collect();
    assert_eq!(
        opened.len(),
        shares,
        "exactly {shares} shares opened: {got:?}"
    );
    assert_eq!(
        opened.values().sum::<u64>(),
        total,
        "the shares add up to the total"
    );
    assert!(
        opened.values().all(|a| *a >= 1),
        "every share is at least a cent"
    );
    for (uid, g) in got {
        if let Err(reason) = g {
            assert_eq!(reason, "all_taken", "user {uid}");
        }
    }
    let seen = call(
        &backend.http,
        "envelope.get",
        envelope.clone(),
        Some(&sender.token),
    )
    .await;
    let takers: HashMap<u64, u64> = seen["takers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["uid"].as_u64().unwrap_or(0),
                t["amount"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        takers, opened,
        "the envelope's takers are the acknowledged opens"
    );
    audit(backend).await;
    for user in users {
        let expected = opened.get(&user.uid).copied().unwrap_or(0);
        assert_eq!(
            balance(&backend.http, user).await,
            expected,
            "{}'s wallet",
            user.name
        );
    }
}

/// Runs `act` for every one of `users` at the same moment (a barrier lets them all go
/// together); what each came to.
async fn at_once<T, F, Fut>(users: &[User], act: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(User) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Barrier::new(users.len()));
    let mut crowd = tokio::task::JoinSet::new();
    for user in users {
        let (go, gate) = (act(user.clone()), Arc::clone(&gate));
        crowd.spawn(async move {
            gate.wait().await;
            go.await
        });
    }
    let mut all = Vec::with_capacity(users.len());
    while let Some(done) = crowd.join_next().await {
        all.push(done.expect("joined"));
    }
    all
}

/// A sender with `balance` cents, a group of `members` more, and an envelope of `total`
/// cents in `shares` sent to it: the sender, the members and the envelope's answer.
async fn group_envelope(
    backend: &Backend,
    members: usize,
    balance: u64,
    total: u64,
    shares: u32,
) -> (User, Vec<User>, Value) {
    let http = &backend.http;
    let sender = backend.user(&unique("sender")).await;
    let (group, users) = group_of(backend, &sender, members).await;
    call(
        http,
        "wallet.topup",
        top_up(balance, &unique("top")),
        Some(&sender.token),
    )
    .await;
    let id = unique("send");
    let sent = call(
        http,
        "envelope.send",
        json!({ "group_id": group, "total": total, "shares": shares, "greeting": "新年快乐", "transfer_id": id }),
        Some(&sender.token),
    )
    .await;
    (sender, users, sent)
}

/// 200 members grab one 10-share envelope at once: 10 reservations, the opened sum is
/// the total, every wallet and the books agree.
pub async fn a_crowd_grabs_a_ten_share_envelope(backend: &Backend) {
    let http = &backend.http;
    let (sender, users, sent) = group_envelope(backend, 200, 10_000, 888, 10).await;
    let envelope = named(&sent);
    let got: HashMap<u64, Got> = at_once(&users, |user| {
        grab_and_open(backend.http, user, envelope.clone())
    })
    .await
    .into_iter()
    .collect();
    check_crowd(backend, &sender, &users, &envelope, &got, 10, 888).await;
    assert_eq!(balance(http, &sender).await, 10_000 - 888);
}

/// While a crowd grabs and opens, the wallet instance owning the envelope and a
/// walletstore shard are killed (SIGKILL) and restarted: nothing acknowledged is lost,
/// nobody gets two shares, and the books balance.
pub async fn crashes_mid_crowd_lose_nothing(backend: &mut Backend) {
    let http = backend.http;
    let (sender, users, sent) = group_envelope(backend, 60, 10_000, 2_000, 40).await;
    let envelope = named(&sent);
    let key = wx_api::envelope_key(
        envelope["sender"].as_u64().expect("sender"),
        envelope["seq"].as_u64().expect("seq"),
    );
    let owner = backend
        .operator_channel("wx.wallet.Wallet", 2)
        .await
        .owner_of(key)
        .expect("an owner");
    let store = backend
        .store_channel("wx.storage.WalletStore", "wallet-1")
        .await
        .owner_of(sender.uid)
        .expect("the sender's shard");
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut crowd = tokio::task::JoinSet::new();
    for (i, user) in users.clone().into_iter().enumerate() {
        let (envelope, finished) = (envelope.clone(), Arc::clone(&finished));
        crowd.spawn(async move {
            // Spread over the crashes: a few at a time.
            tokio::time::sleep(std::time::Duration::from_millis(10 * i as u64)).await;
            let got = grab_and_open(http, user, envelope).await;
            finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            got
        });
    }
    let unfinished = || users.len() - finished.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let at_first = unfinished();
    backend.kill_and_restart(&owner);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let at_second = unfinished();
    backend.kill_and_restart(&store);
    assert!(
        at_first > 0 && at_second > 0,
        "the crowd was still at it when each crash came ({at_first}, {at_second} left)"
    );
    let mut got = HashMap::new();
    while let Some(done) = crowd.join_next().await {
        let (uid, g) = done.expect("joined");
        got.insert(uid, g);
    }
    check_crowd(backend, &sender, &users, &envelope, &got, 40, 2_000).await;
}

/// With room for two waiting requests per envelope, a crowd is partly refused `busy`
/// (RESOURCE_EXHAUSTED, not processed): a refused grab reserved nothing.
pub async fn a_full_queue_refuses_busy_and_reserves_nothing(backend: &Backend) {
    let http = &backend.http;
    let (sender, users, sent) = group_envelope(backend, 30, 1_000, 100, 30).await;
    let envelope = named(&sent);
    let answers = at_once(&users, |user| {
        let (http, envelope) = (backend.http, envelope.clone());
        async move {
            http.call("envelope.grab", &envelope, Some(&user.token))
                .await
                .expect("an answer")
        }
    })
    .await;
    let (mut reserved, mut busy) = (0, 0);
    for answer in answers {
        if answer.ok() {
            reserved += 1;
        } else {
            assert_eq!(
                (answer.status, answer.code(), answer.reason()),
                (429, "resource_exhausted", "busy"),
                "{}",
                answer.body
            );
            busy += 1;
        }
    }
    assert!(busy > 0, "thirty at once overflow a queue of two");
    let seen = call(http, "envelope.get", envelope, Some(&sender.token)).await;
    assert_eq!(
        seen["taken"], reserved,
        "only the answered grabs hold shares"
    );
    audit(backend).await;
}

/// An envelope whose time is up gives what is left back to its sender, once; after it,
/// nobody grabs or opens (`expired`). The backend runs with a short time to live.
pub async fn an_expired_envelope_goes_back_to_its_sender_once(backend: &Backend) {
    let http = &backend.http;
    let sender = backend.user(&unique("sender")).await;
    let (group, users) = group_of(backend, &sender, 3).await;
    call(
        http,
        "wallet.topup",
        top_up(500, "ttl"),
        Some(&sender.token),
    )
    .await;
    // A group's refusals: a cent per share at least, no more shares than members.
    for (total, shares, reason) in [(2, 3, "amount_too_small"), (100, 5, "too_many_shares")] {
        let body =
            json!({ "group_id": group, "total": total, "shares": shares, "transfer_id": "no" });
        assert_eq!(
            reason_of(
                http,
                "envelope.send",
                body,
                &sender,
                400,
                "invalid_argument"
            )
            .await,
            reason
        );
    }
    assert_eq!(balance(http, &sender).await, 500, "no refusal moved money");
    let sent = call(
        http,
        "envelope.send",
        json!({ "group_id": group, "total": 300, "shares": 3, "transfer_id": "ttl-1" }),
        Some(&sender.token),
    )
    .await;
    let envelope = named(&sent);
    let expires_ms = sent["expires_ms"].as_u64().expect("expires_ms");
    // It reaches the group as a message (through the group's fan-out queue).
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (messages, _) = sync_all(backend, &users[2], "phone", "").await;
        let carrying = messages
            .iter()
            .filter(|m| m["group_id"] == group && m["envelope"]["seq"] == envelope["seq"])
            .count();
        assert!(carrying <= 1, "one copy: {messages:?}");
        if carrying == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the envelope never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (first, late) = (&users[0], &users[1]);
    let token = Some(first.token.as_str());
    call(http, "envelope.grab", envelope.clone(), token).await;
    let got = call(http, "envelope.open", envelope.clone(), token).await["amount"]
        .as_u64()
        .expect("an amount");
    call(http, "envelope.grab", envelope.clone(), Some(&late.token)).await;
    // Past its time the sweep closes it: the sender has back all but the opened share.
    until_balance(http, &sender, 500 - got).await;
    assert!(wx_api::now_ms() >= expires_ms, "not before its time");
    for (action, user) in [("envelope.open", late), ("envelope.grab", &users[2])] {
        assert_eq!(
            reason_of(
                http,
                action,
                envelope.clone(),
                user,
                409,
                "failed_precondition"
            )
            .await,
            "expired",
            "{action}"
        );
    }
    let seen = call(http, "envelope.get", envelope, Some(&sender.token)).await;
    assert_eq!(
        (seen["expired"].as_bool(), seen["remaining"].as_u64()),
        (Some(true), Some(0))
    );
    let history = call(http, "wallet.history", json!({}), Some(&sender.token)).await;
    let refunds = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "envelope_refund")
        .count();
    assert_eq!(refunds, 1, "given back once: {history}");
    until_balance(http, first, got).await;
    audit(backend).await;
}
