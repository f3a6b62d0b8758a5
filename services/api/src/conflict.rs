//! Optimistic concurrency: a read-modify-write that lost its compare-and-set (the store
//! answered `ABORTED`: another write got in between the read and the write) is run
//! again from the read, a bounded number of times.

use std::future::Future;

use svrkit::{Code, Status};

/// Runs `attempt` until it succeeds, fails with anything but `ABORTED`, or has lost
/// `attempts` races (at least one attempt is made); then the last loss is the answer.
///
/// Each attempt must read what it changes afresh: the closure is called again from the
/// start, never with the state of the attempt that lost.
pub async fn retry_on_conflict<T, F, Fut>(attempts: usize, mut attempt: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut lost = None;
    for _ in 0..attempts.max(1) {
        match attempt().await {
            Err(status) if status.code() == Code::Aborted => lost = Some(status),
            done => return done,
        }
    }
    Err(lost.unwrap_or_else(|| Status::aborted("the record kept changing; try again")))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    #[test]
    fn a_lost_race_is_run_again_until_it_wins() {
        let calls = Cell::new(0);
        let result = block_on(retry_on_conflict(4, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(Status::aborted("at version 1, not 0"))
                } else {
                    Ok(n)
                }
            }
        }));
        assert_eq!(result.ok(), Some(3));
    }

    #[test]
    fn other_failures_and_the_attempt_bound_stop_it() {
        let calls = Cell::new(0);
        let result: Result<(), Status> = block_on(retry_on_conflict(4, || {
            calls.set(calls.get() + 1);
            async { Err(Status::not_found("gone")) }
        }));
        assert_eq!(result.map_err(|s| s.code()), Err(Code::NotFound));
        assert_eq!(calls.get(), 1, "not a conflict: not repeated");

        calls.set(0);
        let result: Result<(), Status> = block_on(retry_on_conflict(3, || {
            calls.set(calls.get() + 1);
            async { Err(Status::aborted("lost")) }
        }));
        assert_eq!(
            result.map_err(|s| s.message().to_string()),
            Err("lost".into())
        );
        assert_eq!(calls.get(), 3);
    }
}
