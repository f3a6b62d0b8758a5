//! The one module generated code uses. Not part of the public API: it may change in any
//! release together with `svrkit-codegen`, which is why generated code touches nothing
//! else of svrkit.

pub use bytes::Bytes;
pub use prost;
pub use prost_types;
pub use tower_service::Service;

pub use crate::BoxFuture;
pub use crate::client::{CallOptions, Channel, RpcRequest, RpcResponse};
pub use crate::method::{MethodDesc, ServiceDesc};
pub use crate::server::{ServerRequest, ServiceHandler};
pub use crate::status::{BoxError, Status};
pub use std::sync::Arc;
pub use std::time::Duration;

/// Decodes a request body; failure is the caller's fault (`invalid_argument`).
pub fn decode_request<M: prost::Message + Default>(
    method: &MethodDesc,
    body: Bytes,
) -> Result<M, Status> {
    M::decode(body).map_err(|e| {
        Status::invalid_argument(format!(
            "undecodable {} request for {}/{}: {e}",
            std::any::type_name::<M>()
                .rsplit("::")
                .next()
                .unwrap_or("message"),
            method.service,
            method.method
        ))
    })
}

/// Encodes a message into exactly-sized bytes.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    let mut buf = Vec::with_capacity(message.encoded_len());
    // Encoding into a Vec cannot run out of space.
    let _ = message.encode(&mut buf);
    Bytes::from(buf)
}

/// The answer to a method the generated match does not know.
pub fn unimplemented(method: &MethodDesc) -> BoxFuture<'static, Result<Bytes, Status>> {
    let status = Status::unimplemented(format!(
        "unknown method {}/{}",
        method.service, method.method
    ));
    Box::pin(std::future::ready(Err(status)))
}

/// The client half every generated client wraps: encodes, calls through any tower
/// service, decodes.
#[derive(Debug, Clone)]
pub struct Client<S> {
    inner: S,
}

impl<S> Client<S>
where
    S: Service<RpcRequest, Response = RpcResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    /// Wraps a channel or any tower stack over one.
    pub fn new(inner: S) -> Client<S> {
        Client { inner }
    }

    /// The wrapped service.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// One unary call.
    pub async fn unary<Req, Resp>(
        &self,
        method: &'static MethodDesc,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let request = RpcRequest {
            method: crate::method::Method::Static(method),
            body: encode(request),
            options,
        };
        // A bare channel (the common case) is called in place. Through the tower
        // interface every call would clone it and box its future, and a clone is a
        // reference count that the cores calling it pass between them.
        let any: &dyn std::any::Any = &self.inner;
        let response = match any.downcast_ref::<Channel>() {
            Some(channel) => channel.call(request).await?,
            None => {
                let mut svc = self.inner.clone();
                std::future::poll_fn(|cx| svc.poll_ready(cx))
                    .await
                    .map_err(|e| Status::from_error(e.into()))?;
                svc.call(request)
                    .await
                    .map_err(|e| Status::from_error(e.into()))?
            }
        };
        Resp::decode(response.body).map_err(|e| {
            Status::internal(format!(
                "undecodable response from {}/{}: {e}",
                method.service, method.method
            ))
        })
    }
}
