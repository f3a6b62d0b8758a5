//! The process's file-descriptor budget and whether it can still accept connections.
//!
//! Every connection, log file and storage file is a descriptor. [`raise_open_files`]
//! (called by `svrkit::launch`) raises the soft limit to the hard one at start, so a
//! gateway can hold its connections; servers then refuse connections before the limit
//! (the access tier keeps 256 in reserve). If accepting fails anyway (`EMFILE`), the
//! accept loops report it ([`note_accept_failure`]) and `/readyz` answers not-ready for
//! [`ACCEPT_FAILURE_WINDOW`], so a supervisor or load balancer stops sending traffic
//! instead of seeing a process that looks healthy but cannot take a connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after a failed accept the process reports itself not ready.
pub const ACCEPT_FAILURE_WINDOW: Duration = Duration::from_secs(3);

/// When an accept last failed, in ms since the epoch (0: never).
static LAST_ACCEPT_FAILURE_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Records that accepting a connection just failed (out of descriptors, say).
pub fn note_accept_failure() {
    LAST_ACCEPT_FAILURE_MS.store(now_ms().max(1), Ordering::Relaxed);
    metrics::counter!("svrkit_accept_failures_total").increment(1);
}

/// False while an accept failed within the last [`ACCEPT_FAILURE_WINDOW`].
pub fn accepting() -> bool {
    let last = LAST_ACCEPT_FAILURE_MS.load(Ordering::Relaxed);
    last == 0 || now_ms().saturating_sub(last) > ACCEPT_FAILURE_WINDOW.as_millis() as u64
}

/// Sets the soft limit on open files: to `cap` when given (at most the hard limit), else
/// up to the hard limit. Returns the new soft limit.
pub fn raise_open_files(cap: Option<u64>) -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let target = match (cap, limit.maximum) {
        (Some(cap), Some(hard)) => cap.min(hard),
        (Some(cap), None) => cap,
        (None, Some(hard)) => hard,
        (None, None) => return Ok(limit.current.unwrap_or(u64::MAX)),
    };
    if limit.current == Some(target) {
        return Ok(target);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    )?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_accept_makes_the_process_not_accepting_for_a_while() {
        // The flag is process-wide; this is the only test that sets it.
        assert!(accepting());
        note_accept_failure();
        assert!(!accepting());
        LAST_ACCEPT_FAILURE_MS.store(
            now_ms() - ACCEPT_FAILURE_WINDOW.as_millis() as u64 - 1,
            Ordering::Relaxed,
        );
        assert!(accepting(), "the window passed");
    }
}
