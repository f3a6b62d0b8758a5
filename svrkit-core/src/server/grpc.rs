//! One gRPC connection of a server ([`crate::grpc`]): hyper serves HTTP/2, and each
//! request is translated into svrkit's and goes the way a svrkit request goes: the same
//! [`Gate`] (route, call policy with the mutual-TLS identity, shard ownership, DAGOR
//! admission), the same worker pool, deadline, span, server layers and handler, and the
//! same metrics (labelled `protocol="grpc"`).
//!
//! A request is refused before its body is read; the body is bounded by the server's
//! frame limit. The built-in health and reflection services are answered here.

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, watch};
use tower_service::Service;

use super::call::{HandlerCall, queued, rpc_span};
use super::gate::Gate;
use super::recent::CallNote;
use super::router::ServerRequest;
use super::shared::ServerShared;
use crate::context::Context;
use crate::grpc::Protocol;
use crate::grpc::body::GrpcBody;
use crate::grpc::health::{self, HealthCheckRequest, ServingStatus};
use crate::grpc::io::GrpcIo;
use crate::grpc::reflection::{self, ReflectionRequest};
use crate::grpc::wire::{self, RequestHead, UnframeError};
use crate::status::{BoxError, Code, Status};
use crate::transport::Link;

/// The most header bytes (names and values) a request may carry: request metadata's own
/// bound and room for HTTP/2's and gRPC's fields.
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams one connection may have open at once.
const MAX_STREAMS: u32 = 256;
/// Request bytes one connection may have buffered (read, not yet handed to a handler) at
/// once, over all its streams: past it a request is refused `RESOURCE_EXHAUSTED` rather
/// than a client holding streams × the frame limit of the server's memory.
const MAX_CONNECTION_BUFFERED: usize = 64 << 20;
/// A request body that has not arrived whole after this long is given up (a client that
/// opens streams and sends nothing holds nothing for long), whatever its deadline.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A reflection stream idle this long is ended.
const REFLECTION_IDLE: Duration = Duration::from_secs(60);
/// The HTTP/2 flow-control window of one stream, and of the whole connection.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// A health check request is at most this large.
const MAX_HEALTH_REQUEST: usize = 1024;
/// How often a health watch looks at readiness between drain notices.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// What every request of one gRPC connection needs to know of it.
#[derive(Debug, Clone)]
pub(super) struct ConnInfo {
    pub(super) server: Arc<ServerShared>,
    /// The client's service name, verified by mutual TLS.
    pub(super) identity: Option<Arc<str>>,
    pub(super) peer: SocketAddr,
    /// Turns true when the server starts to drain.
    pub(super) shutdown: watch::Receiver<bool>,
    /// Request bytes this connection has buffered now (see [`MAX_CONNECTION_BUFFERED`]).
    pub(super) buffered: Arc<AtomicUsize>,
}

impl ConnInfo {
    fn draining(&self) -> bool {
        *self.shutdown.borrow() || self.server.draining.load(Ordering::Relaxed)
    }

    /// Whether health checks answer `SERVING`.
    fn ready(&self) -> bool {
        !self.draining()
            && crate::process_limits::accepting()
            && self.server.readiness.0.iter().all(|check| check())
    }
}

/// Serves gRPC on `link` until the client leaves, or the end of a graceful drain after
/// `shutdown` turns true (HTTP/2 GOAWAY: streams already open are still answered).
pub(super) async fn serve_grpc<S>(link: Link, info: ConnInfo, svc: S)
where
    S: Service<ServerRequest, Response = Bytes> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let mut shutdown = info.shutdown.clone();
    let peer = info.peer;
    let service = hyper::service::service_fn(move |request| {
        let svc = svc.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(handle(request, svc, info).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(MAX_STREAMS)
        // gRPC has no use for a Date header: one less to format and encode per answer.
        .auto_date_header(false)
        // Larger windows: fewer WINDOW_UPDATE frames for a stream of small calls.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let conn = builder.serve_connection(TokioIo::new(GrpcIo::new(link)), service);
    tokio::pin!(conn);
    let mut draining = *shutdown.borrow_and_update();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "gRPC connection ended with an error");
                }
                return;
            }
            changed = shutdown.changed(), if !draining => {
                if changed.is_err() || *shutdown.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A plain HTTP answer for a request that is not gRPC at all.
fn http_error(status: StatusCode, message: &'static str) -> Response<GrpcBody> {
    let mut response = Response::new(GrpcBody::unary(
        Bytes::from_static(message.as_bytes()),
        None,
    ));
    *response.status_mut() = status;
    response
}

/// An answer with a gRPC message and the OK trailers.
fn unary_answer(message: &[u8], level: (u32, u32)) -> Response<GrpcBody> {
    let trailers = wire::status_trailers(Ok(()), level);
    with_grpc_headers(Response::new(GrpcBody::unary(
        wire::frame(message),
        Some(trailers),
    )))
}

/// A trailers-only answer: the status in the headers and no body.
fn refusal(status: &Status, level: (u32, u32)) -> Response<GrpcBody> {
    let mut response = Response::new(GrpcBody::empty());
    *response.headers_mut() = wire::status_trailers(Err(status), level);
    with_grpc_headers(response)
}

fn with_grpc_headers(mut response: Response<GrpcBody>) -> Response<GrpcBody> {
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(wire::CONTENT_TYPE));
    headers.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
    response
}

fn code_of(result: &Result<Bytes, Status>) -> Code {
    result.as_ref().err().map_or(Code::Ok, Status::code)
}

/// One gRPC request, start to answer.
async fn handle<S>(request: Request<Incoming>, mut svc: S, info: ConnInfo) -> Response<GrpcBody>
where
    S: Service<ServerRequest, Response = Bytes> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let arrival = Instant::now();
    if request.method() != Method::POST {
        return http_error(StatusCode::METHOD_NOT_ALLOWED, "gRPC requests are POSTs\n");
    }
    let grpc = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v == wire::CONTENT_TYPE
                || v.starts_with("application/grpc+proto")
                || v.starts_with("application/grpc;")
        });
    if !grpc {
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this port speaks svrkit and gRPC (application/grpc)\n",
        );
    }
    let server = Arc::clone(&info.server);
    let level = server.level();
    let path = request.uri().path().to_string();
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return refusal(
            &Status::unimplemented(format!("{path:?} is not /SERVICE/Method")),
            level,
        );
    };
    match service {
        health::SERVICE => return serve_health(request, method, info).await,
        reflection::SERVICE_V1 | reflection::SERVICE_V1ALPHA if method == reflection::METHOD => {
            return serve_reflection(request, &info);
        }
        _ => {}
    }
    if let Some(encoding) = request.headers().get("grpc-encoding")
        && encoding != "identity"
    {
        return refusal(
            &Status::unimplemented(
                "compressed messages are not supported: send them with grpc-encoding identity",
            ),
            level,
        );
    }
    let head = match RequestHead::read(request.headers()) {
        Ok(head) => head,
        Err(status) => {
            super::metrics::rejected("bad_header");
            return refusal(&status, level);
        }
    };
    let header = head.header(service, method);
    let gate = Gate {
        server: &server,
        identity: info.identity.as_deref(),
        draining: info.draining(),
    };
    let admitted = gate
        .open()
        .and_then(|()| gate.pass_header(&header, arrival));
    let (route, priority) = match admitted {
        Ok(admitted) => admitted,
        Err(refused) => {
            refused.count(Protocol::Grpc);
            return refusal(&refused.status, level);
        }
    };
    let method_metrics = route.metrics_of(Protocol::Grpc);
    let deadline = head.timeout.map(|t| arrival + t);
    let body = match read_one(
        request.into_body(),
        server.max_frame_size,
        deadline,
        &info.buffered,
    )
    .await
    {
        Ok(body) => body,
        Err(status) => {
            method_metrics.responded(status.code());
            return refusal(&status, server.level());
        }
    };
    let desc = route.desc;
    let caller = (!header.caller.is_empty()).then(|| Arc::<str>::from(header.caller));
    let recorded_caller = info.identity.clone().or_else(|| caller.clone());
    let ctx = Context::from_request_by(&header, arrival, desc.service, caller)
        .verified(info.identity.clone())
        .with_business_priority(priority.business)
        .with_user_priority(priority.user);
    let note = CallNote::of(&ctx, arrival, Protocol::Grpc);

    if let Err(error) = poll_fn(|cx| svc.poll_ready(cx)).await {
        let status = Status::from_error(error.into());
        method_metrics.responded(status.code());
        return refusal(&status, server.level());
    }
    let _permit = match &server.workers {
        None => None,
        Some(workers) => match Arc::clone(workers).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let waited = match ctx.deadline() {
                    Some(deadline) => tokio::time::timeout_at(
                        deadline.into(),
                        Arc::clone(workers).acquire_owned(),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok),
                    None => Arc::clone(workers).acquire_owned().await.ok(),
                };
                let Some(permit) = waited else {
                    method_metrics.responded(Code::DeadlineExceeded);
                    let status =
                        Status::deadline_exceeded("the deadline passed while waiting for a worker");
                    return refusal(&status, server.level());
                };
                if let Some(admission) = &server.admission
                    && !admission.still_admitted(priority)
                {
                    method_metrics.responded(Code::Overloaded);
                    let status =
                        Status::overloaded("shed by admission control while queued for a worker");
                    return refusal(&status, server.level());
                }
                Some(permit)
            }
        },
    };
    let start = Instant::now();
    if ctx.deadline().is_some_and(|deadline| start >= deadline) {
        method_metrics.responded(Code::DeadlineExceeded);
        let status = Status::deadline_exceeded("the deadline passed before the handler started");
        return refusal(&status, server.level());
    }
    let queued = queued(arrival, start);
    if let Some(admission) = &server.admission {
        admission.started(queued);
    }
    method_metrics.started(queued);
    let deadline = ctx.deadline();
    let span = rpc_span(&ctx, desc.method, info.peer, Protocol::Grpc);
    let request = ServerRequest {
        service: route.service,
        method: desc,
        body,
        ctx,
        peer: info.peer,
    };
    let call = span.in_scope(|| svc.call(request));
    let call = async move { call.await.map_err(|e| Status::from_error(e.into())) };
    let result = HandlerCall::new(call, span, deadline).await;
    let code = code_of(&result);
    let end = Instant::now();
    method_metrics.finished(code, end.saturating_duration_since(start));
    server.recent.observe(
        &note,
        desc.service,
        desc.method,
        recorded_caller.as_deref(),
        code,
        end,
    );
    let level = server.level();
    match result {
        Ok(body) if body.len() + wire::PREFIX_LEN <= server.max_frame_size => {
            unary_answer(&body, level)
        }
        Ok(body) => refusal(
            &Status::resource_exhausted(format!(
                "response of {} bytes exceeds the limit of {} bytes",
                body.len(),
                server.max_frame_size
            )),
            level,
        ),
        Err(status) => refusal(&status, level),
    }
}

/// The next frame of `body`, or `None` at its end.
async fn next_frame(body: &mut Incoming) -> Option<Result<Frame<Bytes>, hyper::Error>> {
    poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

/// Gives a connection's buffered bytes back when a read ends, however it ends.
struct Buffered<'a> {
    total: &'a AtomicUsize,
    mine: usize,
}

impl Buffered<'_> {
    /// Takes `n` more bytes of the connection's budget, unless that would exceed it.
    fn take(&mut self, n: usize) -> Result<(), Status> {
        let before = self.total.fetch_add(n, Ordering::Relaxed);
        self.mine += n;
        if before + n > MAX_CONNECTION_BUFFERED {
            return Err(Status::resource_exhausted(format!(
                "this connection has more than {MAX_CONNECTION_BUFFERED} bytes of requests \
                 in flight"
            )));
        }
        Ok(())
    }
}

impl Drop for Buffered<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.mine, Ordering::Relaxed);
    }
}

/// Reads the one message of a unary request: at most `max` bytes, before `deadline` (and
/// within [`BODY_TIMEOUT`]), within the connection's budget of buffered bytes.
async fn read_one(
    mut body: Incoming,
    max: usize,
    deadline: Option<Instant>,
    buffered: &AtomicUsize,
) -> Result<Bytes, Status> {
    let read = async {
        let mut budget = Buffered {
            total: buffered,
            mine: 0,
        };
        let mut buf = BytesMut::new();
        while let Some(frame) = next_frame(&mut body).await {
            let frame =
                frame.map_err(|e| Status::cancelled(format!("reading the request: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max + wire::PREFIX_LEN {
                    return Err(too_large(max));
                }
                budget.take(data.len())?;
                buf.extend_from_slice(&data);
            }
        }
        let message = match wire::unframe(&mut buf, max) {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(Status::invalid_argument(
                    "a unary method takes exactly one message; the request had none",
                ));
            }
            Err(UnframeError::TooLarge(_)) => return Err(too_large(max)),
            Err(UnframeError::Compressed) => {
                return Err(Status::unimplemented(
                    "compressed messages are not supported",
                ));
            }
        };
        if !buf.is_empty() {
            return Err(Status::invalid_argument(
                "a unary method takes exactly one message; the request had more",
            ));
        }
        Ok(message)
    };
    let limit = Instant::now() + BODY_TIMEOUT;
    let until = deadline.map_or(limit, |d| d.min(limit));
    tokio::time::timeout_at(until.into(), read)
        .await
        .unwrap_or_else(|_| {
            Err(if deadline.is_some_and(|d| d <= limit) {
                Status::deadline_exceeded("the deadline passed while the request was read")
            } else {
                Status::deadline_exceeded(format!(
                    "the request's body did not arrive within {BODY_TIMEOUT:?}"
                ))
            })
        })
}

fn too_large(max: usize) -> Status {
    Status::resource_exhausted(format!("request exceeds the limit of {max} bytes"))
}

/// `grpc.health.v1.Health`: `Check` answers at once, `Watch` streams every change.
async fn serve_health(
    request: Request<Incoming>,
    method: &str,
    info: ConnInfo,
) -> Response<GrpcBody> {
    let level = info.server.level();
    let deadline = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(wire::decode_timeout)
        .map(|t| Instant::now() + t);
    let watch = match method {
        "Check" => false,
        "Watch" => true,
        other => {
            return refusal(
                &Status::unimplemented(format!("unknown method {}/{other}", health::SERVICE)),
                level,
            );
        }
    };
    let asked = match read_one(
        request.into_body(),
        MAX_HEALTH_REQUEST,
        deadline,
        &info.buffered,
    )
    .await
    {
        Ok(body) => body,
        Err(status) => return refusal(&status, level),
    };
    let Ok(asked) = <HealthCheckRequest as prost::Message>::decode(asked) else {
        return refusal(
            &Status::invalid_argument("not a grpc.health.v1.HealthCheckRequest"),
            level,
        );
    };
    let known = asked.service.is_empty() || info.server.router.has_service(&asked.service);
    if !watch {
        if !known {
            return refusal(
                &Status::not_found(format!("unknown service {}", asked.service)),
                level,
            );
        }
        return unary_answer(&ServingStatus::of(info.ready()).response(), level);
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut shutdown = info.shutdown.clone();
        let mut last = None;
        let mut every = tokio::time::interval(WATCH_EVERY);
        loop {
            let now = if known {
                ServingStatus::of(info.ready())
            } else {
                ServingStatus::ServiceUnknown
            };
            if last != Some(now) {
                last = Some(now);
                if tx
                    .send(Frame::data(wire::frame(&now.response())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if info.draining() {
                // The drain waits for this stream: end it, with the reason.
                let status = Status::unavailable("server is shutting down");
                let trailers = wire::status_trailers(Err(&status), info.server.level());
                let _ = tx.send(Frame::trailers(trailers)).await;
                return;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = every.tick() => {}
                () = tx.closed() => return,
            }
        }
    });
    with_grpc_headers(Response::new(GrpcBody::Stream(rx)))
}

/// Server reflection: answers each request of the stream as it comes.
fn serve_reflection(request: Request<Incoming>, info: &ConnInfo) -> Response<GrpcBody> {
    let server = Arc::clone(&info.server);
    let (tx, rx) = mpsc::channel(16);
    let mut body = request.into_body();
    tokio::spawn(async move {
        let descriptors = server.descriptors();
        let mut buf = BytesMut::new();
        let mut answered = 0;
        let end = loop {
            match wire::unframe(&mut buf, reflection::MAX_REQUEST_LEN) {
                Ok(Some(message)) => {
                    let Ok(asked) = <ReflectionRequest as prost::Message>::decode(message) else {
                        break Err(Status::invalid_argument(
                            "not a grpc.reflection ServerReflectionRequest",
                        ));
                    };
                    answered += 1;
                    if answered > reflection::MAX_REQUESTS_PER_STREAM {
                        break Err(Status::resource_exhausted(
                            "too many requests on one reflection stream",
                        ));
                    }
                    let answer = prost::Message::encode_to_vec(&descriptors.answer(asked));
                    if tx.send(Frame::data(wire::frame(&answer))).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(UnframeError::TooLarge(_)) => {
                    break Err(too_large(reflection::MAX_REQUEST_LEN));
                }
                Err(UnframeError::Compressed) => {
                    break Err(Status::unimplemented(
                        "compressed messages are not supported",
                    ));
                }
            }
            let next = tokio::time::timeout(REFLECTION_IDLE, next_frame(&mut body)).await;
            let Ok(next) = next else {
                break Err(Status::deadline_exceeded("the reflection stream was idle"));
            };
            match next {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => return,
                None if buf.is_empty() => break Ok(()),
                None => {
                    break Err(Status::invalid_argument(
                        "the stream ended inside a message",
                    ));
                }
            }
        };
        let trailers = wire::status_trailers(end.as_ref().map(|_| ()), server.level());
        let _ = tx.send(Frame::trailers(trailers)).await;
    });
    with_grpc_headers(Response::new(GrpcBody::Stream(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_buffers_at_most_its_budget_and_gets_it_back() {
        let total = AtomicUsize::new(0);
        let mut first = Buffered {
            total: &total,
            mine: 0,
        };
        first.take(MAX_CONNECTION_BUFFERED - 10).expect("within");
        let mut second = Buffered {
            total: &total,
            mine: 0,
        };
        second.take(10).expect("exactly the budget");
        let refused = second.take(1).expect_err("over it");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        drop(second);
        assert_eq!(total.load(Ordering::Relaxed), MAX_CONNECTION_BUFFERED - 10);
        drop(first);
        assert_eq!(total.load(Ordering::Relaxed), 0, "all given back");
    }
}
