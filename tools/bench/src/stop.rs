//! Stopping a benchmark by hand (Ctrl-C, or `kill`) without leaving its processes behind.
//!
//! The backend benchmarks start a dozen or more processes, which their owner
//! ([`crate::backend::Backend`]) kills when it is dropped. A signal's default action ends
//! this process without dropping anything, and those processes ran on, loading the CPUs
//! under whatever was measured next.

use std::future::Future;

use anyhow::anyhow;
use tokio::signal::unix::{SignalKind, signal};

/// Runs `work` to its end, or until this process gets SIGINT or SIGTERM: then `work` is
/// dropped (and with it what it owns) and the answer is an error naming the signal.
pub(crate) async fn until_stopped(
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // Registered before `work` first runs, so a signal at any point of it is caught.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = work => result,
        _ = interrupt.recv() => Err(anyhow!("interrupted (SIGINT): stopped what it had started")),
        _ = terminate.recv() => Err(anyhow!("terminated (SIGTERM): stopped what it had started")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rustix::process::{Signal, getpid, kill_process};

    use super::*;

    /// Stands for a backend: notes that it was dropped.
    struct Owned(Arc<AtomicBool>);

    impl Drop for Owned {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_termination_signal_drops_the_work_and_what_it_owns() {
        let dropped = Arc::new(AtomicBool::new(false));
        let owned = Owned(Arc::clone(&dropped));
        let (running, started) = tokio::sync::oneshot::channel();
        let work = async move {
            let _owned = owned;
            let _ = running.send(());
            std::future::pending::<anyhow::Result<()>>().await
        };
        let stopping = tokio::spawn(until_stopped(work));
        started.await.expect("the work runs");
        kill_process(getpid(), Signal::TERM).expect("signal this process");
        let answer = stopping.await.expect("the task ends");
        let error = answer.expect_err("stopped, not finished");
        assert!(error.to_string().contains("SIGTERM"), "{error}");
        assert!(
            dropped.load(Ordering::SeqCst),
            "what the work owned is dropped"
        );
    }

    #[tokio::test]
    async fn work_that_ends_gives_its_own_answer() {
        let answer = until_stopped(async { Err(anyhow!("the bench's own error")) }).await;
        assert_eq!(
            answer.expect_err("an error").to_string(),
            "the bench's own error"
        );
        until_stopped(async { Ok(()) }).await.expect("ok");
    }
}
