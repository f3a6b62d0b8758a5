//! What every connection of one server shares: the router, limits, TLS, the call policy,
//! shard ownership and DAGOR admission. Below both the connection driver and its gate.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::ownership::Ownership;
use super::router::Router;
use crate::grpc::reflection::Descriptors;
use crate::overload::Admission;

/// What every connection of a server shares.
#[derive(Debug)]
pub(crate) struct ServerShared {
    pub(crate) router: Arc<Router>,
    pub(crate) max_frame_size: usize,
    pub(crate) admission: Option<Arc<Admission>>,
    pub(crate) workers: Option<Arc<Semaphore>>,
    pub(crate) connections: std::sync::atomic::AtomicUsize,
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// Mutual TLS on every connection, when set.
    pub(crate) tls: Option<crate::tls::ServerTls>,
    /// Who may call what, when set.
    pub(crate) policy: Option<Arc<crate::policy::CallPolicy>>,
    /// The keys this shard owns, when it is one.
    pub(crate) ownership: Option<Arc<Ownership>>,
    /// What else must hold for the server to be ready (gRPC health).
    pub(crate) readiness: crate::admin::Readiness,
    /// The services' descriptors for gRPC reflection, indexed on first use.
    pub(crate) descriptors: std::sync::OnceLock<Arc<Descriptors>>,
    /// Recent and slowest calls (rpcz).
    pub(crate) recent: super::recent::Recent,
}

impl ServerShared {
    /// The descriptors gRPC reflection serves (indexed once, when first asked).
    pub(crate) fn descriptors(&self) -> Arc<Descriptors> {
        Arc::clone(self.descriptors.get_or_init(|| {
            let mut services = self.router.service_names();
            services.extend([
                crate::grpc::health::SERVICE,
                crate::grpc::reflection::SERVICE_V1,
                crate::grpc::reflection::SERVICE_V1ALPHA,
            ]);
            Arc::new(Descriptors::build(
                &self.router.descriptor_sets(),
                &services,
            ))
        }))
    }

    /// The admission level to report in responses.
    pub(crate) fn level(&self) -> (u32, u32) {
        self.admission
            .as_deref()
            .map_or((0, 0), Admission::wire_level)
    }
}

#[cfg(test)]
impl ServerShared {
    /// A server's shared state serving `router`, with every option off, for unit tests.
    pub(crate) fn with_router(router: Router) -> ServerShared {
        ServerShared {
            router: Arc::new(router),
            max_frame_size: crate::protocol::DEFAULT_MAX_FRAME_SIZE,
            admission: None,
            workers: None,
            connections: Default::default(),
            draining: Default::default(),
            tls: None,
            policy: None,
            ownership: None,
            readiness: Default::default(),
            descriptors: Default::default(),
            recent: Default::default(),
        }
    }
}
