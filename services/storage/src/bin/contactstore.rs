//! `contactstore`: one shard of `wx.storage.ContactStore`, configured by the SVRKIT_*
//! environment (see `svrkit::launch`); its data lives in SVRKIT_DATA_DIR.

use svrkit::launch::Launch;
use wx_api::storage::contact_store_methods::{SERVICE, SERVICE_NAME};
use wx_api::storage::contact_store_server::ContactStoreServer;
use wx_storage::ContactStoreService;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?.sharded();
    wx_storage::serve_store(launch, "contactstore", &SERVICE, |engine| {
        Ok(ContactStoreServer::new(ContactStoreService::new(engine)?))
    })
    .await?;
    Ok(())
}
