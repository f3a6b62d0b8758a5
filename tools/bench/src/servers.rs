//! The three echo servers, each run in its own process by `svrkit-bench serve`.

use std::io::Write;
use std::net::SocketAddr;

use svrkit::Status;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::proto::{svrkit_gen, tonic_gen};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum System {
    /// svrkit's server and client.
    Svrkit,
    /// tonic (gRPC over HTTP/2).
    Tonic,
    /// The raw length-prefixed floor.
    Raw,
}

impl System {
    pub(crate) const ALL: [System; 3] = [System::Svrkit, System::Tonic, System::Raw];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Svrkit => "svrkit",
            System::Tonic => "tonic",
            System::Raw => "raw",
        }
    }
}

struct SvrkitEcho;

impl svrkit_gen::bench_server::Bench for SvrkitEcho {
    async fn echo(&self, request: svrkit_gen::Payload) -> Result<svrkit_gen::Payload, Status> {
        Ok(request)
    }
}

struct TonicEcho;

#[tonic::async_trait]
impl tonic_gen::bench_server::Bench for TonicEcho {
    async fn echo(
        &self,
        request: tonic::Request<tonic_gen::Payload>,
    ) -> Result<tonic::Response<tonic_gen::Payload>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// Serves `system` on `addr`, prints `listening on ADDR`, and stops when stdin closes
/// (the parent benchmark process went away).
pub(crate) async fn serve(system: System, addr: SocketAddr) -> anyhow::Result<()> {
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
            svrkit::Server::builder()
                .add_service(svrkit_gen::bench_server::BenchServer::new(SvrkitEcho))
                .serve(listener, stop)
                .await?;
        }
        System::Tonic => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tonic::transport::Server::builder()
                .add_service(tonic_gen::bench_server::BenchServer::new(TonicEcho))
                .serve_with_incoming_shutdown(incoming, stop)
                .await?;
        }
        System::Raw => {
            tokio::select! {
                r = crate::raw::serve(listener) => r?,
                () = stop => {}
            }
        }
    }
    Ok(())
}
