//! The gateways' HTTP/1.1 edge, with the bounds one abusive client must not get past:
//!
//! - **Connections**: at most [`EdgeLimits::max_connections`] at once (by default a little
//!   under the process's open-file limit, so the registry heartbeat, the admin endpoint
//!   and the RPC clients always find a descriptor); a connection past it is closed at once
//!   and counted (`wx_access_connections_refused_total`).
//! - **Per address**: at most [`EdgeLimits::max_per_address`] of them from one client
//!   address, so one client cannot take every connection.
//! - **Headers and idleness**: a request's headers must arrive within
//!   [`EdgeLimits::header_timeout`] of the connection starting to wait for them — which
//!   also closes a kept-alive connection idle that long (slowloris, idle floods).
//! - **Bodies**: read by the handlers within [`EdgeLimits::body_timeout`] (a
//!   `Content-Length` larger than what is sent, or a chunked body that never ends, gets
//!   408 and the connection is closed).
//!
//! WebSockets upgraded here leave these bounds for their own (see [`crate::ws`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use svrkit::admin::host::{AllowedHosts, check_host};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Bounds of one gateway's edge.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (or stay idle).
    pub header_timeout: Duration,
    /// How long a handler waits for a request's body.
    pub body_timeout: Duration,
    /// How long a write to a client may wait without progress before the connection is
    /// closed (a client that stopped reading; see [`crate::write_timeout`]).
    pub write_timeout: Duration,
    /// Connections one client address may hold open at once (before upgrades).
    pub max_per_address: usize,
    /// WebSocket sessions one user may hold on one access-long instance.
    pub max_per_user: usize,
    /// How long a WebSocket trusts its session's last check before an action asks the
    /// account service again: a revoked session (logout, password change) stops acting
    /// within this even when the push that closes its connections is lost.
    pub session_recheck: Duration,
    /// The host names the gateway answers to besides IP addresses and `localhost` (see
    /// [`svrkit::admin::host`]): its public names, against DNS rebinding. By default the
    /// cluster certificate's name (`[tls] edge = true`).
    pub allowed_hosts: AllowedHosts,
}

impl EdgeLimits {
    /// Live WebSocket sessions one user may hold on one instance, unless
    /// [`EdgeLimits::max_per_user`] says otherwise.
    pub const MAX_PER_USER: usize = 8;
    /// The largest request body (HTTP) or message (WebSocket) accepted.
    pub const MAX_BODY: usize = 64 * 1024;
    /// How long a session's check is trusted on a WebSocket, unless
    /// [`EdgeLimits::session_recheck`] says otherwise.
    pub const SESSION_RECHECK: Duration = Duration::from_secs(1);
}

impl Default for EdgeLimits {
    fn default() -> EdgeLimits {
        EdgeLimits {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_per_address: 256,
            max_per_user: EdgeLimits::MAX_PER_USER,
            session_recheck: EdgeLimits::SESSION_RECHECK,
            allowed_hosts: AllowedHosts::new([svrkit::tls::CLUSTER_SERVER_NAME]),
        }
    }
}

/// Descriptors kept back from connections for everything else the process does.
const RESERVED_FDS: u64 = 256;

/// The soft open-file limit less [`RESERVED_FDS`] (1,024 less that when unknown).
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(1_024);
    usize::try_from(soft.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX)
}

/// One open connection counted against its address; uncounted when dropped.
struct PerAddress {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerAddress {
    /// Counts a connection from `ip`, unless `ip` holds `max` already.
    fn enter(
        counts: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<PerAddress> {
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerAddress {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Why the edge's certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EdgeTlsError {
    /// The PEM files hold no usable certificate chain or key.
    #[error(transparent)]
    Pem(#[from] svrkit::tls::TlsError),
    /// rustls refused the certificate, the key or the protocol versions.
    #[error(transparent)]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

/// The edge's TLS: HTTPS and WSS with this certificate (replaceable while serving: see
/// [`EdgeTls::slot`]).
#[derive(Clone)]
pub struct EdgeTls(tokio_rustls::TlsAcceptor, Arc<svrkit::tls::CertSlot>);

impl std::fmt::Debug for EdgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeTls")
    }
}

impl EdgeTls {
    /// From PEM: the certificate chain clients see and its private key (TLS 1.3 and 1.2,
    /// HTTP/1.1; no client certificates).
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<EdgeTls, EdgeTlsError> {
        use tokio_rustls::rustls;
        let slot = Arc::new(svrkit::tls::CertSlot::from_pem(cert, key)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&slot) as Arc<dyn rustls::server::ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(EdgeTls(
            tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            slot,
        ))
    }

    /// The certificate new connections get: replace it (or have it follow renewed files
    /// with [`svrkit::tls::CertSlot::watch_files`]) without a restart.
    pub fn slot(&self) -> &Arc<svrkit::tls::CertSlot> {
        &self.1
    }
}

/// Serves `router` on `listener` within `limits` (over TLS when `tls` is given) until
/// `shutdown`, then lets open requests finish (for at most ten seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: EdgeLimits,
    tls: Option<EdgeTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.allowed_hosts.clone(),
        check_host,
    ));
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning, and report
                    // not-ready meanwhile (`/readyz`).
                    svrkit::process_limits::note_accept_failure();
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(from_address) = PerAddress::enter(&per_address, peer.ip(), limits.max_per_address)
        else {
            metrics::counter!("wx_access_connections_refused_total", "why" => "address")
                .increment(1);
            drop(tcp);
            continue;
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics::counter!("wx_access_connections_refused_total", "why" => "total").increment(1);
            drop(tcp);
            continue;
        };
        // Small frames go out at once: with Nagle's algorithm a reply written right after
        // a push waits for the client's delayed ACK (40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        let stopping = stopping.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = (permit, from_address);
            metrics::gauge!("wx_access_connections").increment(1.0);
            // Below HTTP and TLS: a client that stops reading is let go.
            let tcp = crate::write_timeout::WriteTimeout::new(tcp, limits.write_timeout);
            match tls {
                None => serve_connection(tcp, peer, service, limits, stopping).await,
                Some(EdgeTls(acceptor, _)) => {
                    // The handshake counts against the header timeout (slowloris in TLS).
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, service, limits, stopping).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            metrics::gauge!("wx_access_connections").decrement(1.0);
        });
    }
    let _ = stop.send(true);
    // Wait (bounded) for the connections to finish their requests.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(10), open.acquire_many(all)).await;
    Ok(())
}

/// Serves HTTP/1.1 (and upgrades) on one accepted connection until it ends or the edge
/// stops.
async fn serve_connection<I, S>(
    io: I,
    peer: SocketAddr,
    service: S,
    limits: EdgeLimits,
    mut stopping: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let outcome = tokio::select! {
        outcome = conn.as_mut() => outcome,
        () = async { drop(stopping.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(Duration::from_secs(10), conn.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}
