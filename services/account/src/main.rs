//! `account`: serves `wx.account.Account`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`). `WX_SESSION_TTL_SECS` overrides the session lifetime (7 days).

use std::time::Duration;

use anyhow::Context as _;
use svrkit::Server;
use svrkit::discovery::discover;
use svrkit::launch::Launch;
use wx_api::account::account_methods::SERVICE_NAME;
use wx_api::account::account_server::AccountServer;
use wx_api::contact::{ContactClient, contact_methods};
use wx_api::storage::{AccountStoreClient, account_store_methods};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?;
    let registry = launch
        .registry()
        .context("the account service finds its store through a registry; set SVRKIT_REGISTRY")?;
    let store = discover(
        &*registry,
        account_store_methods::SERVICE_NAME,
        wx_api::sharded(),
    )
    .await?;
    let contact = discover(
        &*registry,
        contact_methods::SERVICE_NAME,
        svrkit::Channel::builder(),
    )
    .await?;
    let mut service =
        account::AccountService::new(AccountStoreClient::new(store), ContactClient::new(contact));
    if let Ok(secs) = std::env::var("WX_SESSION_TTL_SECS") {
        let secs: u64 = secs.parse().context("WX_SESSION_TTL_SECS")?;
        service = service.session_ttl(Duration::from_secs(secs));
    }
    launch
        .serve(Server::builder().add_service(AccountServer::new(service)))
        .await?;
    Ok(())
}
