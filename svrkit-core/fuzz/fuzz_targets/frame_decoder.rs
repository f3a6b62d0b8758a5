//! Fuzzes everything a server does with bytes from the network before dispatch: the
//! preface check, the frame decoder (under a small frame limit so the limit paths are
//! reached), and the three header decoders. Run with `cargo fuzz run frame_decoder`
//! from `svrkit-core/` (nightly toolchain).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use svrkit::protocol::{self, GoAway, RequestHeader, ResponseHeader, PREFACE_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(preface) = data.first_chunk::<PREFACE_LEN>() {
        let _ = protocol::check_preface(preface);
    }
    let limit = 4096;
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = protocol::decode_frame(&mut buf, limit) {
        assert!(frame.header.len() + frame.body.len() + 12 <= limit);
        if let Ok(h) = RequestHeader::decode(&frame.header) {
            // What decodes must re-encode to the same length it would report.
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out.len(), h.encoded_len());
        }
        let _ = ResponseHeader::decode(&frame.header);
        let _ = GoAway::decode(&frame.header);
    }
});
