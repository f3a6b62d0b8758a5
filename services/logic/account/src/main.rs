//! `account`: serves `wx.account.Account`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`). `WX_SESSION_TTL_SECS` overrides the session lifetime (7 days);
//! `WX_LOGIN_POW` says when sign-ins from unknown devices need a proof of work (`auto`:
//! under pressure, the default; `always`; `never`) and `WX_LOGIN_POW_BITS` how hard it
//! is (16). See `account::proof`.

use std::time::Duration;

use anyhow::Context as _;
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::account::account_methods::SERVICE_NAME;
use wx_api::account::account_server::AccountServer;
use wx_api::contact::{ContactClient, contact_methods};
use wx_api::storage::{AccountStoreClient, account_store_methods};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?;
    let peers = wx_api::Peers::of(&launch)?;
    let store = peers.sharded(account_store_methods::SERVICE_NAME).await?;
    let contact = peers.balanced(contact_methods::SERVICE_NAME).await?;
    let mut service =
        account::AccountService::new(AccountStoreClient::new(store), ContactClient::new(contact));
    let bits = match std::env::var("WX_LOGIN_POW_BITS") {
        Ok(bits) => bits.parse().context("WX_LOGIN_POW_BITS")?,
        Err(_) => account::proof::DEFAULT_BITS,
    };
    let mode = match std::env::var("WX_LOGIN_POW") {
        Ok(mode) => mode
            .parse()
            .map_err(|e: String| anyhow::anyhow!("WX_LOGIN_POW: {e}"))?,
        Err(_) => account::proof::Mode::Auto,
    };
    match svrkit::secret::ClusterSecret::from_env().context(svrkit::secret::CLUSTER_SECRET_VAR)? {
        Some(secret) => {
            service = service
                .devices(account::device::Devices::signed(
                    secret.key(account::device::SIGNING_PURPOSE),
                ))
                .puzzles(account::proof::Puzzles::new(
                    secret.key(account::proof::SIGNING_PURPOSE),
                    bits,
                    mode,
                ));
        }
        None => {
            tracing::warn!(
                "no {}: devices get no credentials, every sign-in is from an unknown device",
                svrkit::secret::CLUSTER_SECRET_VAR
            );
            service = service.puzzles(account::proof::Puzzles::unshared(bits, mode)?);
        }
    }
    if let Ok(secs) = std::env::var("WX_SESSION_TTL_SECS") {
        let secs: u64 = secs.parse().context("WX_SESSION_TTL_SECS")?;
        service = service.session_ttl(Duration::from_secs(secs));
    }
    launch
        .serve(Server::builder().add_service(AccountServer::new(service)))
        .await?;
    Ok(())
}
