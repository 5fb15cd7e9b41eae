//! Which prompt blocks an endpoint was sent, as a bounded, approximately least-recently-used set
//! of block hashes ([`super::blocks`]): the gateway's model of the endpoint's KV cache.
//!
//! The set is set-associative: a hash picks one set of [`WAYS`] slots by its high bits, and lives
//! in a slot as a 40-bit tag (its low bits) with the 24-bit tick of its last use. Inserting into a
//! full set replaces its least recently used slot. Every slot is an atomic word: lookups never
//! wait, and two requests inserting into one set at once may lose one insert (the set is an
//! estimate anyway, as the model server evicts on its own schedule). Memory for the configured most
//! blocks is taken once, 8 bytes a block; the sets in use follow the KV cache the model server says
//! it has ([`PrefixIndex::fit`]), so the index forgets about as soon as the server does.
//!
//! A prompt's chain is inserted whole and together, so an endpoint holding block k of a chain
//! almost always holds blocks 0..k too (they were used at least as recently): the matched prefix is
//! found by binary search, O(log n) lookups for an n-block prompt.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Slots per set.
pub const WAYS: usize = 8;

const TICK_BITS: u32 = 24;
const TICK_MASK: u64 = (1 << TICK_BITS) - 1;

/// One endpoint's approximate set of recently sent prompt blocks.
#[derive(Debug)]
pub struct PrefixIndex {
    slots: Box<[AtomicU64]>,
    /// Sets in use (at most `slots.len() / WAYS`).
    sets: AtomicUsize,
    clock: AtomicU32,
}

impl PrefixIndex {
    /// An empty set for about `blocks` blocks at the most (rounded up to whole sets).
    pub fn new(blocks: usize) -> PrefixIndex {
        let sets = blocks.div_ceil(WAYS).max(1);
        PrefixIndex {
            slots: (0..sets * WAYS).map(|_| AtomicU64::new(0)).collect(),
            sets: AtomicUsize::new(sets),
            clock: AtomicU32::new(0),
        }
    }

    /// Blocks it holds now.
    pub fn capacity(&self) -> usize {
        self.sets.load(Ordering::Relaxed) * WAYS
    }

    /// Holds about `blocks` blocks (within what it was made for): the model server's KV cache in
    /// prompt blocks. A change of size forgets everything (hashes move to other sets).
    pub fn fit(&self, blocks: usize) {
        let sets = blocks.div_ceil(WAYS).clamp(1, self.slots.len() / WAYS);
        if self.sets.swap(sets, Ordering::Relaxed) != sets {
            self.clear();
        }
    }

    fn set(&self, h: u64) -> &[AtomicU64] {
        // The high 32 bits scaled to the sets in use (Lemire's multiply-shift: no division, any
        // count); the tag is the low bits, so the two are independent.
        let sets = self.sets.load(Ordering::Relaxed) as u64;
        let s = (((h >> 32) * sets) >> 32) as usize * WAYS;
        &self.slots[s..s + WAYS]
    }

    /// The tag a hash is kept under: its low 40 bits (never 0, which marks an empty slot).
    fn tag(h: u64) -> u64 {
        (h & ((1 << (64 - TICK_BITS)) - 1)).max(1)
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
    fn matches_the_longest_sent_prefix_within_the_servers_cache() {
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
        // Sized to the server's KV cache, within the memory it was given.
        idx.insert(&a);
        idx.fit(1000);
        assert_eq!(idx.capacity(), 1000);
        assert_eq!(idx.matched(&a), 0, "resizing forgets");
        idx.insert(&a);
        idx.fit(1000);
        assert_eq!(idx.matched(&a), 100, "the same size keeps what it holds");
        idx.fit(1 << 20);
        assert_eq!(idx.capacity(), 4096, "never beyond its memory");
        idx.fit(0);
        assert_eq!(idx.capacity(), WAYS);
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
