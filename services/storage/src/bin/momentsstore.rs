//! `momentsstore`: one shard of `wx.storage.MomentsStore`, configured by the SVRKIT_*
//! environment (see `svrkit::launch`); its data lives in SVRKIT_DATA_DIR.

use svrkit::launch::Launch;
use wx_api::storage::moments_store_methods::{SERVICE, SERVICE_NAME};
use wx_api::storage::moments_store_server::MomentsStoreServer;
use wx_storage::MomentsStoreService;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?.sharded();
    wx_storage::serve_store(launch, "momentsstore", &SERVICE, |engine| {
        Ok(MomentsStoreServer::new(MomentsStoreService::new(engine)?))
    })
    .await?;
    Ok(())
}
