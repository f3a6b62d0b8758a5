//! `svrkit::dynamic`: a method found by name in descriptors compiled at run time, called
//! with JSON, its IDL options applied, its mistakes refused before anything is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use svrkit::codegen::{BoxFuture, Bytes, MethodDesc, ServiceDesc, ServiceHandler};
use svrkit::dynamic::{DynamicClient, DynamicError, describe};
use svrkit::{CallOptions, Channel, Code, Context, Server, Status};

const IDL: &str = r#"
syntax = "proto3";
package test.dyn;
import "svrkit/options.proto";
import "google/protobuf/timestamp.proto";

message Note {
  string text = 1;
  repeated int64 counts = 2;
  google.protobuf.Timestamp at = 3;
}

service Notes {
  rpc Mirror(Note) returns (Note) {
    option (svrkit.idempotent) = true;
    option (svrkit.timeout_ms) = 1500;
    option (svrkit.priority) = 7;
  }
  rpc Flaky(Note) returns (Note);
}

service Other { rpc Mirror(Note) returns (Note); }
"#;

const MIRROR: MethodDesc = MethodDesc {
    service: "test.dyn.Notes",
    method: "Mirror",
    idempotent: true,
    timeout: None,
    priority: 0,
    stale_read: false,
};
const FLAKY: MethodDesc = MethodDesc {
    service: "test.dyn.Notes",
    method: "Flaky",
    idempotent: false,
    timeout: None,
    priority: 0,
    stale_read: false,
};
static NOTES: ServiceDesc = ServiceDesc {
    name: "test.dyn.Notes",
    methods: &[MIRROR, FLAKY],
};

/// Answers Mirror with the request's bytes and the priority it saw; Flaky with
/// `unavailable`, counting its calls.
struct Notes {
    flaky_calls: Arc<AtomicU32>,
    seen_priority: Arc<AtomicU32>,
}

impl ServiceHandler for Notes {
    fn descriptor(&self) -> &'static ServiceDesc {
        &NOTES
    }
    fn call(
        &self,
        method: &'static MethodDesc,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        self.seen_priority
            .store(Context::current().business_priority(), Ordering::SeqCst);
        if method.method == "Flaky" {
            self.flaky_calls.fetch_add(1, Ordering::SeqCst);
            return Box::pin(std::future::ready(Err(Status::unavailable("down"))));
        }
        Box::pin(std::future::ready(Ok(body)))
    }
}

fn pool() -> prost_reflect::DescriptorPool {
    let dir = std::env::temp_dir().join(format!("svrkit-dynamic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("notes.proto"), IDL).expect("write");
    let idl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl");
    // The compiler's own pool keeps the options' extensions (a `prost_types` descriptor
    // set would drop them).
    let mut compiler = protox::Compiler::new([dir.clone(), idl]).expect("compiler");
    compiler.open_file("notes.proto").expect("compiles");
    let _ = std::fs::remove_dir_all(&dir);
    compiler.descriptor_pool()
}

#[tokio::test]
async fn a_method_named_at_run_time_is_called_with_json_and_its_idl_options() {
    let pool = pool();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let flaky_calls = Arc::new(AtomicU32::new(0));
    let seen_priority = Arc::new(AtomicU32::new(0));
    let notes = Notes {
        flaky_calls: Arc::clone(&flaky_calls),
        seen_priority: Arc::clone(&seen_priority),
    };
    tokio::spawn(
        Server::builder()
            .add_service(notes)
            .serve(listener, std::future::pending()),
    );
    let client = DynamicClient::new(Channel::lazy([addr]), pool);

    let mirror = client
        .find_method("Notes/Mirror")
        .expect("short service name");
    let described = describe(&mirror);
    assert!(described.idempotent);
    assert_eq!(described.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(described.priority, 7);
    assert!(!describe(&client.find_method("test.dyn.Notes/Flaky").expect("full")).idempotent);

    let json = r#"{"text":"hi","counts":["1","-2"],"at":"2026-12-02T10:00:00Z"}"#;
    let reply = client
        .call_json("test.dyn.Notes/Mirror", json, CallOptions::new())
        .await
        .expect("mirrored");
    assert_eq!(
        serde_json::to_value(&reply).expect("json"),
        serde_json::json!({"text": "hi", "counts": ["1", "-2"], "at": "2026-12-02T10:00:00Z"})
    );
    assert_eq!(
        seen_priority.load(Ordering::SeqCst),
        7,
        "the IDL's priority was stamped"
    );

    // A method that is not idempotent is not retried after it ran.
    let flaky = client
        .call_json("Notes/Flaky", "{}", CallOptions::new())
        .await
        .expect_err("down");
    assert!(
        matches!(&flaky, DynamicError::Call(s) if s.code() == Code::Unavailable),
        "{flaky}"
    );
    assert_eq!(flaky_calls.load(Ordering::SeqCst), 1);

    // Mistakes are refused by name, before anything is sent.
    for (name, json, want) in [
        ("Notes.Mirror", "{}", "expected SERVICE/Method"),
        ("Nope/Mirror", "{}", "unknown service"),
        ("Notes/Nope", "{}", "unknown method"),
        ("Mirror/Mirror", "{}", "unknown service"),
        (
            "test.dyn.Other/Mirror",
            r#"{"text": 5}"#,
            "does not fit test.dyn.Note",
        ),
        ("Notes/Mirror", r#"{"text":"a"} trailing"#, "does not fit"),
        ("Notes/Mirror", r#"{"nope":1}"#, "does not fit"),
    ] {
        let error = client
            .call_json(name, json, CallOptions::new())
            .await
            .expect_err(name);
        assert!(error.to_string().contains(want), "{name} {json}: {error}");
    }
}
