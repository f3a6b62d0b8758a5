//! Password hashing with argon2id (tens of milliseconds and 19 MiB each) on a small pool
//! of dedicated threads, one per core ([`crate::hash_pool`]).
//!
//! Why not tokio's blocking pool: it grows to hundreds of threads under a burst of
//! logins, each hashing at once (CPU the machine does not have), and the allocator keeps a
//! 19 MiB arena per thread that ever hashed — the account service grew to 400-900 MB. A
//! fixed pool bounds both: at most one hash per core runs, the rest wait in the queue, and
//! memory stays at 19 MiB per core: each thread hashes in one buffer it keeps. The queue
//! holds at most [`QUEUED_PER_THREAD`] hashes per thread (a few hundred milliseconds of
//! work); a sign-in beyond that is refused `overloaded` at once.

use std::sync::LazyLock;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use svrkit::Status;

use crate::hash_pool::{HashPool, Reserved};

/// Hashes queued per hashing thread at most: at the default parameters (about 30 ms a
/// hash on this project's machines), a wait of about a quarter of a second.
pub(crate) const QUEUED_PER_THREAD: usize = 8;

/// The hashing threads, one per core.
static POOL: LazyLock<HashPool> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    HashPool::start("argon2", threads, threads * QUEUED_PER_THREAD)
});

/// How many password checks wait for a thread now, and how many may.
pub(crate) fn load() -> (usize, usize) {
    (POOL.queued(), POOL.capacity())
}

/// A place in the hashing queue, or `overloaded` at once: take it before the work that
/// leads to a hash, so that a refused request costs nothing more. A `trusted` sign-in
/// (a known device's, or one that paid with a proof of work) may take the share kept
/// for known devices.
pub(crate) fn reserve(trusted: bool) -> Result<Reserved<'static>, Status> {
    let reserved = POOL.reserve(trusted);
    metrics::gauge!("wx_account_hashes_queued").set(POOL.queued() as f64);
    reserved
}

/// Runs `work` on the hashing pool in `place`, within the current call's deadline.
async fn on_pool<T: Send + 'static>(
    place: Reserved<'static>,
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let result = place.run(svrkit::Context::current().deadline(), work).await;
    metrics::gauge!("wx_account_hashes_queued").set(POOL.queued() as f64);
    result
}

thread_local! {
    /// Each hashing thread's argon2 memory (19 MiB at the default parameters), reused by
    /// every hash it computes: allocating it per hash made the allocator keep hundreds of
    /// megabytes.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// argon2 of `password` and `salt` under `argon2`'s parameters into `out`, in this thread's
/// reused memory.
fn argon2_into(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), Status> {
    MEMORY.with_borrow_mut(|memory| {
        let blocks = params.block_count();
        if memory.len() != blocks {
            memory.clear();
            memory.shrink_to_fit();
            memory.resize(blocks, Block::new());
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, memory.as_mut_slice())
            .map_err(|e| Status::internal(format!("argon2: {e}")))
    })
}

/// The PHC string of `password` under a fresh random salt.
pub(crate) async fn hash(password: String) -> Result<String, Status> {
    on_pool(reserve(false)?, move || {
        let params = Params::default();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| Status::internal(format!("no randomness: {e}")))?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        argon2_into(&argon2, &params, password.as_bytes(), &salt, &mut out)?;
        let phc = |e: argon2::password_hash::phc::Error| Status::internal(format!("PHC: {e}"));
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params)
                .map_err(|e| Status::internal(format!("params: {e}")))?,
            salt: Some(Salt::new(&salt).map_err(phc)?),
            hash: Some(Output::new(&out).map_err(phc)?),
        };
        Ok(hash.to_string())
    })
    .await
}

/// True when `password` matches the stored PHC string, checked in `place` (see
/// [`reserve`]).
pub(crate) async fn verify(
    place: Reserved<'static>,
    password: String,
    stored: String,
) -> Result<bool, Status> {
    on_pool(place, move || {
        let bad = |what: &str| Status::internal(format!("stored password hash: {what}"));
        let parsed = PasswordHash::new(&stored).map_err(|e| bad(&e.to_string()))?;
        let algorithm =
            Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| bad(&e.to_string()))?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).map_err(|e| bad(&e.to_string()))?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).map_err(|e| bad(&e.to_string()))?;
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return Err(bad("no salt or no hash"));
        };
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        argon2_into(
            &argon2,
            &params,
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
        )?;
        // Output's equality is constant-time.
        Ok(Output::new(&out).is_ok_and(|computed| &computed == expected))
    })
    .await
}

#[cfg(test)]
mod tests {
    /// [`super::verify`] in a place of its own.
    async fn check(password: &str, stored: &str) -> Result<bool, svrkit::Status> {
        super::verify(super::reserve(true)?, password.into(), stored.into()).await
    }

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let a = super::hash("correct horse".into()).await.expect("hash");
        let b = super::hash("correct horse".into()).await.expect("hash");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(check("correct horse", &a).await.expect("verify"));
        assert!(!check("wrong horse", &a).await.expect("verify"));
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crates_own_format() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Stored by the crate's own hasher (what earlier versions stored): still verifies.
        let theirs = argon2::Argon2::default()
            .hash_password(b"correct horse")
            .expect("hash")
            .to_string();
        assert!(check("correct horse", &theirs).await.expect("verify"));
        assert!(!check("correct h0rse", &theirs).await.expect("verify"));
        // Ours verifies with the crate's verifier.
        let ours = super::hash("correct horse".into()).await.expect("hash");
        argon2::Argon2::default()
            .verify_password(b"correct horse", ours.as_str())
            .expect("the crate accepts our hash");
        // A corrupt stored hash is an error, not a match.
        assert!(check("x", "$argon2id$nonsense").await.is_err());
    }
}
