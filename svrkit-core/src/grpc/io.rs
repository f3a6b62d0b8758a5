//! The byte stream hyper's HTTP/2 reads and writes: the socket itself for plain TCP, and
//! for TLS a [`Link`] (svrkit's sans-I/O TLS), so that gRPC shares the TLS handshake,
//! certificates and identity of svrkit's own connections.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::transport::{Link, ReadOutcome};

/// Above this many unsent bytes a write waits for the socket first.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// A link read and written through tokio's I/O traits.
#[derive(Debug)]
pub(crate) struct LinkIo {
    link: Link,
    /// Bytes read (plaintext) and not yet taken.
    read: BytesMut,
    /// Bytes written and not yet on the socket.
    write: BytesMut,
    eof: bool,
}

impl LinkIo {
    /// `link` as a byte stream.
    pub(crate) fn new(link: Link) -> LinkIo {
        LinkIo {
            link,
            read: BytesMut::new(),
            write: BytesMut::new(),
            eof: false,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.link.flush(&mut self.write)?;
            if self.write.is_empty() && !self.link.wants_write() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.link.poll_write_ready(cx))?;
        }
    }
}

impl AsyncRead for LinkIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.read.is_empty() {
                let n = buf.remaining().min(this.read.len());
                buf.put_slice(&this.read[..n]);
                this.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            ready!(this.link.poll_read_ready(cx))?;
            match this.link.read_some(&mut this.read)? {
                ReadOutcome::Data | ReadOutcome::WouldBlock => {}
                ReadOutcome::Eof => this.eof = true,
            }
        }
    }
}

impl AsyncWrite for LinkIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write.len() >= WRITE_HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        this.write.extend_from_slice(buf);
        this.link.flush(&mut this.write)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.link.poll_shutdown(cx)
    }
}

/// A gRPC connection's stream: the plain socket (no copy in between), or TLS.
#[derive(Debug)]
pub(crate) enum GrpcIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS through the link.
    Tls(LinkIo),
}

impl GrpcIo {
    /// The stream of `link`.
    pub(crate) fn new(link: Link) -> GrpcIo {
        match link.into_plain() {
            Ok(tcp) => GrpcIo::Plain(tcp),
            Err(link) => GrpcIo::Tls(LinkIo::new(link)),
        }
    }
}

impl AsyncRead for GrpcIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcIo::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            GrpcIo::Tls(link) => Pin::new(link).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GrpcIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            GrpcIo::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            GrpcIo::Tls(link) => Pin::new(link).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            GrpcIo::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            GrpcIo::Tls(link) => Pin::new(link).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            GrpcIo::Plain(tcp) => tcp.is_write_vectored(),
            GrpcIo::Tls(link) => link.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcIo::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            GrpcIo::Tls(link) => Pin::new(link).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcIo::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            GrpcIo::Tls(link) => Pin::new(link).poll_shutdown(cx),
        }
    }
}
