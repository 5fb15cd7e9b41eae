//! What one request carries across pingora's callbacks: when it arrived, the routing table it uses
//! from start to end (even if a reload swaps another in), what it resolved to, what it holds once
//! admitted, and one [`Attempt`] per upstream try.

use std::net::SocketAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use meridian_config::snapshot::{ModelId, VersionId};
use meridian_gateway_core::admission::Admitted;
use meridian_gateway_core::budget::{Active, RetryToken};
use meridian_gateway_core::clock::Nanos;
use meridian_gateway_core::cluster::Pick;
use meridian_gateway_core::decide::Routed;
use meridian_gateway_core::endpoint::InFlight;
use meridian_gateway_core::llm::state::Prefill;
use meridian_gateway_core::reply::Reply;

use super::prompt::LlmPrompt;
use super::tokens::LlmAccount;
use crate::lifecycle::InProgress;
use crate::routes::Routes;
use crate::shadow::ShadowCopy;

/// Per-request state.
pub struct Ctx {
    /// Counts this request in for a graceful stop until its last log line.
    _in_progress: InProgress,
    /// When the request arrived; the whole-request timeout counts from here across retries.
    pub started: Nanos,
    /// Time held waiting for a version to scale up, which the request timeout does not count.
    pub held: Nanos,
    /// The request's server span, when tracing is on.
    pub trace: Option<opentelemetry::Context>,
    /// The routing table this request uses, set as its head is read.
    pub routes: Option<Arc<Routes>>,
    /// What the request resolved to, for metric labels and the access log.
    pub labels: Labels,
    /// Set once the request is routed and admitted.
    pub flight: Option<Flight>,
    /// The current (or last) upstream try.
    pub attempt: Option<Attempt>,
    /// Endpoints tried so far, in order (inline up to four: the default is three tries).
    pub tried: SmallVec<[SocketAddr; 4]>,
    /// The retry budget's token for the retry in progress, if this is one.
    pub retry: Option<RetryToken>,
    /// The gateway's own answer when it ends a proxied request itself (a streamed body over the
    /// limit, no healthy endpoint, the deadline passed).
    pub refusal: Option<Reply>,
    /// Request body bytes seen.
    pub bytes_in: usize,
    /// Token accounting, for a request to a model with LLM routing.
    pub llm: Option<LlmAccount>,
}

/// The model and version a request resolved to, as far as it got.
#[derive(Clone, Copy, Debug, Default)]
pub struct Labels {
    /// The model, when the request named a known one.
    pub model: Option<ModelId>,
    /// The version, when one was selected.
    pub version: Option<VersionId>,
}

/// What a routed, admitted request holds until it ends.
pub struct Flight {
    /// Where it was routed.
    pub routed: Routed,
    /// The copy being captured for a mirrored version, if this request is mirrored.
    pub shadow: Option<ShadowCopy>,
    /// Its prompt, for a model with LLM routing.
    pub prompt: Option<LlmPrompt>,
    /// The model concurrency slot, released when the request ends.
    _slot: Admitted,
    /// Counts the request as active for the retry budget.
    _active: Active,
}

impl Flight {
    /// A request that got its slot.
    pub fn new(routed: Routed, shadow: Option<ShadowCopy>, slot: Admitted, active: Active) -> Flight {
        Flight {
            routed,
            shadow,
            prompt: None,
            _slot: slot,
            _active: active,
        }
    }
}

/// One upstream try.
pub struct Attempt {
    /// The endpoint and its locality level.
    pub pick: Pick,
    /// Counts the try in its endpoint's load until it ends.
    pub in_flight: Option<InFlight>,
    /// Counts the prompt's uncached tokens in its endpoint's prefill load until the first response
    /// byte (LLM routing).
    pub prefill: Option<Prefill>,
    /// When it was sent.
    pub started: Nanos,
    /// Whether its outcome was fed to outlier detection (once per try).
    pub recorded: bool,
    /// Set when its 503 is being retried elsewhere, so the error is not reconsidered.
    pub retrying_503: bool,
    /// The status the endpoint answered (0: none yet).
    pub status: u16,
    /// The error type that ended it, if one did.
    pub error: Option<&'static str>,
    /// Its client span, when tracing is on.
    pub span: Option<opentelemetry_sdk::trace::Span>,
}

impl Ctx {
    /// A request that just arrived.
    pub fn new(in_progress: InProgress) -> Ctx {
        Ctx {
            _in_progress: in_progress,
            started: 0,
            held: 0,
            trace: None,
            routes: None,
            labels: Labels::default(),
            flight: None,
            attempt: None,
            tried: SmallVec::new(),
            retry: None,
            refusal: None,
            bytes_in: 0,
            llm: None,
        }
    }

    /// The routing table and where the request was routed, once it was.
    pub fn routed(&self) -> Option<(&Arc<Routes>, Routed)> {
        Some((self.routes.as_ref()?, self.flight.as_ref()?.routed))
    }

    /// Ends the current try's span with what it came to, if tracing made one.
    pub fn end_attempt_span(&mut self) {
        if let Some(a) = self.attempt.as_mut() {
            if let Some(span) = a.span.take() {
                crate::telemetry::end_attempt(span, a.status, a.error);
            }
        }
    }
}
