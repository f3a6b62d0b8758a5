//! `contact`: serves `wx.contact.Contact`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`). `WX_MAX_FRIENDS` lowers the friend ceiling (5,000).

use anyhow::Context as _;
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::access::PushClient;
use wx_api::account::{AccountClient, account_methods};
use wx_api::contact::contact_methods::SERVICE_NAME;
use wx_api::contact::contact_server::ContactServer;
use wx_api::storage::{ContactStoreClient, contact_store_methods};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?;
    let peers = wx_api::Peers::of(&launch)?;
    let store = peers.sharded(contact_store_methods::SERVICE_NAME).await?;
    let account = peers.balanced(account_methods::SERVICE_NAME).await?;
    let push = peers.presence().await?;
    let mut service = contact::ContactService::new(
        ContactStoreClient::new(store),
        AccountClient::new(account),
        Some(PushClient::new(push)),
    );
    if let Ok(max) = std::env::var("WX_MAX_FRIENDS") {
        service = service.max_friends(max.parse().context("WX_MAX_FRIENDS")?);
    }
    launch
        .serve(Server::builder().add_service(ContactServer::new(service)))
        .await?;
    Ok(())
}
