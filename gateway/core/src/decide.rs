//! The decision half of a request's arrival: from its head (and, for the APIs that name the model in
//! the body, what the body named) to where it goes, or what the gateway answers itself.
//!
//! The checks run in the order a client would want them reported: the header block's size (431),
//! then what the request asks for (a gRPC call's service and method, or the path: 400, 404, 405),
//! then the model and its version (404), then the declared body size against the model's limit
//! (413) and whether the version can carry the protocol (501). A request whose model is in its body
//! gets [`Decision::ReadBody`] first; the shell peeks at the body ([`crate::peek`]) and calls
//! [`decide`] again with what it named, which skips the checks already passed.

use std::net::IpAddr;

use meridian_config::schema::PriorityClass;
use meridian_config::snapshot::{AdapterId, ModelId, VersionId};
use meridian_config::Snapshot;

use crate::admission::class_of;
use crate::classify::{classify, Api, ClassifyError, Target};
use crate::grpc::{self, Call};
use crate::head::RequestHead;
use crate::peek::{BodyPeek, Named};
use crate::reply::Reply;
use crate::select::{select_traced, SelectError};
use crate::trace::Trace;

/// What the decision needs beyond the request and the config.
#[derive(Clone, Copy, Debug)]
pub struct Env {
    /// Whether the gateway is ready (V2 and gRPC readiness answers).
    pub ready: bool,
    /// The client's address: the sticky key of a split when the configured key is absent.
    pub client: Option<IpAddr>,
    /// A uniform number in [0, 1) that decides shadowing; callers draw it, tests fix it.
    pub shadow_draw: f64,
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// To an endpoint of a model version.
    Route(Routed),
    /// Answered by the gateway itself (health, metadata, the model list).
    Answer(Reply),
    /// The model is named in the body: peek at it this way, then decide again.
    ReadBody(BodyPeek),
}

/// A request routed to a model version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The model.
    pub model: ModelId,
    /// The version that serves it.
    pub version: VersionId,
    /// The API it speaks.
    pub api: Api,
    /// Index of the routing rule that chose the version; `None` for a pin or a lone version.
    pub rule: Option<usize>,
    /// The version that gets a mirrored copy, if any.
    pub shadow: Option<VersionId>,
    /// Its admission priority class.
    pub class: PriorityClass,
    /// The LoRA adapter it asked for (by naming it as the model), an index into `llm.adapters`.
    pub adapter: Option<AdapterId>,
}

/// A request the gateway refuses, with what it had resolved by then (for metric labels).
#[derive(Debug, PartialEq)]
pub struct Refusal {
    /// The answer.
    pub reply: Reply,
    /// The model, when the request named a known one.
    pub model: Option<ModelId>,
    /// The version, when one was selected.
    pub version: Option<VersionId>,
}

impl Refusal {
    fn new(reply: Reply) -> Refusal {
        Refusal {
            reply,
            model: None,
            version: None,
        }
    }
}

/// Decides a request from its head and, on the second call for body-named models, what the body
/// named.
pub fn decide(snap: &Snapshot, head: &impl RequestHead, body: Option<&Named>, env: &Env) -> Result<Decision, Refusal> {
    decide_traced(snap, head, body, env, &mut ())
}

/// [`decide`], reporting each step to `trace` (`meridian explain`).
pub fn decide_traced(
    snap: &Snapshot,
    head: &impl RequestHead,
    body: Option<&Named>,
    env: &Env,
    trace: &mut impl Trace,
) -> Result<Decision, Refusal> {
    let (target, grpc) = match body {
        Some(named) => (
            Target::Model {
                api: named.api,
                model: &named.model,
                version: named.version.as_deref(),
            },
            named.api == Api::Grpc,
        ),
        None => {
            check_header_size(snap, head)?;
            match target_of(head, env)? {
                Ok(target) => target,
                Err(decided) => return Ok(decided),
            }
        }
    };
    let (api, model, version) = match target {
        Target::Model { api, model, version } => (api, model, version),
        other => return Ok(Decision::Answer(answer_locally(snap, other, env))),
    };
    trace.classified(api, model, version);
    let Some((m, adapter)) = snap.model_and_adapter(model) else {
        return Err(Refusal::new(Reply::error(404, format!("model {model} not found"))));
    };
    let refuse = |reply, version| Refusal {
        reply,
        model: Some(m),
        version,
    };
    let entry = &snap.models[m];
    let (v4, v6);
    let key: &[u8] = match env.client {
        Some(IpAddr::V4(ip)) => {
            v4 = ip.octets();
            &v4
        }
        Some(IpAddr::V6(ip)) => {
            v6 = ip.octets();
            &v6
        }
        None => &[],
    };
    let sel = select_traced(entry, version, head, key, env.shadow_draw, trace).map_err(|e| {
        let msg = match e {
            SelectError::UnknownVersion(v) => format!("version {v} of model {model} not found"),
            SelectError::NoRoute => format!("no routing rule of model {model} matches"),
        };
        refuse(Reply::error(404, msg), None)
    })?;
    // 413 for a declared body over the model's limit; streamed bodies are counted as they come.
    let limits = &entry.policy.limits;
    let limit = limits.max_request_body.bytes();
    if let Some(len) = head.content_length().filter(|len| *len > limit) {
        let msg = format!("request body is {len} bytes, more than the {limit} allowed");
        return Err(refuse(Reply::error(413, msg), None));
    }
    let served = &entry.versions[sel.version];
    if grpc && !served.grpc {
        let msg = format!(
            "model {} version {} does not take gRPC (upstream.h2, or a grpc_port on its endpoints)",
            entry.name, served.name
        );
        return Err(refuse(Reply::error(501, msg), Some(sel.version)));
    }
    // The request's priority class from its header, else its rule's, else the model's default.
    let asked = head.get(&entry.policy.priority_header);
    let class = class_of(asked).or(sel.priority).unwrap_or(limits.default_priority);
    Ok(Decision::Route(Routed {
        model: m,
        version: sel.version,
        api,
        rule: sel.route,
        shadow: sel.shadow,
        class,
        adapter,
    }))
}

/// 431 before anything else: the whole header block counts (the default limit is 64KiB).
fn check_header_size(snap: &Snapshot, head: &impl RequestHead) -> Result<(), Refusal> {
    let limit = snap.config.gateway.limits.max_request_headers.bytes() as usize;
    let bytes = head.path_and_query().len() + head.fields().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
    if bytes > limit {
        let msg = format!("request headers are {bytes} bytes, more than the {limit} allowed");
        return Err(Refusal::new(Reply::error(431, msg)));
    }
    Ok(())
}

/// What the head asks for, with whether it is a gRPC call; or a decision the head alone makes
/// (read the body, or answer a gRPC health call).
fn target_of<'h>(head: &'h impl RequestHead, env: &Env) -> Result<Result<(Target<'h>, bool), Decision>, Refusal> {
    let path = head.path();
    if grpc::is_grpc(head) {
        let model = |m| {
            (
                Target::Model {
                    api: Api::Grpc,
                    model: m,
                    version: None,
                },
                true,
            )
        };
        return match grpc::classify(path, head) {
            Call::Model(m) => Ok(Ok(model(m))),
            Call::InMessage => Ok(Err(Decision::ReadBody(BodyPeek::GrpcMessage))),
            Call::ServerLive => Ok(Err(Decision::Answer(Reply::grpc_message(grpc::bool_message(true))))),
            Call::ServerReady => Ok(Err(Decision::Answer(Reply::grpc_message(grpc::bool_message(
                env.ready,
            ))))),
            Call::Unroutable(why) => Err(Refusal::new(Reply::error(400, why))),
        };
    }
    match classify(head.method(), path) {
        Ok(Target::OpenAi) => Ok(Err(Decision::ReadBody(BodyPeek::OpenAi))),
        Ok(t) => Ok(Ok((t, false))),
        Err(ClassifyError::UnknownPath) => Err(Refusal::new(Reply::error(
            404,
            format!("no inference route for {path}"),
        ))),
        Err(ClassifyError::MethodNotAllowed) => Err(Refusal::new(Reply::error(
            405,
            format!("{} is not allowed here", head.method()),
        ))),
    }
}

/// The answers the gateway gives for the server as a whole.
fn answer_locally(snap: &Snapshot, target: Target<'_>, env: &Env) -> Reply {
    use serde_json::json;
    match target {
        Target::ServerLive => Reply::json(200, json!({"live": true})),
        Target::ServerReady => Reply::json(if env.ready { 200 } else { 503 }, json!({"ready": env.ready})),
        Target::ServerMetadata => Reply::json(
            200,
            json!({"name": "meridian", "version": env!("CARGO_PKG_VERSION"), "extensions": []}),
        ),
        Target::ListModels => {
            let names: Vec<_> = snap.models.iter().map(|m| m.name.as_ref()).collect();
            Reply::json(200, json!({ "models": names }))
        }
        // Model targets are routed, and OpenAI ones read their body first: never answered here.
        Target::OpenAi | Target::Model { .. } => Reply::error(500, "internal error: unrouted request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Content;
    use meridian_config::load_str;
    use std::path::Path;

    const CFG: &str = "
regions: [{ name: r, zones: [z] }]
gateway:
  limits: { max_request_headers: 1KiB, max_request_body: 100 }
models:
  - name: iris
    versions:
      - { name: v1, endpoints: [{ address: 127.0.0.1:1, region: r, zone: z }] }
      - { name: v2, endpoints: [{ address: 127.0.0.1:2, region: r, zone: z }], upstream: { h2: true } }
    routes:
      - match: { headers: [{ name: x-user-segment, exact: premium }] }
        version: v2
        priority: critical
      - version: v1
  - name: solo
    versions: [{ name: v1, endpoints: [{ address: 127.0.0.1:3, region: r, zone: z }] }]
  - name: ab
    versions:
      - { name: v1, endpoints: [{ address: 127.0.0.1:4, region: r, zone: z }] }
      - { name: v2, endpoints: [{ address: 127.0.0.1:5, region: r, zone: z }] }
    routes:
      - split: [{ version: v1, weight: 50 }, { version: v2, weight: 50 }]
";

    fn snap() -> Snapshot {
        Snapshot::compile(load_str(CFG, "t", Path::new(".")).unwrap())
    }

    fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const ENV: Env = Env {
        ready: true,
        client: None,
        shadow_draw: 0.5,
    };

    fn run(method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Decision, Refusal> {
        decide(&snap(), &head(method, path, headers), None, &ENV)
    }

    /// The status and message of a refusal, and the model and version it knew.
    fn refused(r: Result<Decision, Refusal>) -> (u16, String, Option<usize>, Option<usize>) {
        let r = r.expect_err("a refusal");
        (
            r.reply.status,
            r.reply.message().unwrap().to_string(),
            r.model,
            r.version,
        )
    }

    #[test]
    fn routes_by_path_rule_and_priority() {
        let d = run("POST", "/v2/models/iris/infer", &[("x-user-segment", "premium")]).unwrap();
        assert_eq!(
            d,
            Decision::Route(Routed {
                model: 0,
                version: 1,
                api: Api::V2,
                rule: Some(0),
                shadow: None,
                class: PriorityClass::Critical,
                adapter: None,
            })
        );
        let d = run("POST", "/v1/models/solo:predict", &[("x-priority", "sheddable")]).unwrap();
        assert!(matches!(
            d,
            Decision::Route(Routed {
                model: 1,
                version: 0,
                api: Api::V1,
                class: PriorityClass::Sheddable,
                ..
            })
        ));
    }

    #[test]
    fn every_refusal() {
        let big = "h".repeat(2000);
        assert_eq!(
            refused(run("POST", "/v2/models/iris/infer", &[("x-big", &big)])),
            (
                431,
                "request headers are 2030 bytes, more than the 1024 allowed".into(),
                None,
                None
            )
        );
        assert_eq!(
            refused(run("GET", "/admin", &[])),
            (404, "no inference route for /admin".into(), None, None)
        );
        assert_eq!(
            refused(run("GET", "/v2/models/iris/infer", &[])),
            (405, "GET is not allowed here".into(), None, None)
        );
        assert_eq!(
            refused(run("POST", "/v2/models/nope/infer", &[])),
            (404, "model nope not found".into(), None, None)
        );
        assert_eq!(
            refused(run("POST", "/v2/models/iris/versions/v9/infer", &[])),
            (404, "version v9 of model iris not found".into(), Some(0), None)
        );
        // Validation asks for a catch-all rule; a table without one (as a rewrite could leave it)
        // refuses what no rule matches.
        let mut no_catch_all = snap();
        no_catch_all.models[0].routes.pop();
        assert_eq!(
            refused(decide(
                &no_catch_all,
                &head("POST", "/v2/models/iris/infer", &[]),
                None,
                &ENV
            )),
            (404, "no routing rule of model iris matches".into(), Some(0), None)
        );
        assert_eq!(
            refused(run("POST", "/v2/models/solo/infer", &[("content-length", "101")])),
            (
                413,
                "request body is 101 bytes, more than the 100 allowed".into(),
                Some(1),
                None
            )
        );
        let grpc = [("content-type", "application/grpc")];
        assert_eq!(
            refused(run("POST", "/grpc.health.v1.Health/Check", &grpc)),
            (
                400,
                "name the model of this call in the x-model-name header".into(),
                None,
                None
            )
        );
        assert_eq!(
            refused(run("POST", "/svc/Method", &[grpc[0], ("x-model-name", "solo")])),
            (
                501,
                "model solo version v1 does not take gRPC (upstream.h2, or a grpc_port on its endpoints)".into(),
                Some(1),
                Some(0)
            )
        );
    }

    #[test]
    fn answers_and_body_reads() {
        let s = snap();
        let answer = |d| match d {
            Ok(Decision::Answer(r)) => r,
            other => panic!("{other:?}"),
        };
        let r = answer(run("GET", "/v2/health/ready", &[]));
        assert_eq!((r.status, r.body()), (200, r#"{"ready":true}"#.to_string()));
        let not_ready = Env { ready: false, ..ENV };
        let r = answer(decide(&s, &head("GET", "/v2/health/ready", &[]), None, &not_ready));
        assert_eq!(r.status, 503);
        assert_eq!(
            answer(run("GET", "/v1/models", &[])).body(),
            r#"{"models":["iris","solo","ab"]}"#
        );
        let grpc = [("content-type", "application/grpc")];
        let live = answer(run("POST", "/inference.GRPCInferenceService/ServerLive", &grpc));
        assert_eq!(live.content, Content::GrpcMessage(&[0x08, 0x01]));

        // Body-named models: read first, then decided from what the body named.
        let chat = head("POST", "/v1/chat/completions", &[]);
        assert_eq!(decide(&s, &chat, None, &ENV), Ok(Decision::ReadBody(BodyPeek::OpenAi)));
        let named = Named {
            api: Api::OpenAi,
            model: "solo".into(),
            version: None,
        };
        assert!(matches!(
            decide(&s, &chat, Some(&named), &ENV),
            Ok(Decision::Route(Routed {
                model: 1,
                api: Api::OpenAi,
                ..
            }))
        ));
        let infer = head("POST", "/inference.GRPCInferenceService/ModelInfer", &grpc);
        assert_eq!(
            decide(&s, &infer, None, &ENV),
            Ok(Decision::ReadBody(BodyPeek::GrpcMessage))
        );
        let named = Named {
            api: Api::Grpc,
            model: "iris".into(),
            version: Some("v2".into()),
        };
        assert!(matches!(
            decide(&s, &infer, Some(&named), &ENV),
            Ok(Decision::Route(Routed {
                model: 0,
                version: 1,
                api: Api::Grpc,
                ..
            }))
        ));
    }

    #[test]
    fn the_client_address_keys_sticky_splits() {
        let s = snap();
        let h = head("POST", "/v2/models/ab/infer", &[]);
        let version_for = |ip: String| {
            let env = Env {
                client: Some(ip.parse().unwrap()),
                ..ENV
            };
            match decide(&s, &h, None, &env) {
                Ok(Decision::Route(r)) => r.version,
                other => panic!("{other:?}"),
            }
        };
        let mut seen = [0; 2];
        for i in 0..64 {
            let (v4, v6) = (format!("10.0.0.{i}"), format!("2001:db8::{i:x}"));
            let (a, b) = (version_for(v4.clone()), version_for(v6.clone()));
            assert_eq!(version_for(v4), a, "the same client, the same version");
            assert_eq!(version_for(v6), b);
            seen[a] += 1;
            seen[b] += 1;
        }
        assert!(seen[0] > 20 && seen[1] > 20, "both versions get clients: {seen:?}");
    }
}
