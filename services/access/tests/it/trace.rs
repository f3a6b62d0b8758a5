//! One request through access-short → contact → contactstore is one OpenTelemetry trace:
//! the real gateway, logic and storage services (with account and accountstore for
//! sign-in) serve on loopback in this process, `svrkit::otel::SpanLayer` exports every
//! span to an in-process exporter, and the spans' parent/child links are checked against
//! the caller's W3C `traceparent`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use access::{Gateway, Limits};
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SimpleSpanProcessor, SpanData, SpanExporter};
use serde_json::{Value, json};
use svrkit::context::TraceParent;
use svrkit::{Channel, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use wx_api::account::AccountClient;
use wx_api::account::account_server::AccountServer;
use wx_api::contact::ContactClient;
use wx_api::contact::contact_server::ContactServer;
use wx_api::storage::account_store_server::AccountStoreServer;
use wx_api::storage::contact_store_server::ContactStoreServer;
use wx_api::storage::{AccountStoreClient, ContactStoreClient};

/// The test's exporter: keeps every span it is handed.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(batch);
        Ok(())
    }
}

/// Serves `server` on a fresh loopback port for the rest of the test.
async fn serve<L, S>(listener: TcpListener, server: svrkit::Server<L>)
where
    L: tower::Layer<svrkit::server::Routed, Service = S> + Send + 'static,
    S: tower::Service<
            svrkit::server::ServerRequest,
            Response = bytes::Bytes,
            Error = svrkit::Status,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(server.serve(listener, std::future::pending()));
}

async fn bind() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// One HTTP/1.1 POST; the status, the `traceparent` answered, and the JSON body.
async fn post(
    addr: std::net::SocketAddr,
    action: &str,
    body: &Value,
    token: Option<&str>,
    traceparent: Option<&str>,
) -> (u16, Option<String>, Value) {
    let body = body.to_string();
    let mut request = format!(
        "POST /v1/{action} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(traceparent) = traceparent {
        request.push_str(&format!("traceparent: {traceparent}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("answered in time");
    let text = String::from_utf8(answer).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let traceparent = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("traceparent")
            .then(|| value.trim().to_string())
    });
    // Chunked or not, the JSON object is between the first '{' and the last '}'.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => serde_json::from_str(&body[start..=end]).expect("JSON"),
        _ => Value::Null,
    };
    (status, traceparent, json)
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_through_access_contact_and_contactstore_is_one_trace() {
    let collected = Collected::default();
    let subscriber = tracing_subscriber::registry().with(svrkit::otel::SpanLayer::new(
        SimpleSpanProcessor::new(collected.clone()),
    ));
    // This thread runs every server of the test (a current-thread runtime).
    let _default = tracing::subscriber::set_default(subscriber);

    let data_dir = svrkit_testkit::tempdir("access-trace");
    let data = data_dir.path();
    let (account_store_l, account_store) = bind().await;
    let (contact_store_l, contact_store) = bind().await;
    let (account_l, account) = bind().await;
    let (contact_l, contact) = bind().await;
    let (http_l, http) = bind().await;
    let engine = |name: &str| wx_storage::Engine::open(&data.join(name)).expect("engine");
    serve(
        account_store_l,
        Server::builder().add_service(AccountStoreServer::new(
            wx_storage::AccountStoreService::new(engine("accountstore")).expect("store"),
        )),
    )
    .await;
    serve(
        contact_store_l,
        Server::builder().add_service(ContactStoreServer::new(
            wx_storage::ContactStoreService::new(engine("contactstore")).expect("store"),
        )),
    )
    .await;
    let account_client = AccountClient::new(Channel::lazy([account]));
    let contact_client = ContactClient::new(Channel::lazy([contact]));
    serve(
        account_l,
        Server::builder().add_service(AccountServer::new(account::AccountService::new(
            AccountStoreClient::new(Channel::lazy([account_store])),
            contact_client.clone(),
        ))),
    )
    .await;
    serve(
        contact_l,
        Server::builder().add_service(ContactServer::new(contact::ContactService::new(
            ContactStoreClient::new(Channel::lazy([contact_store])),
            account_client.clone(),
            None,
        ))),
    )
    .await;
    let gateway = Arc::new(Gateway::new(
        access::clients::Clients {
            account: account_client,
            contact: contact_client,
            ..access::clients::Clients::over(&Channel::lazy([]), false)
        },
        Limits::default(),
    ));
    tokio::spawn(access::http::serve(
        http_l,
        gateway,
        access::edge::EdgeLimits::default(),
        None,
        std::future::pending(),
    ));

    let credentials = json!({ "name": "tracy", "password": "a long enough password" });
    let (status, _, _) = post(http, "register", &credentials, None, None).await;
    assert_eq!(status, 200);
    let (status, started, login) = post(http, "login", &credentials, None, None).await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().expect("token").to_string();
    // Without a traceparent the gateway starts a trace and names it in its answer.
    let started = started.and_then(|t| TraceParent::parse(&t));
    assert!(started.is_some(), "the answer names a trace");

    collected.0.lock().expect("lock").clear();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, answered, listed) = post(
        http,
        "friends.list",
        &json!({}),
        Some(&token),
        Some(incoming),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let answered = TraceParent::parse(&answered.expect("a traceparent answer")).expect("valid");
    let incoming = TraceParent::parse(incoming).expect("valid");
    assert_eq!(
        answered.trace_id, incoming.trace_id,
        "the caller's trace goes on"
    );

    let spans = collected.0.lock().expect("lock").clone();
    let trace = opentelemetry::trace::TraceId::from(incoming.trace_id);
    assert!(
        spans.iter().all(|s| s.span_context.trace_id() == trace),
        "every span of the request is in the caller's trace: {:#?}",
        spans
            .iter()
            .map(|s| (&s.name, s.span_context.trace_id()))
            .collect::<Vec<_>>()
    );
    let find = |name: &str, kind: SpanKind| -> SpanData {
        spans
            .iter()
            .find(|s| s.name == name && s.span_kind == kind)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no {kind:?} span {name}: {:#?}",
                    spans
                        .iter()
                        .map(|s| (&s.name, &s.span_kind))
                        .collect::<Vec<_>>()
                )
            })
    };
    let edge = find("friends.list", SpanKind::Server);
    let call_contact = find("wx.contact.Contact/ListFriends", SpanKind::Client);
    let contact_rpc = find("wx.contact.Contact/ListFriends", SpanKind::Server);
    let call_store = find("wx.storage.ContactStore/ListEdges", SpanKind::Client);
    let store_rpc = find("wx.storage.ContactStore/ListEdges", SpanKind::Server);

    // The links: caller → edge → call → contact → call → contactstore.
    let id = |s: &SpanData| s.span_context.span_id();
    assert_eq!(
        edge.parent_span_id,
        opentelemetry::trace::SpanId::from(incoming.parent_id)
    );
    assert!(edge.parent_span_is_remote);
    assert_eq!(
        id(&edge),
        opentelemetry::trace::SpanId::from(answered.parent_id)
    );
    assert_eq!(call_contact.parent_span_id, id(&edge));
    assert_eq!(contact_rpc.parent_span_id, id(&call_contact));
    assert_eq!(call_store.parent_span_id, id(&contact_rpc));
    assert_eq!(store_rpc.parent_span_id, id(&call_store));
    for span in [&edge, &call_contact, &contact_rpc, &call_store, &store_rpc] {
        assert_eq!(
            span.status,
            opentelemetry::trace::Status::Ok,
            "{}",
            span.name
        );
        assert!(span.end_time >= span.start_time);
    }
    // The token check is part of the same trace, under the edge span.
    let verify = find("wx.account.Account/VerifyToken", SpanKind::Client);
    assert_eq!(verify.parent_span_id, id(&edge));
    let attribute = |s: &SpanData, key: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        attribute(&contact_rpc, "rpc.system").as_deref(),
        Some("svrkit")
    );
    assert!(
        attribute(&contact_rpc, "peer").is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{:?}",
        contact_rpc.attributes
    );
    assert!(attribute(&contact_rpc, "uid").is_some_and(|uid| uid != "0"));

    // A failed call is an error span with its code.
    collected.0.lock().expect("lock").clear();
    let (status, _, refused) = post(
        http,
        "friends.request",
        &json!({ "peer": 987654321 }),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 404, "{refused}");
    let spans = collected.0.lock().expect("lock").clone();
    let edge = spans
        .iter()
        .find(|s| s.name == "friends.request")
        .expect("edge span");
    assert_eq!(
        edge.status,
        opentelemetry::trace::Status::error("not_found")
    );
}
