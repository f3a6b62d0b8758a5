//! A consistent-hash ring with virtual-node points fixed in advance.
//!
//! Each node contributes [`POINTS_PER_NODE`] points whose positions are a hash of the
//! node's name and the point's number, nothing else, so every client that knows the same
//! nodes builds the same ring, instantly, without coordination. A key belongs to the first
//! point at or after its own hash (wrapping). Adding a node moves to it only the keys that
//! now fall before its points: about `1/(N+1)` of them, and no key moves between old nodes.
//!
//! The hash is FNV-1a (64-bit) followed by the splitmix64 finaliser, specified here so that
//! a client in another language can compute the same ring.

/// Virtual points per node: enough to keep the load within a few percent of even.
pub const POINTS_PER_NODE: u32 = 160;

/// 64-bit FNV-1a of `bytes`, then the splitmix64 finaliser.
pub fn ring_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The position of a routing key (a uid) on the ring: the hash of its 8 little-endian bytes.
pub fn key_position(key: u64) -> u64 {
    ring_hash(&key.to_le_bytes())
}

/// A ring over nodes identified by index into the caller's node list.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// The ring of `names` (node `i` is `names[i]`). Point `j` of a node sits at
    /// `ring_hash("{name}#{j}")`.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Ring {
        let mut points = Vec::with_capacity(names.len() * POINTS_PER_NODE as usize);
        for (i, name) in names.iter().enumerate() {
            for j in 0..POINTS_PER_NODE {
                let position = ring_hash(format!("{}#{j}", name.as_ref()).as_bytes());
                points.push((position, i as u32));
            }
        }
        // Ties (astronomically rare) resolve by node index, the same everywhere.
        points.sort_unstable();
        Ring { points }
    }

    /// True when the ring has no nodes.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The node owning `key`.
    pub fn node(&self, key: u64) -> Option<usize> {
        self.nodes_from(key).next()
    }

    /// Distinct nodes in ring order starting from `key`'s owner: the owner first, then its
    /// successors (where a request goes when the owner is unavailable).
    pub fn nodes_from(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let position = key_position(key);
        let start = self.points.partition_point(|(p, _)| *p < position);
        let n = self.points.len();
        let mut seen: Vec<u32> = Vec::new();
        (0..n).filter_map(move |i| {
            let node = self.points[(start + i) % n].1;
            if seen.contains(&node) {
                None
            } else {
                seen.push(node);
                Some(node as usize)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("store-{i}")).collect()
    }

    #[test]
    fn the_hash_is_the_specified_one() {
        // FNV-1a("") is the offset basis; pinned so other implementations can check.
        assert_eq!(ring_hash(b""), {
            let h: u64 = 0xcbf2_9ce4_8422_2325;
            let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h ^ (h >> 31)
        });
        assert_ne!(ring_hash(b"a"), ring_hash(b"b"));
    }

    #[test]
    fn every_client_builds_the_same_ring() {
        let a = Ring::new(&names(5));
        let b = Ring::new(&names(5));
        for key in 0..1_000u64 {
            assert_eq!(a.node(key), b.node(key));
        }
    }

    #[test]
    fn adding_one_node_to_n_moves_about_one_in_n_plus_one_keys_and_only_to_it() {
        let keys = 100_000u64;
        for n in [3usize, 8] {
            let before = Ring::new(&names(n));
            let after = Ring::new(&names(n + 1));
            let mut moved = 0u64;
            for key in 0..keys {
                let (old, new) = (before.node(key), after.node(key));
                if old != new {
                    moved += 1;
                    assert_eq!(new, Some(n), "a moved key goes to the new node only");
                }
            }
            let share = moved as f64 / keys as f64;
            let expected = 1.0 / (n as f64 + 1.0);
            assert!(
                (share - expected).abs() < expected * 0.25,
                "n = {n}: moved {share:.3}, expected {expected:.3}"
            );
        }
    }

    #[test]
    fn load_is_close_to_even() {
        let n = 6;
        let ring = Ring::new(&names(n));
        let mut counts = vec![0u32; n];
        for key in 0..60_000u64 {
            counts[ring.node(key).expect("node")] += 1;
        }
        for c in counts {
            assert!((8_000..12_000).contains(&c), "{c} of 10,000 expected");
        }
    }

    #[test]
    fn successors_are_distinct_and_cover_every_node() {
        let ring = Ring::new(&names(4));
        let order: Vec<usize> = ring.nodes_from(42).collect();
        assert_eq!(order.len(), 4);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        assert_eq!(Some(order[0]), ring.node(42));
        assert!(Ring::default().node(1).is_none());
    }
}
