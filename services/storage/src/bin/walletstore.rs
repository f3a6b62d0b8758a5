//! `walletstore`: one shard of `wx.storage.WalletStore`, configured by the SVRKIT_* environment
//! (see `svrkit::launch`); its data lives in SVRKIT_DATA_DIR.

use svrkit::launch::Launch;
use wx_api::storage::wallet_store_methods::{SERVICE, SERVICE_NAME};
use wx_api::storage::wallet_store_server::WalletStoreServer;
use wx_storage::WalletStoreService;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?.sharded();
    wx_storage::serve_store(launch, "walletstore", &SERVICE, |engine| {
        Ok(WalletStoreServer::new(WalletStoreService::new(engine)?))
    })
    .await?;
    Ok(())
}
