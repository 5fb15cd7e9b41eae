//! The simulator as an LLM server, modelled on what makes prefix-aware routing matter:
//!
//! - a KV cache of prompt blocks, an exact LRU over the same chained block hashes the gateway
//!   computes (`meridian_gateway_core::llm::blocks`), `--kv-blocks` of them;
//! - prefill on one engine at a time (a GPU runs one prefill batch at a time, and a long prompt
//!   delays the ones behind it), costing `--prefill-per-1k-tokens` per thousand uncached prompt
//!   tokens: time to first token grows with what the cache misses, and with the queue;
//! - decode at `--decode-per-token` per output token (batched decoding hides the load);
//! - LoRA adapters (a request naming a model other than the base one asks for that adapter) in
//!   `--lora-slots` slots, least recently used evicted, `--lora-load` to load one;
//! - the counts vLLM exports (`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`,
//!   `vllm:cache_config_info`, `vllm:lora_requests_info`, prompt, generation and prefix-cache
//!   token counters) and OpenAI `usage` in every answer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use meridian_gateway_core::llm::blocks::{self, BlockSpec};
use parking_lot::Mutex;

/// How the simulated LLM server behaves.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// KV-cache capacity in prompt blocks.
    pub kv_blocks: usize,
    /// Estimated tokens per block, and bytes per block (as the gateway cuts prompts).
    pub block_tokens: u32,
    /// Bytes per estimated token.
    pub bytes_per_token: u32,
    /// Prefill time per thousand uncached prompt tokens.
    pub prefill_per_1k: Duration,
    /// Decode time per output token.
    pub decode_per_token: Duration,
    /// Output tokens when the request does not ask for fewer (`max_tokens`).
    pub output_tokens: u32,
    /// LoRA adapters held at once.
    pub lora_slots: u32,
    /// Time to load an adapter that is not held.
    pub lora_load: Duration,
}

/// An exact LRU set of block hashes.
#[derive(Default)]
struct Lru {
    last_use: HashMap<u64, u64>,
    by_age: BTreeMap<u64, u64>,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, h: u64, capacity: usize) {
        self.tick += 1;
        if let Some(old) = self.last_use.insert(h, self.tick) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.tick, h);
        while self.last_use.len() > capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.last_use.remove(&oldest);
        }
    }
}

/// What a request's prefill came to.
#[derive(Clone, Copy, Debug)]
pub struct Prefilled {
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// Of them, found in the KV cache.
    pub cached_tokens: u64,
    /// Output tokens to generate.
    pub output_tokens: u32,
}

/// The simulated LLM server's state.
pub struct LlmSim {
    cfg: LlmConfig,
    cache: Mutex<Lru>,
    engine: tokio::sync::Mutex<()>,
    lora: Mutex<VecDeque<String>>,
    /// Requests waiting for the prefill engine.
    pub waiting: AtomicU32,
    /// Prompt tokens seen (`vllm:prompt_tokens_total`).
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens found cached (`vllm:prefix_cache_hits_total`).
    pub cached_tokens: AtomicU64,
    /// Output tokens generated (`vllm:generation_tokens_total`).
    pub generation_tokens: AtomicU64,
}

impl LlmSim {
    /// A server with an empty cache.
    pub fn new(cfg: LlmConfig) -> LlmSim {
        LlmSim {
            cfg,
            cache: Mutex::new(Lru::default()),
            engine: tokio::sync::Mutex::new(()),
            lora: Mutex::new(VecDeque::new()),
            waiting: AtomicU32::new(0),
            prompt_tokens: AtomicU64::new(0),
            cached_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
        }
    }

    /// How it behaves.
    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    /// Runs a request's prefill: waits for the engine, loads its adapter if needed, and takes as
    /// long as its uncached prompt tokens cost. `model` seeds the prompt's blocks like the
    /// gateway's; `adapter` is the LoRA adapter asked for.
    pub async fn prefill(&self, model: &str, adapter: Option<&str>, body: &[u8], max_tokens: Option<u32>) -> Prefilled {
        let prompt = blocks::prompt(body).unwrap_or_default();
        let per_token = u64::from(self.cfg.bytes_per_token.max(1));
        let spec = BlockSpec {
            bytes: (self.cfg.block_tokens as usize * per_token as usize).max(1),
            max_blocks: usize::MAX,
        };
        let mut chain = Vec::new();
        blocks::chain(prompt, blocks::seed(model, adapter), spec, &mut chain);
        let prompt_tokens = prompt.len() as u64 / per_token;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let engine = self.engine.lock().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let cached_blocks = {
            let mut cache = self.cache.lock();
            let hit = chain.iter().take_while(|h| cache.last_use.contains_key(h)).count();
            for &h in &chain {
                cache.touch(h, self.cfg.kv_blocks);
            }
            hit
        };
        let cached_tokens = (cached_blocks as u64 * u64::from(self.cfg.block_tokens)).min(prompt_tokens);
        let mut work = self
            .cfg
            .prefill_per_1k
            .mul_f64((prompt_tokens - cached_tokens) as f64 / 1000.0);
        if let Some(a) = adapter {
            work += self.load_adapter(a);
        }
        if !work.is_zero() {
            tokio::time::sleep(work).await;
        }
        drop(engine);
        let output_tokens = max_tokens
            .unwrap_or(self.cfg.output_tokens)
            .min(self.cfg.output_tokens)
            .max(1);
        self.prompt_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
        self.cached_tokens.fetch_add(cached_tokens, Ordering::Relaxed);
        self.generation_tokens
            .fetch_add(u64::from(output_tokens), Ordering::Relaxed);
        Prefilled {
            prompt_tokens,
            cached_tokens,
            output_tokens,
        }
    }

    /// Makes `adapter` the most recently used one; the time it took to load (0 when it was held).
    fn load_adapter(&self, adapter: &str) -> Duration {
        let mut held = self.lora.lock();
        if let Some(i) = held.iter().position(|a| a == adapter) {
            let a = held.remove(i).unwrap_or_default();
            held.push_back(a);
            return Duration::ZERO;
        }
        if held.len() >= self.cfg.lora_slots.max(1) as usize {
            held.pop_front();
        }
        held.push_back(adapter.to_string());
        self.cfg.lora_load
    }

    /// Adapters held now.
    pub fn adapters(&self) -> Vec<String> {
        self.lora.lock().iter().cloned().collect()
    }

    /// Share of the KV cache's blocks holding prompt blocks.
    pub fn kv_usage(&self) -> f64 {
        self.cache.lock().last_use.len() as f64 / self.cfg.kv_blocks.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(prefill_ms: u64) -> LlmSim {
        LlmSim::new(LlmConfig {
            kv_blocks: 64,
            block_tokens: 4,
            bytes_per_token: 4,
            prefill_per_1k: Duration::from_millis(prefill_ms),
            decode_per_token: Duration::ZERO,
            output_tokens: 8,
            lora_slots: 1,
            lora_load: Duration::from_millis(1),
        })
    }

    fn chat(system: &str, q: &str) -> Vec<u8> {
        serde_json::json!({"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]})
            .to_string()
            .into_bytes()
    }

    #[tokio::test(start_paused = true)]
    async fn cached_prefixes_skip_their_prefill() {
        let s = sim(1000);
        let sys = "the same long system prompt, shared by every question of a group. ".repeat(4);
        let first = s.prefill("m", None, &chat(&sys, "one?"), None).await;
        assert_eq!(first.cached_tokens, 0);
        let t0 = tokio::time::Instant::now();
        let second = s.prefill("m", None, &chat(&sys, "two?"), Some(3)).await;
        let took = t0.elapsed();
        assert!(second.cached_tokens >= 60, "{second:?}");
        assert_eq!(second.output_tokens, 3);
        // Only the uncached tail costs time: about 1 ms per uncached token here.
        let uncached = second.prompt_tokens - second.cached_tokens;
        assert!(took <= Duration::from_millis(uncached + 1), "{took:?} for {uncached}");
        // Another model's or adapter's cache entries never match.
        assert_eq!(
            s.prefill("other", None, &chat(&sys, "two?"), None).await.cached_tokens,
            0
        );
        assert!(s.kv_usage() <= 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn adapters_load_into_slots() {
        let s = sim(0);
        let body = chat("x", "y");
        let t0 = tokio::time::Instant::now();
        s.prefill("m", Some("sql"), &body, None).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(1), "loading costs");
        let t1 = tokio::time::Instant::now();
        s.prefill("m", Some("sql"), &body, None).await;
        assert_eq!(t1.elapsed(), Duration::ZERO, "held: free");
        s.prefill("m", Some("chat"), &body, None).await;
        assert_eq!(s.adapters(), ["chat"], "one slot: the older adapter was evicted");
    }
}
