//! Password hashing with argon2id (tens of milliseconds and 19 MiB each) on a small pool
//! of dedicated threads, one per core.
//!
//! Why not tokio's blocking pool: it grows to hundreds of threads under a burst of
//! logins, each hashing at once (CPU the machine does not have), and the allocator keeps a
//! 19 MiB arena per thread that ever hashed — the account service grew to 400-900 MB. A
//! fixed pool bounds both: at most one hash per core runs, the rest wait in the queue, and
//! memory stays at about 19 MiB per core.

use std::sync::LazyLock;
use std::sync::mpsc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use svrkit::Status;

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads' queue.
static POOL: LazyLock<std::sync::Mutex<mpsc::Sender<Job>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    for i in 0..threads {
        let rx = std::sync::Arc::clone(&rx);
        let spawned = std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a hashing thread");
        }
    }
    std::sync::Mutex::new(tx)
});

/// Runs `work` on the hashing pool.
async fn on_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = done.send(work());
    });
    POOL.lock()
        .map_err(|_| Status::internal("the hashing pool is gone"))?
        .send(job)
        .map_err(|_| Status::internal("the hashing pool is gone"))?;
    metrics::gauge!("wx_account_hashes_queued").increment(1.0);
    let result = result.await;
    metrics::gauge!("wx_account_hashes_queued").decrement(1.0);
    result.map_err(|_| Status::internal("a hashing thread died"))?
}

/// The PHC string of `password` under a fresh random salt.
pub(crate) async fn hash(password: String) -> Result<String, Status> {
    on_pool(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Status::internal(format!("hashing the password: {e}")))
    })
    .await
}

/// True when `password` matches the stored PHC string.
pub(crate) async fn verify(password: String, stored: String) -> Result<bool, Status> {
    on_pool(move || {
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| Status::internal(format!("stored password hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let a = super::hash("correct horse".into()).await.expect("hash");
        let b = super::hash("correct horse".into()).await.expect("hash");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(
            super::verify("correct horse".into(), a.clone())
                .await
                .expect("verify")
        );
        assert!(
            !super::verify("wrong horse".into(), a)
                .await
                .expect("verify")
        );
    }
}
