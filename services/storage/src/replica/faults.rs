//! Fault injection for the Raft transport: cut a replica off from chosen peers without
//! touching the network, to test partitions (no split brain, no stale read) with real
//! processes on one machine.
//!
//! With `WX_RAFT_FAULTS=FILE` set, a replica reads FILE every [`POLL`] and sends no Raft
//! message to the instances it names (one instance id per line; a missing or empty file
//! cuts nothing). A partition is the same cut written on both sides: the isolated replica
//! names the others, and each of them names it. Unset, nothing is read and nothing is
//! cut.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// How often the fault file is read.
pub const POLL: Duration = Duration::from_millis(50);

/// The peers this replica does not talk to now.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    cut: Option<Arc<RwLock<HashSet<String>>>>,
}

impl Faults {
    /// No faults, ever.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Faults read from `WX_RAFT_FAULTS`, when it is set (inside a Tokio runtime).
    pub fn from_env() -> Faults {
        match std::env::var_os("WX_RAFT_FAULTS") {
            Some(file) if !file.is_empty() => Faults::follow(PathBuf::from(file)),
            _ => Faults::none(),
        }
    }

    /// Faults read from `file` every [`POLL`], for as long as the returned value (or a
    /// clone) lives.
    pub fn follow(file: PathBuf) -> Faults {
        let cut = Arc::new(RwLock::new(HashSet::new()));
        let weak = Arc::downgrade(&cut);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let Some(cut) = weak.upgrade() else { return };
                let text = tokio::fs::read_to_string(&file).await.unwrap_or_default();
                if last.as_ref() != Some(&text) {
                    let names: HashSet<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect();
                    tracing::warn!(cut = ?names, "fault injection: Raft messages to these peers are dropped");
                    *cut.write().unwrap_or_else(PoisonError::into_inner) = names;
                    last = Some(text);
                }
                drop(cut);
                tokio::time::sleep(POLL).await;
            }
        });
        Faults { cut: Some(cut) }
    }

    /// True when messages to `peer` are dropped now.
    pub fn is_cut(&self, peer: &str) -> bool {
        self.cut.as_ref().is_some_and(|cut| {
            cut.read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(peer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fault_file_cuts_the_peers_it_names_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("wx-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("faults");
        let faults = Faults::follow(file.clone());
        assert!(!faults.is_cut("store-2"), "no file: nothing cut");
        std::fs::write(&file, "store-2\n\n store-3 \n").expect("write");
        let cut = async {
            while !faults.is_cut("store-3") {
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), cut)
            .await
            .expect("the file is read");
        assert!(faults.is_cut("store-2"));
        assert!(!faults.is_cut("store-1"));
        std::fs::write(&file, "").expect("heal");
        let healed = async {
            while faults.is_cut("store-2") {
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), healed)
            .await
            .expect("healed");
        assert!(!Faults::none().is_cut("store-2"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
