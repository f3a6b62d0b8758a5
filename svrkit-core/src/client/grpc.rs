//! One client connection speaking gRPC ([`crate::grpc`]): hyper's HTTP/2 client, each
//! call a stream. What the rest of the client sees is the same as svrkit's connection —
//! a call returns the response frame, its header rebuilt from the gRPC trailers — so
//! balancing, retries, the retry budget, deadlines and DAGOR-aware throttling work the
//! same over either protocol.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::grpc::body::GrpcBody;
use crate::grpc::io::GrpcIo;
use crate::grpc::wire::{self, Answer, UnframeError};
use crate::protocol::{Frame, FrameKind, RequestHeader, ResponseHeader};
use crate::status::{Code, Status};
use crate::transport::Link;

/// A connection with calls in flight that hears nothing for this long is pinged…
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// …and given up when the ping is not answered within this.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// A gRPC client connection shared by every caller using it.
#[derive(Debug)]
pub(crate) struct GrpcConnection {
    sender: SendRequest<GrpcBody>,
    driver: tokio::task::AbortHandle,
    closed: AtomicBool,
    in_flight: AtomicUsize,
    max_frame_size: usize,
    peer: SocketAddr,
    /// `http://ADDR` or `https://ADDR`: the `:scheme` and `:authority` of every call.
    base: String,
}

/// Counts a call while it runs.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl GrpcConnection {
    /// Connects (TLS with ALPN `h2` when `tls` is set) and completes the HTTP/2 handshake.
    pub(crate) async fn connect(
        peer: SocketAddr,
        max_frame_size: usize,
        tls: Option<&crate::tls::ClientTls>,
    ) -> std::io::Result<Arc<GrpcConnection>> {
        let link = Link::dial(peer, tls.map(|t| t.with_h2()).as_ref()).await?;
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(false)
            .max_header_list_size(64 * 1024)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20);
        let io = TokioIo::new(GrpcIo::new(link));
        let (sender, conn) = builder
            .handshake(io)
            .await
            .map_err(|e| std::io::Error::other(format!("HTTP/2 handshake: {e}")))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "gRPC client connection ended");
            }
        })
        .abort_handle();
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Arc::new(GrpcConnection {
            sender,
            driver,
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            max_frame_size,
            peer,
            base: format!("{scheme}://{peer}"),
        }))
    }

    /// The server's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True while new calls may start on this connection.
    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.sender.is_closed()
    }

    /// Calls in flight on this connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Stops the connection: calls in flight fail.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.driver.abort();
    }

    /// Sends one request and waits for its answer (or the deadline), as a svrkit
    /// response frame.
    pub(crate) async fn call(
        &self,
        header: &RequestHeader<'_>,
        body: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Frame, Status> {
        if body.len() + wire::PREFIX_LEN > self.max_frame_size {
            return Err(Status::resource_exhausted(format!(
                "request of {} bytes exceeds the limit of {} bytes",
                body.len(),
                self.max_frame_size
            ))
            .with_not_processed());
        }
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let headers = wire::request_headers(header, timeout)?;
        let uri = format!("{}/{}/{}", self.base, header.service, header.method);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(GrpcBody::unary(wire::frame(body), None))
            .map_err(|e| {
                Status::invalid_argument(format!("not a valid gRPC path: {e}")).with_not_processed()
            })?;
        *request.headers_mut() = headers;
        request.headers_mut().insert(
            "user-agent",
            HeaderValue::from_static(concat!("svrkit/", env!("CARGO_PKG_VERSION"))),
        );
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = Counted(&self.in_flight);
        let mut sender = self.sender.clone();
        let exchange = async {
            sender.ready().await.map_err(|e| {
                Status::unavailable(format!("gRPC connection to {}: {e}", self.peer))
                    .with_not_processed()
            })?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Status::unavailable(format!("gRPC call to {}: {e}", self.peer)))?;
            read_answer(response, self.max_frame_size).await
        };
        match deadline {
            // Dropping the exchange resets the stream, so the server stops the handler.
            Some(deadline) => tokio::time::timeout_at(deadline.into(), exchange)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "no response from {} before the deadline",
                        self.peer
                    )))
                }),
            None => exchange.await,
        }
    }
}

impl Drop for GrpcConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The gRPC code of an answer that is not gRPC (a proxy's HTTP error), as gRPC says.
fn http_code(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// Reads an answer into a svrkit response frame.
async fn read_answer(response: Response<Incoming>, max: usize) -> Result<Frame, Status> {
    let (parts, mut body) = response.into_parts();
    if parts.status != StatusCode::OK {
        return Err(Status::new(
            http_code(parts.status),
            format!("HTTP status {} instead of a gRPC answer", parts.status),
        ));
    }
    let mut answer = if parts.headers.contains_key("grpc-status") {
        // Trailers-only: the status is in the headers and there is no message.
        wire::read_trailers(&parts.headers)
    } else {
        Answer::default()
    };
    let mut buf = BytesMut::new();
    if answer.code.is_none() {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame =
                frame.map_err(|e| Status::unavailable(format!("reading a gRPC answer: {e}")))?;
            match frame.into_data() {
                Ok(data) => {
                    if buf.len() + data.len() > max + wire::PREFIX_LEN {
                        return Err(Status::resource_exhausted(format!(
                            "response exceeds the limit of {max} bytes"
                        )));
                    }
                    buf.extend_from_slice(&data);
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        answer = wire::read_trailers(&trailers);
                    }
                }
            }
        }
    }
    let Some(code) = answer.code else {
        return Err(Status::internal("the gRPC answer carried no grpc-status"));
    };
    let body = if code == Code::Ok {
        match wire::unframe(&mut buf, max) {
            Ok(Some(message)) if buf.is_empty() => message,
            Ok(_) => {
                return Err(Status::internal(
                    "a unary gRPC answer must carry exactly one message",
                ));
            }
            Err(UnframeError::Compressed) => {
                return Err(Status::unimplemented("the server compressed its answer"));
            }
            Err(UnframeError::TooLarge(len)) => {
                return Err(Status::resource_exhausted(format!(
                    "response of {len} bytes exceeds the limit of {max} bytes"
                )));
            }
        }
    } else {
        Bytes::new()
    };
    let header = ResponseHeader {
        code: code.as_u32(),
        message: &answer.message,
        admission_business: answer.admission.0,
        admission_user: answer.admission.1,
        not_processed: answer.not_processed,
        passed_on: answer.passed_on,
        reason: &answer.reason,
        details: &answer.details,
    };
    let mut encoded = BytesMut::with_capacity(header.encoded_len());
    header.encode(&mut encoded);
    Ok(Frame {
        kind: FrameKind::Response,
        flags: 0,
        id: 0,
        header: encoded.freeze(),
        body,
    })
}
