//! The action table: every client action in one place — its name, its business priority
//! (what DAGOR sheds last under overload: signing in and messaging before contact
//! changes before Moments writes before browsing), whether it needs a signed-in user, and
//! its handler, which lives in the module of its domain (`account`, `contact`,
//! `message`, `moments`, `wallet`). Adding an action is one row here and one handler there.

mod account;
mod contact;
mod message;
mod moments;
mod wallet;

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

pub use account::MAX_PROFILES_PER_CALL;

use crate::clients::Clients;
use crate::error::ApiError;

/// What a handler gets: the logic-tier clients, the acting user and the request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The services to call.
    pub clients: &'a Clients,
    /// The signed-in user (0 for the actions that need none).
    pub me: u64,
    /// The request's JSON body (an object).
    pub body: &'a Value,
    /// The caller's own session token, when it has one (`logout` ends that session).
    pub token: Option<&'a str>,
}

/// What a handler returns: the answer's JSON, in the future.
pub type Handled<'a> = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>>;

/// Runs one action.
pub type Handler = for<'a> fn(Call<'a>) -> Handled<'a>;

/// One client action.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    /// Its name on the wire.
    pub name: &'static str,
    /// Business priority stamped on its requests (smaller is more important).
    pub priority: u32,
    /// Whether it needs a signed-in user.
    pub needs_user: bool,
    /// What runs it.
    pub handler: Handler,
}

/// A row of the table: `action!(name, priority, needs a user, handler)`.
macro_rules! action {
    ($name:literal, $priority:expr, $needs_user:expr, $handler:path) => {
        ActionSpec {
            name: $name,
            priority: $priority,
            needs_user: $needs_user,
            handler: |call| Box::pin($handler(call)),
        }
    };
}

/// Business priorities by kind of action.
pub mod priority {
    /// Signing in, out and up.
    pub const AUTH: u32 = 10;
    /// Messaging: sending, syncing, groups.
    pub const MESSAGING: u32 = 20;
    /// Opening a red envelope one grabbed (money the user was promised).
    pub const ENVELOPE_OPEN: u32 = 22;
    /// Grabbing a share of a red envelope.
    pub const ENVELOPE_GRAB: u32 = 24;
    /// Sending a red envelope.
    pub const ENVELOPE_SEND: u32 = 26;
    /// Looking at a red envelope and its takers.
    pub const ENVELOPE_GET: u32 = 28;
    /// Changing contacts.
    pub const CONTACT_WRITE: u32 = 30;
    /// Reading contacts and profiles.
    pub const CONTACT_READ: u32 = 40;
    /// Writing moments: posts, likes, comments.
    pub const MOMENTS_WRITE: u32 = 60;
    /// Topping up a wallet (test money): with contact changes (edge admission gives each
    /// distinct business priority a band of its own, so a new one costs every band).
    pub const WALLET_WRITE: u32 = CONTACT_WRITE;
    /// A wallet's balance and history: with the other reads.
    pub const WALLET_READ: u32 = CONTACT_READ;
    /// Browsing moments: timelines, albums, posts.
    pub const MOMENTS_BROWSE: u32 = 80;
}

/// Every action the backend offers.
pub const ACTIONS: &[ActionSpec] = &[
    action!("register", priority::AUTH, false, account::register),
    action!("login", priority::AUTH, false, account::login),
    action!(
        "login.challenge",
        priority::AUTH,
        false,
        account::login_challenge
    ),
    action!("logout", priority::AUTH, true, account::logout),
    action!(
        "profile.get",
        priority::CONTACT_READ,
        true,
        account::profile_get
    ),
    action!(
        "user.find",
        priority::CONTACT_READ,
        true,
        account::user_find
    ),
    action!("endpoint", priority::AUTH, true, account::endpoint),
    action!(
        "profile.update",
        priority::CONTACT_WRITE,
        true,
        account::profile_update
    ),
    action!(
        "friends.request",
        priority::CONTACT_WRITE,
        true,
        contact::request
    ),
    action!(
        "friends.accept",
        priority::CONTACT_WRITE,
        true,
        contact::accept
    ),
    action!(
        "friends.reject",
        priority::CONTACT_WRITE,
        true,
        contact::reject
    ),
    action!(
        "friends.remove",
        priority::CONTACT_WRITE,
        true,
        contact::remove
    ),
    action!(
        "friends.block",
        priority::CONTACT_WRITE,
        true,
        contact::block
    ),
    action!(
        "friends.unblock",
        priority::CONTACT_WRITE,
        true,
        contact::unblock
    ),
    action!("friends.list", priority::CONTACT_READ, true, contact::list),
    action!(
        "friends.requests",
        priority::CONTACT_READ,
        true,
        contact::requests
    ),
    action!(
        "relation.check",
        priority::CONTACT_READ,
        true,
        contact::check
    ),
    action!("message.send", priority::MESSAGING, true, message::send),
    action!("sync", priority::MESSAGING, true, message::sync),
    action!(
        "group.create",
        priority::MESSAGING,
        true,
        message::group_create
    ),
    action!("group.add", priority::MESSAGING, true, message::group_add),
    action!(
        "group.leave",
        priority::MESSAGING,
        true,
        message::group_leave
    ),
    action!("group.send", priority::MESSAGING, true, message::group_send),
    action!("group.info", priority::MESSAGING, true, message::group_info),
    action!("moments.post", priority::MOMENTS_WRITE, true, moments::post),
    action!(
        "moments.delete",
        priority::MOMENTS_WRITE,
        true,
        moments::delete
    ),
    action!("moments.like", priority::MOMENTS_WRITE, true, moments::like),
    action!(
        "moments.unlike",
        priority::MOMENTS_WRITE,
        true,
        moments::unlike
    ),
    action!(
        "moments.comment",
        priority::MOMENTS_WRITE,
        true,
        moments::comment
    ),
    action!(
        "moments.uncomment",
        priority::MOMENTS_WRITE,
        true,
        moments::uncomment
    ),
    action!(
        "moments.album",
        priority::MOMENTS_BROWSE,
        true,
        moments::album
    ),
    action!(
        "moments.timeline",
        priority::MOMENTS_BROWSE,
        true,
        moments::timeline
    ),
    action!("moments.get", priority::MOMENTS_BROWSE, true, moments::get),
    action!(
        "wallet.balance",
        priority::WALLET_READ,
        true,
        wallet::balance
    ),
    action!(
        "wallet.history",
        priority::WALLET_READ,
        true,
        wallet::history
    ),
    action!("wallet.topup", priority::WALLET_WRITE, true, wallet::top_up),
    action!("envelope.send", priority::ENVELOPE_SEND, true, wallet::send),
    action!("envelope.grab", priority::ENVELOPE_GRAB, true, wallet::grab),
    action!("envelope.open", priority::ENVELOPE_OPEN, true, wallet::open),
    action!("envelope.get", priority::ENVELOPE_GET, true, wallet::get),
];

/// The action named `name`.
pub fn find_action(name: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// Every action's business priority by name, as the long connection's auth answer tells
/// clients (so that they can hold back what the gateway would shed).
pub fn priorities() -> serde_json::Map<String, serde_json::Value> {
    ACTIONS
        .iter()
        .map(|a| (a.name.to_string(), a.priority.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_table_orders_priorities_and_names_are_unique() {
        let p = |n: &str| find_action(n).map(|a| a.priority);
        assert!(p("login") < p("friends.request"));
        assert!(p("friends.request") < p("friends.list"));
        const { assert!(priority::MESSAGING < priority::MOMENTS_WRITE) };
        const { assert!(priority::MOMENTS_WRITE < priority::MOMENTS_BROWSE) };
        // Red envelopes: open above grab above send above get.
        assert!(p("envelope.open") < p("envelope.grab"));
        assert!(p("envelope.grab") < p("envelope.send"));
        assert!(p("envelope.send") < p("envelope.get"));
        let mut names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len());
        assert!(find_action("login").is_some_and(|a| !a.needs_user));
        assert!(find_action("friends.list").is_some_and(|a| a.needs_user));
    }
}
