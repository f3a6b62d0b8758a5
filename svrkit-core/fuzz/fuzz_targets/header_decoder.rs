//! Fuzzes the header codecs directly (not wrapped in frames, so every input reaches
//! them): whatever decodes re-encodes to its reported length and decodes back to the same
//! header; and the certificate name reader, which reads DER a TLS peer sent. Run with
//! `cargo fuzz run header_decoder` from `svrkit-core/` (nightly toolchain).
#![no_main]

use libfuzzer_sys::fuzz_target;
use svrkit::protocol::{GoAway, RequestHeader, ResponseHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = RequestHeader::decode(data) {
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out.len(), h.encoded_len());
        assert_eq!(RequestHeader::decode(&out), Ok(h));
    }
    if let Ok(h) = ResponseHeader::decode(data) {
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out.len(), h.encoded_len());
        assert_eq!(ResponseHeader::decode(&out), Ok(h));
    }
    if let Ok(g) = GoAway::decode(data) {
        let mut out = Vec::new();
        g.encode(&mut out);
        assert_eq!(GoAway::decode(&out), Ok(g));
    }
    let _ = svrkit::tls::uri_sans(data);
    let _ = svrkit::tls::identity_of(data);
});
