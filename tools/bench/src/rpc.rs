//! `svrkit-bench rpc`: unary echo through svrkit, tonic and the raw floor.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;

use crate::echo::{BatchedClient, RawClient, System, TlsFiles};
use crate::proto::{svrkit_gen, tonic_gen};
use crate::stats::{MachineTicks, process_cpu, quantile};

/// Options of `svrkit-bench rpc`.
#[derive(Debug, clap::Args)]
pub(crate) struct RpcArgs {
    /// Concurrent callers (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 32, 256])]
    concurrency: Vec<usize>,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Measured time per system, round and concurrency, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Unmeasured warm-up before each measurement, in milliseconds.
    #[arg(long, default_value_t = 300)]
    warmup_ms: u64,
    /// Rounds; systems run interleaved, in a rotated order each round.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Connections from the svrkit client to its server.
    #[arg(long, default_value_t = 1)]
    svrkit_connections: usize,
    /// Systems to run (comma separated; svrkit is always first: the ratios are its).
    #[arg(long, value_delimiter = ',', default_values_t = System::ALL)]
    systems: Vec<System>,
    /// svrkit and tonic over mutual TLS (1.3, client certificates; the raw floor stays
    /// plain TCP).
    #[arg(long)]
    tls: bool,
    /// Each server's echo handler lets the scheduler run others once before it answers,
    /// as a handler does that waits on a store or another service (the raw floor has no
    /// handler and is unchanged).
    #[arg(long)]
    handler_waits: bool,
    /// `grpc`: the svrkit server answering gRPC, driven by tonic's client, beside tonic's
    /// own server driven by the same client (`svrkit_grpc` and `tonic`); `svrkit` (the
    /// default): each system's own client and server.
    #[arg(long, default_value = "svrkit")]
    protocol: svrkit::grpc::Protocol,
    /// HTTP/2 connections of tonic's client (callers take them in turn): one connection
    /// is one task per side doing all of HTTP/2's framing, which caps what any server
    /// can show.
    #[arg(long, default_value_t = 1)]
    grpc_connections: usize,
}

/// One measured column: a name, the server it calls and the client it calls with.
#[derive(Debug, Clone, Copy)]
struct Lane {
    name: &'static str,
    server: System,
    client: System,
}

impl Lane {
    /// What `args` asks to compare.
    fn all(args: &RpcArgs) -> Vec<Lane> {
        if args.protocol == svrkit::grpc::Protocol::Grpc {
            return vec![
                Lane {
                    name: "svrkit_grpc",
                    server: System::Svrkit,
                    client: System::Tonic,
                },
                Lane {
                    name: "tonic",
                    server: System::Tonic,
                    client: System::Tonic,
                },
            ];
        }
        let mut systems = vec![System::Svrkit];
        for &system in &args.systems {
            if !systems.contains(&system) {
                systems.push(system);
            }
        }
        systems
            .into_iter()
            .map(|system| Lane {
                name: system.name(),
                server: system,
                client: system,
            })
            .collect()
    }
}

/// One server process; killed when dropped.
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// Kept open: a closed pipe would make the server's next print fail.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl ServerProcess {
    pub(crate) fn start(system: System) -> anyhow::Result<ServerProcess> {
        ServerProcess::spawn(&["serve", system.name()])
    }

    /// A server of `system` with mutual TLS from `tls` (plain for tarpc and the raw
    /// floor), whose handlers wait once when `waits`.
    fn start_with(
        system: System,
        tls: Option<&TlsFiles>,
        waits: bool,
    ) -> anyhow::Result<ServerProcess> {
        let dir = match (system, tls) {
            (System::Raw | System::RawBatched | System::Tarpc, _) | (_, None) => None,
            (_, Some(tls)) => Some(tls.dir.display().to_string()),
        };
        let mut args = vec!["serve", system.name()];
        if let Some(dir) = &dir {
            args.extend(["--tls-dir", dir]);
        }
        if waits {
            args.push("--handler-waits");
        }
        ServerProcess::spawn(&args)
    }

    /// Runs this benchmark binary with `args` (a hidden serving subcommand) and waits for
    /// its `listening on ADDR` line.
    pub(crate) fn spawn(args: &[&str]) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting `svrkit-bench {}`", args.join(" ")))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = match svrkit::launch::Announcement::parse(&line) {
            Some(svrkit::launch::Announcement::Listening(addr)) => addr,
            _ => return Err(anyhow!("`svrkit-bench {}` said {line:?}", args.join(" "))),
        };
        Ok(ServerProcess {
            child,
            addr,
            _stdout: stdout,
        })
    }

    pub(crate) fn cpu(&self) -> Duration {
        process_cpu(self.child.id())
    }

    /// Kills the process with SIGKILL (kill -9) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of one system.
#[derive(Clone)]
enum Client {
    Svrkit(svrkit_gen::bench_client::BenchClient),
    Tonic(tonic_gen::bench_client::BenchClient<tonic::transport::Channel>),
    /// Several tonic connections; each caller keeps one.
    Tonics(Vec<tonic_gen::bench_client::BenchClient<tonic::transport::Channel>>),
    Tarpc(crate::echo::TarpcClient),
    Raw(Arc<RawClient>),
    /// The batched client, and the caller's slot.
    RawBatched(BatchedClient, usize),
}

impl Client {
    async fn connect(
        system: System,
        addr: SocketAddr,
        args: &RpcArgs,
        tls: Option<&TlsFiles>,
    ) -> anyhow::Result<Client> {
        Ok(match system {
            System::Svrkit => {
                let mut builder = svrkit::Channel::builder()
                    .connections_per_address(args.svrkit_connections)
                    .default_timeout(Duration::from_secs(10));
                if let Some(tls) = tls {
                    builder = builder.tls(tls.svrkit("client")?.client()?);
                }
                Client::Svrkit(svrkit_gen::bench_client::BenchClient::new(
                    builder.lazy([addr]),
                ))
            }
            System::Tonic if tls.is_none() && args.grpc_connections > 1 => {
                let mut clients = Vec::new();
                for _ in 0..args.grpc_connections {
                    clients.push(
                        tonic_gen::bench_client::BenchClient::connect(format!("http://{addr}"))
                            .await?,
                    );
                }
                Client::Tonics(clients)
            }
            System::Tonic => match tls {
                None => Client::Tonic(
                    tonic_gen::bench_client::BenchClient::connect(format!("http://{addr}")).await?,
                ),
                Some(tls) => {
                    let (identity, ca) = tls.tonic("client")?;
                    let channel =
                        tonic::transport::Channel::from_shared(format!("https://{addr}"))?
                            .tls_config(
                                tonic::transport::ClientTlsConfig::new()
                                    .ca_certificate(ca)
                                    .identity(identity)
                                    .domain_name(svrkit::tls::CLUSTER_SERVER_NAME),
                            )?
                            .connect()
                            .await?;
                    Client::Tonic(tonic_gen::bench_client::BenchClient::new(channel))
                }
            },
            System::Tarpc => Client::Tarpc(crate::echo::tarpc_connect(addr).await?),
            System::Raw => Client::Raw(Arc::new(RawClient::connect(addr).await?)),
            System::RawBatched => {
                let callers = args.concurrency.iter().copied().max().unwrap_or(1);
                Client::RawBatched(BatchedClient::connect(addr, callers).await?, 0)
            }
        })
    }

    /// The client caller `index` uses.
    fn for_caller(&self, index: usize) -> Client {
        match self {
            Client::Tonics(all) => Client::Tonic(all[index % all.len()].clone()),
            Client::RawBatched(client, _) => Client::RawBatched(client.clone(), index),
            other => other.clone(),
        }
    }

    async fn call(&mut self, payload: &Bytes) -> Result<(), String> {
        match self {
            Client::Svrkit(c) => c
                .echo(svrkit_gen::Payload {
                    data: payload.clone(),
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Client::Tonic(c) => c
                .echo(tonic_gen::Payload {
                    data: payload.clone(),
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Client::Tonics(all) => {
                let mut one = all[0].clone();
                one.echo(tonic_gen::Payload {
                    data: payload.clone(),
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string())
            }
            Client::Tarpc(c) => c
                .echo(
                    tarpc::context::current(),
                    serde_bytes::ByteBuf::from(payload.to_vec()),
                )
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Client::Raw(c) => c.call(payload).await.map(drop),
            Client::RawBatched(c, index) => c.call(*index, payload).await.map(drop),
        }
    }
}

/// What one measured run produced.
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    server_cpu: Duration,
    /// CPU of this (the client) process, load generator included.
    client_cpu: Duration,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn qps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / (self.requests.max(1) as f64)
    }

    fn client_cpu_us_per_request(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / (self.requests.max(1) as f64)
    }
}

/// Runs `concurrency` callers until `until`; returns requests, errors and latencies.
async fn drive(
    client: &Client,
    concurrency: usize,
    payload: &Bytes,
    until: Instant,
) -> (u64, u64, Vec<u32>) {
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = client.for_caller(i);
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(16 * 1024);
                let mut errors = 0u64;
                while Instant::now() < until {
                    let start = Instant::now();
                    match client.call(&payload).await {
                        Ok(()) => {
                            latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32)
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((latencies, e)) = task.await {
            all.extend(latencies);
            errors += e;
        }
    }
    (all.len() as u64, errors, all)
}

async fn measure(
    client: &Client,
    server: &ServerProcess,
    concurrency: usize,
    payload: &Bytes,
    args: &RpcArgs,
) -> Tally {
    drive(
        client,
        concurrency,
        payload,
        Instant::now() + Duration::from_millis(args.warmup_ms),
    )
    .await;
    let cpu_before = server.cpu();
    let client_cpu_before = process_cpu(std::process::id());
    let start = Instant::now();
    let (requests, errors, latencies_us) = drive(
        client,
        concurrency,
        payload,
        start + Duration::from_millis(args.duration_ms),
    )
    .await;
    let elapsed = start.elapsed();
    Tally {
        requests,
        errors,
        elapsed,
        server_cpu: server.cpu().saturating_sub(cpu_before),
        client_cpu: process_cpu(std::process::id()).saturating_sub(client_cpu_before),
        latencies_us,
    }
}

pub(crate) async fn run(args: RpcArgs) -> anyhow::Result<()> {
    if args.concurrency.contains(&0) || args.rounds == 0 {
        bail!("concurrency and rounds must be positive");
    }
    let systems = Lane::all(&args);
    let payload = Bytes::from(vec![0x5a; args.payload]);
    let tls = if args.tls {
        Some(TlsFiles::make()?)
    } else {
        None
    };
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for lane in &systems {
        let server = ServerProcess::start_with(lane.server, tls.as_ref(), args.handler_waits)?;
        let mut client = Client::connect(lane.client, server.addr, &args, tls.as_ref()).await?;
        client
            .call(&payload)
            .await
            .map_err(|e| anyhow!("{} smoke call: {e}", lane.name))?;
        servers.push(server);
        clients.push(client);
    }
    println!(
        "svrkit-bench rpc: payload {} B, {} ms x {} rounds per point, servers in their own processes{}{}{}",
        args.payload,
        args.duration_ms,
        args.rounds,
        if args.tls {
            "; svrkit and tonic over mutual TLS 1.3, tarpc and raw plain"
        } else {
            ""
        },
        if args.handler_waits {
            "; each handler waits once before it answers"
        } else {
            ""
        },
        if args.protocol == svrkit::grpc::Protocol::Grpc {
            "; gRPC: tonic's client calling svrkit's server and tonic's own"
        } else {
            ""
        }
    );
    println!(
        "{:>5} {:>11} {:>12} {:>10} {:>10} {:>14} {:>14} {:>7}",
        "conc", "system", "qps", "p50 us", "p99 us", "server cpu us", "client cpu us", "errors"
    );
    let mut json = Vec::new();
    for &concurrency in &args.concurrency {
        let mut tallies: Vec<Tally> = systems.iter().map(|_| Tally::default()).collect();
        let ticks = MachineTicks::now();
        for round in 0..args.rounds {
            for k in 0..systems.len() {
                let i = (k + round) % systems.len();
                let t = measure(&clients[i], &servers[i], concurrency, &payload, &args).await;
                let total = &mut tallies[i];
                total.requests += t.requests;
                total.errors += t.errors;
                total.elapsed += t.elapsed;
                total.server_cpu += t.server_cpu;
                total.client_cpu += t.client_cpu;
                total.latencies_us.extend(t.latencies_us);
            }
        }
        // The hypervisor's share: a noisy machine shows here, not only in the ratios.
        let steal = MachineTicks::now().steal_since(ticks);
        let mut p99 = vec![0u32; systems.len()];
        let mut p50 = vec![0u32; systems.len()];
        for (i, system) in systems.iter().enumerate() {
            let t = &mut tallies[i];
            p50[i] = quantile(&mut t.latencies_us, 0.50);
            p99[i] = quantile(&mut t.latencies_us, 0.99);
            println!(
                "{:>5} {:>11} {:>12.0} {:>10} {:>10} {:>14.2} {:>14.2} {:>7}",
                concurrency,
                system.name,
                t.qps(),
                p50[i],
                p99[i],
                t.cpu_us_per_request(),
                t.client_cpu_us_per_request(),
                t.errors
            );
        }
        println!("{:>5} cpu steal {:.1} %", "", steal * 100.0);
        let mut line = format!(
            "{{\"bench\":\"rpc\",\"protocol\":\"{}\",\"tls\":{},\"handler_waits\":{},\"grpc_connections\":{},\"concurrency\":{concurrency},\"payload\":{}",
            args.protocol, args.tls, args.handler_waits, args.grpc_connections, args.payload
        );
        for (i, system) in systems.iter().enumerate() {
            let (name, t) = (system.name, &tallies[i]);
            line.push_str(&format!(
                ",\"{name}_qps\":{:.0},\"{name}_p50_us\":{},\"{name}_p99_us\":{},\"{name}_server_cpu_us\":{:.2},\"{name}_client_cpu_us\":{:.2}",
                t.qps(),
                p50[i],
                p99[i],
                t.cpu_us_per_request(),
                t.client_cpu_us_per_request()
            ));
        }
        let svrkit = tallies[0].qps();
        if args.protocol == svrkit::grpc::Protocol::Grpc {
            line.push_str(&format!(
                ",\"ratio\":{:.2}",
                svrkit / tallies[1].qps().max(1e-9)
            ));
        } else {
            for (i, system) in systems.iter().enumerate().skip(1) {
                line.push_str(&format!(
                    ",\"svrkit_vs_{}\":{:.2}",
                    system.name,
                    svrkit / tallies[i].qps().max(1e-9)
                ));
            }
        }
        let errors: u64 = tallies.iter().map(|t| t.errors).sum();
        line.push_str(&format!(",\"errors\":{errors},\"cpu_steal\":{steal:.3}}}"));
        json.push(line);
    }
    for line in json {
        println!("{line}");
    }
    Ok(())
}
