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
    /// tarpc (bincode over TCP).
    Tarpc,
    /// The raw length-prefixed floor.
    Raw,
}

impl System {
    pub(crate) const ALL: [System; 4] = [System::Svrkit, System::Tonic, System::Tarpc, System::Raw];

    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Svrkit => "svrkit",
            System::Tonic => "tonic",
            System::Tarpc => "tarpc",
            System::Raw => "raw",
        }
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Lets the task scheduler run others once, as a handler does that waits on a store or
/// another service (`rpc --handler-waits`), when `waits`.
pub(crate) async fn maybe_wait(waits: bool) {
    if waits {
        tokio::task::yield_now().await;
    }
}

struct SvrkitEcho {
    waits: bool,
}

impl svrkit_gen::bench_server::Bench for SvrkitEcho {
    async fn echo(&self, request: svrkit_gen::Payload) -> Result<svrkit_gen::Payload, Status> {
        maybe_wait(self.waits).await;
        Ok(request)
    }
}

struct TonicEcho {
    waits: bool,
}

#[tonic::async_trait]
impl tonic_gen::bench_server::Bench for TonicEcho {
    async fn echo(
        &self,
        request: tonic::Request<tonic_gen::Payload>,
    ) -> Result<tonic::Response<tonic_gen::Payload>, tonic::Status> {
        maybe_wait(self.waits).await;
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// The benchmark's certificates: a CA, the server's and the client's (`rpc --tls`), in
/// `dir` as `ca.crt`, `server.crt`/`server.key`, `client.crt`/`client.key`.
pub(crate) struct TlsFiles {
    pub(crate) dir: std::path::PathBuf,
}

impl TlsFiles {
    /// Makes them in a fresh temporary directory.
    pub(crate) fn make() -> anyhow::Result<TlsFiles> {
        let dir = std::env::temp_dir().join(format!("svrkit-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca = svrkit::tls::mint::ClusterCa::new("bench")?;
        std::fs::write(dir.join("ca.crt"), ca.cert_pem())?;
        for name in ["server", "client"] {
            let issued = ca.issue(name)?;
            std::fs::write(dir.join(format!("{name}.crt")), issued.cert_pem)?;
            std::fs::write(dir.join(format!("{name}.key")), issued.key_pem)?;
        }
        Ok(TlsFiles { dir })
    }

    pub(crate) fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(self.dir.join(name))?)
    }

    /// svrkit credentials of `who` (`server` or `client`).
    pub(crate) fn svrkit(&self, who: &str) -> anyhow::Result<svrkit::tls::Credentials> {
        Ok(svrkit::tls::Credentials::from_pem(
            &self.read(&format!("{who}.crt"))?,
            &self.read(&format!("{who}.key"))?,
            &self.read("ca.crt")?,
        )?)
    }

    /// tonic's identity of `who` and the CA.
    pub(crate) fn tonic(
        &self,
        who: &str,
    ) -> anyhow::Result<(tonic::transport::Identity, tonic::transport::Certificate)> {
        Ok((
            tonic::transport::Identity::from_pem(
                self.read(&format!("{who}.crt"))?,
                self.read(&format!("{who}.key"))?,
            ),
            tonic::transport::Certificate::from_pem(self.read("ca.crt")?),
        ))
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
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
                r = crate::tarpc_peer::serve(listener, waits) => r?,
                () = stop => {}
            }
        }
        System::Raw => {
            // The floor stays plain TCP: it is the reference the others are measured by.
            tokio::select! {
                r = crate::raw::serve(listener) => r?,
                () = stop => {}
            }
        }
    }
    Ok(())
}
