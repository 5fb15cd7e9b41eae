//! Keyed token buckets: a bucket per key, refilled at a rate up to a burst. Two users: per-tenant
//! token-rate limits of LLM routes (a tenant is a header's value or the API key, hashed; a
//! response's tokens are charged after it ended, as in Envoy AI Gateway: a request is admitted while
//! its tenant's bucket is above zero, one response may take it below, and the tenant then waits,
//! 429 with Retry-After, until it refills), and DNS response-rate limiting (a key per client prefix
//! and answer, one token a response: [`TokenLimits::take`]).
//!
//! Keys are many and not known ahead: buckets live in 16 shards of a small map each, behind a
//! lock held for a few instructions (never across I/O); a shard past its size forgets its full
//! buckets (a full bucket is the same as a new one), then its least recently used half.

use std::collections::HashMap;

use parking_lot::Mutex;

use meridian_clock::Nanos;

const SHARDS: usize = 16;
/// Tenants remembered per shard.
const PER_SHARD: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Nanos,
}

/// The token buckets of one model's tenants.
#[derive(Debug)]
pub struct TokenLimits {
    per_minute: u64,
    per_second: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
}

impl TokenLimits {
    /// Buckets refilled at `per_minute` tokens a minute, holding at most `burst`.
    pub fn new(per_minute: u64, burst: u64) -> TokenLimits {
        TokenLimits {
            per_minute,
            per_second: per_minute as f64 / 60.0,
            burst: burst.max(1) as f64,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Nanos) {
        let dt = now.saturating_sub(b.at) as f64 / 1e9;
        b.level = (b.level + dt * self.per_second).min(self.burst);
        b.at = now;
    }

    fn with<T>(&self, tenant: u64, now: Nanos, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut shard = self.shards[(tenant as usize) % SHARDS].lock();
        if shard.len() >= PER_SHARD && !shard.contains_key(&tenant) {
            // Make room for many at once (amortized O(1) per new tenant): full buckets first, then
            // the least recently used half.
            let (burst, rate) = (self.burst, self.per_second);
            shard.retain(|_, b| b.level + now.saturating_sub(b.at) as f64 / 1e9 * rate < burst);
            if shard.len() > PER_SHARD / 2 {
                let mut ages: Vec<Nanos> = shard.values().map(|b| b.at).collect();
                let (_, &mut cut, _) = ages.select_nth_unstable(shard.len() - PER_SHARD / 2);
                shard.retain(|_, b| b.at > cut);
            }
        }
        let b = shard.entry(tenant).or_insert(Bucket {
            level: self.burst,
            at: now,
        });
        self.refill(b, now);
        f(b)
    }

    /// Whether these are the buckets of a limit of `per_minute` and `burst` (a reload that keeps the
    /// limit keeps the buckets).
    pub fn same_limit(&self, per_minute: u64, burst: u64) -> bool {
        self.per_minute == per_minute && self.burst == burst.max(1) as f64
    }

    /// Whether `tenant` may send a request now; else the seconds until it may.
    pub fn admit(&self, tenant: u64, now: Nanos) -> Result<(), u32> {
        let per_second = self.per_second;
        self.with(tenant, now, |b| {
            if b.level > 0.0 {
                Ok(())
            } else if per_second <= 0.0 {
                Err(u32::MAX)
            } else {
                Err(((-b.level + 1.0) / per_second).ceil().max(1.0) as u32)
            }
        })
    }

    /// Charges `tokens` a response of `tenant` used.
    pub fn charge(&self, tenant: u64, tokens: u64, now: Nanos) {
        self.with(tenant, now, |b| b.level -= tokens as f64);
    }

    /// Takes one token from `key`'s bucket if it has a whole one; false when it is empty.
    pub fn take(&self, key: u64, now: Nanos) -> bool {
        self.with(key, now, |b| {
            let ok = b.level >= 1.0;
            if ok {
                b.level -= 1.0;
            }
            ok
        })
    }
}

/// The bucket key of a tenant's id (a header value or an API key): a hash, so keys are not kept.
pub fn tenant_key(id: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    #[test]
    fn charged_after_the_response_and_refilled_over_time() {
        let l = TokenLimits::new(6000, 1000); // 100 tokens a second, at most 1000
        let (a, b) = (tenant_key(b"team-a"), tenant_key(b"team-b"));
        assert_eq!(l.admit(a, 0), Ok(()));
        l.charge(a, 1500, 0); // one big response takes the bucket to -500
        assert_eq!(l.admit(a, S), Err(5), "-400 after a second: 4.01 s more at 100/s");
        assert_eq!(l.admit(b, S), Ok(()), "another tenant is not affected");
        assert_eq!(l.admit(a, 6 * S), Ok(()));
        // Refill stops at the burst.
        l.charge(b, 0, 3600 * S);
        l.charge(b, 999, 3600 * S);
        assert_eq!(l.admit(b, 3600 * S), Ok(()));
        l.charge(b, 1, 3600 * S);
        assert!(l.admit(b, 3600 * S).is_err());
    }

    #[test]
    fn take_spends_whole_tokens_and_refills() {
        let l = TokenLimits::new(600, 5); // 10 a second, at most 5
        let k = tenant_key(b"10.0.0.0/24 example.com A");
        assert_eq!((0..8).filter(|_| l.take(k, 0)).count(), 5);
        assert!(!l.take(k, S / 20), "half a token after 50 ms");
        assert!(l.take(k, S / 10 + S / 20));
    }

    #[test]
    fn memory_is_bounded() {
        let l = TokenLimits::new(60, 10);
        for t in 0..(SHARDS * PER_SHARD * 2) as u64 {
            l.charge(t, 1, t);
        }
        let kept: usize = l.shards.iter().map(|s| s.lock().len()).sum();
        assert!(kept <= SHARDS * PER_SHARD, "{kept}");
    }
}
