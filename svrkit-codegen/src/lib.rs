//! # svrkit-codegen
//!
//! Turns proto3 IDL into svrkit client stubs and server traits. It parses with
//! [protox](https://docs.rs/protox) — pure Rust, so service authors need no `protoc` —
//! generates messages with prost-build, and adds, per service `Foo`:
//!
//! - `foo_methods`: `SERVICE_NAME`, one `MethodDesc` constant per RPC carrying the IDL's
//!   method options (`idempotent`, `timeout_ms`, `priority`), and `SERVICE`;
//! - `foo_client::FooClient<S = Channel>`: one typed async method per RPC, plus a
//!   `*_with(request, CallOptions)` variant; `S` is any (`'static`) tower service over a
//!   channel, and a bare `Channel` is called in place, without a clone or a boxed future;
//! - `foo_server::Foo`: the trait the author implements, methods returning
//!   `impl Future + Send` (no `async_trait`);
//! - `foo_server::FooServer<T>`: the adapter the server routes to, one `match` on the
//!   method name with an `unimplemented` fallback.
//!
//! Use it from `build.rs`:
//!
//! ```no_run
//! svrkit_codegen::compile(&["../../idl/demo/echo.proto"], &["../../idl"]).unwrap();
//! ```
//!
//! and include the output with `svrkit::include_proto!("svrkit.demo")`: one file per
//! package, named as the IDL spells the package. Code for several packages that refer to
//! each other goes in nested modules mirroring the package names (`corpus.match.type` in
//! `pub mod corpus { pub mod r#match { pub mod r#type { … } } }`), as with prost.
//!
//! ## What the generated code needs and names
//!
//! - It reaches prost and the well-known types only through `svrkit::codegen`
//!   (`google.protobuf.Timestamp` is `svrkit::codegen::prost_types::Timestamp`, `Empty`
//!   is `()`, the wrappers are `Option<i64>`, `Option<String>`, ...), so a service crate
//!   depends on `svrkit` alone.
//! - RPC names follow one rule, [`method_idents`]: snake case, then a `_` appended for a
//!   Rust keyword, a name the generated code defines itself (`New` -> `new_`) or a method
//!   the prelude gives every type by value (`Into` -> `into_`, which `client.into(…)`
//!   would otherwise not reach), and again while it or its variant with options
//!   ([`with_variant`]: `get_user_with`) would repeat an earlier RPC's
//!   (`GetUser`, `get_user` -> `get_user`, `get_user_`). `svrkit new` uses the same rule.
//! - Services take prost-build's type name (`Self` -> `Self_`); their helpers drop that
//!   `_` (`SelfClient` in `self_client`).
//! - Comments become doc comments, made safe for rustdoc first: code blocks never become
//!   doctests, `<T>` is not read as HTML (see the `comments` module).
//!
//! ## What is refused
//!
//! With an error naming the file and the item, never a panic or code that does not
//! compile: streaming methods, out-of-range method options, and two generated modules
//! of one package with one name (two services `Foo` and `FOO`, or a message `FooClient`
//! with nested types beside a service `Foo`).
//!
//! `tests/corpus` is the conformance corpus: IDL covering every proto3 feature, built and
//! served by the test suite.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod check;
mod comments;
mod descriptors;
mod generator;
mod names;
mod options;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use names::{
    client_module, client_type, message_path, method_idents, method_name, methods_module,
    module_ident, server_module, server_type, snake_case, trait_name, type_name, with_variant,
};
pub use options::MethodOptions;

/// Why code generation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The IDL does not parse or does not link.
    #[error("{}: {source}", file.as_deref().unwrap_or("<idl>"))]
    Parse {
        /// The file with the problem, when known.
        file: Option<String>,
        /// What protox reported.
        source: protox::Error,
    },
    /// A streaming method; svrkit supports unary methods only.
    #[error("{file}: method {service}/{method} is streaming; svrkit supports unary methods only")]
    Streaming {
        /// The .proto file.
        file: String,
        /// The fully qualified service name.
        service: String,
        /// The method name.
        method: String,
    },
    /// A method option with a value outside its range.
    #[error("{file}: method {service}/{method}: {problem}")]
    BadOption {
        /// The .proto file.
        file: String,
        /// The fully qualified service name.
        service: String,
        /// The method name.
        method: String,
        /// What is wrong.
        problem: String,
    },
    /// IDL that is valid protobuf but would generate Rust that cannot compile, such as two
    /// services whose generated modules would share a name.
    #[error("{file}: {item}: {problem}")]
    Unsupported {
        /// The .proto file.
        file: String,
        /// The fully qualified name of the item.
        item: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// prost-build failed on the descriptors (a bug in svrkit-codegen if it happens).
    #[error("generating messages: {0}")]
    Prost(std::io::Error),
    /// Writing the generated code failed.
    #[error("writing generated code: {0}")]
    Io(#[from] std::io::Error),
    /// `OUT_DIR` is not set and no output directory was given.
    #[error("OUT_DIR is not set; call from build.rs or set Builder::out_dir")]
    NoOutDir,
}

impl From<protox::Error> for Error {
    fn from(source: protox::Error) -> Error {
        Error::Parse {
            file: source.file().map(str::to_string),
            source,
        }
    }
}

/// Compiles `protos` (searched in `includes`) into `OUT_DIR`, printing `rerun-if-changed`
/// for every file read. The short form of [`Builder::compile`].
pub fn compile(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<(), Error> {
    Builder::new().compile(protos, includes)
}

/// Code generation settings.
#[derive(Debug, Clone)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    emit_rerun_if_changed: bool,
    bytes_as_bytes: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            out_dir: None,
            emit_rerun_if_changed: true,
            bytes_as_bytes: true,
        }
    }
}

impl Builder {
    /// Default settings: write to `OUT_DIR`, emit `rerun-if-changed`.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Writes to `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines (on by default).
    pub fn emit_rerun_if_changed(mut self, yes: bool) -> Builder {
        self.emit_rerun_if_changed = yes;
        self
    }

    /// Whether `bytes` fields become `prost::bytes::Bytes` (default) rather than `Vec<u8>`.
    /// `Bytes` fields are decoded without copying out of the received frame.
    pub fn bytes_as_bytes(mut self, yes: bool) -> Builder {
        self.bytes_as_bytes = yes;
        self
    }

    /// Generates code for `protos` into the output directory, one `<package>.rs` per
    /// protobuf package, named after the package as the IDL spells it
    /// (`corpus.match.type.rs`, even where Rust needs raw identifiers).
    pub fn compile(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::NoOutDir)?,
        };
        let files = self.generate(protos, includes)?;
        std::fs::create_dir_all(&out_dir)?;
        for (name, code) in files {
            let path = out_dir.join(name);
            // Leave an unchanged file alone so its mtime does not trigger rebuilds.
            if std::fs::read_to_string(&path).ok().as_deref() != Some(code.as_str()) {
                std::fs::write(path, code)?;
            }
        }
        Ok(())
    }

    /// Generates code for `protos` and returns it as `file name -> Rust source`.
    pub fn generate(
        &self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<BTreeMap<String, String>, Error> {
        let mut compiler = compiler(includes);
        compiler.include_source_info(true).include_imports(true);
        compiler.open_files(protos)?;
        if self.emit_rerun_if_changed {
            for file in compiler.files() {
                if let Some(path) = file.path() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        let pool = compiler.descriptor_pool();
        let methods = options::collect(&pool)?;
        check::names(&pool)?;

        let mut fds = compiler.file_descriptor_set();
        // What gRPC reflection serves of each service: its file and every file it imports.
        let reflected = descriptors::per_service(&fds);
        // svrkit's options need no code. The well-known types stay: prost-build maps them
        // to `prost_types` (re-exported by `svrkit::codegen`), but it needs their
        // descriptors to judge the messages that use them; their own output is dropped.
        fds.file.retain(|f| f.name() != options::OPTIONS_FILE);
        comments::sanitize(&mut fds);

        let dir = tempdir()?;
        let mut config = prost_build::Config::new();
        config.out_dir(&dir);
        // Generated code reaches prost through svrkit, so a service crate needs neither
        // `prost` nor `prost-types` as a dependency of its own.
        config.prost_path("::svrkit::codegen::prost");
        config.prost_types_path("::svrkit::codegen::prost_types");
        if self.bytes_as_bytes {
            // `bytes` fields decode as slices of the received frame: no copy.
            config.bytes(["."]);
        }
        config.service_generator(Box::new(generator::SvrkitGenerator::new(
            methods, reflected,
        )));
        config.compile_fds(fds).map_err(Error::Prost)?;

        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "google.protobuf.rs" {
                continue;
            }
            // prost-build writes `r#match.rs` for `package match;`; name the file after the
            // package as written, which is what `include_proto!` is given.
            files.insert(
                name.replace("r#", ""),
                std::fs::read_to_string(entry.path())?,
            );
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(files)
    }
}

/// A protox compiler reading `includes` first, then svrkit's options built in (so
/// `import "svrkit/options.proto"` needs no copy of svrkit's `idl/`), then the well-known
/// types: what svrkit-codegen compiles with, for tools that read the same IDL (`svrkit
/// new`, `svrkit call`).
pub fn compiler(includes: &[impl AsRef<Path>]) -> protox::Compiler {
    let mut resolver = protox::file::ChainFileResolver::new();
    for include in includes {
        resolver.add(protox::file::IncludeFileResolver::new(
            include.as_ref().to_owned(),
        ));
    }
    resolver.add(options::BuiltInOptions);
    resolver.add(protox::file::GoogleFileResolver::new());
    protox::Compiler::with_file_resolver(resolver)
}

/// A fresh directory for prost-build's output.
fn tempdir() -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "svrkit-codegen-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
