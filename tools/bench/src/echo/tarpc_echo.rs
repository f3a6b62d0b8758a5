//! tarpc, the third system of `svrkit-bench rpc`: the same echo as a tarpc service over
//! TCP with its bincode serde transport (tarpc's own fastest configuration).

use std::net::SocketAddr;

use futures_util::StreamExt;
use tarpc::serde_transport;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::{TcpListener, TcpStream};

use super::wait::maybe_wait;

/// The echo service.
#[tarpc::service]
pub(crate) trait Bench {
    /// Answers with what it was given.
    async fn echo(data: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf;
}

#[derive(Clone)]
struct Echo {
    waits: bool,
}

impl Bench for Echo {
    async fn echo(
        self,
        _: tarpc::context::Context,
        data: serde_bytes::ByteBuf,
    ) -> serde_bytes::ByteBuf {
        maybe_wait(self.waits).await;
        data
    }
}

/// Serves the echo on `listener` until the process ends: one tarpc channel per
/// connection, each request on its own task (tarpc's documented way to serve). With
/// `waits`, each call lets the scheduler run others once before it answers.
pub(crate) async fn serve(listener: TcpListener, waits: bool) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let transport = serde_transport::Transport::from((stream, Bincode::default()));
        tokio::spawn(
            BaseChannel::with_defaults(transport)
                .execute(Echo { waits }.serve())
                .for_each(|call| async move {
                    tokio::spawn(call);
                }),
        );
    }
}

/// A tarpc client of the echo at `addr`, over one connection.
pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<BenchClient> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let transport = serde_transport::Transport::from((stream, Bincode::default()));
    let mut config = tarpc::client::Config::default();
    // Room for the benchmark's highest concurrency; tarpc's default is 1,000 in flight.
    config.max_in_flight_requests = 4096;
    config.pending_request_buffer = 4096;
    Ok(BenchClient::new(config, transport).spawn())
}
