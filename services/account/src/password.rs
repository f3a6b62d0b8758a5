//! Password hashing with argon2id, on the blocking pool (tens of milliseconds each).

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use svrkit::Status;

/// The PHC string of `password` under a fresh random salt.
pub(crate) async fn hash(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Status::internal(format!("hashing the password: {e}")))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
}

/// True when `password` matches the stored PHC string.
pub(crate) async fn verify(password: String, stored: String) -> Result<bool, Status> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| Status::internal(format!("stored password hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
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
