//! What the LLM-aware pick reads of a request, worked out once per request (retries reuse it): the
//! prompt's chained block hashes (chat and completions; embeddings are scored without them) and its
//! estimated tokens. Computed from the whole body on our own upstream leg; on pingora's leg the body
//! is still streaming when the endpoint is picked, so only the declared length counts there.

use meridian_config::snapshot::ModelEntry;
use meridian_gateway_core::decide::Routed;
use meridian_gateway_core::head::RequestHead;
use meridian_gateway_core::llm::blocks::{self, BlockSpec};

use super::context::Ctx;

/// A request's prompt as the pick sees it.
#[derive(Debug, Default)]
pub struct LlmPrompt {
    /// Chained hashes of the prompt's whole blocks (empty: no prefix scoring).
    pub chain: Vec<u64>,
    /// Estimated prompt tokens.
    pub tokens: u64,
}

/// The prompt of the routed request in `ctx` (`None` when its model has no LLM routing), from
/// `body` when the whole body is at hand.
pub fn of(ctx: &Ctx, head: &impl RequestHead, body: Option<&[u8]>) -> Option<LlmPrompt> {
    let (routes, routed) = ctx.routed()?;
    for_request(&routes.snap.models[routed.model], &routed, head, body)
}

/// The prompt of a request `routed` to `entry` (`None` without LLM routing), from `body` when the
/// whole body is at hand: what [`of`] works out on the request path and `meridian explain` shows.
pub fn for_request(
    entry: &ModelEntry,
    routed: &Routed,
    head: &impl RequestHead,
    body: Option<&[u8]>,
) -> Option<LlmPrompt> {
    let policy = entry.llm.as_ref()?;
    let adapter = entry.adapter(routed.adapter);
    let declared = head.content_length().unwrap_or(0);
    let per_token = u64::from(policy.bytes_per_token.max(1));
    let Some(prompt) = body.and_then(blocks::prompt) else {
        return Some(LlmPrompt {
            chain: Vec::new(),
            tokens: declared / per_token,
        });
    };
    let mut chain = Vec::new();
    if !head.path().ends_with("/embeddings") {
        let spec = BlockSpec {
            bytes: policy.block_bytes(),
            max_blocks: policy.max_blocks as usize,
        };
        blocks::chain(prompt, blocks::seed(&entry.name, adapter), spec, &mut chain);
    }
    Some(LlmPrompt {
        chain,
        tokens: prompt.len() as u64 / per_token,
    })
}
