//! `account`: serves `wx.account.Account`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`). `WX_SESSION_TTL_SECS` overrides the session lifetime (7 days).

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
    match svrkit::secret::ClusterSecret::from_env().context(svrkit::secret::CLUSTER_SECRET_VAR)? {
        Some(secret) => {
            service = service.devices(account::device::Devices::signed(
                secret.key(account::device::SIGNING_PURPOSE),
            ));
        }
        None => tracing::warn!(
            "no {}: devices get no credentials, every sign-in is from an unknown device",
            svrkit::secret::CLUSTER_SECRET_VAR
        ),
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
