//! The action table: every client action, its business priority (what DAGOR sheds last
//! under overload: signing in and messaging before contact changes before Moments writes
//! before browsing) and
//! whether it needs a signed-in user.

/// One client action.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    /// Its name on the wire.
    pub name: &'static str,
    /// Business priority stamped on its requests (smaller is more important).
    pub priority: u32,
    /// Whether it needs a signed-in user.
    pub needs_user: bool,
}

const fn action(name: &'static str, priority: u32, needs_user: bool) -> ActionSpec {
    ActionSpec {
        name,
        priority,
        needs_user,
    }
}

/// Business priorities by kind of action.
pub mod priority {
    /// Signing in, out and up.
    pub const AUTH: u32 = 10;
    /// Messaging (the message issue's actions).
    pub const MESSAGING: u32 = 20;
    /// Changing contacts.
    pub const CONTACT_WRITE: u32 = 30;
    /// Reading contacts and profiles.
    pub const CONTACT_READ: u32 = 40;
    /// Writing moments: posts, likes, comments.
    pub const MOMENTS_WRITE: u32 = 60;
    /// Browsing moments: timelines, albums, posts.
    pub const MOMENTS_BROWSE: u32 = 80;
}

/// Every action the backend offers.
pub const ACTIONS: &[ActionSpec] = &[
    action("register", priority::AUTH, false),
    action("login", priority::AUTH, false),
    action("logout", priority::AUTH, true),
    action("profile.get", priority::CONTACT_READ, true),
    action("user.find", priority::CONTACT_READ, true),
    action("endpoint", priority::AUTH, true),
    action("profile.update", priority::CONTACT_WRITE, true),
    action("friends.request", priority::CONTACT_WRITE, true),
    action("friends.accept", priority::CONTACT_WRITE, true),
    action("friends.reject", priority::CONTACT_WRITE, true),
    action("friends.remove", priority::CONTACT_WRITE, true),
    action("friends.block", priority::CONTACT_WRITE, true),
    action("friends.unblock", priority::CONTACT_WRITE, true),
    action("friends.list", priority::CONTACT_READ, true),
    action("friends.requests", priority::CONTACT_READ, true),
    action("relation.check", priority::CONTACT_READ, true),
    action("message.send", priority::MESSAGING, true),
    action("sync", priority::MESSAGING, true),
    action("group.create", priority::MESSAGING, true),
    action("group.add", priority::MESSAGING, true),
    action("group.leave", priority::MESSAGING, true),
    action("group.send", priority::MESSAGING, true),
    action("group.info", priority::MESSAGING, true),
    action("moments.post", priority::MOMENTS_WRITE, true),
    action("moments.delete", priority::MOMENTS_WRITE, true),
    action("moments.like", priority::MOMENTS_WRITE, true),
    action("moments.unlike", priority::MOMENTS_WRITE, true),
    action("moments.comment", priority::MOMENTS_WRITE, true),
    action("moments.uncomment", priority::MOMENTS_WRITE, true),
    action("moments.album", priority::MOMENTS_BROWSE, true),
    action("moments.timeline", priority::MOMENTS_BROWSE, true),
    action("moments.get", priority::MOMENTS_BROWSE, true),
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
        let mut names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len());
        assert!(find_action("login").is_some_and(|a| !a.needs_user));
        assert!(find_action("friends.list").is_some_and(|a| a.needs_user));
    }
}
