//! `msgstore`: one shard of `wx.storage.MsgStore`, configured by the SVRKIT_* environment
//! (see `svrkit::launch`); its data lives in SVRKIT_DATA_DIR. `WX_MSG_RETENTION_MS` sets how
//! long messages no device acknowledged are kept (default 7 days).

use anyhow::Context as _;
use svrkit::launch::Launch;
use wx_api::storage::msg_store_methods::{SERVICE, SERVICE_NAME};
use wx_api::storage::msg_store_server::MsgStoreServer;
use wx_storage::{MsgStoreService, msg_store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?.sharded();
    let retention = match std::env::var("WX_MSG_RETENTION_MS") {
        Ok(ms) => std::time::Duration::from_millis(ms.parse().context("WX_MSG_RETENTION_MS")?),
        Err(_) => msg_store::DEFAULT_RETENTION,
    };
    wx_storage::serve_store(launch, "msgstore", &SERVICE, move |engine| {
        Ok(MsgStoreServer::new(MsgStoreService::new(
            engine, retention,
        )?))
    })
    .await?;
    Ok(())
}
