//! `contact`: serves `wx.contact.Contact`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`). `WX_MAX_FRIENDS` lowers the friend ceiling (5,000).

use anyhow::Context as _;
use svrkit::Server;
use svrkit::discovery::discover;
use svrkit::launch::Launch;
use wx_api::access::{PushClient, push_methods};
use wx_api::account::{AccountClient, account_methods};
use wx_api::contact::contact_methods::SERVICE_NAME;
use wx_api::contact::contact_server::ContactServer;
use wx_api::storage::{ContactStoreClient, contact_store_methods};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?;
    let registry = launch
        .registry()
        .context("the contact service finds its store through a registry; set SVRKIT_REGISTRY")?;
    let store = discover(
        &*registry,
        contact_store_methods::SERVICE_NAME,
        wx_api::sharded(),
    )
    .await?;
    let account = discover(
        &*registry,
        account_methods::SERVICE_NAME,
        svrkit::Channel::builder(),
    )
    .await?;
    let push = discover(&*registry, push_methods::SERVICE_NAME, wx_api::presence()).await?;
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
