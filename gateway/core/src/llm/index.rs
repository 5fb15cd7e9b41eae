//! Which prompt blocks an endpoint was sent, as a bounded, approximately least-recently-used set
//! of block hashes ([`super::blocks`]): the gateway's model of the endpoint's KV cache.
//!
//! The set is set-associative: a hash picks one set of [`WAYS`] slots by its low bits, and lives in
//! a slot as a 40-bit tag with the 24-bit tick of its last use. Inserting into a full set replaces
//! its least recently used slot. Every slot is an atomic word: lookups never wait, and two
//! requests inserting into one set at once may lose one insert (the set is an estimate anyway, as
//! the model server evicts on its own schedule). Memory is fixed at 8 bytes a block.
//!
//! A prompt's chain is inserted whole and together, so an endpoint holding block k of a chain
//! almost always holds blocks 0..k too (they were used at least as recently): the matched prefix is
//! found by binary search, O(log n) lookups for an n-block prompt.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Slots per set.
pub const WAYS: usize = 8;

const TICK_BITS: u32 = 24;
const TICK_MASK: u64 = (1 << TICK_BITS) - 1;

/// One endpoint's approximate set of recently sent prompt blocks.
#[derive(Debug)]
pub struct PrefixIndex {
    slots: Box<[AtomicU64]>,
    /// Sets - 1 (a power of two minus one).
    mask: u64,
    clock: AtomicU32,
}

impl PrefixIndex {
    /// An empty set for about `blocks` blocks (rounded up to whole sets, a power of two of them).
    pub fn new(blocks: usize) -> PrefixIndex {
        let sets = blocks.div_ceil(WAYS).max(1).next_power_of_two();
        PrefixIndex {
            slots: (0..sets * WAYS).map(|_| AtomicU64::new(0)).collect(),
            mask: sets as u64 - 1,
            clock: AtomicU32::new(0),
        }
    }

    /// Blocks it can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn set(&self, h: u64) -> &[AtomicU64] {
        let s = (h & self.mask) as usize * WAYS;
        &self.slots[s..s + WAYS]
    }

    /// The tag a hash is kept under (never 0, which marks an empty slot).
    fn tag(h: u64) -> u64 {
        (h >> TICK_BITS) | 1
    }

    /// Whether block hash `h` is in the set.
    pub fn contains(&self, h: u64) -> bool {
        let tag = Self::tag(h);
        self.set(h)
            .iter()
            .any(|s| s.load(Ordering::Relaxed) >> TICK_BITS == tag)
    }

    /// How many leading hashes of `chain` are in the set.
    pub fn matched(&self, chain: &[u64]) -> usize {
        let (mut lo, mut hi) = (0, chain.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.contains(chain[mid - 1]) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Records that `chain` was sent: each hash is inserted, or its last use refreshed.
    pub fn insert(&self, chain: &[u64]) {
        let tick = u64::from(self.clock.fetch_add(1, Ordering::Relaxed)) & TICK_MASK;
        for &h in chain {
            let tag = Self::tag(h);
            let entry = tag << TICK_BITS | tick;
            let set = self.set(h);
            let mut victim = 0;
            let mut oldest = 0;
            let mut placed = false;
            for (i, s) in set.iter().enumerate() {
                let v = s.load(Ordering::Relaxed);
                if v >> TICK_BITS == tag || v == 0 {
                    s.store(entry, Ordering::Relaxed);
                    placed = true;
                    break;
                }
                let age = tick.wrapping_sub(v & TICK_MASK) & TICK_MASK;
                if age >= oldest {
                    (oldest, victim) = (age, i);
                }
            }
            if !placed {
                set[victim].store(entry, Ordering::Relaxed);
            }
        }
    }

    /// Forgets everything (the endpoint restarted or left).
    pub fn clear(&self) {
        for s in self.slots.iter() {
            s.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(seed: u64, n: usize) -> Vec<u64> {
        (0..n as u64)
            .map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed))
            .collect()
    }

    #[test]
    fn matches_the_longest_sent_prefix() {
        let idx = PrefixIndex::new(4096);
        let a = chain(1, 100);
        assert_eq!(idx.matched(&a), 0);
        idx.insert(&a[..60]);
        assert_eq!(idx.matched(&a), 60);
        assert_eq!(idx.matched(&a[..30]), 30);
        assert_eq!(idx.matched(&chain(2, 100)), 0);
        idx.insert(&a);
        assert_eq!(idx.matched(&a), 100);
        idx.clear();
        assert_eq!(idx.matched(&a), 0);
    }

    #[test]
    fn eviction_keeps_what_was_used_recently_within_bounded_memory() {
        let idx = PrefixIndex::new(1024);
        assert_eq!(idx.capacity(), 1024);
        let hot = chain(7, 64);
        idx.insert(&hot);
        // Stream 8x the capacity of other prompts through, touching the hot one now and then.
        for round in 0..128 {
            idx.insert(&chain(1000 + round, 64));
            if round % 4 == 0 {
                idx.insert(&hot);
            }
        }
        assert!(idx.matched(&hot) >= 60, "{}", idx.matched(&hot));
        // What was sent once long ago is gone.
        assert!(idx.matched(&chain(1000, 64)) < 8);
        // Most recent of the stream is still there.
        assert!(idx.matched(&chain(1127, 64)) >= 60);
    }
}
