//! Token accounting of requests to models with LLM routing: the tenant's token bucket before the
//! request is admitted, the answer's `usage` read as it streams to the client (never held back),
//! and at the end the GenAI metrics, the server span's `gen_ai.*` attributes and the tokens charged
//! to the tenant. The decisions (buckets, reading `usage`) are the core's (`llm::limit`,
//! `llm::usage`); this stage applies them to a request.

use std::sync::Arc;

use meridian_gateway_core::clock::Nanos;
use meridian_gateway_core::decide::Routed;
use meridian_gateway_core::head::RequestHead;
use meridian_gateway_core::llm::limit::{tenant_key, TokenLimits};
use meridian_gateway_core::llm::usage::{Usage, UsageScanner};
use meridian_gateway_core::reply::Reply;

use super::context::Ctx;
use super::Proxy;
use crate::routes::Routes;

/// An LLM request's account, from admission to its last log line.
#[derive(Debug)]
pub struct LlmAccount {
    /// The model name the request asked for (the model's, or its adapter's).
    pub model: Arc<str>,
    /// `gen_ai.operation.name`: `chat`, `text_completion` or `embeddings`.
    pub operation: &'static str,
    usage: UsageScanner,
    first_byte: Option<Nanos>,
    tenant: Option<(Arc<TokenLimits>, u64)>,
}

impl LlmAccount {
    /// A piece of the answer's body went to the client at `now`.
    pub fn sent(&mut self, data: &[u8], now: Nanos) {
        self.first_byte.get_or_insert(now);
        self.usage.feed(data);
    }

    /// The tokens the answer reported, once it ended.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }
}

impl Proxy {
    /// Opens the account of a routed request to a model with LLM routing, or refuses it (429 with
    /// Retry-After) when its tenant used its tokens. `Ok(None)` for other models.
    pub(super) fn open_account(
        &self,
        routes: &Routes,
        routed: Routed,
        head: &impl RequestHead,
    ) -> Result<Option<LlmAccount>, Reply> {
        let (entry, model) = routes.model(routed.model);
        let Some(llm) = &entry.llm else { return Ok(None) };
        let asked: Arc<str> = match entry.adapter(routed.adapter) {
            Some(adapter) => adapter.into(),
            None => entry.name.clone(),
        };
        let tenant = match (&model.tokens, &llm.token_limit) {
            (Some(buckets), Some(limit)) => {
                let id = head.find(&limit.tenant_header).unwrap_or_default();
                let key = tenant_key(id);
                if let Err(wait) = buckets.admit(key, self.routing.clock.now()) {
                    self.metrics
                        .gen_ai
                        .token_limited
                        .with_label_values(&[&*entry.name])
                        .inc();
                    let mut reply = Reply::error(429, format!("the tenant's tokens for model {asked} are used up"));
                    reply.retry_after = Some(wait);
                    return Err(reply);
                }
                Some((buckets.clone(), key))
            }
            _ => None,
        };
        let path = head.path();
        let operation = if path.ends_with("/chat/completions") {
            "chat"
        } else if path.ends_with("/embeddings") {
            "embeddings"
        } else {
            "text_completion"
        };
        Ok(Some(LlmAccount {
            model: asked,
            operation,
            usage: UsageScanner::default(),
            first_byte: None,
            tenant,
        }))
    }

    /// Closes the account of a finished request: metrics, and the tokens charged to its tenant.
    pub(super) fn close_account(&self, ctx: &Ctx, status: u16) {
        let Some(acc) = ctx.llm.as_ref() else { return };
        let now = self.routing.clock.now();
        let m = &self.metrics.gen_ai;
        let labels = [&*acc.model, acc.operation];
        m.request_duration
            .with_label_values(&labels)
            .observe(now.saturating_sub(ctx.started) as f64 / 1e9);
        if !(200..300).contains(&status) {
            return;
        }
        if let Some(first) = acc.first_byte {
            m.time_to_first_token
                .with_label_values(&labels)
                .observe(first.saturating_sub(ctx.started) as f64 / 1e9);
        }
        let Some(usage) = acc.usage() else { return };
        let tokens = |kind| m.token_usage.with_label_values(&[&*acc.model, acc.operation, kind]);
        tokens("input").observe(usage.prompt_tokens as f64);
        if acc.operation != "embeddings" {
            tokens("output").observe(usage.completion_tokens as f64);
        }
        if let (Some(first), true) = (acc.first_byte, usage.completion_tokens > 1) {
            let per = now.saturating_sub(first) as f64 / 1e9 / (usage.completion_tokens - 1) as f64;
            m.time_per_output_token.with_label_values(&labels).observe(per);
        }
        if let Some((buckets, tenant)) = &acc.tenant {
            buckets.charge(*tenant, usage.prompt_tokens + usage.completion_tokens, now);
        }
    }
}
