//! Who a gray release reaches: a [`Selector`] of users or instances, shared by gray
//! configuration ([`crate::config`]) and binary gray releases ([`crate::discovery`]).

use crate::balance::key_position;

/// Which requests or instances see the gray value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// This percentage (0..=100) of users, chosen by `key_position(uid) % 100`.
    Percent(u32),
    /// Exactly these users.
    Uids(Vec<u64>),
    /// Every request served by these instances (by instance id).
    Instances(Vec<String>),
}

impl Selector {
    /// True when a request for `uid` served by `instance` falls in the selection.
    pub fn selects(&self, uid: u64, instance: &str) -> bool {
        match self {
            Selector::Percent(p) => uid != 0 && key_position(uid) % 100 < u64::from(*p),
            Selector::Uids(uids) => uids.contains(&uid),
            Selector::Instances(ids) => ids.iter().any(|id| id == instance),
        }
    }
}
