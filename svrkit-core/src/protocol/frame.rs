//! Frame layout, the connection preface, and the incremental frame decoder.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The connection preface a client sends before its first frame: magic `SVRK`, the
/// protocol version, and three reserved zero bytes.
pub const PREFACE: [u8; 8] = [b'S', b'V', b'R', b'K', PROTOCOL_VERSION, 0, 0, 0];
/// Length of [`PREFACE`].
pub const PREFACE_LEN: usize = PREFACE.len();
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes in a frame's fixed head, including the 4-byte length field.
pub const FRAME_HEAD_LEN: usize = 16;
/// The largest header a frame can carry (its length is a `u16`).
pub const MAX_HEADER_LEN: usize = u16::MAX as usize;

/// Bytes of the fixed head counted by the length field (everything after it).
const HEAD_AFTER_LENGTH: usize = FRAME_HEAD_LEN - 4;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client to server: a call. Header: `RequestHeader`; body: the request message.
    Request = 1,
    /// Server to client: the outcome of a call. Header: `ResponseHeader`; body: the
    /// response message when the code is ok, else empty.
    Response = 2,
    /// Client to server: the caller gave up on the request with this id.
    Cancel = 3,
    /// Either way: liveness probe; the id is opaque and echoed in the pong.
    Ping = 4,
    /// Answer to a ping, with the ping's id.
    Pong = 5,
    /// Server to client: no new requests on this connection. The id is the highest request
    /// id the server accepted; header: `GoAway`.
    GoAway = 6,
}

impl FrameKind {
    fn from_u8(value: u8) -> Option<FrameKind> {
        Some(match value {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Cancel,
            4 => FrameKind::Ping,
            5 => FrameKind::Pong,
            6 => FrameKind::GoAway,
            _ => return None,
        })
    }
}

/// One decoded frame. `header` and `body` share the receive buffer (no copy).
#[derive(Debug, Clone)]
pub struct Frame {
    /// The frame kind.
    pub kind: FrameKind,
    /// Flag bits; none are defined in version 1 and receivers ignore them.
    pub flags: u8,
    /// The request id (or ping id, or last accepted id for goaway).
    pub id: u64,
    /// The protobuf header bytes.
    pub header: Bytes,
    /// The body bytes.
    pub body: Bytes,
}

/// Why a byte stream is not a valid frame sequence. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field exceeds the receiver's limit; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The length field is smaller than the fixed head it must contain.
    #[error("frame length {0} is shorter than the 12-byte fixed head")]
    TooShort(usize),
    /// The header length points past the end of the frame.
    #[error("header length {header} exceeds the frame's {available} bytes after the head")]
    HeaderOverrun {
        /// The announced header length.
        header: usize,
        /// Bytes available after the fixed head.
        available: usize,
    },
    /// A kind byte this version does not define.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

/// Why the connection preface was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefaceError {
    /// The first four bytes are not `SVRK`: not an svrkit client.
    #[error("bad connection preface: not an svrkit client")]
    BadMagic,
    /// An svrkit client of a version this server does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
}

/// Checks a complete 8-byte preface.
pub fn check_preface(bytes: &[u8; PREFACE_LEN]) -> Result<(), PrefaceError> {
    if bytes[..4] != PREFACE[..4] {
        return Err(PrefaceError::BadMagic);
    }
    if bytes[4] != PROTOCOL_VERSION {
        return Err(PrefaceError::UnsupportedVersion(bytes[4]));
    }
    Ok(())
}

/// Writes a frame's fixed head. The caller then writes exactly `header_len` header bytes
/// and `body_len` body bytes.
pub fn encode_frame_head(
    buf: &mut impl BufMut,
    kind: FrameKind,
    id: u64,
    header_len: usize,
    body_len: usize,
) {
    debug_assert!(header_len <= MAX_HEADER_LEN);
    let len = HEAD_AFTER_LENGTH + header_len + body_len;
    // Callers check sizes against the frame limit (at most u32::MAX) before encoding.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    buf.put_u8(kind as u8);
    buf.put_u8(0);
    buf.put_u16(u16::try_from(header_len).unwrap_or(u16::MAX));
    buf.put_u64(id);
}

/// Takes one complete frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed; it then reserves room for the rest of
/// the frame, but only after the length passed the `max_frame_size` check, so a peer
/// cannot make the receiver allocate more than the limit.
pub fn decode_frame(
    buf: &mut BytesMut,
    max_frame_size: usize,
) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_frame_size {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_size,
        });
    }
    if len < HEAD_AFTER_LENGTH {
        return Err(FrameError::TooShort(len));
    }
    if buf.len() < 4 + HEAD_AFTER_LENGTH {
        return Ok(None);
    }
    let kind = FrameKind::from_u8(buf[4]).ok_or(FrameError::UnknownKind(buf[4]))?;
    let header_len = u16::from_be_bytes([buf[6], buf[7]]) as usize;
    if header_len > len - HEAD_AFTER_LENGTH {
        return Err(FrameError::HeaderOverrun {
            header: header_len,
            available: len - HEAD_AFTER_LENGTH,
        });
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(4 + len);
    frame.advance(5);
    let flags = frame.get_u8();
    frame.advance(2);
    let id = frame.get_u64();
    let mut rest = frame.freeze();
    let header = rest.split_to(header_len);
    Ok(Some(Frame {
        kind,
        flags,
        id,
        header,
        body: rest,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(kind: FrameKind, id: u64, header: &[u8], body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_frame_head(&mut buf, kind, id, header.len(), body.len());
        buf.put_slice(header);
        buf.put_slice(body);
        buf
    }

    #[test]
    fn a_frame_round_trips_and_leaves_the_next_in_place() {
        let mut buf = encode(FrameKind::Request, 7, b"hdr", b"body!");
        buf.extend_from_slice(&encode(FrameKind::Cancel, 8, b"", b""));
        let f = decode_frame(&mut buf, 1024)
            .expect("valid")
            .expect("complete");
        assert_eq!((f.kind, f.id, f.flags), (FrameKind::Request, 7, 0));
        assert_eq!((&f.header[..], &f.body[..]), (&b"hdr"[..], &b"body!"[..]));
        let g = decode_frame(&mut buf, 1024)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            (g.kind, g.id, g.header.len(), g.body.len()),
            (FrameKind::Cancel, 8, 0, 0)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn every_proper_prefix_asks_for_more() {
        let full = encode(FrameKind::Response, u64::MAX, b"h", b"0123456789");
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(
                decode_frame(&mut part, 1024)
                    .expect("prefix is valid")
                    .is_none(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let err = decode_frame(&mut buf, 16 << 20).expect_err("too large");
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 16 << 20
            }
        );
        assert!(
            buf.capacity() < 1024,
            "no room was reserved for the announced length"
        );
    }

    #[test]
    fn malformed_heads_are_errors() {
        let mut short = BytesMut::from(&[0, 0, 0, 3, 1, 0, 0][..]);
        assert!(matches!(
            decode_frame(&mut short, 64),
            Err(FrameError::TooShort(3))
        ));
        let mut kind = encode(FrameKind::Ping, 1, b"", b"");
        kind[4] = 99;
        assert!(matches!(
            decode_frame(&mut kind, 64),
            Err(FrameError::UnknownKind(99))
        ));
        let mut overrun = encode(FrameKind::Request, 1, b"ab", b"");
        overrun[7] = 10;
        assert!(matches!(
            decode_frame(&mut overrun, 64),
            Err(FrameError::HeaderOverrun { .. })
        ));
    }

    #[test]
    fn preface_checks_magic_and_version() {
        assert_eq!(check_preface(&PREFACE), Ok(()));
        assert_eq!(check_preface(b"GET / HT"), Err(PrefaceError::BadMagic));
        let mut v2 = PREFACE;
        v2[4] = 2;
        assert_eq!(check_preface(&v2), Err(PrefaceError::UnsupportedVersion(2)));
    }

    /// A deterministic stand-in for the cargo-fuzz target (which needs nightly): random
    /// byte strings never panic the decoder, and every frame it returns is in bounds.
    #[test]
    fn random_bytes_never_panic_the_decoder() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 && next() % 2 == 0 {
                // Make the length field plausible so deeper paths are reached.
                let l = (next() % 48) as u32;
                bytes[..4].copy_from_slice(&l.to_be_bytes());
            }
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode_frame(&mut buf, 48) {
                assert!(frame.header.len() + frame.body.len() <= 48);
                let _ = crate::protocol::RequestHeader::decode(&frame.header);
                let _ = crate::protocol::ResponseHeader::decode(&frame.header);
                let _ = crate::protocol::GoAway::decode(&frame.header);
            }
        }
    }
}
