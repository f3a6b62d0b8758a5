//! The logic-tier clients every action calls through. Below both the gateway (which owns
//! them) and the action handlers (which use them).

use wx_api::access::PushClient;
use wx_api::account::AccountClient;
use wx_api::contact::ContactClient;
use wx_api::message::MessageClient;
use wx_api::moments::MomentsClient;
use wx_api::wallet::WalletClient;

/// The services behind the access tier.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Accounts, sessions and profiles.
    pub account: AccountClient,
    /// The relation chain.
    pub contact: ContactClient,
    /// Messages, sync and groups.
    pub message: MessageClient,
    /// Moments.
    pub moments: MomentsClient,
    /// Wallets and red envelopes, on a ring of the wallet instances: an envelope's
    /// requests go to its owner (routed by `wx_api::envelope_key`).
    pub wallet: WalletClient,
    /// The long-connection gateways' push service (access-long's presence owners), when
    /// this gateway can reach it.
    pub push: Option<PushClient>,
}

impl Clients {
    /// Every client over one `channel` (a test's single server, or one proxy in front of
    /// every service); a push client too when `push`.
    pub fn over(channel: &svrkit::Channel, push: bool) -> Clients {
        Clients {
            account: AccountClient::new(channel.clone()),
            contact: ContactClient::new(channel.clone()),
            message: MessageClient::new(channel.clone()),
            moments: MomentsClient::new(channel.clone()),
            wallet: WalletClient::new(channel.clone()),
            push: push.then(|| PushClient::new(channel.clone())),
        }
    }
}
