//! `svrkit call SERVICE/Method JSON`: any method of any service, from its IDL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use prost_reflect::DescriptorPool;
use svrkit::discovery::discover;
use svrkit::dynamic::{self, DynamicClient, DynamicError};
use svrkit::{CallOptions, Channel};

use crate::Failure;
use crate::target::RegistryArgs;

/// Options of `svrkit call`.
#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    /// The method: SERVICE/Method, e.g. svrkit.demo.Echo/Echo (a unique short service name
    /// such as Echo/Echo works too).
    method: String,
    /// The request in protobuf's JSON mapping; `-` reads standard input.
    #[arg(default_value = "{}")]
    json: String,
    /// Call this address instead of looking the service up in the registry.
    #[arg(long, conflicts_with = "reflect")]
    addr: Option<SocketAddr>,
    /// Call this address over gRPC, describing the method by the server's reflection
    /// (a svrkit server or any gRPC server): no local IDL needed. SERVICE must be the
    /// full name.
    #[arg(long, value_name = "ADDR")]
    reflect: Option<SocketAddr>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Where the .proto files are (every .proto below is read); repeatable.
    #[arg(long = "idl", default_value = "idl")]
    idl: Vec<PathBuf>,
    /// The user id the call acts for.
    #[arg(long)]
    uid: Option<u64>,
    /// Timeout in milliseconds.
    #[arg(long, visible_alias = "timeout", default_value_t = 2000)]
    timeout_ms: u64,
    /// Where the cluster's certificates are (default: the deployment's — `tls` beside an
    /// embedded registry's directory, else $SVRKIT_HOME/tls or .svrkit/tls): with them
    /// the call presents the operator's certificate over mutual TLS.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Call over plain TCP even where operator certificates exist.
    #[arg(long, conflicts_with = "tls_dir")]
    plaintext: bool,
}

/// Makes every channel of this call present the operator's certificate, when the
/// deployment has one.
fn use_operator_certificate(args: &CallArgs) -> Result<(), Failure> {
    if args.plaintext {
        return Ok(());
    }
    // The deployment's certificates sit beside its registry (STATE/tls next to
    // STATE/registry), or in $SVRKIT_HOME/tls.
    let dir = match &args.tls_dir {
        Some(dir) => dir.clone(),
        None => {
            let home = std::env::var_os("SVRKIT_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".svrkit"))
                .join("tls");
            args.registry
                .embedded_dir()
                .and_then(|registry| registry.parent().map(|state| state.join("tls")))
                .filter(|dir| dir.join("operator.crt").exists())
                .unwrap_or(home)
        }
    };
    let credentials = crate::cluster::certs::operator(&dir).map_err(|e| {
        Failure::Usage(e.context(format!(
            "reading the operator certificate in {}",
            dir.display()
        )))
    })?;
    match credentials {
        Some(credentials) => {
            let client = credentials.client().map_err(|e| Failure::Usage(e.into()))?;
            svrkit::tls::set_process_client(client);
        }
        None if args.tls_dir.is_some() => {
            return Err(Failure::Usage(anyhow!(
                "no operator certificate (operator.crt, operator.key, ca.crt) in {}",
                dir.display()
            )));
        }
        None => {}
    }
    Ok(())
}

/// Every `.proto` below `root`, relative to it.
fn protos(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                found.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The descriptors of every .proto under the IDL roots.
pub(crate) fn load_idl(roots: &[PathBuf]) -> anyhow::Result<DescriptorPool> {
    let mut compiler = protox::Compiler::new(roots).map_err(|e| anyhow!("{e}"))?;
    for root in roots {
        let files = protos(root)?;
        compiler.open_files(&files).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(compiler.descriptor_pool())
}

/// The descriptors the server at `addr` serves for the method's service, by reflection.
async fn reflect(args: &CallArgs, addr: SocketAddr) -> Result<DescriptorPool, Failure> {
    let (service, _) = args
        .method
        .split_once('/')
        .ok_or_else(|| Failure::Usage(DynamicError::BadName(args.method.clone()).into()))?;
    let channel = Channel::builder()
        .protocol(svrkit::grpc::Protocol::Grpc)
        .default_timeout(Duration::from_millis(args.timeout_ms))
        .lazy([addr]);
    dynamic::reflect(&channel, service)
        .await
        .map_err(|e| Failure::Failed(anyhow!("asking {addr} for {service}: {e}")))
}

pub(crate) async fn run(args: CallArgs) -> Result<(), Failure> {
    use_operator_certificate(&args)?;
    let pool = match args.reflect {
        Some(addr) => reflect(&args, addr).await?,
        None => load_idl(&args.idl).map_err(|e| Failure::Usage(e.context("reading the IDL")))?,
    };
    let json = if args.json == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::Usage(anyhow!("reading stdin: {e}")))?
    } else {
        args.json.clone()
    };
    // The method and the request first (a usage error needs no registry), then where to
    // send it.
    let method = dynamic::find_method(&pool, &args.method).map_err(|e| Failure::Usage(e.into()))?;
    let request =
        dynamic::request_from_json(&method, &json).map_err(|e| Failure::Usage(e.into()))?;
    let service = method.parent_service().full_name().to_string();
    let channel = match args.addr.or(args.reflect) {
        Some(addr) if args.reflect.is_some() => Channel::builder()
            .protocol(svrkit::grpc::Protocol::Grpc)
            .lazy([addr]),
        Some(addr) => Channel::lazy([addr]),
        None => {
            let store = args.registry.store();
            // A person is waiting: give the registry the call's timeout, not a service's
            // start-up patience.
            let registry = store.registry();
            let lookup = discover(&*registry, &service, Channel::builder());
            let channel = tokio::time::timeout(Duration::from_millis(args.timeout_ms), lookup)
                .await
                .map_err(|_| {
                    Failure::Failed(anyhow!(
                        "looking up {service}: the registry did not answer in {} ms",
                        args.timeout_ms
                    ))
                })?
                .map_err(|e| Failure::Failed(anyhow!("looking up {service}: {e}")))?;
            if channel.addresses().is_empty() {
                return Err(Failure::Failed(anyhow!(
                    "no instance of {service} is registered"
                )));
            }
            channel
        }
    };
    let mut options = CallOptions::new().timeout(Duration::from_millis(args.timeout_ms));
    if let Some(uid) = args.uid {
        options = options.uid(uid);
    }
    let reply = DynamicClient::new(channel, pool)
        .call(&method, &request, options)
        .await
        .map_err(|e| match e {
            DynamicError::Call(status) => {
                Failure::Failed(anyhow!("{service}/{}: {status}", method.name()))
            }
            other => Failure::Failed(other.into()),
        })?;
    let text = serde_json::to_string_pretty(&reply).map_err(|e| Failure::Failed(anyhow!("{e}")))?;
    outln!("{text}");
    Ok(())
}
