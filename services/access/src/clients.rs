//! The logic-tier clients every action calls through. Below both the gateway (which owns
//! them) and the action handlers (which use them).

use wx_api::access::PushClient;
use wx_api::account::AccountClient;
use wx_api::contact::ContactClient;
use wx_api::message::MessageClient;
use wx_api::moments::MomentsClient;

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
    /// The long-connection gateways' push service (access-long's presence owners), when
    /// this gateway can reach it.
    pub push: Option<PushClient>,
}
