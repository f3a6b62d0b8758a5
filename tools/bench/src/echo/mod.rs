//! The echo servers of `svrkit-bench rpc`, one module per system (svrkit, tonic, tarpc and
//! the raw floor), each run in its own process by `svrkit-bench serve`.

mod raw;
mod raw_batched;
mod svrkit_echo;
mod tarpc_echo;
mod tls;
mod tonic_echo;
mod wait;

pub(crate) use raw::RawClient;
pub(crate) use raw_batched::BatchedClient;
pub(crate) use tarpc_echo::{BenchClient as TarpcClient, connect as tarpc_connect};
pub(crate) use tls::TlsFiles;

use std::io::Write;
use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::proto::{svrkit_gen, tonic_gen};
use svrkit_echo::SvrkitEcho;
use tonic_echo::TonicEcho;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum System {
    /// svrkit's server and client.
    Svrkit,
    /// tonic (gRPC over HTTP/2).
    Tonic,
    /// tarpc (bincode over TCP).
    Tarpc,
    /// The raw length-prefixed floor.
    Raw,
    /// The same raw server, driven by a client that batches writes and allocates
    /// nothing per call: the strongest floor.
    #[value(name = "raw_batched")]
    RawBatched,
}

impl System {
    pub(crate) const ALL: [System; 5] = [
        System::Svrkit,
        System::Tonic,
        System::Tarpc,
        System::Raw,
        System::RawBatched,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Svrkit => "svrkit",
            System::Tonic => "tonic",
            System::Tarpc => "tarpc",
            System::Raw => "raw",
            System::RawBatched => "raw_batched",
        }
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Serves `system` on `addr` (mutual TLS with the certificates in `tls_dir`, for svrkit
/// and tonic), prints `listening on ADDR`, and stops when stdin closes (the parent
/// benchmark process went away). With `waits`, each echo handler lets the scheduler run
/// others once before it answers (the raw floor has no handler).
pub(crate) async fn serve(
    system: System,
    addr: SocketAddr,
    tls_dir: Option<std::path::PathBuf>,
    waits: bool,
) -> anyhow::Result<()> {
    let tls = tls_dir.map(|dir| TlsFiles { dir });
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let stop = async {
        let mut sink = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    println!("listening on {local}");
    std::io::stdout().flush()?;
    match system {
        System::Svrkit => {
            let mut server = svrkit::Server::builder();
            if let Some(tls) = &tls {
                server = server.tls(tls.svrkit("server")?.server()?);
            }
            server
                .add_service(svrkit_gen::bench_server::BenchServer::new(SvrkitEcho {
                    waits,
                }))
                .serve(listener, stop)
                .await?;
        }
        System::Tonic => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = &tls {
                let (identity, ca) = tls.tonic("server")?;
                builder = builder.tls_config(
                    tonic::transport::ServerTlsConfig::new()
                        .identity(identity)
                        .client_ca_root(ca),
                )?;
            }
            builder
                .add_service(tonic_gen::bench_server::BenchServer::new(TonicEcho {
                    waits,
                }))
                .serve_with_incoming_shutdown(incoming, stop)
                .await?;
        }
        System::Tarpc => {
            // tarpc's TLS needs a hand-made acceptor; it stays plain TCP like the floor.
            tokio::select! {
                r = tarpc_echo::serve(listener, waits) => r?,
                () = stop => {}
            }
        }
        System::Raw | System::RawBatched => {
            // The floor stays plain TCP: it is the reference the others are measured by.
            tokio::select! {
                r = raw::serve(listener) => r?,
                () = stop => {}
            }
        }
    }
    Ok(())
}
