//! A connection's byte stream: plain TCP, or TLS 1.3 over it.
//!
//! Both keep the drivers' readiness-based shape (wait until readable, read what is
//! there without waiting, write what the socket takes): TLS runs sans-I/O — rustls
//! decrypts what a non-blocking read brought and encrypts what the driver queued — so
//! the plain path stays exactly the old one, and TLS needs no extra task or copy stage.

use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;

use super::io::{ReadOutcome, flush, read_some};
use crate::tls::{ClientTls, ServerTls};

/// The most plaintext taken from TLS in one read.
const TLS_READ_CHUNK: usize = 64 * 1024;

/// One connection's transport.
#[derive(Debug)]
pub(crate) struct Link {
    tcp: TcpStream,
    tls: Option<Box<rustls::Connection>>,
    /// Decrypted bytes wait inside rustls (they came with the handshake's last flight).
    buffered: bool,
}

/// Reads from the socket without waiting (`WouldBlock` when it has nothing).
struct SocketRead<'a>(&'a TcpStream);

impl Read for SocketRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// Writes to the socket without waiting.
struct SocketWrite<'a>(&'a TcpStream);

impl Write for SocketWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Link {
    /// Plain TCP.
    pub(crate) fn plain(tcp: TcpStream) -> Link {
        Link {
            tcp,
            tls: None,
            buffered: false,
        }
    }

    /// Connects to `peer` (no Nagle delay), with TLS as the client when `tls` is set (its
    /// handshake bounded by 10 s; the caller bounds the whole connect too).
    pub(crate) async fn dial(
        peer: std::net::SocketAddr,
        tls: Option<&ClientTls>,
    ) -> io::Result<Link> {
        let tcp = TcpStream::connect(peer).await?;
        tcp.set_nodelay(true)?;
        match tls {
            None => Ok(Link::plain(tcp)),
            Some(tls) => Link::client(tcp, tls, Duration::from_secs(10)).await,
        }
    }

    /// TLS as the client, after a handshake bounded by `timeout`.
    pub(crate) async fn client(
        tcp: TcpStream,
        tls: &ClientTls,
        timeout: Duration,
    ) -> io::Result<Link> {
        let connection =
            rustls::ClientConnection::new(tls.config(), tls.server_name()).map_err(invalid)?;
        Link::handshake(tcp, connection.into(), timeout).await
    }

    /// TLS as the server, after a handshake bounded by `timeout`.
    pub(crate) async fn server(
        tcp: TcpStream,
        tls: &ServerTls,
        timeout: Duration,
    ) -> io::Result<Link> {
        let connection = rustls::ServerConnection::new(tls.config()).map_err(invalid)?;
        Link::handshake(tcp, connection.into(), timeout).await
    }

    async fn handshake(
        tcp: TcpStream,
        connection: rustls::Connection,
        timeout: Duration,
    ) -> io::Result<Link> {
        let mut link = Link {
            tcp,
            tls: Some(Box::new(connection)),
            buffered: false,
        };
        match tokio::time::timeout(timeout, link.complete_handshake()).await {
            Ok(Ok(())) => Ok(link),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the TLS handshake took longer than {timeout:?}"),
            )),
        }
    }

    async fn complete_handshake(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        let tcp = &self.tcp;
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut SocketWrite(tcp)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
                    Err(e) => return Err(e),
                }
            }
            if !tls.is_handshaking() {
                break;
            }
            match tls.read_tls(&mut SocketRead(tcp)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Tell the peer why (the alert rustls queued), then give up.
                        let _ = tls.write_tls(&mut SocketWrite(tcp));
                        return Err(invalid(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.readable().await?,
                Err(e) => return Err(e),
            }
        }
        let state = tls.process_new_packets().map_err(invalid)?;
        self.buffered = state.plaintext_bytes_to_read() > 0;
        Ok(())
    }

    /// The verified peer's first certificate (DER), for TLS links.
    pub(crate) fn peer_certificate(&self) -> Option<&[u8]> {
        let certs = self.tls.as_deref()?.peer_certificates()?;
        certs.first().map(|c| c.as_ref())
    }

    /// The socket itself, for a plain link (a TLS link is handed back).
    pub(crate) fn into_plain(self) -> Result<TcpStream, Link> {
        match self.tls {
            None => Ok(self.tcp),
            Some(_) => Err(self),
        }
    }

    /// Whether TLS chose HTTP/2 by ALPN: the client speaks gRPC, not svrkit.
    pub(crate) fn negotiated_h2(&self) -> bool {
        self.tls
            .as_deref()
            .and_then(|tls| tls.alpn_protocol())
            .is_some_and(|p| p == b"h2")
    }

    /// [`readable`](Self::readable) as a poll.
    pub(crate) fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.buffered {
            return std::task::Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    /// [`writable`](Self::writable) as a poll.
    pub(crate) fn poll_write_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    /// Closes the sending side (after a TLS close_notify), once everything is written.
    pub(crate) fn poll_shutdown(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            while tls.wants_write() {
                match tls.write_tls(&mut SocketWrite(&self.tcp)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::task::ready!(self.tcp.poll_write_ready(cx))?;
                    }
                    Err(e) => return std::task::Poll::Ready(Err(e)),
                }
            }
        }
        tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.tcp), cx)
    }

    /// Waits until a read may find something.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        if self.buffered {
            return Ok(());
        }
        self.tcp.readable().await
    }

    /// Waits until the socket takes writes.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// True while encrypted bytes wait to be written (beyond the driver's own buffer).
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.as_deref().is_some_and(|tls| tls.wants_write())
    }

    /// Reads what is available into `buf` without waiting.
    pub(crate) fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<ReadOutcome> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return read_some(&self.tcp, buf);
        };
        let mut outcome = ReadOutcome::WouldBlock;
        if !self.buffered {
            match tls.read_tls(&mut SocketRead(&self.tcp)) {
                Ok(0) => outcome = ReadOutcome::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(outcome),
                Err(e) => return Err(e),
            }
        }
        self.buffered = false;
        if let Err(e) = tls.process_new_packets() {
            let _ = tls.write_tls(&mut SocketWrite(&self.tcp));
            return Err(invalid(e));
        }
        let mut chunk = [0u8; 16 * 1024];
        let mut taken = 0;
        while taken < TLS_READ_CHUNK {
            match tls.reader().read(&mut chunk) {
                Ok(0) => {
                    // close_notify: nothing more will come.
                    return Ok(if taken > 0 {
                        ReadOutcome::Data
                    } else {
                        ReadOutcome::Eof
                    });
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    taken += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if taken == TLS_READ_CHUNK {
            // More plaintext waits inside rustls.
            self.buffered = true;
        }
        // Key updates or alerts may need an answer.
        while tls.wants_write() {
            match tls.write_tls(&mut SocketWrite(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(if taken > 0 {
            ReadOutcome::Data
        } else {
            outcome
        })
    }

    /// Writes as much of `out` as the socket takes without waiting.
    pub(crate) fn flush(&mut self, out: &mut BytesMut) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return flush(&self.tcp, out);
        };
        loop {
            let mut progressed = false;
            if !out.is_empty() {
                let n = tls.writer().write(out)?;
                if n > 0 {
                    out.advance(n);
                    progressed = true;
                }
            }
            while tls.wants_write() {
                match tls.write_tls(&mut SocketWrite(&self.tcp)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => progressed = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if out.is_empty() || !progressed {
                return Ok(());
            }
        }
    }

    /// Writes everything left (`out` and TLS's own), then hands back the socket.
    pub(crate) async fn finish(mut self, mut out: BytesMut) -> io::Result<TcpStream> {
        while !out.is_empty() || self.wants_write() {
            self.flush(&mut out)?;
            if !out.is_empty() || self.wants_write() {
                self.writable().await?;
            }
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            while tls.wants_write() {
                match tls.write_tls(&mut SocketWrite(&self.tcp)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(self.tcp)
    }
}
