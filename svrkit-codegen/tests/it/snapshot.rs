//! Snapshot tests: a `.proto` in, the expected `.rs` beside it.
//!
//! Set `UPDATE_SNAPSHOTS=1` to rewrite the expected files after an intended change, then
//! review the diff like any other code change.

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn idl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl")
}

#[test]
fn greeter_matches_its_snapshot() {
    let dir = fixtures().join("greeter");
    let files = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .generate(&[dir.join("greeter.proto")], &[dir.clone(), idl()])
        .expect("generate");
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["fixture.greeter.rs"],
        "one file per package"
    );
    let generated = &files["fixture.greeter.rs"];
    let expected_path = dir.join("fixture.greeter.rs");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&expected_path, generated).expect("write snapshot");
    }
    let expected = std::fs::read_to_string(&expected_path)
        .expect("snapshot exists (UPDATE_SNAPSHOTS=1 creates it)");
    assert!(
        generated == &expected,
        "generated code differs from {}; rerun with UPDATE_SNAPSHOTS=1 and review the diff",
        expected_path.display()
    );
}

#[test]
fn generated_code_carries_options_names_and_docs() {
    let dir = fixtures().join("greeter");
    let files = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .generate(&[dir.join("greeter.proto")], &[dir.clone(), idl()])
        .expect("generate");
    let code = &files["fixture.greeter.rs"];
    for needle in [
        "pub mod greeter_methods",
        "pub const SERVICE_NAME: &str = \"fixture.greeter.Greeter\"",
        "method: \"SayHello\"",
        "idempotent: true",
        "timeout: Some(svrkit::codegen::Duration::from_millis(250))",
        "priority: 3",
        "stale_read: true",
        "pub struct GreeterClient<S = Channel>",
        "pub async fn say_hello(",
        "pub async fn say_hello_with(",
        "pub trait Greeter: Send + Sync + 'static",
        "impl std::future::Future<Output = Result<super::HelloReply, Status>> + Send",
        "pub struct GreeterServer<T>",
        "_ => svrkit::codegen::unimplemented(method)",
        "/// Says hello.",
        "/// Second paragraph of the service comment.",
        "pub async fn reset(&self, request: ()) -> Result<(), Status>",
        "pub mod http_gateway_client",
        "pub struct HttpGatewayClient",
        "pub avatar: ::svrkit::codegen::prost::bytes::Bytes",
    ] {
        assert!(
            code.contains(needle),
            "missing `{needle}` in generated code"
        );
    }
    // Reset has no options: not idempotent, no timeout, no priority, not a stale read.
    assert!(code.contains(
        "method: \"Reset\",\n        idempotent: false,\n        timeout: None,\n        priority: 0,\n        stale_read: false,"
    ));
}

#[test]
fn streaming_methods_are_refused_naming_file_and_method() {
    let dir = fixtures().join("streaming");
    let err = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .generate(&[dir.join("streaming.proto")], &[dir.clone(), idl()])
        .expect_err("streaming is refused");
    let message = err.to_string();
    assert!(message.contains("streaming.proto"), "{message}");
    assert!(
        message.contains("fixture.streaming.Clock/Watch"),
        "{message}"
    );
}

#[test]
fn parse_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("svrkit-codegen-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    std::fs::write(dir.join("bad.proto"), "syntax = \"proto3\";\nmessage {").expect("write");
    let err = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .generate(&[dir.join("bad.proto")], std::slice::from_ref(&dir))
        .expect_err("parse error");
    assert!(err.to_string().contains("bad.proto"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `text` as `clash.proto` in a fresh directory and generates it.
fn generate_one(tag: &str, text: &str) -> Result<(), svrkit_codegen::Error> {
    let dir = std::env::temp_dir().join(format!("svrkit-codegen-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    std::fs::write(dir.join("clash.proto"), text).expect("write");
    let result = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .generate(&[dir.join("clash.proto")], &[dir.clone(), idl()])
        .map(drop);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[test]
fn module_clashes_are_refused_naming_file_and_items() {
    // Two services whose Rust names agree (`Foo`), so their modules would too.
    let err = generate_one(
        "twins",
        "syntax = \"proto3\";\npackage p;\nmessage M {}\nservice Foo { rpc A(M) returns (M); }\nservice FOO { rpc A(M) returns (M); }\n",
    )
    .expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("clash.proto"), "{message}");
    assert!(
        message.contains("service p.FOO") && message.contains("service p.Foo"),
        "{message}"
    );
    assert!(message.contains("foo_methods"), "{message}");

    // A message whose nested-types module is named like a service's client module.
    let err = generate_one(
        "nested",
        "syntax = \"proto3\";\npackage p;\nmessage FooClient { message Inner {} }\nservice Foo { rpc A(FooClient) returns (FooClient); }\n",
    )
    .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("message p.FooClient") && message.contains("foo_client"),
        "{message}"
    );

    // The same names in different packages, or without nested types, are fine.
    generate_one(
        "fine",
        "syntax = \"proto3\";\npackage p;\nmessage FooClient { map<string, string> m = 1; optional int32 o = 2; }\nservice Foo { rpc A(FooClient) returns (FooClient); }\n",
    )
    .expect("a message without a module does not clash");
}

#[test]
fn the_options_are_built_in_when_no_include_directory_has_them() {
    // A crate that depends on svrkit-codegen from a registry has no copy of svrkit's
    // `idl/`: with its own directory alone, `import "svrkit/options.proto"` still works and
    // the options still reach the generated code, the same as with `idl/` included.
    let dir = fixtures().join("greeter");
    let alone = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .generate(&[dir.join("greeter.proto")], std::slice::from_ref(&dir))
        .expect("generate without idl/");
    let with_idl = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .generate(&[dir.join("greeter.proto")], &[dir.clone(), idl()])
        .expect("generate with idl/");
    assert_eq!(alone, with_idl);
    assert!(alone["fixture.greeter.rs"].contains("priority: 3"));
}
