//! What the LLM-aware pick knows of one endpoint beyond its load and latency: the prompt blocks it
//! was sent ([`PrefixIndex`]), the prompt tokens in flight to it, and the model server's own view
//! of itself from the control loop (queue, KV-cache use, LoRA adapters). Atomics and one arc-swap;
//! the request path never waits.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::index::PrefixIndex;

/// How fresh the model server's metrics are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Freshness {
    /// Never reported (no control loop scrapes it): scorers treat it as average.
    Unknown = 0,
    /// Reported and current.
    Fresh = 1,
    /// Reported once, now stale: counted as saturated.
    Stale = 2,
}

/// LoRA adapters as the model server reports them (`vllm:lora_requests_info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lora {
    /// Adapters loaded and serving.
    pub running: Vec<Arc<str>>,
    /// Adapters requests wait for.
    pub waiting: Vec<Arc<str>>,
    /// Adapters the server can hold at once.
    pub max: u32,
}

/// A model server's report of itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerStats {
    /// Requests queued (`vllm:num_requests_waiting`, `nv_inference_pending_request_count`).
    pub waiting: u32,
    /// Requests running.
    pub running: u32,
    /// KV-cache use, 0..=1 (`vllm:kv_cache_usage_perc`).
    pub kv_usage: f64,
    /// LoRA adapters.
    pub lora: Lora,
    /// Tokens its KV cache holds (`vllm:cache_config_info`: GPU blocks x block size), when said.
    pub kv_tokens: Option<u64>,
}

/// One endpoint's LLM routing state.
#[derive(Debug)]
pub struct LlmState {
    /// Prompt blocks recently sent to it.
    pub index: PrefixIndex,
    /// Estimated tokens in a prompt block (to size the index by the server's KV cache).
    block_tokens: u64,
    tokens: AtomicU64,
    waiting: AtomicU32,
    running: AtomicU32,
    kv_permille: AtomicU32,
    freshness: AtomicU8,
    lora: ArcSwap<Lora>,
}

impl LlmState {
    /// A state remembering about `blocks` prompt blocks of `block_tokens` at the most.
    pub fn new(blocks: usize, block_tokens: u32) -> LlmState {
        LlmState {
            index: PrefixIndex::new(blocks),
            block_tokens: u64::from(block_tokens.max(1)),
            tokens: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            running: AtomicU32::new(0),
            kv_permille: AtomicU32::new(0),
            freshness: AtomicU8::new(Freshness::Unknown as u8),
            lora: ArcSwap::from_pointee(Lora::default()),
        }
    }

    /// Estimated prompt tokens sent and not yet answered (their prefill is still running).
    pub fn tokens_in_flight(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    /// Counts `tokens` of prefill in flight until the guard drops (at the response's first byte).
    pub fn start_prefill(self: &Arc<Self>, tokens: u64) -> Prefill {
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
        Prefill {
            state: self.clone(),
            tokens,
        }
    }

    /// Takes the control loop's report; `None`: its metrics went stale (or never came: then the
    /// server stays unknown, not saturated).
    pub fn report(&self, stats: Option<&ServerStats>) {
        let Some(s) = stats else {
            if self.freshness() != Freshness::Unknown {
                self.freshness.store(Freshness::Stale as u8, Ordering::Relaxed);
            }
            return;
        };
        self.waiting.store(s.waiting, Ordering::Relaxed);
        self.running.store(s.running, Ordering::Relaxed);
        self.kv_permille
            .store((s.kv_usage.clamp(0.0, 1.0) * 1000.0) as u32, Ordering::Relaxed);
        if **self.lora.load() != s.lora {
            self.lora.store(Arc::new(s.lora.clone()));
        }
        if let Some(tokens) = s.kv_tokens {
            self.index.fit((tokens / self.block_tokens) as usize);
        }
        self.freshness.store(Freshness::Fresh as u8, Ordering::Relaxed);
    }

    /// How fresh the report is.
    pub fn freshness(&self) -> Freshness {
        match self.freshness.load(Ordering::Relaxed) {
            1 => Freshness::Fresh,
            2 => Freshness::Stale,
            _ => Freshness::Unknown,
        }
    }

    /// Requests queued at the server (0 when unknown).
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Requests running at the server (0 when unknown).
    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// KV-cache use, 0..=1 (0 when unknown).
    pub fn kv_usage(&self) -> f64 {
        f64::from(self.kv_permille.load(Ordering::Relaxed)) / 1000.0
    }

    /// LoRA adapters as last reported.
    pub fn lora(&self) -> arc_swap::Guard<Arc<Lora>> {
        self.lora.load()
    }
}

/// Prompt tokens of one request counted in its endpoint's prefill load until dropped.
#[derive(Debug)]
pub struct Prefill {
    state: Arc<LlmState>,
    tokens: u64,
}

impl Drop for Prefill {
    fn drop(&mut self) {
        self.state.tokens.fetch_sub(self.tokens, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_tokens_count_until_the_first_byte_and_reports_age() {
        let s = Arc::new(LlmState::new(4096, 64));
        let a = s.start_prefill(32_000);
        let b = s.start_prefill(100);
        assert_eq!(s.tokens_in_flight(), 32_100);
        drop(a);
        assert_eq!(s.tokens_in_flight(), 100);
        drop(b);
        assert_eq!(s.tokens_in_flight(), 0);
        assert_eq!(s.freshness(), Freshness::Unknown);
        let stats = ServerStats {
            waiting: 3,
            running: 7,
            kv_usage: 0.42,
            lora: Lora {
                running: vec!["sql".into()],
                waiting: vec![],
                max: 2,
            },
            kv_tokens: Some(64_000),
        };
        s.report(Some(&stats));
        assert_eq!((s.freshness(), s.waiting(), s.kv_usage()), (Freshness::Fresh, 3, 0.42));
        assert_eq!(s.index.capacity(), 1000, "64k tokens of KV cache: 1000 blocks of 64");
        assert_eq!(s.lora().running[0].as_ref(), "sql");
        s.report(None);
        assert_eq!(s.freshness(), Freshness::Stale);
    }
}
