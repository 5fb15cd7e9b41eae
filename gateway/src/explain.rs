//! `meridian explain` and the admin `POST /explain`: why a request would go where it goes, against a
//! routing table and the endpoint state it points at.
//!
//! Nothing here decides: the request runs through the same [`decide_traced`] as on the request
//! path (which reports each step to a recorder), its prompt through the same [`prompt::for_request`],
//! and its endpoint comes from the same [`upstream::pick`]. This module only names what they saw.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use meridian_config::snapshot::{ModelEntry, RouteTarget, Sticky, ValueTest};
use meridian_gateway_core::cluster::Cost;
use meridian_gateway_core::decide::{decide_traced, Decision, Env, Routed};
use meridian_gateway_core::endpoint::flags;
use meridian_gateway_core::llm_pick::prefix_share;
use meridian_gateway_core::peek::Step;
use meridian_gateway_core::trace::{KeySource, PinSource, Recording};
use serde::{Deserialize, Serialize};

use crate::proxy::{prompt, upstream};
use crate::routes::{Routes, Routing};

/// A request to explain.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Query {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header fields, as a list of pairs or a map.
    #[serde(default)]
    pub headers: Headers,
    /// The body, for the APIs that name the model there (OpenAI) and for LLM prompts.
    #[serde(default)]
    pub body: Option<String>,
    /// The client address: a split's sticky key when the rule's key is absent.
    #[serde(default)]
    pub client: Option<IpAddr>,
}

/// Header fields of a [`Query`].
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Headers {
    /// `[["name", "value"], ...]`: repeated names allowed.
    List(Vec<(String, String)>),
    /// `{"name": "value"}`.
    Map(BTreeMap<String, String>),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::List(Vec::new())
    }
}

impl Headers {
    fn pairs(&self) -> Vec<(&str, &str)> {
        match self {
            Headers::List(l) => l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            Headers::Map(m) => m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        }
    }
}

/// Why a request goes where it goes.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The gateway's region.
    pub region: String,
    /// Its zone, when known.
    pub zone: Option<String>,
    /// The routing table's generation.
    pub generation: u64,
    /// The request's method and path.
    pub request: String,
    /// What the request was classified as, when it names a model.
    pub classified: Option<Classified>,
    /// A version pin, when the request carries one.
    pub pin: Option<Pin>,
    /// The routing rules tried, in order, up to the first that matched.
    pub rules: Vec<RuleStep>,
    /// The split that chose the version, when one did.
    pub split: Option<SplitStep>,
    /// What the gateway does with the request.
    pub outcome: Outcome,
    /// The chosen version's locality levels and their endpoints (routed requests).
    pub levels: Vec<LevelStep>,
    /// How endpoints are chosen inside a level.
    pub balancer: Option<String>,
    /// The endpoint a pick chooses now (routed requests with one available).
    pub pick: Option<PickStep>,
}

/// The classification of a request.
#[derive(Debug, Serialize)]
pub struct Classified {
    /// `v1`, `v2`, `openai` or `grpc`.
    pub api: &'static str,
    /// The model named (or the LoRA adapter).
    pub model: String,
    /// The version the path (or body) names.
    pub version_hint: Option<String>,
}

/// A version pin.
#[derive(Debug, Serialize)]
pub struct Pin {
    /// The version asked for.
    pub version: String,
    /// `path` or `header` (x-model-version).
    pub source: &'static str,
    /// Whether the model has it.
    pub found: bool,
}

/// One routing rule as tried.
#[derive(Debug, Serialize)]
pub struct RuleStep {
    /// Its index in the model's `routes`.
    pub index: usize,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Its header conditions, each with what the request carried.
    pub conditions: Vec<ConditionStep>,
    /// Whether every condition held.
    pub matched: bool,
    /// Where it sends requests (`version v2`, `split v1=90 v2=10`).
    pub target: String,
}

/// One header condition as tested.
#[derive(Debug, Serialize)]
pub struct ConditionStep {
    /// The header.
    pub header: String,
    /// The test (`exact "premium"`, `prefix "x"`, `regex "..."`).
    pub test: String,
    /// The request's values of the header.
    pub values: Vec<String>,
    /// Whether one of them passed.
    pub matched: bool,
}

/// A split's decision.
#[derive(Debug, Serialize)]
pub struct SplitStep {
    /// The rule that split.
    pub rule: usize,
    /// Where the key came from: `header NAME`, `cookie NAME` or `client address`.
    pub key_source: String,
    /// The key (lossy UTF-8; addresses as text).
    pub key: String,
    /// Each version's hash bucket and score; the lowest score wins.
    pub scores: Vec<ScoreStep>,
    /// The version chosen.
    pub chosen: String,
}

/// One version in a split.
#[derive(Debug, Serialize)]
pub struct ScoreStep {
    /// The version.
    pub version: String,
    /// Its weight.
    pub weight: u32,
    /// The key's hash for it, in (0, 1].
    pub bucket: f64,
    /// `-ln(bucket) / weight`.
    pub score: f64,
}

/// What the gateway does with a request.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to a model version.
    Routed {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// The rule that chose it (`None`: a pin or the only version).
        rule: Option<usize>,
        /// The admission priority class.
        priority: String,
        /// The LoRA adapter asked for.
        adapter: Option<String>,
    },
    /// Answered by the gateway itself (health, metadata, model list).
    Answered {
        /// The status.
        status: u16,
    },
    /// Refused.
    Refused {
        /// The status.
        status: u16,
        /// The error body's message.
        error: String,
    },
    /// The model is named in the body and none was given.
    NeedsBody {
        /// The API whose body names the model.
        api: &'static str,
    },
}

/// One locality level of the chosen version.
#[derive(Debug, Serialize)]
pub struct LevelStep {
    /// Its index (priority order).
    pub index: usize,
    /// `zone`, `region` or the failover region's name.
    pub locality: String,
    /// Share of requests it takes now.
    pub share: f64,
    /// Whether it is in panic (too few healthy: every endpoint used).
    pub panic: bool,
    /// Endpoints available (healthy, not ejected or drained) of all.
    pub available: usize,
    /// Its endpoints.
    pub endpoints: Vec<CandidateStep>,
}

/// One endpoint as the pick sees it.
#[derive(Debug, Serialize)]
pub struct CandidateStep {
    /// Its id.
    pub id: String,
    /// Its address.
    pub address: String,
    /// Its weight in the level.
    pub weight: u32,
    /// Why it is out, if it is: `unhealthy`, `ejected`, `drained`, `not ready`, `drained by control`.
    pub out: Vec<&'static str>,
    /// Whether a pick may choose it now.
    pub usable: bool,
    /// Its cost terms (P2C: lower wins).
    pub cost: Cost,
    /// What the LLM-aware pick reads of it (models with LLM routing).
    pub llm: Option<LlmTerms>,
}

/// An endpoint as the LLM-aware pick scores it.
#[derive(Debug, Serialize)]
pub struct LlmTerms {
    /// Share of the prompt's blocks it likely holds.
    pub prefix: f64,
    /// Requests queued at the model server.
    pub waiting: u32,
    /// KV-cache use, 0..1.
    pub kv_usage: f64,
    /// Whether its server metrics are fresh, stale (scored as saturated) or never reported.
    pub freshness: String,
}

/// The endpoint a pick chose.
#[derive(Debug, Serialize)]
pub struct PickStep {
    /// Its id.
    pub id: String,
    /// Its address.
    pub address: String,
    /// Its level.
    pub level: usize,
    /// The level's locality.
    pub locality: String,
    /// Share of the prompt's blocks it likely holds (LLM picks).
    pub prefix: f64,
}

/// Why `query` would go where it goes under the current table.
pub fn explain(routing: &Routing, query: &Query) -> Result<Explanation, String> {
    let routes = routing.routes.load_full();
    let head = head_of(query)?;
    let mut rec = Recording::default();
    let env = Env {
        ready: true,
        client: query.client,
        // Never mirror: a rule's mirroring is shown with the rule.
        shadow_draw: 1.0,
    };
    let snap = &routes.snap;
    let body = query.body.as_deref().map(str::as_bytes);
    let mut decided = decide_traced(snap, &head, None, &env, &mut rec);
    if let Ok(Decision::ReadBody(peek)) = &decided {
        decided = match body.map(|b| peek.step(b, true, usize::MAX, false)) {
            Some(Step::Named(named)) => decide_traced(snap, &head, Some(&named), &env, &mut rec),
            Some(Step::Refuse(reply)) => Ok(Decision::Answer(reply)),
            Some(Step::ReadMore) | None => Ok(Decision::ReadBody(*peek)),
        };
    }
    let entry = rec
        .classified
        .as_ref()
        .and_then(|(_, m, _)| snap.model_and_adapter(m))
        .map(|(m, _)| &snap.models[m]);
    let mut placed = Placement::default();
    let outcome = match decided {
        Ok(Decision::Route(routed)) => {
            placed = place(routing, &routes, &routed, &head, body);
            let entry = &snap.models[routed.model];
            Outcome::Routed {
                model: entry.name.to_string(),
                version: entry.versions[routed.version].name.to_string(),
                rule: routed.rule,
                priority: format!("{:?}", routed.class).to_lowercase(),
                adapter: entry.adapter(routed.adapter).map(str::to_string),
            }
        }
        Ok(Decision::Answer(reply)) if reply.status >= 400 => Outcome::Refused {
            status: reply.status,
            error: reply.message().unwrap_or_default().to_string(),
        },
        Ok(Decision::Answer(reply)) => Outcome::Answered { status: reply.status },
        Ok(Decision::ReadBody(peek)) => Outcome::NeedsBody {
            api: peek.api().as_str(),
        },
        Err(refusal) => Outcome::Refused {
            status: refusal.reply.status,
            error: refusal.reply.message().unwrap_or_default().to_string(),
        },
    };
    Ok(Explanation {
        region: routes.region().name.to_string(),
        zone: routes.origin.zone.map(|z| snap.zones[z].name.to_string()),
        generation: routes.generation,
        request: format!("{} {}", query.method, query.path),
        classified: rec.classified.as_ref().map(|(api, model, hint)| Classified {
            api: api.as_str(),
            model: model.clone(),
            version_hint: hint.clone(),
        }),
        pin: rec.pin.as_ref().map(|(version, source, found)| Pin {
            version: version.clone(),
            source: match source {
                PinSource::Path => "path",
                PinSource::Header => "header",
            },
            found: *found,
        }),
        rules: entry.map(|e| rule_steps(e, &rec, &head.headers)).unwrap_or_default(),
        split: entry.and_then(|e| split_step(e, &rec, query.client)),
        outcome,
        levels: placed.levels,
        balancer: placed.balancer,
        pick: placed.pick,
    })
}

/// The request head `query` describes.
fn head_of(query: &Query) -> Result<http::request::Parts, String> {
    let mut b = http::Request::builder()
        .method(query.method.as_str())
        .uri(query.path.as_str());
    for (k, v) in query.headers.pairs() {
        b = b.header(k, v);
    }
    if let Some(body) = &query.body {
        b = b.header(http::header::CONTENT_LENGTH, body.len());
    }
    b.body(())
        .map(|r| r.into_parts().0)
        .map_err(|e| format!("bad request: {e}"))
}

/// Where a routed request would go: the version's levels, how a level picks, the pick now.
#[derive(Default)]
struct Placement {
    levels: Vec<LevelStep>,
    balancer: Option<String>,
    pick: Option<PickStep>,
}

/// The chosen version's levels, endpoints and the pick now.
fn place(
    routing: &Routing,
    routes: &Routes,
    routed: &Routed,
    head: &http::request::Parts,
    body: Option<&[u8]>,
) -> Placement {
    let mut out = Placement::default();
    let entry = &routes.snap.models[routed.model];
    let cluster = &routes.version(routed.model, routed.version).cluster;
    let (epoch, now) = (routing.registry.epoch(), routing.clock.now());
    let loads = cluster.level_loads(epoch);
    let prompt = prompt::for_request(entry, routed, head, body);
    let chain = prompt.as_ref().map_or(&[][..], |p| &p.chain[..]);
    for (i, level) in cluster.levels.iter().enumerate() {
        let load = loads.get(i);
        let panic = load.is_some_and(|l| l.panic);
        out.levels.push(LevelStep {
            index: i,
            locality: level.kind.label().to_string(),
            share: load.map_or(0.0, |l| l.share),
            panic,
            available: level.members.iter().filter(|(e, _)| e.available()).count(),
            endpoints: level
                .members
                .iter()
                .map(|(e, weight)| CandidateStep {
                    id: e.id.to_string(),
                    address: e.address.to_string(),
                    weight: *weight,
                    out: out_reasons(e.flags()),
                    usable: cluster.admits(e, panic),
                    cost: Cost::of(e, now),
                    llm: entry.llm.as_ref().map(|_| {
                        let state = e.llm().map(|l| l.as_ref());
                        LlmTerms {
                            prefix: prefix_share(state, chain),
                            waiting: state.map_or(0, |l| l.waiting()),
                            kv_usage: state.map_or(0.0, |l| l.kv_usage()),
                            freshness: state.map_or("never reported".into(), |l| {
                                format!("{:?}", l.freshness()).to_lowercase()
                            }),
                        }
                    }),
                })
                .collect(),
        });
    }
    let llm = entry.llm.is_some();
    out.balancer = Some(if llm {
        "llm: LoRA, prefix-cache affinity, then KV-cache and queue load".into()
    } else {
        format!("{:?}", cluster.balancer()).to_lowercase()
    });
    if let Some(pick) = upstream::pick(entry, cluster, routed, prompt.as_ref(), (epoch, now), &[]) {
        out.pick = Some(PickStep {
            id: pick.endpoint.id.to_string(),
            address: pick.endpoint.address.to_string(),
            level: pick.level,
            locality: cluster.levels[pick.level].kind.label().to_string(),
            prefix: pick.prefix,
        });
    }
    out
}

/// Why an endpoint with these flags is out.
pub fn out_reasons(f: u8) -> Vec<&'static str> {
    [
        (flags::UNHEALTHY, "unhealthy"),
        (flags::EJECTED, "ejected"),
        (flags::DRAINED, "drained"),
        (flags::NOT_READY, "not ready"),
        (flags::CONTROL_DRAINED, "drained by control"),
    ]
    .into_iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, why)| why)
    .collect()
}

/// A header test in words: `exact "premium"`, `prefix "x"`, `regex "..."`.
pub fn test_text(test: &ValueTest) -> String {
    match test {
        ValueTest::Exact(s) => format!("exact {s:?}"),
        ValueTest::Prefix(s) => format!("prefix {s:?}"),
        ValueTest::Regex(re) => format!("regex {:?}", re.as_str()),
    }
}

fn rule_steps(entry: &ModelEntry, rec: &Recording, headers: &http::HeaderMap) -> Vec<RuleStep> {
    rec.rules
        .iter()
        .map(|&(i, matched)| {
            let route = &entry.routes[i];
            let conditions = rec
                .conditions
                .iter()
                .filter(|(r, _, _)| *r == i)
                .map(|&(_, c, matched)| {
                    let cond = &route.headers[c];
                    ConditionStep {
                        header: cond.name.to_string(),
                        test: test_text(&cond.test),
                        values: headers
                            .get_all(&cond.name)
                            .iter()
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .collect(),
                        matched,
                    }
                })
                .collect();
            let name = |v: usize| entry.versions[v].name.to_string();
            let mut target = match &route.target {
                RouteTarget::Version(v) => format!("version {}", name(*v)),
                RouteTarget::Split(ws) => {
                    let parts: Vec<_> = ws.iter().map(|(v, w)| format!("{}={w}", name(*v))).collect();
                    format!("split {}", parts.join(" "))
                }
            };
            if let Some((v, pct)) = route.shadow {
                let _ = write!(target, ", mirroring {pct}% to {}", name(v));
            }
            RuleStep {
                index: i,
                name: route.name.as_ref().map(|n| n.to_string()),
                conditions,
                matched,
                target,
            }
        })
        .collect()
}

fn split_step(entry: &ModelEntry, rec: &Recording, client: Option<IpAddr>) -> Option<SplitStep> {
    let (rule, source, key) = rec.sticky.as_ref()?;
    let sticky = entry.routes[*rule].sticky.as_ref();
    let key_source = match (source, sticky) {
        (KeySource::Header, Some(Sticky::Header(h))) => format!("header {h}"),
        (KeySource::Cookie, Some(Sticky::Cookie(c))) => format!("cookie {c}"),
        _ => "client address".to_string(),
    };
    let key = match source {
        KeySource::Client => client.map_or_else(|| "(none)".to_string(), |c| c.to_string()),
        _ => String::from_utf8_lossy(key).into_owned(),
    };
    let best = rec.scores.iter().min_by(|a, b| a.score.total_cmp(&b.score))?;
    Some(SplitStep {
        rule: *rule,
        key_source,
        key,
        chosen: entry.versions[best.version].name.to_string(),
        scores: rec
            .scores
            .iter()
            .map(|s| ScoreStep {
                version: entry.versions[s.version].name.to_string(),
                weight: s.weight,
                bucket: s.hash,
                score: s.score,
            })
            .collect(),
    })
}

/// The explanation as text for people.
pub fn render_text(x: &Explanation) -> String {
    let mut s = String::new();
    let zone = x.zone.as_deref().map(|z| format!(", zone {z}")).unwrap_or_default();
    let _ = writeln!(s, "request     {}", x.request);
    let _ = writeln!(
        s,
        "gateway     region {}{zone}, table generation {}",
        x.region, x.generation
    );
    if let Some(c) = &x.classified {
        let hint = c
            .version_hint
            .as_deref()
            .map(|v| format!(", version {v} in the path"))
            .unwrap_or_default();
        let _ = writeln!(s, "classified  {} API, model {}{hint}", c.api, c.model);
    }
    if let Some(p) = &x.pin {
        let found = if p.found { "found" } else { "not found" };
        let from = if p.source == "header" {
            "x-model-version header"
        } else {
            "path"
        };
        let _ = writeln!(
            s,
            "pin         version {} from the {from}: {found}; rules are not tried",
            p.version
        );
    }
    for r in &x.rules {
        let name = r.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
        let verdict = if r.matched { "matched" } else { "no match" };
        let _ = writeln!(s, "rule {}{name}  {verdict} -> {}", r.index, r.target);
        if r.conditions.is_empty() {
            let _ = writeln!(s, "              no conditions: matches every request");
        }
        for c in &r.conditions {
            let seen = if c.values.is_empty() {
                "absent".to_string()
            } else {
                format!("{:?}", c.values)
            };
            let ok = if c.matched { "yes" } else { "no" };
            let _ = writeln!(s, "              {} {}: {ok} (request: {seen})", c.header, c.test);
        }
    }
    if let Some(sp) = &x.split {
        let _ = writeln!(s, "split       key {} = {:?}", sp.key_source, sp.key);
        for sc in &sp.scores {
            let mark = if sc.version == sp.chosen {
                "  <- lowest score"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "              {} weight {} bucket {:.6} score {:.6}{mark}",
                sc.version, sc.weight, sc.bucket, sc.score
            );
        }
    }
    match &x.outcome {
        Outcome::Routed {
            model,
            version,
            rule,
            priority,
            adapter,
        } => {
            let by = match (rule, &x.pin) {
                (Some(r), _) => format!("rule {r}"),
                (None, Some(_)) => "the pin".to_string(),
                (None, None) => "the only version".to_string(),
            };
            let adapter = adapter
                .as_deref()
                .map(|a| format!(", LoRA adapter {a}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "version     {model} {version} (by {by}), priority {priority}{adapter}"
            );
        }
        Outcome::Answered { status } => {
            let _ = writeln!(s, "answered    by the gateway itself, {status}");
        }
        Outcome::Refused { status, error } => {
            let _ = writeln!(s, "refused     {status} {error}");
        }
        Outcome::NeedsBody { api } => {
            let _ = writeln!(
                s,
                "needs body  the {api} API names the model in the body: give it with -d"
            );
        }
    }
    for l in &x.levels {
        let panic = if l.panic { ", in panic: every endpoint used" } else { "" };
        let _ = writeln!(
            s,
            "level {}     {} takes {:.1}%, {} of {} available{panic}",
            l.index,
            l.locality,
            l.share * 100.0,
            l.available,
            l.endpoints.len()
        );
        for e in &l.endpoints {
            let state = if e.out.is_empty() {
                "available".to_string()
            } else {
                e.out.join(", ")
            };
            let usable = if e.usable { "" } else { ", not usable" };
            let c = &e.cost;
            let _ = writeln!(
                s,
                "              {} {} weight {} {state}{usable}; cost {:.3} = ({:.3} ms + 1) x ({} in flight + 1) / headroom {:.2}",
                e.id, e.address, e.weight, c.value, c.latency_ms, c.in_flight, c.headroom
            );
            if let Some(t) = &e.llm {
                let _ = writeln!(
                    s,
                    "                holds {:.0}% of the prompt; {} queued, KV cache {:.0}% used ({})",
                    t.prefix * 100.0,
                    t.waiting,
                    t.kv_usage * 100.0,
                    t.freshness
                );
            }
        }
    }
    if let Some(b) = &x.balancer {
        let _ = writeln!(s, "balancer    {b}");
    }
    match (&x.pick, &x.outcome) {
        (Some(p), _) => {
            let prefix = if p.prefix > 0.0 {
                format!(", holds {:.0}% of the prompt's blocks", p.prefix * 100.0)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "pick        {} {} (level {}, {}{prefix})",
                p.id, p.address, p.level, p.locality
            );
        }
        (None, Outcome::Routed { .. }) => {
            let _ = writeln!(s, "pick        none: no endpoint may take it (503)");
        }
        _ => {}
    }
    s
}
