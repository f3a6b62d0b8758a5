//! `moments`: serves `wx.moments.Moments`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`), and runs a timeline fan-out worker. `WX_MOMENTS_LEASE_MS` sets how
//! long a worker holds a job (default 5,000); `WX_FAILPOINT_MOMENTS_ABORT_AFTER=N` aborts
//! the process after N timeline batches (tests only). The push threshold is the service's
//! gray-release configuration (`svrkit config publish wx.moments.Moments …`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::access::PushClient;
use wx_api::moments::moments_methods::SERVICE_NAME;
use wx_api::moments::moments_server::MomentsServer;
use wx_api::seq::{SeqClient, seq_methods};
use wx_api::storage::{contact_store_methods, moments_store_methods};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let mut launch = Launch::from_env(SERVICE_NAME)?;
    let peers = wx_api::Peers::of(&launch)?;
    let store = peers.sharded(moments_store_methods::SERVICE_NAME).await?;
    let contacts = peers.sharded(contact_store_methods::SERVICE_NAME).await?;
    let seq = peers.by_key(seq_methods::SERVICE_NAME).await?;
    let push = peers.presence().await?;
    let events = moments::Events::new(PushClient::new(push));
    let abort_after = match std::env::var("WX_FAILPOINT_MOMENTS_ABORT_AFTER") {
        Ok(n) => Some(n.parse().context("WX_FAILPOINT_MOMENTS_ABORT_AFTER")?),
        Err(_) => None,
    };
    let lease = match std::env::var("WX_MOMENTS_LEASE_MS") {
        Ok(ms) => Duration::from_millis(ms.parse().context("WX_MOMENTS_LEASE_MS")?),
        Err(_) => moments::fanout::DEFAULT_LEASE,
    };
    let fanout = Arc::new(moments::fanout::worker(
        store.clone(),
        Some(events.clone()),
        lease,
        abort_after,
    ));
    tokio::spawn(Arc::clone(&fanout).sweep_forever());
    let config = launch.config().await?;
    let service = moments::MomentsService::new(
        store,
        SeqClient::new(seq),
        moments::Relations::new(contacts),
        config,
        Some(events),
        fanout,
    );
    launch
        .serve(Server::builder().add_service(MomentsServer::new(service)))
        .await?;
    Ok(())
}
