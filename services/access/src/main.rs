//! `access short` (HTTP/JSON) or `access long` (WebSocket + push), configured by the
//! SVRKIT_* environment (see `svrkit::launch`) plus these settings, each also a flag
//! (`access --help` lists them):
//!
//! - `WX_HTTP` / `WX_WS`: where the gateway listens (default `127.0.0.1:0`; printed as
//!   `http on ADDR` / `ws on ADDR`).
//! - `WX_RATE_PER_SEC`, `WX_RATE_BURST`: each user's request budget (20/s, bursts of 40).
//! - `WX_MAX_CONNECTIONS`: connections open at once (default: the open-file limit less
//!   256), `WX_MAX_CONNECTIONS_PER_ADDRESS` (256) of them from one address,
//!   `WX_MAX_CONNECTIONS_PER_USER` (8) WebSocket sessions of one user on one instance;
//!   `WX_HEADER_TIMEOUT_MS`, `WX_BODY_TIMEOUT_MS`: how long a request's headers (or
//!   an idle connection) and its body may take (10 s each); `WX_WRITE_TIMEOUT_MS`: how
//!   long a write to a client that stopped reading may wait (10 s). See `access::edge`.
//! - `WX_TLS_CERT`, `WX_TLS_KEY`: PEM files; with both, the gateway serves HTTPS / WSS
//!   with that certificate (plain HTTP without them, for local use), and serves a
//!   renewed one written over them to new connections within 10 s.
//! - `WX_PUBLIC_WS_URL` (access-long): the WebSocket URL clients are given (default
//!   `ws://` + the `WX_WS` address + `/v1/ws`), for a gateway behind a proxy.
//! - `WX_ALLOWED_HOSTS`: the gateway's public host names (comma-separated); a request
//!   naming any other `Host` than these, an IP address or `localhost` is refused (DNS
//!   rebinding). See `svrkit::admin::host`.

use std::net::SocketAddr;
use std::sync::Arc;

/// jemalloc with its background thread, which gives the pages of freed memory back to the
/// system within seconds (its dirty-page decay) whether or not the gateway's own threads
/// are busy: with glibc's malloc, and with mimalloc (which purges only on a thread that
/// allocates again), a gateway kept the memory of its busiest minute (none of 130 MB
/// returned after 15,000 WebSockets closed; figures in docs/MEASUREMENTS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use access::clients::Clients;
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
use wx_api::wallet::{WalletClient, wallet_methods};

#[derive(Parser)]
#[command(about = "The backend's access tier", version)]
struct Args {
    #[command(subcommand)]
    gateway: Kind,
    #[command(flatten)]
    settings: Settings,
}

/// The gateway's settings: each a flag or, as `svrkit up` passes them, an environment
/// variable.
#[derive(clap::Args)]
struct Settings {
    /// Where access-short listens for HTTP (printed as `http on ADDR`).
    #[arg(long, global = true, env = "WX_HTTP", default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// Where access-long listens for WebSockets (printed as `ws on ADDR`).
    #[arg(long, global = true, env = "WX_WS", default_value = "127.0.0.1:0")]
    ws: SocketAddr,
    /// Each user's sustained request rate.
    #[arg(long, global = true, env = "WX_RATE_PER_SEC", default_value_t = Limits::default().rate_per_sec)]
    rate_per_sec: f64,
    /// Each user's burst.
    #[arg(long, global = true, env = "WX_RATE_BURST", default_value_t = Limits::default().burst)]
    rate_burst: f64,
    /// Requests the gateway runs at once; beyond half of it, the least important are
    /// refused first (`overloaded`, reason `edge_shed`).
    #[arg(long, global = true, env = "WX_MAX_IN_FLIGHT", default_value_t = Limits::default().max_in_flight)]
    max_in_flight: usize,
    /// How long, in milliseconds, sign-in and messaging wait for a place at the edge when
    /// none is free, before they are refused too (0: at once; at most an action's
    /// deadline).
    #[arg(long, global = true, env = "WX_EDGE_WAIT_MS", default_value_t = access::admission::EDGE_WAIT.as_millis() as u64)]
    edge_wait_ms: u64,
    /// Connections open at once (default: the open-file limit less 256).
    #[arg(long, global = true, env = "WX_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections from one address.
    #[arg(long, global = true, env = "WX_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = EdgeLimits::default().max_per_address)]
    max_connections_per_address: usize,
    /// WebSocket sessions of one user on one instance.
    #[arg(long, global = true, env = "WX_MAX_CONNECTIONS_PER_USER", default_value_t = EdgeLimits::default().max_per_user)]
    max_connections_per_user: usize,
    /// How long a WebSocket trusts its session's last check before an action checks
    /// again, in ms (0: every action checks).
    #[arg(long, global = true, env = "WX_SESSION_RECHECK_MS", default_value_t = EdgeLimits::SESSION_RECHECK.as_millis() as u64)]
    session_recheck_ms: u64,
    /// How long a write to a client may wait without progress before the connection is
    /// closed, in ms (a client that stopped reading).
    #[arg(long, global = true, env = "WX_WRITE_TIMEOUT_MS")]
    write_timeout_ms: Option<u64>,
    /// How long a request's headers (or an idle connection) may take, in ms.
    #[arg(long, global = true, env = "WX_HEADER_TIMEOUT_MS")]
    header_timeout_ms: Option<u64>,
    /// How long a request's body may take, in ms.
    #[arg(long, global = true, env = "WX_BODY_TIMEOUT_MS")]
    body_timeout_ms: Option<u64>,
    /// PEM certificate: with `--tls-key`, HTTPS / WSS.
    #[arg(long, global = true, env = "WX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, global = true, env = "WX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// access-long: the WebSocket URL clients are given (default `ws://` + the listening
    /// address + `/v1/ws`), for a gateway behind a proxy.
    #[arg(long, global = true, env = "WX_PUBLIC_WS_URL")]
    public_ws_url: Option<String>,
    /// Host names the gateway answers to besides IP addresses and `localhost`
    /// (comma-separated; `*.example.com` for subdomains): its public names. Requests
    /// for any other `Host` are refused (DNS rebinding). The host of `WX_PUBLIC_WS_URL`
    /// is always allowed.
    #[arg(long, global = true, env = "WX_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
}

#[derive(Subcommand)]
enum Kind {
    /// access-short: HTTP/JSON.
    Short,
    /// access-long: WebSocket requests and pushes; serves wx.access.Push.
    Long,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let Args {
        gateway: kind,
        settings,
    } = Args::parse();
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
    // An envelope's requests go to the wallet instance owning it (by its key).
    let wallet = peers.by_key(wallet_methods::SERVICE_NAME).await?;
    let limits = Limits {
        rate_per_sec: settings.rate_per_sec,
        burst: settings.rate_burst,
        max_in_flight: settings.max_in_flight,
        edge_wait: std::time::Duration::from_millis(settings.edge_wait_ms)
            .min(Limits::default().timeout),
        ..Limits::default()
    };
    let gateway = Arc::new(Gateway::new(
        Clients {
            account: AccountClient::new(account),
            contact: ContactClient::new(contact),
            message: MessageClient::new(message),
            moments: MomentsClient::new(moments),
            wallet: WalletClient::new(wallet),
            push: Some(PushClient::new(peers.presence().await?)),
        },
        limits,
    ));
    let defaults = EdgeLimits::default();
    let millis = |ms: Option<u64>, default| ms.map_or(default, std::time::Duration::from_millis);
    let edge = EdgeLimits {
        max_connections: settings.max_connections.unwrap_or(defaults.max_connections),
        header_timeout: millis(settings.header_timeout_ms, defaults.header_timeout),
        body_timeout: millis(settings.body_timeout_ms, defaults.body_timeout),
        write_timeout: millis(settings.write_timeout_ms, defaults.write_timeout),
        max_per_address: settings.max_connections_per_address,
        max_per_user: settings.max_connections_per_user,
        session_recheck: std::time::Duration::from_millis(settings.session_recheck_ms),
        allowed_hosts: svrkit::admin::host::AllowedHosts::new(
            settings
                .allowed_hosts
                .iter()
                .map(String::as_str)
                .chain([svrkit::tls::CLUSTER_SERVER_NAME])
                .chain(settings.public_ws_url.as_deref().and_then(url_host)),
        ),
    };
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))
            };
            let tls = access::edge::EdgeTls::from_pem(&read(cert)?, &read(key)?)
                .map_err(|e| anyhow::anyhow!("WX_TLS_CERT={}: {e}", cert.display()))?;
            // A renewed certificate is served to new connections without a restart.
            tls.slot().watch_files(
                cert.clone(),
                key.clone(),
                svrkit::tls::reload::DEFAULT_RELOAD_PERIOD,
            );
            Some(tls)
        }
        _ => None,
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
            let listener = tokio::net::TcpListener::bind(settings.http).await?;
            println!("http on {}", listener.local_addr()?);
            let http = tokio::spawn(access::http::serve(listener, gateway, edge, tls, wait()));
            launch.serve_until(Server::builder(), wait()).await?;
            http.await??;
        }
        Kind::Long => {
            let me = launch.bind().await?;
            let presence = peers.presence().await?;
            let instances_changed = presence.subscribe_targets();
            let hub = Hub::new(me, presence);
            tokio::spawn(Arc::clone(&hub).reannounce_forever(instances_changed));
            let listener = tokio::net::TcpListener::bind(settings.ws).await?;
            let ws_addr = listener.local_addr()?;
            println!("ws on {ws_addr}");
            // What clients are told to open: the listening address unless a proxy in
            // front of the gateway says otherwise.
            let websocket_url = settings.public_ws_url.map_or_else(
                // A wildcard listener is told as the advertised address.
                || {
                    launch
                        .advertised(ws_addr)
                        .map(|a| format!("{scheme}://{a}/v1/ws"))
                },
                Ok,
            )?;
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

/// The host of a URL such as `wss://chat.example.com:443/v1/ws`.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (!host.is_empty()).then_some(host)
}
