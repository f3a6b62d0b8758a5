//! `message`: serves `wx.message.Message`, configured by the SVRKIT_* environment (see
//! `svrkit::launch`).

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
    let service = message::MessageService::new(
        MsgStoreClient::new(store),
        SeqClient::new(seq),
        ContactStoreClient::new(contacts),
        AccountClient::new(account),
        Some(message::Notifier::new(PushClient::new(push))),
    );
    launch
        .serve(Server::builder().add_service(MessageServer::new(service)))
        .await?;
    Ok(())
}
