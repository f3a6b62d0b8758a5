//! The codegen conformance corpus, compiled.
//!
//! `idl/corpus/` holds IDL that exercises every proto3 feature a service author may use
//! (see each file's header); `build.rs` generates it with `svrkit_codegen::compile`, and
//! this crate includes it the way prost's documentation recommends: one Rust module per
//! protobuf package segment, so that cross-package paths (`super::super::types::Tree`)
//! resolve. That it builds is the first test; `tests/` serves and calls every service;
//! `cargo test --doc` proves no IDL comment became a doctest.

#![allow(missing_docs, clippy::all)]

/// `package corpus.*`.
pub mod corpus {
    /// `corpus.types`: every field kind.
    pub mod types {
        svrkit::include_proto!("corpus.types");
    }
    /// `corpus.wkt`: every well-known type.
    pub mod wkt {
        svrkit::include_proto!("corpus.wkt");
    }
    /// `corpus.match.type`: keywords and colliding names.
    pub mod r#match {
        /// `corpus.match.type`.
        pub mod r#type {
            svrkit::include_proto!("corpus.match.type");
        }
    }
    /// `corpus.multi`: one package over two files, three services.
    pub mod multi {
        svrkit::include_proto!("corpus.multi");
    }
    /// `corpus.docs`: comments rustdoc could misread.
    pub mod docs {
        svrkit::include_proto!("corpus.docs");
    }
}

pub mod serve;

/// The generated code, as text, for tests that look at it.
pub mod generated {
    /// `corpus.docs`, as generated.
    pub const DOCS: &str = include_str!(concat!(env!("OUT_DIR"), "/corpus.docs.rs"));
}
