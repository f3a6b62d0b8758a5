//! A proof of work for signing in from an unknown device while sign-in is under
//! pressure, so that a flood of password guesses costs the flooder about what it costs
//! us (a password hash), and sign-ins that pay, or come from known devices, get through.
//!
//! - **The puzzle** (`LoginChallenge`): `p1.EXPIRES_MS.BITS.NONCE.TAG`, for one account
//!   name, valid [`CHALLENGE_TTL`]: `NONCE` is random (16 hex digits) and `TAG` the first
//!   8 bytes of HMAC-SHA256 of the name and the rest under the cluster's
//!   `wx.account.proof` key ([`svrkit::secret`]; a random key per process without one).
//!   Nothing is stored until it is used.
//! - **The answer** (`LoginRequest.proof`): `CHALLENGE:SOLUTION`, where the SHA-256 of
//!   that whole text begins with `BITS` zero bits (a solver tries 2^BITS solutions on
//!   average: about 30 ms of one core in Rust at the default 16 bits).
//! - **When it is needed** ([`Mode`]): by default, from an unknown device while the
//!   password-hashing queue is at least half full, and for [`PRESSURE_HOLD`] after. A
//!   sign-in refused for it answers `resource_exhausted` with reason `proof_required`:
//!   the client asks for a puzzle, solves it and signs in again.
//! - **Each answer counts once**: used puzzles are remembered until they expire (at most
//!   [`MAX_REMEMBERED`]; past that, new answers are refused until old ones expire), so
//!   one solution cannot buy a flood. Each account instance remembers its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use svrkit::Status;
use svrkit::secret::SigningKey;

/// The purpose the cluster's puzzle key is derived for.
pub const SIGNING_PURPOSE: &str = "wx.account.proof";
/// How long a puzzle may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(120);
/// Zero bits an answer's hash must begin with unless configured otherwise.
pub const DEFAULT_BITS: u32 = 16;
/// The most bits a puzzle may ask for (a day of a core and more beyond).
pub const MAX_BITS: u32 = 32;
/// How long proofs stay required after the pressure was last seen.
pub const PRESSURE_HOLD: Duration = Duration::from_secs(10);
/// The most used puzzles remembered at once.
pub const MAX_REMEMBERED: usize = 100_000;
/// The longest answer accepted (a challenge is about 80 bytes).
const MAX_PROOF_LEN: usize = 256;

/// When sign-ins from unknown devices must carry a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Under pressure only (the default).
    Auto,
    /// Always (tests, or an operator expecting an attack).
    Always,
    /// Never.
    Never,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "always" => Ok(Mode::Always),
            "never" => Ok(Mode::Never),
            other => Err(format!("{other:?} is not auto, always or never")),
        }
    }
}

/// Issues puzzles and checks answers.
#[derive(Debug)]
pub struct Puzzles {
    key: SigningKey,
    bits: u32,
    mode: Mode,
    /// Until when (ms since the epoch) proofs are required in [`Mode::Auto`].
    pressed_until_ms: AtomicU64,
    /// Used puzzles' nonces and when they expire.
    used: Mutex<HashMap<u64, u64>>,
}

impl Puzzles {
    /// Puzzles signed with `key`, of `bits` bits (at most [`MAX_BITS`]), required as
    /// `mode` says.
    pub fn new(key: SigningKey, bits: u32, mode: Mode) -> Puzzles {
        Puzzles {
            key,
            bits: bits.min(MAX_BITS),
            mode,
            pressed_until_ms: AtomicU64::new(0),
            used: Mutex::default(),
        }
    }

    /// Puzzles under a random key of this process (no cluster secret).
    pub fn unshared(bits: u32, mode: Mode) -> Result<Puzzles, svrkit::secret::SecretError> {
        let hex = svrkit::secret::ClusterSecret::generate_hex()?;
        let secret = svrkit::secret::ClusterSecret::from_hex(&hex)?;
        Ok(Puzzles::new(secret.key(SIGNING_PURPOSE), bits, mode))
    }

    /// The bits a puzzle asks for.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Records the hashing queue's state (`queued` of `capacity` places): at half full
    /// or more, proofs are required for the next [`PRESSURE_HOLD`].
    pub fn observe(&self, queued: usize, capacity: usize, now_ms: u64) {
        if queued.saturating_mul(2) >= capacity.max(1) {
            self.pressed_until_ms
                .fetch_max(now_ms + PRESSURE_HOLD.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Whether a sign-in from an unknown device needs a proof now.
    pub fn required(&self, now_ms: u64) -> bool {
        match self.mode {
            Mode::Always => true,
            Mode::Never => false,
            Mode::Auto => now_ms < self.pressed_until_ms.load(Ordering::Relaxed),
        }
    }

    fn signed(&self, name: &str, expires_ms: u64, bits: u32, nonce: u64) -> String {
        format!("p1|{name}|{expires_ms}|{bits}|{nonce:016x}")
    }

    /// A puzzle for signing in as `name`.
    pub fn challenge(&self, name: &str, now_ms: u64) -> Result<String, Status> {
        let nonce = random_nonce()?;
        let expires_ms = now_ms + CHALLENGE_TTL.as_millis() as u64;
        let tag: [u8; 8] = self
            .key
            .tag(self.signed(name, expires_ms, self.bits, nonce).as_bytes());
        Ok(format!(
            "p1.{expires_ms}.{}.{nonce:016x}.{:016x}",
            self.bits,
            u64::from_be_bytes(tag)
        ))
    }

    /// Checks `proof` (`CHALLENGE:SOLUTION`) for signing in as `name`, and uses it up.
    pub fn check(&self, name: &str, proof: &str, now_ms: u64) -> Result<(), Status> {
        let required = || {
            Status::resource_exhausted(
                "sign-in is busy: solve a puzzle (login.challenge) and sign in with it",
            )
            .with_reason("proof_required")
        };
        if proof.is_empty() {
            return Err(required());
        }
        let bad = |why: &str| {
            Status::resource_exhausted(format!("the proof of work does not hold: {why}"))
                .with_reason("proof_required")
        };
        if proof.len() > MAX_PROOF_LEN {
            return Err(bad("too long"));
        }
        let (challenge, _solution) = proof.split_once(':').ok_or_else(|| bad("no solution"))?;
        let parts: Vec<&str> = challenge.split('.').collect();
        let [version, expires_ms, bits, nonce, tag] = parts[..] else {
            return Err(bad("not a challenge"));
        };
        let (Ok(expires_ms), Ok(bits), Ok(nonce), Ok(tag)) = (
            expires_ms.parse::<u64>(),
            bits.parse::<u32>(),
            u64::from_str_radix(nonce, 16),
            u64::from_str_radix(tag, 16),
        ) else {
            return Err(bad("not a challenge"));
        };
        if version != "p1" || nonce == 0 {
            return Err(bad("not a challenge"));
        }
        if !self.key.verify(
            self.signed(name, expires_ms, bits, nonce).as_bytes(),
            &tag.to_be_bytes(),
        ) {
            return Err(bad("not a puzzle of ours for this name"));
        }
        if expires_ms <= now_ms {
            return Err(bad("the puzzle expired"));
        }
        if bits < self.bits {
            return Err(bad("the puzzle is easier than asked now"));
        }
        if leading_zero_bits(proof.as_bytes()) < bits {
            return Err(bad("the solution is wrong"));
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() >= MAX_REMEMBERED {
            used.retain(|_, expires| *expires > now_ms);
        }
        if used.len() >= MAX_REMEMBERED {
            return Err(required());
        }
        if used.insert(nonce, expires_ms).is_some() {
            return Err(bad("the puzzle was used already"));
        }
        metrics::counter!("wx_account_proofs_accepted_total").increment(1);
        Ok(())
    }
}

/// How many zero bits the SHA-256 of `text` begins with.
pub fn leading_zero_bits(text: &[u8]) -> u32 {
    let digest = ring::digest::digest(&ring::digest::SHA256, text);
    let mut bits = 0;
    for byte in digest.as_ref() {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// A solution of `challenge`: the proof (`CHALLENGE:SOLUTION`) whose hash begins with
/// `bits` zero bits. What a client does; here for tests and the Rust tools.
pub fn solve(challenge: &str, bits: u32) -> String {
    let mut candidate = 0u64;
    loop {
        let proof = format!("{challenge}:{candidate}");
        if leading_zero_bits(proof.as_bytes()) >= bits {
            return proof;
        }
        candidate += 1;
    }
}

fn random_nonce() -> Result<u64, Status> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Status::internal(format!("no randomness: {e}")))?;
    Ok(u64::from_be_bytes(bytes).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puzzles(mode: Mode) -> Puzzles {
        Puzzles::unshared(8, mode).expect("a key")
    }

    #[test]
    fn a_solved_puzzle_signs_in_once_for_its_name_only() {
        let p = puzzles(Mode::Always);
        let now = 1_000_000;
        let challenge = p.challenge("alice", now).expect("challenge");
        let proof = solve(&challenge, p.bits());
        assert!(leading_zero_bits(proof.as_bytes()) >= 8);
        let reason = |r: Result<(), Status>| r.expect_err("refused").reason().map(str::to_string);
        assert_eq!(
            reason(p.check("bob", &proof, now)).as_deref(),
            Some("proof_required"),
            "another name"
        );
        p.check("alice", &proof, now).expect("accepted");
        assert!(p.check("alice", &proof, now).is_err(), "used once only");
        // Expired, unsolved, made up, empty, oversized.
        let late = p.challenge("alice", now).expect("challenge");
        let late = solve(&late, p.bits());
        assert!(
            p.check("alice", &late, now + CHALLENGE_TTL.as_millis() as u64)
                .is_err()
        );
        let fresh = p.challenge("alice", now).expect("challenge");
        let wrong = (0..)
            .map(|i| format!("{fresh}:{i}"))
            .find(|proof| leading_zero_bits(proof.as_bytes()) < 8)
            .expect("an unsolved one");
        assert!(p.check("alice", &wrong, now).is_err());
        let forged = format!("p1.{}.0.00000000000000ff.0000000000000000:1", now + 1000);
        assert!(
            p.check("alice", &forged, now).is_err(),
            "a zero-bit puzzle we did not make"
        );
        assert!(p.check("alice", "", now).is_err());
        assert!(p.check("alice", &"x".repeat(10_000), now).is_err());
    }

    #[test]
    fn proofs_are_required_under_pressure_and_for_a_while_after() {
        let p = puzzles(Mode::Auto);
        assert!(!p.required(0));
        p.observe(3, 8, 1_000);
        assert!(!p.required(1_000), "under half full");
        p.observe(4, 8, 1_000);
        assert!(p.required(1_000));
        let hold = PRESSURE_HOLD.as_millis() as u64;
        assert!(p.required(1_000 + hold - 1));
        assert!(!p.required(1_000 + hold));
        assert!(puzzles(Mode::Always).required(0));
        let never = puzzles(Mode::Never);
        never.observe(8, 8, 0);
        assert!(!never.required(0));
    }
}
