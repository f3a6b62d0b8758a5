//! `seqstore`: one shard of `wx.storage.SeqStore`, configured by the SVRKIT_* environment
//! (see `svrkit::launch`); its data lives in SVRKIT_DATA_DIR.

use svrkit::launch::Launch;
use wx_api::storage::seq_store_methods::{SERVICE, SERVICE_NAME};
use wx_api::storage::seq_store_server::SeqStoreServer;
use wx_storage::SeqStoreService;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?.sharded();
    wx_storage::serve_store(launch, "seqstore", &SERVICE, |engine| {
        Ok(SeqStoreServer::new(SeqStoreService::new(engine)?))
    })
    .await?;
    Ok(())
}
