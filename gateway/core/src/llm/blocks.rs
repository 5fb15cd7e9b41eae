//! A prompt's identity without a tokenizer: the raw JSON of an OpenAI-style request's `messages`
//! (chat, in order) or `prompt` (completions), cut into fixed-size blocks of bytes (a block is a
//! number of estimated tokens at about four bytes a token), each block's hash chained to the one
//! before it: h_i = H(block_i, seed = h_{i-1}), h_0 = H(model, adapter). Two prompts share their
//! first k hashes exactly when they share their first k blocks, so the leading hashes an endpoint
//! was sent tell how much of a new prompt's prefix its KV cache may hold (the approximate prefix
//! cache scorer of the Gateway API Inference Extension, on bytes instead of tokens).
//!
//! Only whole blocks are hashed (a model server caches whole KV blocks only), and at most
//! `max_blocks` of them: what matters is the prefix.

use serde::Deserialize;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// How a prompt is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// Bytes in a block (estimated tokens per block x bytes per token).
    pub bytes: usize,
    /// Most blocks hashed from the start of the prompt.
    pub max_blocks: usize,
}

/// The fields of an OpenAI-style body that carry the prompt, borrowed raw.
#[derive(Deserialize)]
struct PromptFields<'a> {
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

/// The prompt's raw JSON in an OpenAI-style body (`messages`, else `prompt`, else an embedding's
/// `input`); `None` when the body is not such an object.
pub fn prompt(body: &[u8]) -> Option<&[u8]> {
    let f: PromptFields<'_> = serde_json::from_slice(body).ok()?;
    f.messages.or(f.prompt).or(f.input).map(|v| v.get().as_bytes())
}

/// The seed of a prompt's chain: its model and LoRA adapter, so the same text sent to different
/// models or adapters never looks cached.
pub fn seed(model: &str, adapter: Option<&str>) -> u64 {
    let h = xxh3_64_with_seed(model.as_bytes(), 0x6d65_7269_6469_616e);
    xxh3_64_with_seed(adapter.unwrap_or("").as_bytes(), h)
}

/// Appends the chained hashes of `prompt`'s whole blocks to `out` (cleared first).
pub fn chain(prompt: &[u8], seed: u64, spec: BlockSpec, out: &mut Vec<u64>) {
    out.clear();
    let mut h = seed;
    for block in prompt.chunks_exact(spec.bytes.max(1)).take(spec.max_blocks) {
        h = xxh3_64_with_seed(block, h);
        out.push(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: BlockSpec = BlockSpec {
        bytes: 16,
        max_blocks: 1000,
    };

    fn hashes(body: &str, model: &str, adapter: Option<&str>) -> Vec<u64> {
        let mut out = Vec::new();
        chain(prompt(body.as_bytes()).unwrap(), seed(model, adapter), SPEC, &mut out);
        out
    }

    fn chat(system: &str, question: &str) -> String {
        serde_json::json!({
            "model": "llama",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            "stream": true
        })
        .to_string()
    }

    #[test]
    fn shared_prefixes_share_leading_hashes_only() {
        let system = "You are a helpful assistant who answers from the attached manual. ".repeat(4);
        let a = hashes(&chat(&system, "How do I reset the device?"), "llama", None);
        let b = hashes(&chat(&system, "What does the red light mean?"), "llama", None);
        let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        // The system prompt is ~270 bytes of JSON: its whole blocks are shared, the questions not.
        assert!(shared >= 270 / 16 - 1, "{shared}");
        assert!(shared < a.len().min(b.len()));
        // A chain never matches again after it diverged.
        assert!(a[shared..].iter().all(|h| !b.contains(h)));
    }

    #[test]
    fn model_and_adapter_seed_the_chain() {
        let body = chat("same text for everyone, long enough for blocks", "q");
        let base = hashes(&body, "llama", None);
        assert_ne!(base[0], hashes(&body, "mistral", None)[0]);
        assert_ne!(base[0], hashes(&body, "llama", Some("sql-lora"))[0]);
        assert_eq!(base, hashes(&body, "llama", None));
    }

    #[test]
    fn completions_embeddings_and_limits() {
        let long = "x".repeat(100);
        let p = serde_json::json!({"model": "m", "prompt": long}).to_string();
        assert_eq!(
            prompt(p.as_bytes()).unwrap().len(),
            102,
            "the raw JSON string, quotes included"
        );
        let e = serde_json::json!({"model": "m", "input": ["a", "b"]}).to_string();
        assert_eq!(prompt(e.as_bytes()), Some(&b"[\"a\",\"b\"]"[..]));
        assert_eq!(prompt(b"{\"model\":\"m\"}"), None);
        assert_eq!(prompt(b"not json"), None);
        let mut out = Vec::new();
        chain(
            &[b'y'; 100],
            1,
            BlockSpec {
                bytes: 16,
                max_blocks: 3,
            },
            &mut out,
        );
        assert_eq!(out.len(), 3, "at most max_blocks");
        chain(&[b'y'; 100], 1, SPEC, &mut out);
        assert_eq!(out.len(), 6, "whole blocks only");
    }
}
