//! Fast, non-cryptographic random numbers for ids and balancing draws. At the bottom of
//! the crate: everything may use it, it uses nothing of the crate.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// A fresh non-zero random `u64` from a fast per-thread generator (xorshift64*): trace
/// and span ids, instance ids, balancing draws. Not for secrets: it is predictable.
pub fn random_u64() -> u64 {
    RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1
    })
}
