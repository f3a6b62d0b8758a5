//! `momentsstore`: one shard of `wx.storage.MomentsStore`, configured by the SVRKIT_*
//! environment (see `svrkit::launch`); its data lives in SVRKIT_DATA_DIR.

use anyhow::Context as _;
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::storage::moments_store_methods::SERVICE_NAME;
use wx_api::storage::moments_store_server::MomentsStoreServer;
use wx_storage::{Engine, MomentsStoreService};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?.sharded();
    let dir = launch.data_dir().join("momentsstore");
    let engine = Engine::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let service = MomentsStoreService::new(engine)?;
    launch
        .serve(Server::builder().add_service(MomentsStoreServer::new(service)))
        .await?;
    Ok(())
}
