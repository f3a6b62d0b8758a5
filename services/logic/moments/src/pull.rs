//! Pull authors: whose posts readers merge in at read time rather than receive pushed,
//! chosen by the live push threshold, and this instance's briefly cached list of them.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use svrkit::Status;
use svrkit::config::LiveConfig;
use wx_api::by_uid;
use wx_api::storage::ListPullAuthorsRequest;

use crate::{DEFAULT_PUSH_THRESHOLD, MomentsService};

/// How long the list of pull authors is reused before it is read again.
const PULL_LIST_TTL: Duration = Duration::from_secs(1);

/// This instance's copy of the pull authors.
#[derive(Debug, Default)]
pub(crate) struct PullList {
    pub(crate) authors: Arc<HashSet<u64>>,
    pub(crate) read_at: Option<Instant>,
}

/// The push threshold in a configuration value: `{"push_threshold": N}` or `N`.
pub fn parse_threshold(value: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(value.trim()).ok()?;
    let n = v.get("push_threshold").unwrap_or(&v).as_u64()?;
    usize::try_from(n).ok()
}

impl MomentsService {
    /// The push threshold for the current request (gray release selects by author).
    pub fn push_threshold(&self) -> usize {
        self.config
            .as_ref()
            .map(LiveConfig::for_request)
            .and_then(|(version, value)| (version > 0).then(|| parse_threshold(&value)).flatten())
            .unwrap_or(DEFAULT_PUSH_THRESHOLD)
    }

    /// The pull authors (read again once older than [`PULL_LIST_TTL`]).
    pub(crate) async fn pull_authors(&self) -> Result<Arc<HashSet<u64>>, Status> {
        {
            let list = self.pull.lock().unwrap_or_else(PoisonError::into_inner);
            if list.read_at.is_some_and(|t| t.elapsed() < PULL_LIST_TTL) {
                return Ok(Arc::clone(&list.authors));
            }
        }
        let reply = self
            .store
            .list_pull_authors_with(ListPullAuthorsRequest {}, by_uid(0))
            .await?;
        let authors: Arc<HashSet<u64>> = Arc::new(reply.authors.into_iter().collect());
        let mut list = self.pull.lock().unwrap_or_else(PoisonError::into_inner);
        list.authors = Arc::clone(&authors);
        list.read_at = Some(Instant::now());
        Ok(authors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_from_json_or_a_number() {
        assert_eq!(parse_threshold(r#"{"push_threshold": 300}"#), Some(300));
        assert_eq!(parse_threshold(" 42 "), Some(42));
        assert_eq!(parse_threshold(r#"{"other": 1}"#), None);
        assert_eq!(parse_threshold("many"), None);
        assert_eq!(parse_threshold("-5"), None);
    }
}
