//! `accountstore`: one shard of `wx.storage.AccountStore`, configured by the SVRKIT_*
//! environment (see `svrkit::launch`); its data lives in SVRKIT_DATA_DIR.

use svrkit::launch::Launch;
use wx_api::storage::account_store_methods::{SERVICE, SERVICE_NAME};
use wx_api::storage::account_store_server::AccountStoreServer;
use wx_storage::AccountStoreService;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?.sharded();
    wx_storage::serve_store(launch, "accountstore", &SERVICE, |engine| {
        Ok(AccountStoreServer::new(AccountStoreService::new(engine)?))
    })
    .await?;
    Ok(())
}
