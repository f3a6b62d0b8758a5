//! `message`: serves `wx.message.Message`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`), and runs a group fan-out worker. `WX_FANOUT_LEASE_MS` sets how long
//! a worker holds a job (default 5,000); `WX_FAILPOINT_FANOUT_ABORT_AFTER=N` aborts the
//! process after N deliveries (tests only).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use svrkit::Server;
use svrkit::launch::Launch;
use wx_api::access::PushClient;
use wx_api::account::{AccountClient, account_methods};
use wx_api::message::message_methods::SERVICE_NAME;
use wx_api::message::message_server::MessageServer;
use wx_api::seq::{SeqClient, seq_methods};
use wx_api::storage::{
    ContactStoreClient, MsgStoreClient, contact_store_methods, msg_store_methods,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wx_api::init_tracing();
    let launch = Launch::from_env(SERVICE_NAME)?;
    let peers = wx_api::Peers::of(&launch)?;
    let store = peers.sharded(msg_store_methods::SERVICE_NAME).await?;
    let contacts = peers.sharded(contact_store_methods::SERVICE_NAME).await?;
    let seq = peers.by_key(seq_methods::SERVICE_NAME).await?;
    let account = peers.balanced(account_methods::SERVICE_NAME).await?;
    let push = peers.presence().await?;
    let notifier = message::Notifier::new(PushClient::new(push));
    let abort_after = match std::env::var("WX_FAILPOINT_FANOUT_ABORT_AFTER") {
        Ok(n) => Some(n.parse().context("WX_FAILPOINT_FANOUT_ABORT_AFTER")?),
        Err(_) => None,
    };
    let lease = match std::env::var("WX_FANOUT_LEASE_MS") {
        Ok(ms) => Duration::from_millis(ms.parse().context("WX_FANOUT_LEASE_MS")?),
        Err(_) => message::fanout::DEFAULT_LEASE,
    };
    let fanout = Arc::new(message::fanout::worker(
        store.clone(),
        SeqClient::new(seq.clone()),
        Some(notifier.clone()),
        lease,
        abort_after,
    ));
    tokio::spawn(Arc::clone(&fanout).sweep_forever());
    let service = message::MessageService::new(
        MsgStoreClient::new(store),
        SeqClient::new(seq),
        ContactStoreClient::new(contacts),
        AccountClient::new(account),
        Some(notifier),
        fanout,
    )
    .sync_key_check(sync_key_check()?);
    launch
        .serve(Server::builder().add_service(MessageServer::new(service)))
        .await?;
    Ok(())
}

/// Sync keys signed with the cluster's key when the process has the cluster secret;
/// checksummed only (a client could forge one for itself) when it has none.
fn sync_key_check() -> anyhow::Result<message::SyncKeyCheck> {
    match svrkit::secret::ClusterSecret::from_env().context(svrkit::secret::CLUSTER_SECRET_VAR)? {
        Some(secret) => Ok(message::SyncKeyCheck::signed(
            secret.key(message::sync_key::SIGNING_PURPOSE),
        )),
        None => {
            tracing::warn!(
                "no {}: sync keys are checksummed, not signed",
                svrkit::secret::CLUSTER_SECRET_VAR
            );
            Ok(message::SyncKeyCheck::checksummed())
        }
    }
}
