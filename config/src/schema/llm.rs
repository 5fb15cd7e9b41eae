//! LLM-aware routing of a model's OpenAI-style requests: prefix-cache affinity, the model servers'
//! own metrics, LoRA adapters (what the gateway computes is in the gateway core's `llm` module).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::ByteSize;

/// How endpoints are picked for a model's chat, completion and embedding requests by what their
/// model servers hold and report. Present: the LLM-aware pick replaces `balancer` for those
/// requests; absent: the model is balanced like any other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LlmRouting {
    /// Estimated tokens in a prompt block, the unit of prefix matching (llm-d uses at least 64).
    pub block_tokens: u32,
    /// Bytes of prompt text per estimated token (about 4 for English with common tokenizers).
    pub bytes_per_token: u32,
    /// Prompt blocks remembered per endpoint, 8 bytes each (16384 blocks of 64 tokens: about a
    /// million tokens of KV cache).
    pub index_blocks: u32,
    /// Most blocks hashed from the start of a prompt (2048 blocks of 64 tokens: 128k tokens).
    pub max_blocks: u32,
    /// Request bodies up to this size (or `retries.buffer_body`, the larger, within the request
    /// body limit) are held whole by the gateway: the prompt is hashed whole, and the model is found
    /// wherever the body names it (OpenAI's clients send `messages` before `model`). Larger bodies
    /// stream, and must name the model within their first 64 KiB.
    pub max_prompt: ByteSize,
    /// Share of a prompt's blocks, 0..=1, an endpoint must hold to be preferred.
    pub prefix_threshold: f64,
    /// Requests (in flight plus queued at the server) a preferred endpoint may carry beyond the least
    /// loaded other candidate before the preference is dropped for load.
    pub overload_margin: u32,
    /// Weights of the scores combined into one.
    pub weights: ScoreWeights,
    /// LoRA adapters the model's servers serve: a request naming one as its `model` routes to this
    /// model, asking for that adapter.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<String>,
    /// Per-tenant token-rate limit (prompt and output tokens, charged after each response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_limit: Option<TokenLimit>,
}

/// A token-rate limit per tenant (Envoy AI Gateway's token rate limits; a token bucket per tenant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenLimit {
    /// Tokens (prompt and output) a tenant may use a minute.
    pub tokens_per_minute: u64,
    /// Tokens a tenant may use at once after idling; a minute's worth when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// The request header that names the tenant; `authorization` (the default) keys tenants by API
    /// key. Requests without it share one bucket.
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
}

fn default_tenant_header() -> String {
    "authorization".into()
}

impl Default for LlmRouting {
    fn default() -> Self {
        LlmRouting {
            block_tokens: 64,
            bytes_per_token: 4,
            index_blocks: 16384,
            max_blocks: 2048,
            max_prompt: ByteSize::mib(1),
            prefix_threshold: 0.5,
            overload_margin: 8,
            weights: ScoreWeights::default(),
            adapters: Vec::new(),
            token_limit: None,
        }
    }
}

impl LlmRouting {
    /// Bytes in a prompt block.
    pub fn block_bytes(&self) -> usize {
        (self.block_tokens as usize * self.bytes_per_token as usize).max(1)
    }
}

/// Weights of the LLM-aware pick's scores (each in 0..=1, higher better); only their ratios matter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreWeights {
    /// Share of the prompt's blocks the endpoint likely holds in its KV cache.
    pub prefix: f64,
    /// Requests queued at the model server, relative to the other candidates.
    pub queue: f64,
    /// KV-cache room left.
    pub kv_cache: f64,
    /// The requested LoRA adapter loaded (or a free slot for it).
    pub lora: f64,
    /// The gateway's own cost: latency x (requests + prefill tokens in flight) / GPU headroom.
    pub load: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        ScoreWeights {
            prefix: 3.0,
            queue: 1.0,
            kv_cache: 1.0,
            lora: 1.0,
            load: 1.0,
        }
    }
}

/// How requests are spread over a level's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Balancer {
    /// Power of two choices on peak-EWMA latency x (in flight + 1) / GPU headroom.
    #[default]
    P2c,
    /// In turn (for comparisons; it ignores load).
    RoundRobin,
}
