//! `echo`: serve the example service, or run a two-hop demo on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use echo::{EchoClient, EchoRequest, EchoServer, EchoService};

use svrkit::launch::{Launch, RegistryKind};
use svrkit::{Channel, Context, Server};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(about = "The svrkit example service", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve svrkit.demo.Echo until SIGTERM or Ctrl-C.
    ///
    /// Unset flags fall back to the SVRKIT_* environment (see `svrkit::launch`), which is
    /// how `svrkit up` starts it.
    Serve {
        /// Address to listen on (port 0 picks a free port; the chosen one is printed).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where Relay forwards to.
        #[arg(long)]
        next: Option<SocketAddr>,
        /// The name this server reports in replies (default: the instance id).
        #[arg(long)]
        name: Option<String>,
        /// Address of the admin HTTP endpoint (/metrics, /status, /healthz, /readyz).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Register in the embedded registry rooted at this directory.
        #[arg(long, conflicts_with = "etcd")]
        registry_dir: Option<std::path::PathBuf>,
        /// Register in the etcd cluster at this endpoint (http://127.0.0.1:2379).
        #[arg(long)]
        etcd: Option<String>,
        /// The instance id to register under (default: generated).
        #[arg(long)]
        instance_id: Option<String>,
    },
    /// Start two servers on loopback, relay a call through both, and print what each saw.
    Demo,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Args::parse().command {
        Command::Serve {
            listen,
            next,
            name,
            admin,
            registry_dir,
            etcd,
            instance_id,
        } => {
            // The metrics recorder goes first, so every metric handle taken later records.
            let mut launch = Launch::from_env(echo::proto::echo_methods::SERVICE_NAME)?;
            if let Some(listen) = listen {
                launch = launch.with_listen(listen);
            }
            if let Some(admin) = admin {
                launch = launch.with_admin(Some(admin));
            }
            if let Some(id) = instance_id {
                launch = launch.with_instance_id(id);
            }
            launch = match (registry_dir, etcd) {
                (Some(dir), _) => launch.with_registry(RegistryKind::Dir(dir))?,
                (None, Some(url)) => launch.with_registry(RegistryKind::Etcd(vec![url]))?,
                (None, None) => launch,
            };
            // Follow the service's gray-release config so `svrkit ls` shows its version.
            launch.config().await?;
            let name = name.unwrap_or_else(|| launch.instance_id().to_string());
            let mut service = EchoService::new(name);
            if let Some(next) = next {
                service = service.with_next_hop(EchoClient::new(Channel::lazy([next])));
            }
            // A broken build on purpose, to try gray releases with (`svrkit deploy --gray
            // … --gray-env ECHO_FAULT=internal --auto-rollback 0.1`).
            match std::env::var("ECHO_FAULT").as_deref() {
                Ok("internal") => service = service.faulty(),
                Ok(other) => anyhow::bail!("ECHO_FAULT is \"internal\" or unset, not {other:?}"),
                Err(_) => {}
            }
            launch
                .serve(Server::builder().add_service(EchoServer::new(service)))
                .await?;
            Ok(())
        }
        Command::Demo => demo().await,
    }
}

async fn demo() -> anyhow::Result<()> {
    let (back_addr, back) = spawn_server(EchoService::new("back")).await?;
    let front_service =
        EchoService::new("front").with_next_hop(EchoClient::new(Channel::lazy([back_addr])));
    let (front_addr, front) = spawn_server(front_service).await?;
    println!("echo servers: front {front_addr} -> back {back_addr}");

    let client = EchoClient::new(Channel::connect(front_addr).await?);
    let ctx = Context::new()
        .with_timeout(Duration::from_millis(800))
        .with_business_priority(7)
        .with_uid(10_086);
    let reply = ctx
        .scope(client.relay(EchoRequest {
            payload: b"hello svrkit".to_vec().into(),
            delay_ms: 5,
        }))
        .await?;
    for seen in [reply.first, reply.second].into_iter().flatten() {
        println!(
            "{:>6}: trace {:016x} span {:016x} parent {:016x} caller {:<18} deadline in {:>3} ms  priority {}  uid {}",
            seen.server,
            seen.trace_id,
            seen.span_id,
            seen.parent_span_id,
            if seen.caller.is_empty() {
                "-"
            } else {
                &seen.caller
            },
            seen.remaining_ms,
            seen.business_priority,
            seen.uid
        );
    }
    let echoed = client
        .echo(EchoRequest {
            payload: b"ping".to_vec().into(),
            delay_ms: 0,
        })
        .await?;
    println!("echo: {:?}", String::from_utf8_lossy(&echoed.payload));
    front.abort();
    back.abort();
    Ok(())
}

async fn spawn_server(
    service: EchoService,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(service))
            .serve(listener, std::future::pending()),
    );
    Ok((addr, task))
}
