//! The benchmark's messages and services, generated for svrkit and for tonic.

/// svrkit's generated code for `bench.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod svrkit_gen {
    include!(concat!(env!("OUT_DIR"), "/svrkit/bench.rs"));
}

/// tonic's generated code for `bench.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod tonic_gen {
    include!(concat!(env!("OUT_DIR"), "/tonic/bench.rs"));
}
