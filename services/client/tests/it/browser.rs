//! The web client in a real headless Chromium against the real backend: two people
//! register, befriend each other, chat (the second sees the first's message arrive
//! without reloading, and the history survives a reload) and meet in Moments. Errors
//! from the API show next to what caused them. Screenshots go to docs/screenshots/.

use crate::harness::{self, Backend, Registry};
use svrkit_testkit::browser::{
    Browser, Client, click, screenshot, type_into, wait_for, wait_for_text,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Registers `name` through the page and waits until the app shows them signed in.
async fn register(page: &Client, name: &str, nickname: &str) {
    type_into(page, "#register-name", name).await;
    type_into(page, "#register-nickname", nickname).await;
    type_into(page, "#register-password", "correct horse battery").await;
    click(page, "#register-form button[type=submit]").await;
    wait_for_text(page, "#whoami", nickname).await;
}

/// The response head of `GET path` from access-short.
async fn head_of(backend: &Backend, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(backend.http.addr())
        .await
        .expect("access-short accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer).to_string();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_befriend_chat_and_meet_in_moments_in_a_real_browser() {
    let Some(mut browser) = Browser::start("web client").await else {
        return;
    };
    // Every sign-in from a browser without a device credential solves a puzzle first.
    // The stores are replicated, as `svrkit up` runs them.
    let backend = Backend::start_with(
        Registry::Embedded,
        &[
            ("SVRKIT_ADMIN", "127.0.0.1:0"),
            ("WX_LOGIN_POW", "always"),
            ("SVRKIT_REPLICAS", "3"),
        ],
    )
    .await;
    let url = format!("http://{}/", backend.http.addr());

    // The page and its scripts come with a policy that allows no inline script, and the
    // API tells no other origin it may read it.
    let page_head = head_of(&backend, "/").await;
    assert!(
        page_head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{page_head}"
    );
    assert!(page_head.contains("x-frame-options: deny"), "{page_head}");
    assert!(
        !head_of(&backend, "/v1/login")
            .await
            .contains("access-control-allow-origin")
    );

    let alice_name = harness::unique("alice");
    let bob_name = harness::unique("bob");
    let alice = browser.session(1200, 820).await;
    // Bob uses a phone-sized window.
    let bob = browser.session(390, 844).await;
    alice.goto(&url).await.expect("alice opens the page");
    bob.goto(&url).await.expect("bob opens the page");

    // An error from the API shows next to the form that caused it.
    type_into(&bob, "#login-name", &bob_name).await;
    type_into(&bob, "#login-password", "whatever it is").await;
    click(&bob, "#login-form button[type=submit]").await;
    wait_for_text(&bob, "#login-error", "No such user").await;

    register(&alice, &alice_name, "Alice").await;
    register(&bob, &bob_name, "Bob").await;
    // Both hold a live connection.
    wait_for_text(&alice, "#live", "live").await;
    wait_for_text(&bob, "#live", "live").await;

    // Alice finds Bob by name and asks.
    click(&alice, "#tabs button[data-tab=contacts]").await;
    type_into(&alice, "#search-name", "no_such_person_here").await;
    click(&alice, "#search-form button[type=submit]").await;
    wait_for_text(&alice, "#search-error", "No such user").await;
    type_into(&alice, "#search-name", &bob_name).await;
    click(&alice, "#search-form button[type=submit]").await;
    type_into(&alice, "#greeting", "It's Alice from the lake").await;
    click(&alice, "#search-result .add-friend").await;
    wait_for_text(&alice, "#search-result", "Request sent").await;

    // Bob is told at once (a push, no reload) and accepts.
    wait_for_text(&bob, "#badge-contacts", "1").await;
    click(&bob, "#tabs button[data-tab=contacts]").await;
    wait_for_text(&bob, "#requests", "It's Alice from the lake").await;
    click(&bob, "#requests .accept").await;
    wait_for_text(&bob, "#friends", "Alice").await;

    // Alice sees the new friend appear, opens the chat and writes.
    wait_for_text(&alice, "#friends", "Bob").await;
    click(&alice, "#friends .chat").await;
    type_into(&alice, "#compose-text", "Hello Bob! Lunch at noon?").await;
    click(&alice, "#compose-form button[type=submit]").await;
    wait_for_text(&alice, "#messages", "Hello Bob! Lunch at noon?").await;

    // Bob, still on Contacts, sees an unread message arrive without reloading.
    wait_for_text(&bob, "#badge-chats", "1").await;
    click(&bob, "#tabs button[data-tab=chats]").await;
    wait_for_text(&bob, "#chat-list .unread", "1").await;
    click(&bob, "#chat-list li").await;
    wait_for_text(&bob, "#messages", "Hello Bob! Lunch at noon?").await;
    type_into(&bob, "#compose-text", "Noon works. See you there").await;
    click(&bob, "#compose-form button[type=submit]").await;
    wait_for_text(&alice, "#messages", "Noon works. See you there").await;

    // A group: Alice makes one with Bob and writes; Bob sees it appear and reads it.
    click(&alice, "#new-group summary").await;
    type_into(&alice, "#group-name", "Lunch crew").await;
    click(&alice, "#group-members input[type=checkbox]").await;
    click(&alice, "#group-form button[type=submit]").await;
    wait_for_text(&alice, "#conversation-title", "Lunch crew").await;
    type_into(&alice, "#compose-text", "Table for two at noon").await;
    click(&alice, "#compose-form button[type=submit]").await;
    wait_for_text(&alice, "#messages", "Table for two at noon").await;
    wait_for_text(&bob, "#chat-list", "Lunch crew").await;
    click(&bob, "#chat-list li[data-chat^=\"g:\"]").await;
    wait_for_text(&bob, "#messages", "Table for two at noon").await;
    wait_for_text(&bob, "#conversation-title", "Alice").await;
    click(&alice, "#chat-list li[data-chat^=\"u:\"]").await;
    wait_for_text(&alice, "#messages", "Noon works. See you there").await;
    screenshot(&alice, "web-chat").await;

    // The history survives a reload, and a read chat stays read.
    bob.refresh().await.expect("bob reloads");
    wait_for_text(&bob, "#whoami", "Bob").await;
    click(&bob, "#chat-list li[data-chat^=\"u:\"]").await;
    wait_for_text(&bob, "#messages", "Hello Bob! Lunch at noon?").await;
    wait_for_text(&bob, "#messages", "Noon works. See you there").await;
    click(&bob, "#chat-list li[data-chat^=\"g:\"]").await;
    wait_for_text(&bob, "#messages", "Table for two at noon").await;
    assert!(
        bob.find(svrkit_testkit::browser::Locator::Css("#chat-list .unread"))
            .await
            .is_err(),
        "a chat read before the reload shows no unread count after it"
    );

    // Red envelopes: Alice adds test money and sends Bob one in their chat; Bob opens
    // it, sees what he got and who took it, and finds it in his wallet.
    click(&alice, "#tabs button[data-tab=wallet]").await;
    click(&alice, "#wallet-topup").await;
    wait_for_text(&alice, "#wallet-balance", "¥100.00").await;
    click(&alice, "#tabs button[data-tab=chats]").await;
    click(&alice, "#chat-list li[data-chat^=\"u:\"]").await;
    click(&alice, "#envelope-compose summary").await;
    type_into(&alice, "#envelope-amount", "8.88").await;
    type_into(&alice, "#envelope-greeting", "Lunch is on me").await;
    click(&alice, "#envelope-form button[type=submit]").await;
    wait_for_text(&alice, "#messages .envelope", "Lunch is on me").await;
    click(&bob, "#chat-list li[data-chat^=\"u:\"]").await;
    wait_for_text(&bob, "#messages .envelope", "¥8.88 in 1 share").await;
    click(&bob, "#messages .envelope .envelope-open").await;
    wait_for_text(
        &bob,
        "#messages .envelope .envelope-result",
        "You got ¥8.88",
    )
    .await;
    wait_for_text(&bob, "#messages .envelope .takers", "Bob").await;
    screenshot(&bob, "web-envelope-phone").await;
    click(&bob, "#tabs button[data-tab=wallet]").await;
    wait_for_text(&bob, "#wallet-balance", "¥8.88").await;
    wait_for_text(&bob, "#wallet-history", "Red envelope opened").await;
    click(&alice, "#tabs button[data-tab=wallet]").await;
    wait_for_text(&alice, "#wallet-balance", "¥91.12").await;
    wait_for_text(&alice, "#wallet-history", "Red envelope sent").await;
    screenshot(&alice, "web-wallet").await;

    // Alice posts to Moments; Bob sees it on his timeline, likes it and comments.
    click(&alice, "#tabs button[data-tab=moments]").await;
    type_into(&alice, "#post-text", "First light over the lake").await;
    click(&alice, "#post-form button[type=submit]").await;
    wait_for_text(&alice, "#feed", "First light over the lake").await;
    click(&bob, "#tabs button[data-tab=moments]").await;
    wait_for_text(&bob, "#feed .post", "First light over the lake").await;
    click(&bob, "#feed .post .like").await;
    wait_for_text(&bob, "#feed .post .likes", "Bob").await;
    type_into(&bob, "#feed .post .comment-text", "Beautiful! Was it cold?").await;
    click(&bob, "#feed .post .comment-form button[type=submit]").await;
    wait_for_text(&bob, "#feed .post .comments", "Beautiful! Was it cold?").await;
    screenshot(&bob, "web-moments-phone").await;

    // Alice sees the like and the comment on her post.
    click(&alice, "#feed-mine").await;
    wait_for_text(&alice, "#feed .post .comments", "Beautiful! Was it cold?").await;
    wait_for_text(&alice, "#feed .post .likes", "Bob").await;
    screenshot(&alice, "web-moments").await;

    // Logging out ends the session: the page returns to the sign-in forms.
    click(&alice, "#logout").await;
    wait_for(&alice, "#login-form").await;

    // The operator's view of the same cluster: every process of the backend, ready.
    let processes = backend.admin_endpoints().len();
    let mut console = std::process::Command::new(svrkit_testkit::workspace_binary("svrkit"))
        .args([
            "console",
            "--registry",
            &backend.registry,
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("svrkit console starts");
    let stdout = console.stdout.take().expect("stdout");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("the console says where it listens");
    let console_url = first
        .trim()
        .strip_prefix("console on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    alice.goto(&console_url).await.expect("open the console");
    let all_ready = format!("{processes}\nready");
    wait_for_text(&alice, "#totals", &all_ready).await;
    wait_for_text(&alice, "#totals", &format!("{processes}\ninstances")).await;
    for service in [
        "wx.account.Account",
        "wx.storage.MomentsStore",
        "wx.access.Push",
        "wx.access.Short",
    ] {
        wait_for_text(&alice, &format!("tr[data-service=\"{service}\"]"), "ready").await;
    }
    // Rates need a second poll.
    wait_for_text(
        &alice,
        "tr[data-instance=\"account-1\"] td:nth-child(4)",
        ".",
    )
    .await;
    // Every replicated shard has a leader, shown with its replicas' roles.
    for (store, instances) in [
        ("wx.storage.AccountStore", "accountstore-"),
        ("wx.storage.MsgStore", "msgstore-"),
    ] {
        for shard in 1..=3 {
            let row = format!("#shards tr[data-service=\"{store}\"][data-shard=\"{shard}\"]");
            wait_for_text(&alice, &format!("{row} td:nth-child(3)"), instances).await;
            wait_for_text(&alice, &format!("{row} td:nth-child(5)"), "follower").await;
        }
    }
    screenshot(&alice, "console-backend").await;
    alice
        .execute(
            "document.getElementById('shards-section').scrollIntoView()",
            Vec::new(),
        )
        .await
        .expect("scrolled to the shards");
    screenshot(&alice, "console-shards").await;
    let _ = console.kill();
    let _ = console.wait();

    alice.close().await.expect("alice's browser closes");
    bob.close().await.expect("bob's browser closes");
}
