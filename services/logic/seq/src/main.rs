//! `seq`: serves `wx.seq.Seq`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`). `WX_SEQ_LEASE_MS` sets the lease length (default 1,000) and
//! `WX_SEQ_STEP` the numbers per persisted step (default 10,000).

use anyhow::Context as _;
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::seq::seq_methods::SERVICE_NAME;
use wx_api::seq::seq_server::SeqServer;
use wx_api::storage::seq_store_methods;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?;
    let peers = wx_api::Peers::of(&launch)?;
    let store = peers.sharded(seq_store_methods::SERVICE_NAME).await?;
    let mut settings = seq::Settings::new(launch.instance_id());
    if let Ok(ms) = std::env::var("WX_SEQ_LEASE_MS") {
        settings.lease = std::time::Duration::from_millis(ms.parse().context("WX_SEQ_LEASE_MS")?);
    }
    if let Ok(step) = std::env::var("WX_SEQ_STEP") {
        settings.step = step.parse().context("WX_SEQ_STEP")?;
        anyhow::ensure!(settings.step > 0, "WX_SEQ_STEP must be at least 1");
    }
    let service = seq::SeqService::new(store, settings);
    launch
        .serve(Server::builder().add_service(SeqServer::new(service)))
        .await?;
    Ok(())
}
