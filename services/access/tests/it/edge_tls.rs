//! The edge over TLS: HTTPS requests and a WebSocket upgrade (WSS) are served with the
//! given certificate; a client that never finishes the handshake is cut off by the
//! header timeout, and plain HTTP on the TLS port gets nothing — while others are served.

use std::sync::Arc;
use std::time::Duration;

use access::edge::{EdgeLimits, EdgeTls};
use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use svrkit::tls::CLUSTER_SERVER_NAME;
use svrkit::tls::mint::ClusterCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

async fn tls_client(
    addr: std::net::SocketAddr,
    ca: &ClusterCa,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(CLUSTER_SERVER_NAME).expect("name");
    connector.connect(name, tcp).await.expect("a TLS handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_are_served_and_stalled_handshakes_are_cut_off() {
    let ca = ClusterCa::new("edge").expect("CA");
    let issued = ca.issue("access-short").expect("certificate");
    let tls =
        EdgeTls::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).expect("edge TLS");
    let router = Router::new()
        .route("/hello", get(|| async { "hello over TLS" }))
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(Message::Text(text))) = socket.recv().await {
                        if socket.send(Message::Text(text)).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        );
    let limits = EdgeLimits {
        header_timeout: Duration::from_millis(300),
        ..EdgeLimits::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(access::edge::serve(
        listener,
        router,
        limits,
        Some(tls),
        std::future::pending(),
    ));

    // A client that connects and never says hello is closed by the header timeout.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a stalled handshake is cut off");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("hello over TLS"));

    // HTTPS.
    let mut https = tls_client(addr, &ca).await;
    https
        .write_all(b"GET /hello HTTP/1.1\r\nHost: svrkit.cluster\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    https.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("hello over TLS"), "{answer}");

    // WSS: the upgrade works over TLS.
    let stream = tls_client(addr, &ca).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://svrkit.cluster/ws", stream)
        .await
        .expect("a WebSocket over TLS");
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .expect("send");
    let echoed = ws.next().await.expect("a frame").expect("no error");
    assert_eq!(echoed.into_text().expect("text").as_str(), "ping");
}
