//! `svrkit`: the operator's and service author's command line.
//!
//! ```text
//! svrkit new greeter
//! svrkit call svrkit.demo.Echo/Echo '{"payload":"aGk="}' --addr 127.0.0.1:7000
//! svrkit ls --registry-dir .svrkit/registry
//! svrkit config publish svrkit.demo.Echo '{"greeting":"hi"}' --percent 10 --registry-dir .svrkit/registry
//! ```
//!
//! Exit codes: 0 success, 1 the call or operation failed (the server's status is printed),
//! 2 bad usage or input (unknown service or method, JSON that does not fit the message).

/// `println!` that ends the program quietly when standard output is gone (`svrkit ps |
/// head`), as a Unix tool does on SIGPIPE, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

mod call;
mod cluster;
mod config;
mod console;
mod http;
mod ls;
mod new;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "svrkit",
    about = "Scaffold, call, list, run, deploy and configure svrkit services",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scaffold a service: IDL, crate, handlers, main and a passing test.
    ///
    /// Example: svrkit new greeter
    New(new::NewArgs),
    /// Call any method of any running service from its IDL: JSON in, JSON out.
    ///
    /// Example: svrkit call svrkit.demo.Echo/Echo '{"payload":"aGk="}' --addr 127.0.0.1:7000
    Call(call::CallArgs),
    /// List services and their instances from the registry.
    ///
    /// Example: svrkit ls --registry-dir .svrkit/registry
    Ls(ls::LsArgs),
    /// Print a shell completion script.
    ///
    /// Example: svrkit completions bash > /etc/bash_completion.d/svrkit
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Run a local deployment from a manifest: build, start, supervise, restart crashes.
    ///
    /// Example: svrkit up services/svrkit.toml --detach
    Up(cluster::UpArgs),
    /// Stop the deployment gracefully; nothing is left running.
    ///
    /// Example: svrkit down
    Down(cluster::DownArgs),
    /// The deployment's instances: pid, status, restarts, addresses.
    ///
    /// Example: svrkit ps --json
    Ps(cluster::PsArgs),
    /// Print a service's or an instance's log.
    ///
    /// Example: svrkit logs echo --follow
    Logs(cluster::LogsArgs),
    /// Gray binary release: start a new build for some users, compare, promote or roll back.
    ///
    /// Example: svrkit deploy echo --gray percent:10, then svrkit deploy echo promote
    Deploy(cluster::DeployArgs),
    /// A live cluster view in the browser: services, instances, health, requests/s,
    /// errors, p99, DAGOR level, restarts, gray beside stable.
    ///
    /// Example: svrkit console --listen 127.0.0.1:8420
    Console(console::ConsoleArgs),
    /// A cluster CA and certificates as files, for hosts and Kubernetes Secrets: prints
    /// the certificate, key and CA files.
    ///
    /// Example: svrkit certs access-short-1 --service access-short --host chat.example.com
    Certs(cluster::CertsArgs),
    /// Gray-release configuration: show, publish, promote, rollback.
    ///
    /// Example: svrkit config publish svrkit.demo.Echo '{"limit":5}' --percent 10
    Config(config::ConfigArgs),
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad usage or input: exit 2.
    Usage(anyhow::Error),
    /// The operation failed: exit 1.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Failed(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("svrkit: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::New(args) => new::run(args).await,
            Command::Call(args) => call::run(args).await,
            Command::Ls(args) => ls::run(args).await,
            Command::Console(args) => console::run(args).await,
            Command::Config(args) => config::run(args).await,
            Command::Certs(args) => cluster::certs(args).await,
            Command::Up(args) => cluster::up(args).await,
            Command::Down(args) => cluster::down(args).await,
            Command::Ps(args) => cluster::ps(args).await,
            Command::Logs(args) => cluster::logs(args).await,
            Command::Deploy(args) => cluster::deploy(args).await,
            Command::Completions { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "svrkit",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("svrkit: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("svrkit: {e:#}");
            ExitCode::from(1)
        }
    }
}
