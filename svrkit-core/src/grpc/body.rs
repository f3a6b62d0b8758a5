//! The body of a gRPC message exchange: one message and trailers (unary), or messages
//! as they come and trailers at the end (the streaming built-in services).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use tokio::sync::mpsc;

/// A gRPC body (requests a svrkit client sends, answers a svrkit server sends).
#[derive(Debug)]
pub(crate) enum GrpcBody {
    /// At most one data frame, then trailers if any.
    Once {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// Frames sent by a task; the stream ends when the task drops its sender.
    Stream(mpsc::Receiver<Frame<Bytes>>),
}

impl GrpcBody {
    /// One framed message followed by `trailers`.
    pub(crate) fn unary(data: Bytes, trailers: Option<HeaderMap>) -> GrpcBody {
        GrpcBody::Once {
            data: Some(data),
            trailers,
        }
    }

    /// Nothing (a trailers-only answer carries its status in the headers).
    pub(crate) fn empty() -> GrpcBody {
        GrpcBody::Once {
            data: None,
            trailers: None,
        }
    }
}

impl http_body::Body for GrpcBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            GrpcBody::Once { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            GrpcBody::Stream(rx) => rx.poll_recv(cx).map(|frame| frame.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GrpcBody::Once { data, trailers } => data.is_none() && trailers.is_none(),
            GrpcBody::Stream(_) => false,
        }
    }

    // No exact size hint: hyper would add a content-length, which gRPC does not use and
    // every peer would then check.
}
