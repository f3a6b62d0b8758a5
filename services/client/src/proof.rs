//! Solving the backend's sign-in puzzles (`account::proof`): while sign-in is under
//! pressure, a sign-in from a device without a credential is refused with reason
//! `proof_required`; the client asks for a puzzle (`login.challenge`), finds a
//! solution whose SHA-256 begins with the asked number of zero bits, and signs in again
//! with it ([`crate::Http::login`] does all of this).

/// The most zero bits this client will work for (a puzzle asking more is refused: at 24
/// bits a core needs a few seconds).
pub const MAX_BITS: u32 = 24;

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

/// The proof for `challenge` (`CHALLENGE:SOLUTION`), or `None` when it asks more than
/// [`MAX_BITS`]. Runs on the calling thread: call it from `spawn_blocking`.
pub fn solve(challenge: &str, bits: u32) -> Option<String> {
    if bits > MAX_BITS {
        return None;
    }
    (0u64..).find_map(|candidate| {
        let proof = format!("{challenge}:{candidate}");
        (leading_zero_bits(proof.as_bytes()) >= bits).then_some(proof)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solution_has_the_bits_asked_for_and_hard_puzzles_are_refused() {
        let proof = solve("p1.1.12.00000000000000aa.0000000000000000", 12).expect("solved");
        assert!(proof.starts_with("p1.1.12.00000000000000aa.0000000000000000:"));
        assert!(leading_zero_bits(proof.as_bytes()) >= 12);
        assert!(solve("x", MAX_BITS + 1).is_none());
    }
}
