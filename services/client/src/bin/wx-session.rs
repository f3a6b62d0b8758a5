//! `wx-session`: a scripted session through the access tier — two users register, sign
//! in, befriend each other and read profiles — printing what happens.
//!
//! `wx-session --state-dir .svrkit` finds the gateways in a `svrkit up` deployment;
//! `--http ADDR [--ws ADDR]` names them directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use wx_client::{Answer, Http, Ws};

struct Args {
    http: Option<SocketAddr>,
    ws: Option<SocketAddr>,
    state_dir: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        http: None,
        ws: None,
        state_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--http" => args.http = Some(value.parse().context("--http")?),
            "--ws" => args.ws = Some(value.parse().context("--ws")?),
            "--state-dir" => args.state_dir = Some(value.into()),
            other => bail!("unknown flag {other}; use --http ADDR [--ws ADDR] or --state-dir DIR"),
        }
    }
    Ok(args)
}

/// The first `name` endpoint any instance of the deployment in `dir` announced.
fn endpoint(dir: &std::path::Path, name: &str) -> anyhow::Result<Option<SocketAddr>> {
    let path = dir.join("state.json");
    let state: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["endpoints"][name].as_str())
        .find_map(|a| a.parse().ok()))
}

fn expect(step: &str, answer: Answer) -> anyhow::Result<Value> {
    if !answer.ok() {
        bail!("{step} failed ({}): {}", answer.status, answer.body);
    }
    Ok(answer.body)
}

fn show(profile: &Value) -> String {
    let field = |k: &str| {
        let hidden = profile["hidden"]
            .as_array()
            .is_some_and(|h| h.iter().any(|f| f == k));
        if hidden {
            "(private)".to_string()
        } else {
            format!("{:?}", profile[k].as_str().unwrap_or_default())
        }
    };
    format!(
        "{} ({}) region {} signature {}",
        profile["nickname"].as_str().unwrap_or_default(),
        profile["name"].as_str().unwrap_or_default(),
        field("region"),
        field("signature")
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let (http, ws) = match (&args.state_dir, args.http) {
        (_, Some(http)) => (http, args.ws),
        (Some(dir), None) => (
            endpoint(dir, "http")?
                .ok_or_else(|| anyhow!("no access-short in {}", dir.display()))?,
            endpoint(dir, "ws")?,
        ),
        (None, None) => bail!("use --http ADDR [--ws ADDR] or --state-dir DIR"),
    };
    let api = Http::new(http);
    // Fresh names every run: the backend keeps its users across runs.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let suffix = format!("{:06x}", (nanos ^ std::process::id()) & 0xff_ffff);
    let (alice, bob, carol) = (
        format!("alice_{suffix}"),
        format!("bob_{suffix}"),
        format!("carol_{suffix}"),
    );
    println!("scripted session through access-short http://{http}");

    let mut uids = Vec::new();
    let mut tokens = Vec::new();
    for (name, nickname) in [(&alice, "Alice"), (&bob, "Bob"), (&carol, "Carol")] {
        let body =
            json!({ "name": name, "password": "correct horse battery", "nickname": nickname });
        let reply = expect("register", api.call("register", &body, None).await?)?;
        let login = json!({ "name": name, "password": "correct horse battery" });
        let session = expect("login", api.call("login", &login, None).await?)?;
        println!("  register + login {name:<12} uid {}", reply["uid"]);
        uids.push(reply["uid"].as_u64().unwrap_or_default());
        tokens.push(session["token"].as_str().unwrap_or_default().to_string());
    }
    let (a, b) = (uids[0], uids[1]);
    let (ta, tb) = (tokens[0].as_str(), tokens[1].as_str());
    let (c, tc) = (uids[2], tokens[2].as_str());

    let wrong = api
        .call(
            "login",
            &json!({ "name": alice, "password": "not the password" }),
            None,
        )
        .await?;
    println!(
        "  login with a wrong password: {} {}",
        wrong.status,
        wrong.reason()
    );

    let update = json!({ "region": "Shenzhen", "signature": "hello from svrkit", "private_fields": ["region"] });
    expect(
        "profile.update",
        api.call("profile.update", &update, Some(ta)).await?,
    )?;
    println!("  {alice} sets region Shenzhen (private) and a public signature");

    let stranger = expect(
        "profile.get",
        api.call("profile.get", &json!({ "uid": a }), Some(tb))
            .await?,
    )?;
    println!(
        "  {bob} (a stranger) reads {alice}: {}",
        show(&stranger["profile"])
    );
    let denied = api
        .call("friends.list", &json!({ "uid": a }), Some(tb))
        .await?;
    println!(
        "  {bob} asks for {alice}'s friends list: {} {}",
        denied.status,
        denied.code()
    );

    let mut bob_ws = match ws {
        Some(addr) => match Ws::connect(addr, tb).await? {
            Ok(ws) => {
                println!("  {bob} opens a long connection to access-long ws://{addr}");
                Some(ws)
            }
            Err(refused) => bail!("access-long refused the token: {refused}"),
        },
        None => None,
    };

    let request = json!({ "peer": b, "greeting": "hi, it's Alice" });
    let sent = expect(
        "friends.request",
        api.call("friends.request", &request, Some(ta)).await?,
    )?;
    println!("  {alice} asks {bob} to be friends: {}", sent["relation"]);
    if let Some(ws) = bob_ws.as_mut() {
        match ws.push(Duration::from_secs(5)).await {
            Ok(push) => println!("  {bob} is pushed: {} {}", push["push"], push["body"]),
            Err(e) => println!("  {bob} got no push: {e}"),
        }
    }
    let accepted = match bob_ws.as_mut() {
        Some(ws) => {
            let answer = ws.call("friends.accept", json!({ "peer": a })).await?;
            if answer["ok"] != true {
                bail!("friends.accept failed: {answer}");
            }
            answer["result"].clone()
        }
        None => expect(
            "friends.accept",
            api.call("friends.accept", &json!({ "peer": a }), Some(tb))
                .await?,
        )?,
    };
    println!("  {bob} accepts: {}", accepted["relation"]);

    let friend = expect(
        "profile.get",
        api.call("profile.get", &json!({ "uid": a }), Some(tb))
            .await?,
    )?;
    println!(
        "  {bob} (now a friend) reads {alice}: {}",
        show(&friend["profile"])
    );
    for (name, token) in [(&alice, ta), (&bob, tb)] {
        let list = expect(
            "friends.list",
            api.call("friends.list", &json!({}), Some(token)).await?,
        )?;
        let names: Vec<String> = list["friends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| show(&f["profile"]))
            .collect();
        println!("  {name}'s friends: {}", names.join("; "));
    }

    // Messaging: push, then sync with the SyncKey.
    let first = expect(
        "sync",
        api.call("sync", &json!({ "device": "phone" }), Some(tb))
            .await?,
    )?;
    let mut bob_key = first["sync_key"].as_str().unwrap_or_default().to_string();
    let hello = json!({ "to": b, "text": "Hi Bob! Lunch?", "client_msg_id": "lunch-1" });
    let sent = expect(
        "message.send",
        api.call("message.send", &hello, Some(ta)).await?,
    )?;
    println!(
        "  {alice} writes to {bob}: message {} stored",
        sent["msg_id"]
    );
    if let Some(ws) = bob_ws.as_mut() {
        match ws.push(Duration::from_secs(5)).await {
            Ok(push) => println!("  {bob} is pushed: {}", push["push"]),
            Err(e) => println!("  {bob} got no push: {e}"),
        }
        let answer = ws
            .call("sync", json!({ "sync_key": bob_key, "device": "phone" }))
            .await?;
        if answer["ok"] != true {
            bail!("sync failed: {answer}");
        }
        for m in answer["result"]["messages"]
            .as_array()
            .into_iter()
            .flatten()
        {
            println!(
                "  {bob} syncs over the long connection: seq {} {:?}",
                m["seq"],
                m["text"].as_str().unwrap_or_default()
            );
        }
        bob_key = answer["result"]["sync_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    drop(bob_ws);
    println!("  {bob} goes offline");
    for (i, text) in ["Are you there?", "I'll be at the usual place."]
        .iter()
        .enumerate()
    {
        let body = json!({ "to": b, "text": text, "client_msg_id": format!("lunch-{}", i + 2) });
        expect(
            "message.send",
            api.call("message.send", &body, Some(ta)).await?,
        )?;
        println!("  {alice} writes: {text:?}");
    }
    let caught = expect(
        "sync",
        api.call(
            "sync",
            &json!({ "sync_key": bob_key, "device": "phone" }),
            Some(tb),
        )
        .await?,
    )?;
    let missed: Vec<String> = caught["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "seq {} {:?}",
                m["seq"],
                m["text"].as_str().unwrap_or_default()
            )
        })
        .collect();
    println!(
        "  {bob} reconnects and syncs from his old key: {} message(s): {}",
        missed.len(),
        missed.join("; ")
    );

    // A group with a third user: one message, in all three mailboxes.
    expect(
        "friends.request",
        api.call("friends.request", &json!({ "peer": c }), Some(ta))
            .await?,
    )?;
    expect(
        "friends.accept",
        api.call("friends.accept", &json!({ "peer": a }), Some(tc))
            .await?,
    )?;
    let created = expect(
        "group.create",
        api.call(
            "group.create",
            &json!({ "name": "lunch crew", "members": [b, c] }),
            Some(ta),
        )
        .await?,
    )?;
    let group = created["group"]["group_id"].as_u64().unwrap_or_default();
    println!("  {alice} creates group {group} \"lunch crew\" with {bob} and {carol}");
    let body =
        json!({ "group_id": group, "text": "Table for three at noon", "client_msg_id": "crew-1" });
    expect("group.send", api.call("group.send", &body, Some(ta)).await?)?;
    println!("  {alice} writes to the group: \"Table for three at noon\"");
    for (name, token) in [(&alice, ta), (&bob, tb), (&carol, tc)] {
        // The fan-out is asynchronous (durable, acknowledged before delivery): poll briefly.
        let mut got = 0;
        for _ in 0..50 {
            let reply = expect(
                "sync",
                api.call("sync", &json!({ "device": "group-check" }), Some(token))
                    .await?,
            )?;
            got = reply["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["group_id"] == group)
                .count();
            if got > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("  {name} has {got} message(s) from the group");
    }

    // Moments: Carol is Alice's friend but not Bob's.
    let posted = expect(
        "moments.post",
        api.call(
            "moments.post",
            &json!({ "text": "Dim sum at noon was great", "media": ["photo-dimsum-1"] }),
            Some(ta),
        )
        .await?,
    )?;
    let post = json!({ "author": posted["author"], "seq": posted["seq"] });
    println!("  {alice} posts to Moments: \"Dim sum at noon was great\" (1 photo)");
    let with_text = |text: &str| {
        let mut body = post.clone();
        body["text"] = json!(text);
        body
    };
    expect(
        "moments.comment",
        api.call("moments.comment", &with_text("Looks delicious"), Some(tb))
            .await?,
    )?;
    expect(
        "moments.comment",
        api.call(
            "moments.comment",
            &with_text("Next time, all of us"),
            Some(ta),
        )
        .await?,
    )?;
    expect(
        "moments.like",
        api.call("moments.like", &post, Some(tb)).await?,
    )?;
    println!("  {bob} comments and likes it; {alice} answers in a comment");
    // The timeline fan-out is asynchronous (durable, after the answer): poll briefly.
    let mut seen = Value::Null;
    for _ in 0..50 {
        let page = expect(
            "moments.timeline",
            api.call("moments.timeline", &json!({ "limit": 5 }), Some(tc))
                .await?,
        )?;
        if let Some(p) = page["posts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["author"] == posted["author"] && p["seq"] == posted["seq"])
        {
            seen = p.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = |v: &Value, key: &str, field: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x[field].to_string().trim_matches('"').to_string())
            .collect()
    };
    println!(
        "  {carol}'s timeline shows it with comments {:?} and {} like(s): Bob's are not hers to see",
        listed(&seen, "comments", "text"),
        listed(&seen, "likes", "from").len()
    );
    let own = expect(
        "moments.get",
        api.call("moments.get", &post, Some(ta)).await?,
    )?;
    println!(
        "  {alice} sees comments {:?} and likes from {:?}",
        listed(&own["post"], "comments", "text"),
        listed(&own["post"], "likes", "from")
    );
    expect(
        "moments.delete",
        api.call("moments.delete", &post, Some(ta)).await?,
    )?;
    for (name, token) in [(&bob, tb), (&carol, tc)] {
        let gone = api.call("moments.get", &post, Some(token)).await?;
        println!(
            "  {alice} deletes the post; {name} now gets {} {}",
            gone.status,
            gone.reason()
        );
    }

    expect("logout", api.call("logout", &json!({}), Some(ta)).await?)?;
    let after = api.call("friends.list", &json!({}), Some(ta)).await?;
    println!(
        "  {alice} logs out; her old token now gets {} {}",
        after.status,
        after.reason()
    );
    println!("session complete");
    Ok(())
}
