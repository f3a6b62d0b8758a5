//! The server: a builder in the tonic / mini-redis style.
//!
//! ```no_run
//! # async fn run(listener: tokio::net::TcpListener, svc: impl svrkit::codegen::ServiceHandler) -> std::io::Result<()> {
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! svrkit::Server::builder()
//!     .add_service(svc)
//!     .serve(listener, shutdown)
//!     .await
//! # }
//! ```
//!
//! `serve` takes the listener and the shutdown signal as arguments, which makes servers
//! trivial to test: bind port 0, serve, and shut down with a oneshot. Shutdown is
//! graceful: stop accepting, send goaway on every connection (requests already read are
//! still answered; later ones are refused as `unavailable`, flagged as not processed so
//! clients retry elsewhere), and wait up to the drain timeout for handlers to finish.

mod call;
mod connection;
pub(crate) use connection::truncate;
mod gate;
mod grpc;
pub mod history;
mod latency;
pub mod metrics;
mod ownership;
pub mod recent;
mod router;
mod shared;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower_layer::{Identity, Layer, Stack};
use tower_service::Service;

pub use history::{HistoryPoint, MethodPoint};
pub use ownership::Ownership;
pub use recent::CallRecord;
pub use router::{Routed, ServerRequest, ServiceHandler};
pub use stats::{MethodSnapshot, ServerSnapshot, ServerStats};

use crate::discovery::{Instance, Registry};
use crate::overload::{Admission, DagorConfig};
use crate::protocol::DEFAULT_MAX_FRAME_SIZE;
use crate::status::BoxError;
use connection::serve_connection;
use router::Router;
use shared::ServerShared;

/// How long a graceful shutdown waits for in-flight handlers by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A server under construction; [`serve`](Server::serve) runs it.
///
/// A service generated from IDL (here the example `svrkit.demo.Echo`) served on a port
/// the system picks, called through a [`Channel`](crate::Channel), and stopped:
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use echo::{EchoClient, EchoRequest, EchoServer, EchoService};
/// use svrkit::{Channel, Server};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(
///     Server::builder()
///         .add_service(EchoServer::new(EchoService::new("doc")))
///         .serve(listener, async {
///             let _ = stopped.await;
///         }),
/// );
///
/// let client = EchoClient::new(Channel::connect(addr).await?);
/// let reply = client
///     .echo(EchoRequest { payload: b"hello".to_vec().into(), delay_ms: 0 })
///     .await?;
/// assert_eq!(&reply.payload[..], b"hello");
///
/// let _ = stop.send(());
/// server.await??;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Server<L = Identity> {
    router: Router,
    layer: L,
    max_frame_size: usize,
    drain_timeout: Duration,
    admission: Option<Arc<Admission>>,
    max_concurrency: Option<usize>,
    stats: ServerStats,
    registration: Option<(Arc<dyn Registry>, Instance)>,
    tls: Option<crate::tls::ServerTls>,
    policy: Option<Arc<crate::policy::CallPolicy>>,
    ownership: Option<Arc<Ownership>>,
    readiness: crate::admin::Readiness,
}

/// A condition a server must meet to call itself ready (gRPC health, `/readyz`).
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

impl Server<Identity> {
    /// A server with no services and default settings.
    pub fn builder() -> Server<Identity> {
        Server {
            router: Router::default(),
            layer: Identity::new(),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            admission: Some(Arc::new(Admission::new(DagorConfig::default()))),
            max_concurrency: None,
            stats: ServerStats::default(),
            registration: None,
            tls: None,
            policy: None,
            ownership: None,
            readiness: Default::default(),
        }
    }
}

impl<L> Server<L> {
    /// Serves a generated service (`FooServer::new(impl Foo)`).
    pub fn add_service(mut self, service: impl ServiceHandler) -> Self {
        self.router.add(Box::new(service));
        self
    }

    /// Wraps request handling in a tower layer; the last layer added is the outermost.
    pub fn layer<N>(self, layer: N) -> Server<Stack<N, L>> {
        Server {
            router: self.router,
            layer: Stack::new(layer, self.layer),
            max_frame_size: self.max_frame_size,
            drain_timeout: self.drain_timeout,
            admission: self.admission,
            max_concurrency: self.max_concurrency,
            stats: self.stats,
            registration: self.registration,
            tls: self.tls,
            policy: self.policy,
            ownership: self.ownership,
            readiness: self.readiness,
        }
    }

    /// The largest frame accepted or sent (default 16 MiB). A client announcing a larger
    /// frame gets a goaway and its connection closed, before anything is allocated.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// How long shutdown waits for in-flight handlers before aborting them (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// DAGOR admission control with these settings (on by default with the published
    /// ones: 1 s or 2,000-request windows, 20 ms queuing threshold, -5 % / +1 %).
    pub fn admission(mut self, config: DagorConfig) -> Self {
        self.admission = Some(Arc::new(Admission::new(config)));
        self
    }

    /// Turns admission control off: every request is accepted, however long it queues.
    pub fn without_admission(mut self) -> Self {
        self.admission = None;
        self
    }

    /// The admission controller, to observe its level and shed counts.
    pub fn admission_controller(&self) -> Option<Arc<Admission>> {
        self.admission.clone()
    }

    /// Runs at most `workers` handlers at once (like a worker-thread pool); requests
    /// beyond that wait in a queue, and that wait is the queuing time DAGOR watches.
    /// Without a limit every admitted request starts at once and the queuing time is the
    /// delay between reading a request and starting it.
    pub fn max_concurrency(mut self, workers: usize) -> Self {
        self.max_concurrency = Some(workers.max(1));
        self
    }

    /// Requires mutual TLS on every connection: clients must present a certificate from
    /// the cluster CA, and handlers see its service name
    /// ([`crate::Context::peer_identity`]). See [`crate::tls`].
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Refuses calls `policy` does not allow, before their body is decoded
    /// (`permission_denied`). See [`crate::policy`].
    pub fn policy(mut self, policy: crate::policy::CallPolicy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// Serves only the keys `ownership` says this instance owns: a request routed by a
    /// key another shard owns is answered not-mine before its handler runs.
    pub fn ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = Some(Arc::new(ownership));
        self
    }

    /// Answers gRPC health checks `SERVING` only while `check` holds too (a storage
    /// replica whose shards have leaders, say), besides serving and not draining.
    /// `svrkit::launch` passes the same checks as the admin endpoint's `/readyz`.
    pub fn ready_when(mut self, check: ReadyCheck) -> Self {
        self.readiness.0.push(check);
        self
    }

    /// Registers `instance` in `registry` while serving (an address with port 0 becomes
    /// the listener's), and on shutdown deregisters it *before* draining, so clients stop
    /// sending before the server stops answering.
    pub fn register(mut self, registry: Arc<dyn Registry>, instance: Instance) -> Self {
        self.registration = Some((registry, instance));
        self
    }

    /// A handle to this server's live figures (for the admin endpoint's `/status` and
    /// `/readyz`); it reads `None` until `serve` starts.
    pub fn stats(&self) -> ServerStats {
        self.stats.clone()
    }

    /// The names of the services added so far.
    pub fn service_names(&self) -> Vec<&'static str> {
        self.router.service_names()
    }

    /// Accepts connections on `listener` and serves them until `shutdown` resolves, then
    /// drains gracefully.
    ///
    /// # Errors
    ///
    /// An I/O error of the listener that is not about one connection (a connection that
    /// fails is dropped and the server goes on), or of registering in discovery.
    pub async fn serve<S>(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        L: Layer<Routed, Service = S>,
        S: Service<ServerRequest, Response = Bytes> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let shared = Arc::new(ServerShared {
            router: Arc::new(self.router),
            max_frame_size: self.max_frame_size,
            admission: self.admission,
            workers: self.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
            connections: Default::default(),
            draining: Default::default(),
            tls: self.tls,
            policy: self.policy,
            ownership: self.ownership,
            readiness: self.readiness,
            descriptors: Default::default(),
            recent: Default::default(),
        });
        self.stats.attach(Arc::clone(&shared));
        // Queuing an async server cannot see per request: the runtime's own lateness.
        let _probe = shared
            .admission
            .as_ref()
            .map(|admission| AbortOnDrop(tokio::spawn(Arc::clone(admission.lag()).probe())));
        // The last 15 minutes, for the admin page's and the console's charts.
        let _history = AbortOnDrop(tokio::spawn(
            self.stats.clone().keep_history(Arc::clone(&shared)),
        ));
        let svc = self.layer.layer(Routed::new(Arc::clone(&shared.router)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let local = listener.local_addr()?;
        let registration = match self.registration {
            Some((registry, mut instance)) => {
                if instance.addr.port() == 0 {
                    instance.addr = local;
                }
                let registered = crate::discovery::patiently(&instance.service.clone(), || {
                    registry.register(instance.clone())
                })
                .await
                .map_err(|e| std::io::Error::other(format!("registering in discovery: {e}")))?;
                Some(registered)
            }
            None => None,
        };
        tracing::info!(%local, services = ?shared.router.service_names(), "svrkit server listening");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            svc.clone(),
                            Arc::clone(&shared),
                            stop_rx.clone(),
                        ));
                    }
                    Err(e) => {
                        // Typically out of file descriptors: pause instead of spinning,
                        // and report not-ready meanwhile.
                        crate::process_limits::note_accept_failure();
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        if let Some(registration) = registration
            && let Err(e) = registration.deregister().await
        {
            tracing::warn!(error = %e, "deregistering failed; the record will expire");
        }
        drop(listener);
        shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%local, connections = connections.len(), "svrkit server draining");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.drain_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(%local, remaining = connections.len(), "drain timeout; aborting handlers");
            connections.shutdown().await;
        }
        Ok(())
    }
}

/// Stops a background task when the function that started it returns, however it does.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
