//! The LLM-aware pick inside one locality level, for a request whose prompt was hashed into blocks
//! ([`super::blocks`]).
//!
//! Each candidate gets five scores in 0..=1, higher better, and their weighted mean (weights per
//! model, `llm.weights`):
//! - prefix: the share of the prompt's blocks the endpoint was sent recently (its KV cache likely
//!   holds them, so their prefill is skipped);
//! - queue: (max - q) / (max - min) over the candidates' queued requests at the server;
//! - kv_cache: 1 - KV-cache use;
//! - lora: 1 when the requested adapter is loaded, 0.8 with a free adapter slot, 0.6 when it is
//!   waiting, 0 otherwise (1 for every endpoint when no adapter is asked for);
//! - load: the gateway's own cost, cheapest / this, with cost = (peak-EWMA ms + 1) x (in flight + 1 +
//!   prefill tokens in flight / 1024) / GPU headroom: one 32k-token prompt weighs like 31 short ones.
//!
//! Stale server metrics count as saturated (queue at the maximum, KV cache full); never-reported
//! ones as average. These are the scorers of the Gateway API Inference Extension's endpoint picker
//! (research/llm-routing.md), computed here in microseconds, inside the proxy.
//!
//! Affinity: for a LoRA adapter, the endpoints best placed for it (loaded, else a free slot, else
//! waiting for it) are preferred; then, among those, the endpoints holding at least
//! `prefix_threshold` of the prompt. A preferred endpoint is passed over when overloaded (its
//! requests in flight plus queued exceed the least loaded other candidate's by more than
//! `overload_margin`, the AIBrix/SGLang imbalance bypass). The pick is then power of two choices by
//! weighted score among the preferred, or among all when none is: a new prefix goes where load is
//! lowest and sticks there while it is not overloaded.

use std::sync::Arc;

use meridian_config::schema::LlmRouting;
use rand::Rng;
use smallvec::SmallVec;

use crate::clock::Nanos;
use crate::endpoint::EndpointState;

use crate::llm::state::{Freshness, LlmState};

/// Candidates scored at most per pick; a larger level is sampled by weight.
pub const MAX_CANDIDATES: usize = 32;

/// What the pick knows of a request.
#[derive(Clone, Copy, Debug)]
pub struct Prompt<'a> {
    /// The prompt's chained block hashes (empty for requests without prefix scoring).
    pub chain: &'a [u64],
    /// Estimated prompt tokens.
    pub tokens: u64,
    /// The LoRA adapter asked for.
    pub adapter: Option<&'a str>,
}

/// An endpoint chosen, with the share of the prompt it likely holds.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The endpoint.
    pub endpoint: Arc<EndpointState>,
    /// Matched prompt blocks / all prompt blocks (0 without blocks).
    pub prefix: f64,
}

/// One candidate's inputs.
struct Candidate<'a> {
    endpoint: &'a Arc<EndpointState>,
    llm: Option<&'a LlmState>,
    prefix: f64,
    queue: f64,
    cost: f64,
    load: u32,
}

/// The pick among `candidates` (usable endpoints of one level, at most [`MAX_CANDIDATES`]).
pub fn pick<R: Rng>(
    candidates: &[&Arc<EndpointState>],
    prompt: &Prompt<'_>,
    policy: &LlmRouting,
    now: Nanos,
    rng: &mut R,
) -> Option<Chosen> {
    if candidates.is_empty() {
        return None;
    }
    let blocks = prompt.chain.len();
    let mut c: SmallVec<[Candidate<'_>; MAX_CANDIDATES]> = candidates
        .iter()
        .map(|e| {
            let llm = e.llm().map(Arc::as_ref);
            let prefix = prefix_share(llm, prompt.chain);
            let (queue, tokens) = llm.map_or((0.0, 0), |s| {
                let q = match s.freshness() {
                    Freshness::Stale => f64::INFINITY,
                    _ => f64::from(s.waiting()),
                };
                (q, s.tokens_in_flight())
            });
            let in_flight = f64::from(e.in_flight()) + 1.0 + tokens as f64 / 1024.0;
            Candidate {
                endpoint: e,
                llm,
                prefix,
                queue,
                cost: (e.latency(now) / 1e6 + 1.0) * in_flight / e.headroom(),
                load: e.in_flight() + llm.map_or(0, |s| s.waiting()),
            }
        })
        .collect();
    // LoRA affinity: keep the endpoints best placed for the adapter (loaded, then a free slot, then
    // waiting for it), unless overloaded; loading an adapter costs more than any queue.
    if let Some(adapter) = prompt.adapter {
        let tier = |x: &Candidate<'_>| lora_score(x.llm, Some(adapter));
        let best = c.iter().map(tier).fold(0.0, f64::max);
        if best > 0.0 {
            prefer(&mut c, policy.overload_margin, |x| tier(x) >= best);
        }
    }
    // Prefix affinity: keep the endpoints that hold enough of the prompt, unless overloaded; when
    // every holder is, the prefix is ignored and load decides.
    let holds = |x: &Candidate<'_>| x.prefix >= policy.prefix_threshold && x.prefix > 0.0;
    let affinity = blocks > 0 && prefer(&mut c, policy.overload_margin, holds) != Preferred::Overloaded;
    let scores = score(&c, prompt, policy, affinity);
    let best = match c.len() {
        1 => 0,
        n => {
            let a = rng.random_range(0..n);
            let b = (a + 1 + rng.random_range(0..n - 1)) % n;
            if scores[b] > scores[a] {
                b
            } else {
                a
            }
        }
    };
    Some(Chosen {
        endpoint: c[best].endpoint.clone(),
        prefix: c[best].prefix,
    })
}

/// The share of `chain`'s blocks an endpoint with this LLM state likely holds (0 without blocks
/// or state): what prefix affinity compares with `prefix_threshold`.
pub fn prefix_share(llm: Option<&LlmState>, chain: &[u64]) -> f64 {
    match llm {
        Some(s) if !chain.is_empty() => s.index.matched(chain) as f64 / chain.len() as f64,
        _ => 0.0,
    }
}

/// What [`prefer`] did.
#[derive(Debug, PartialEq, Eq)]
enum Preferred {
    /// Only the preferred candidates are left.
    Kept,
    /// Every preferred candidate is overloaded: all are left.
    Overloaded,
    /// None is preferred: all are left.
    None,
}

/// Keeps the candidates `preferred` says unless overloaded: in flight plus queued beyond the least
/// loaded candidate's by more than `margin` (the AIBrix/SGLang imbalance bypass).
fn prefer(
    c: &mut SmallVec<[Candidate<'_>; MAX_CANDIDATES]>,
    margin: u32,
    preferred: impl Fn(&Candidate<'_>) -> bool,
) -> Preferred {
    let min_load = c.iter().map(|x| x.load).min().unwrap_or(0);
    let keep = |x: &Candidate<'_>| preferred(x) && x.load <= min_load.saturating_add(margin);
    if c.iter().any(keep) {
        c.retain(|x| keep(x));
        Preferred::Kept
    } else if c.iter().any(preferred) {
        Preferred::Overloaded
    } else {
        Preferred::None
    }
}

/// The weighted mean of the five scores of each candidate.
fn score(
    c: &[Candidate<'_>],
    prompt: &Prompt<'_>,
    policy: &LlmRouting,
    affinity: bool,
) -> SmallVec<[f64; MAX_CANDIDATES]> {
    let w = &policy.weights;
    let w_prefix = if affinity { w.prefix } else { 0.0 };
    let total = (w_prefix + w.queue + w.kv_cache + w.lora + w.load).max(f64::MIN_POSITIVE);
    let finite = c.iter().map(|x| x.queue).filter(|q| q.is_finite());
    let (qmin, qmax) = finite.fold((f64::INFINITY, 0.0f64), |(lo, hi), q| (lo.min(q), hi.max(q)));
    let cheapest = c.iter().map(|x| x.cost).fold(f64::INFINITY, f64::min);
    c.iter()
        .map(|x| {
            let queue = if !x.queue.is_finite() {
                0.0
            } else if qmax > qmin {
                (qmax - x.queue) / (qmax - qmin)
            } else {
                1.0
            };
            let kv = match x.llm.map(LlmState::freshness) {
                Some(Freshness::Stale) => 0.0,
                Some(_) => 1.0 - x.llm.map_or(0.0, LlmState::kv_usage),
                None => 1.0,
            };
            let lora = lora_score(x.llm, prompt.adapter);
            let load = cheapest / x.cost;
            (w_prefix * x.prefix + w.queue * queue + w.kv_cache * kv + w.lora * lora + w.load * load) / total
        })
        .collect()
}

/// LoRA affinity (the Inference Extension's values): loaded 1, free slot 0.8, waiting 0.6, else 0.
fn lora_score(llm: Option<&LlmState>, adapter: Option<&str>) -> f64 {
    let Some(adapter) = adapter else { return 1.0 };
    let Some(s) = llm else { return 0.8 };
    match s.freshness() {
        Freshness::Unknown => return 0.8,
        Freshness::Stale => return 0.0,
        Freshness::Fresh => {}
    }
    let l = s.lora();
    if l.running.iter().any(|a| &**a == adapter) {
        1.0
    } else if (l.running.len() as u32) < l.max {
        0.8
    } else if l.waiting.iter().any(|a| &**a == adapter) {
        0.6
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::state::{Lora, ServerStats};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn endpoints(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                let e = Arc::new(EndpointState::new(
                    format!("e{i}").into(),
                    format!("127.0.0.{}:1", i + 1).parse().unwrap(),
                ));
                e.enable_llm(4096, 64);
                e
            })
            .collect()
    }

    fn chain(seed: u64, n: usize) -> Vec<u64> {
        (0..n as u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed)
            .collect()
    }

    fn tally(eps: &[Arc<EndpointState>], prompt: &Prompt<'_>, n: usize) -> Vec<usize> {
        let refs: Vec<_> = eps.iter().collect();
        let mut rng = SmallRng::seed_from_u64(3);
        let mut out = vec![0; eps.len()];
        for _ in 0..n {
            let c = pick(&refs, prompt, &LlmRouting::default(), 0, &mut rng).unwrap();
            out[eps.iter().position(|e| Arc::ptr_eq(e, &c.endpoint)).unwrap()] += 1;
        }
        out
    }

    #[test]
    fn a_shared_prefix_sticks_to_the_endpoint_that_holds_it() {
        let eps = endpoints(8);
        let sys = chain(1, 100);
        eps[5].llm().unwrap().index.insert(&sys[..90]);
        let prompt = Prompt {
            chain: &sys,
            tokens: 6400,
            adapter: None,
        };
        assert_eq!(tally(&eps, &prompt, 200)[5], 200);
        // A prompt nobody holds goes by load: never to the busiest endpoint while others are idle.
        let _busy: Vec<_> = (0..20).map(|_| eps[2].start()).collect();
        let fresh = chain(2, 100);
        let t = tally(
            &eps,
            &Prompt {
                chain: &fresh,
                tokens: 6400,
                adapter: None,
            },
            700,
        );
        assert_eq!(t[2], 0, "{t:?}");
        assert!(
            t.iter().filter(|&&n| n > 0).count() >= 6,
            "spread over the idle ones: {t:?}"
        );
    }

    #[test]
    fn an_overloaded_holder_is_bypassed() {
        let eps = endpoints(4);
        let sys = chain(1, 100);
        eps[0].llm().unwrap().index.insert(&sys);
        let prompt = Prompt {
            chain: &sys,
            tokens: 6400,
            adapter: None,
        };
        // Within the margin (8 by default) the holder keeps the prompt.
        let _some: Vec<_> = (0..8).map(|_| eps[0].start()).collect();
        assert_eq!(tally(&eps, &prompt, 100)[0], 100);
        // Beyond it, the others share it.
        let _more: Vec<_> = (0..8).map(|_| eps[0].start()).collect();
        assert_eq!(tally(&eps, &prompt, 100)[0], 0);
    }

    #[test]
    fn one_long_prefill_weighs_more_than_ten_short_ones() {
        let eps = endpoints(2);
        let _long = eps[0].llm().unwrap().start_prefill(32_000);
        let _short: Vec<_> = (0..10).map(|_| eps[1].llm().unwrap().start_prefill(100)).collect();
        let prompt = Prompt {
            chain: &[],
            tokens: 100,
            adapter: None,
        };
        assert_eq!(tally(&eps, &prompt, 100), [0, 100]);
    }

    #[test]
    fn queues_kv_lora_and_stale_metrics() {
        let eps = endpoints(3);
        let report = |i: usize, waiting: u32, kv: f64, running: &[&str]| {
            eps[i].llm().unwrap().report(Some(&ServerStats {
                waiting,
                running: 0,
                kv_usage: kv,
                lora: Lora {
                    running: running.iter().map(|&a| a.into()).collect(),
                    waiting: vec![],
                    max: 1,
                },
                kv_tokens: None,
            }))
        };
        report(0, 0, 0.1, &["sql"]);
        report(1, 30, 0.9, &["chat"]);
        report(2, 0, 0.1, &["chat"]);
        let prompt = Prompt {
            chain: &[],
            tokens: 10,
            adapter: Some("sql"),
        };
        let t = tally(&eps, &prompt, 300);
        assert_eq!(t, [300, 0, 0], "the endpoint with the adapter loaded: {t:?}");
        let no_adapter = Prompt {
            adapter: None,
            ..prompt
        };
        let t = tally(&eps, &no_adapter, 300);
        assert!(t[0] > t[1] && t[2] > t[1], "short queues and a free KV cache: {t:?}");
        report(0, 20, 0.1, &["sql"]);
        let t = tally(&eps, &prompt, 300);
        assert!(
            t[0] < 300 && t[2] > 0,
            "the adapter's holder, overloaded, shares: {t:?}"
        );
        eps[0].llm().unwrap().report(None);
        let t = tally(&eps, &prompt, 300);
        assert!(t[0] < t[2], "a stale endpoint counts as saturated: {t:?}");
    }
}
