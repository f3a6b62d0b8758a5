//! Gray releases: which [`Track`] an instance runs, and who a release reaches (a
//! [`Selector`] of users or instances), shared by gray configuration ([`crate::config`])
//! and binary gray releases ([`crate::discovery`]).

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

/// The release track an instance runs: the stable release, or a gray one that only the
/// users (or requests) a gray release selects reach. Written `"stable"` / `"gray"` in
/// registry records, admin pages and logs.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    /// The release everyone gets.
    #[default]
    Stable,
    /// A release being tried on a selection of users.
    Gray,
}

impl Track {
    /// `"stable"` or `"gray"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Gray => "gray",
        }
    }

    /// True for [`Track::Gray`].
    pub fn is_gray(self) -> bool {
        self == Track::Gray
    }
}

impl std::fmt::Display for Track {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A release track name that is neither `stable` nor `gray`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a track is stable or gray, not {0:?}")]
pub struct TrackError(pub String);

impl std::str::FromStr for Track {
    type Err = TrackError;

    fn from_str(s: &str) -> Result<Track, TrackError> {
        match s {
            "stable" => Ok(Track::Stable),
            "gray" => Ok(Track::Gray),
            other => Err(TrackError(other.to_string())),
        }
    }
}
