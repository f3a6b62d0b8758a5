//! Routing a request's (service, method) to the generated handler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;

use super::metrics::{MethodMetrics, MethodStats};
use crate::BoxFuture;
use crate::context::{Context, Scoped};
use crate::grpc::Protocol;
use crate::method::{MethodDesc, ServiceDesc};
use crate::status::Status;

/// What the code generator implements for each service: a description and dispatch.
///
/// `FooServer<T>` implements it by matching on the method name and calling the author's
/// `Foo` trait; authors do not implement it by hand.
pub trait ServiceHandler: Send + Sync + 'static {
    /// The service's description.
    fn descriptor(&self) -> &'static ServiceDesc;

    /// Decodes `body`, runs the method, and encodes its response.
    fn call(
        &self,
        method: &'static MethodDesc,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>>;

    /// The service's IDL as an encoded `google.protobuf.FileDescriptorSet`: its file and
    /// every file it imports, which gRPC server reflection serves. Generated code embeds
    /// it; empty (the default) means the service is not described by reflection.
    fn file_descriptor_set(&self) -> &'static [u8] {
        &[]
    }
}

/// A request as it flows through server layers: the method, the encoded body, the
/// request's [`Context`] and the peer's address.
///
/// A layer sees the context before the handler runs and may change it (say, record the
/// uid an auth token names); the handler then runs with the context as the layers left
/// it, as [`Context::current`]. Layers read the context from the request, not from
/// `Context::current()`, which is set for the handler only. Every layer runs inside the
/// request's `rpc` span, so what a layer logs names the trace too.
///
/// An auth layer as a plain tower layer:
///
/// ```
/// use svrkit::server::ServerRequest;
/// use svrkit::{BoxFuture, Status};
/// use std::task::{Context as TaskContext, Poll};
///
/// /// Refuses calls that name no user.
/// #[derive(Clone)]
/// struct SignedInOnly<S>(S);
///
/// impl<S> tower_service::Service<ServerRequest> for SignedInOnly<S>
/// where
///     S: tower_service::Service<ServerRequest, Response = bytes::Bytes, Error = Status>,
///     S::Future: Send + 'static,
/// {
///     type Response = bytes::Bytes;
///     type Error = Status;
///     type Future = BoxFuture<'static, Result<bytes::Bytes, Status>>;
///
///     fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
///         self.0.poll_ready(cx)
///     }
///
///     fn call(&mut self, request: ServerRequest) -> Self::Future {
///         if request.context().uid() == 0 {
///             tracing::info!(peer = %request.peer_addr(), "refused a call without a user");
///             let status = Status::unauthenticated("sign in first");
///             return Box::pin(std::future::ready(Err(status)));
///         }
///         Box::pin(self.0.call(request))
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ServerRequest {
    pub(crate) service: usize,
    pub(crate) method: &'static MethodDesc,
    pub(crate) body: Bytes,
    pub(crate) ctx: Context,
    pub(crate) peer: SocketAddr,
}

impl ServerRequest {
    /// The method called.
    pub fn method(&self) -> &'static MethodDesc {
        self.method
    }

    /// The encoded request body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The request's context: deadline, trace, caller, uid, priorities, gray tag.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The request's context, for a layer to change before the handler sees it.
    pub fn context_mut(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// The address of the connection's peer.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

/// One routable method.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) service: usize,
    pub(crate) desc: &'static MethodDesc,
    metrics: OnceLock<Arc<MethodMetrics>>,
    grpc_metrics: OnceLock<Arc<MethodMetrics>>,
    stats: Arc<MethodStats>,
}

impl Route {
    /// The method's metric handles for svrkit's protocol, registered on first use (so a
    /// recorder installed after the server was built is still used).
    pub(crate) fn metrics(&self) -> &Arc<MethodMetrics> {
        self.metrics.get_or_init(|| {
            Arc::new(MethodMetrics::new(
                self.desc,
                Protocol::Svrkit,
                Arc::clone(&self.stats),
            ))
        })
    }

    /// The method's metric handles for `protocol`.
    pub(crate) fn metrics_of(&self, protocol: Protocol) -> &Arc<MethodMetrics> {
        match protocol {
            Protocol::Svrkit => self.metrics(),
            Protocol::Grpc => self.grpc_metrics.get_or_init(|| {
                Arc::new(MethodMetrics::new(
                    self.desc,
                    Protocol::Grpc,
                    Arc::clone(&self.stats),
                ))
            }),
        }
    }
}

/// The table of services a server serves.
#[derive(Default)]
pub(crate) struct Router {
    handlers: Vec<Box<dyn ServiceHandler>>,
    routes: HashMap<&'static str, HashMap<&'static str, Route>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("services", &self.routes.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Router {
    /// Adds a service; a second service of the same name replaces the first.
    pub(crate) fn add(&mut self, handler: Box<dyn ServiceHandler>) {
        let desc = handler.descriptor();
        let index = self.handlers.len();
        self.handlers.push(handler);
        let methods = desc
            .methods
            .iter()
            .map(|m| {
                (
                    m.method,
                    Route {
                        service: index,
                        desc: m,
                        metrics: OnceLock::new(),
                        grpc_metrics: OnceLock::new(),
                        stats: Arc::default(),
                    },
                )
            })
            .collect();
        if self.routes.insert(desc.name, methods).is_some() {
            tracing::warn!(
                service = desc.name,
                "service added twice; the last one serves"
            );
        }
    }

    /// The route for a request, if this server serves it.
    pub(crate) fn route(&self, service: &str, method: &str) -> Option<&Route> {
        self.routes.get(service)?.get(method)
    }

    /// True when the server serves a service of this name.
    pub(crate) fn has_service(&self, service: &str) -> bool {
        self.routes.contains_key(service)
    }

    /// Every route, for `/status`.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values().flat_map(HashMap::values)
    }

    /// The figures of a route, if it has served anything yet (over either protocol).
    pub(crate) fn route_stats(route: &Route) -> Option<&Arc<MethodStats>> {
        (route.metrics.get().is_some() || route.grpc_metrics.get().is_some())
            .then_some(&route.stats)
    }

    /// The encoded descriptor sets of the services served (those that have one).
    pub(crate) fn descriptor_sets(&self) -> Vec<&'static [u8]> {
        self.handlers
            .iter()
            .map(|h| h.file_descriptor_set())
            .filter(|set| !set.is_empty())
            .collect()
    }

    /// The names of the services served.
    pub(crate) fn service_names(&self) -> Vec<&'static str> {
        self.routes.keys().copied().collect()
    }
}

/// The innermost server `tower::Service`: calls the generated handler. Server layers wrap it.
#[derive(Debug, Clone)]
pub struct Routed {
    router: Arc<Router>,
}

impl Routed {
    pub(crate) fn new(router: Arc<Router>) -> Routed {
        Routed { router }
    }
}

impl tower_service::Service<ServerRequest> for Routed {
    type Response = Bytes;
    type Error = Status;
    type Future = Scoped<BoxFuture<'static, Result<Bytes, Status>>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    /// Runs the handler with the request's context current.
    fn call(&mut self, request: ServerRequest) -> Self::Future {
        let ServerRequest {
            service,
            method,
            body,
            ctx,
            ..
        } = request;
        let handler = match self.router.handlers.get(service) {
            Some(handler) => handler,
            None => {
                let status =
                    Status::unimplemented(format!("service {} is not served here", method.service));
                return ctx.scope(Box::pin(std::future::ready(Err(status))));
            }
        };
        let mut slot = Some(ctx);
        let future = crate::context::enter(&mut slot, || handler.call(method, body));
        Scoped::new(slot, future)
    }
}
