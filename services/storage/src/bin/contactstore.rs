//! `contactstore`: one shard of `wx.storage.ContactStore`, configured by the SVRKIT_*
//! environment (see `svrkit::launch`); its data lives in SVRKIT_DATA_DIR.

use anyhow::Context as _;
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::storage::contact_store_methods::SERVICE_NAME;
use wx_api::storage::contact_store_server::ContactStoreServer;
use wx_storage::{ContactStoreService, Engine};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?.sharded();
    let dir = launch.data_dir().join("contactstore");
    let engine = Engine::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let service = ContactStoreService::new(engine)?;
    launch
        .serve(Server::builder().add_service(ContactStoreServer::new(service)))
        .await?;
    Ok(())
}
