//! Non-blocking reads and writes on a connection's socket.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;

/// How many bytes a read asks for at least.
const READ_CHUNK: usize = 64 * 1024;

/// What one read produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Bytes were appended to the buffer.
    Data,
    /// Nothing to read right now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
}

/// Reads what the socket has into `buf` without waiting.
pub(crate) fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<ReadOutcome> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    match stream.try_read_buf(buf) {
        Ok(0) => Ok(ReadOutcome::Eof),
        Ok(_) => Ok(ReadOutcome::Data),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
        Err(e) => Err(e),
    }
}

/// Writes as much of `out` as the socket takes without waiting.
pub(crate) fn flush(stream: &TcpStream, out: &mut BytesMut) -> io::Result<()> {
    while !out.is_empty() {
        match stream.try_write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() && out.capacity() > 4 * READ_CHUNK {
        // Give back the memory a burst of large frames left behind.
        *out = BytesMut::new();
    }
    Ok(())
}
