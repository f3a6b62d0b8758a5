//! `access short` (HTTP/JSON) or `access long` (WebSocket + push), configured by the
//! SVRKIT_* environment (see `svrkit::launch`) plus:
//!
//! - `WX_HTTP` / `WX_WS`: where the gateway listens (default `127.0.0.1:0`; printed as
//!   `http on ADDR` / `ws on ADDR`).
//! - `WX_RATE_PER_SEC`, `WX_RATE_BURST`: each user's request budget (20/s, bursts of 40).
//! - `WX_MAX_CONNECTIONS`: connections open at once (default: the open-file limit less
//!   256), `WX_MAX_CONNECTIONS_PER_ADDRESS` (256) of them from one address,
//!   `WX_MAX_CONNECTIONS_PER_USER` (8) WebSocket sessions of one user on one instance;
//!   `WX_HEADER_TIMEOUT_MS`, `WX_BODY_TIMEOUT_MS`: how long a request's headers (or
//!   an idle connection) and its body may take (10 s each). See `access::edge`.
//! - `WX_TLS_CERT`, `WX_TLS_KEY`: PEM files; with both, the gateway serves HTTPS / WSS
//!   with that certificate (plain HTTP without them, for local use).
//! - `WX_PUBLIC_WS_URL` (access-long): the WebSocket URL clients are given (default
//!   `ws://` + the `WX_WS` address + `/v1/ws`), for a gateway behind a proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use access::edge::EdgeLimits;
use access::push::{Hub, PushService};
use access::{Gateway, Limits};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::access::push_server::PushServer;
use wx_api::access::{PushClient, push_methods};
use wx_api::account::{AccountClient, account_methods};
use wx_api::contact::{ContactClient, contact_methods};
use wx_api::message::{MessageClient, message_methods};
use wx_api::moments::{MomentsClient, moments_methods};

#[derive(Parser)]
#[command(about = "The backend's access tier", version)]
struct Args {
    #[command(subcommand)]
    gateway: Kind,
}

#[derive(Subcommand)]
enum Kind {
    /// access-short: HTTP/JSON.
    Short,
    /// access-long: WebSocket requests and pushes; serves wx.access.Push.
    Long,
}

fn env_addr(name: &str) -> anyhow::Result<SocketAddr> {
    let value = std::env::var(name).unwrap_or_else(|_| "127.0.0.1:0".into());
    value.parse().with_context(|| format!("{name}={value:?}"))
}

fn env_f64(name: &str, default: f64) -> anyhow::Result<f64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let kind = Args::parse().gateway;
    let service = match kind {
        Kind::Short => "wx.access.Short",
        Kind::Long => push_methods::SERVICE_NAME,
    };
    let mut launch = Launch::from_env(service)?;
    let peers = wx_api::Peers::of(&launch)?;
    let account = peers.balanced(account_methods::SERVICE_NAME).await?;
    let contact = peers.balanced(contact_methods::SERVICE_NAME).await?;
    let message = peers.balanced(message_methods::SERVICE_NAME).await?;
    let moments = peers.balanced(moments_methods::SERVICE_NAME).await?;
    let limits = Limits {
        rate_per_sec: env_f64("WX_RATE_PER_SEC", Limits::default().rate_per_sec)?,
        burst: env_f64("WX_RATE_BURST", Limits::default().burst)?,
        ..Limits::default()
    };
    let gateway = Arc::new(Gateway::new(
        AccountClient::new(account),
        ContactClient::new(contact),
        MessageClient::new(message),
        MomentsClient::new(moments),
        Some(PushClient::new(peers.presence().await?)),
        limits,
    ));
    let defaults = EdgeLimits::default();
    let millis =
        |name: &str, default: std::time::Duration| -> anyhow::Result<std::time::Duration> {
            Ok(match std::env::var(name) {
                Ok(ms) => std::time::Duration::from_millis(ms.parse().context(name.to_string())?),
                Err(_) => default,
            })
        };
    let edge = EdgeLimits {
        max_connections: match std::env::var("WX_MAX_CONNECTIONS") {
            Ok(n) => n.parse().context("WX_MAX_CONNECTIONS")?,
            Err(_) => defaults.max_connections,
        },
        header_timeout: millis("WX_HEADER_TIMEOUT_MS", defaults.header_timeout)?,
        body_timeout: millis("WX_BODY_TIMEOUT_MS", defaults.body_timeout)?,
        max_per_address: match std::env::var("WX_MAX_CONNECTIONS_PER_ADDRESS") {
            Ok(n) => n.parse().context("WX_MAX_CONNECTIONS_PER_ADDRESS")?,
            Err(_) => defaults.max_per_address,
        },
        max_per_user: match std::env::var("WX_MAX_CONNECTIONS_PER_USER") {
            Ok(n) => n.parse().context("WX_MAX_CONNECTIONS_PER_USER")?,
            Err(_) => defaults.max_per_user,
        },
    };
    let tls = match (std::env::var("WX_TLS_CERT"), std::env::var("WX_TLS_KEY")) {
        (Ok(cert), Ok(key)) => {
            let read = |p: &str| std::fs::read(p).with_context(|| format!("reading {p}"));
            Some(
                access::edge::EdgeTls::from_pem(&read(&cert)?, &read(&key)?)
                    .map_err(|e| anyhow::anyhow!("WX_TLS_CERT={cert:?}: {e}"))?,
            )
        }
        (Err(_), Err(_)) => None,
        _ => anyhow::bail!("HTTPS needs both WX_TLS_CERT and WX_TLS_KEY"),
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        svrkit::launch::shutdown_signal().await;
        let _ = stop.send(true);
    });
    match kind {
        Kind::Short => {
            let listener = tokio::net::TcpListener::bind(env_addr("WX_HTTP")?).await?;
            println!("http on {}", listener.local_addr()?);
            let http = tokio::spawn(access::http::serve(listener, gateway, edge, tls, wait()));
            launch.serve_until(Server::builder(), wait()).await?;
            http.await??;
        }
        Kind::Long => {
            let me = launch.bind().await?;
            let presence = peers.presence().await?;
            let instances_changed = presence.subscribe_targets();
            let hub = Hub::new(me, PushClient::new(presence));
            tokio::spawn(Arc::clone(&hub).reannounce_forever(instances_changed));
            let listener = tokio::net::TcpListener::bind(env_addr("WX_WS")?).await?;
            let ws_addr = listener.local_addr()?;
            println!("ws on {ws_addr}");
            // What clients are told to open: the listening address unless a proxy in
            // front of the gateway says otherwise.
            let websocket_url = std::env::var("WX_PUBLIC_WS_URL")
                .unwrap_or_else(|_| format!("{scheme}://{ws_addr}/v1/ws"));
            let ws = tokio::spawn(access::ws::serve(
                listener,
                gateway,
                Arc::clone(&hub),
                edge,
                tls,
                wait(),
            ));
            let server = Server::builder()
                .add_service(PushServer::new(PushService::new(hub, websocket_url)));
            launch.serve_until(server, wait()).await?;
            ws.await??;
        }
    }
    Ok(())
}
