//! `wallet`: serves `wx.wallet.Wallet`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`), and runs the credit worker and the expiry sweep.
//!
//! - `WX_DEV_TOPUP=1` lets users top up their own wallets with test money (there is no
//!   payment provider; off by default, the operator may always top up).
//! - `WX_ENVELOPE_TTL_MS`: how long an envelope stays open (default 24 hours).
//! - `WX_ENVELOPE_RESERVE_MS`: how long a grab's reservation holds (default 60,000).
//! - `WX_ENVELOPE_QUEUE`: requests waiting for one envelope (default 2,000).
//! - `WX_ENVELOPE_DIRECT=1`: no per-envelope queue, every request its own store write
//!   (for the benchmark's comparison only).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::message::{MessageClient, message_methods};
use wx_api::storage::{contact_store_methods, wallet_store_methods};
use wx_api::wallet::wallet_methods::SERVICE_NAME;
use wx_api::wallet::wallet_server::WalletServer;

/// The value of `name`, parsed, if set.
fn var<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) => Ok(Some(v.parse().with_context(|| name.to_string())?)),
        Err(_) => Ok(None),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?;
    let peers = wx_api::Peers::of(&launch)?;
    let shards = peers.sharded(wallet_store_methods::SERVICE_NAME).await?;
    let contacts = peers.sharded(contact_store_methods::SERVICE_NAME).await?;
    let message = peers.balanced(message_methods::SERVICE_NAME).await?;
    let mut settings = wallet::Settings {
        dev_topup: var::<u8>("WX_DEV_TOPUP")?.unwrap_or(0) == 1,
        ..wallet::Settings::default()
    };
    if let Some(ms) = var::<u64>("WX_ENVELOPE_TTL_MS")? {
        anyhow::ensure!(ms > 0, "WX_ENVELOPE_TTL_MS must be at least 1");
        settings.ttl = Duration::from_millis(ms);
    }
    if let Some(ms) = var::<u64>("WX_ENVELOPE_RESERVE_MS")? {
        anyhow::ensure!(ms > 0, "WX_ENVELOPE_RESERVE_MS must be at least 1");
        settings.limits.reserve_ms = ms;
    }
    if let Some(n) = var::<usize>("WX_ENVELOPE_QUEUE")? {
        anyhow::ensure!(n > 0, "WX_ENVELOPE_QUEUE must be at least 1");
        settings.limits.max_waiting = n;
    }
    settings.limits.direct = var::<u8>("WX_ENVELOPE_DIRECT")?.unwrap_or(0) == 1;
    let credits = Arc::new(wallet::credits::worker(
        shards.clone(),
        wx_api::fanout::DEFAULT_LEASE,
    ));
    tokio::spawn(Arc::clone(&credits).sweep_forever());
    tokio::spawn(wallet::sweep_expired_forever(shards.clone()));
    let service = wallet::WalletService::new(
        shards,
        MessageClient::new(message),
        wx_api::relations::Relations::new(contacts),
        credits,
        settings,
    );
    let queues = service.queues();
    launch
        .with_status(
            "envelope_queues",
            Arc::new(move || serde_json::json!(queues.envelopes())),
        )
        .serve(Server::builder().add_service(WalletServer::new(service)))
        .await?;
    Ok(())
}
