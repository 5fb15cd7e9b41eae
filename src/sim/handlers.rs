//! The simulator's HTTP surface: V1, V2, OpenAI-style, metrics and the control endpoint.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use rand::Rng;
use serde_json::{json, Value};

use super::state::{Faults, SimState};

type Body = BoxBody<Bytes, Infallible>;

/// An error that makes hyper close the connection without answering (the `close` fault).
#[derive(Debug)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by fault injection")
    }
}

impl std::error::Error for Closed {}

/// Handles one request.
pub async fn handle(st: Arc<SimState>, req: Request<Incoming>) -> Result<Response<Body>, Closed> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let ready = st.faults.read().ready;
    let route = Route::of(&method, &path, &st);
    match route {
        Route::Live => Ok(json_response(StatusCode::OK, json!({"live": true}), &st)),
        Route::Ready => Ok(readiness(ready, &st)),
        Route::Metadata => Ok(json_response(
            StatusCode::OK,
            json!({
                "name": st.model, "versions": [st.version], "platform": "meridian-sim",
                "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1]}]
            }),
            &st,
        )),
        Route::V1Status => Ok(json_response(
            StatusCode::OK,
            json!({"name": st.model, "ready": ready}),
            &st,
        )),
        Route::Metrics => {
            let (running, waiting) = st.load();
            let (xid, busy) = {
                let f = st.faults.read();
                (f.gpu_xid, f.gpu_busy)
            };
            let text = st.metrics.render((running, waiting), st.capacity, xid, busy, &st.llm);
            Ok(Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(full(text))
                .unwrap_or_default())
        }
        Route::Control => control(st, req).await,
        Route::State => Ok(state(&st)),
        Route::Infer(api) => infer(st, req, api).await,
        Route::WrongModel => Ok(error(
            StatusCode::NOT_FOUND,
            &format!("this server serves {}/{}", st.model, st.version),
            &st,
        )),
        Route::NotFound => Ok(error(
            StatusCode::NOT_FOUND,
            &format!("no route for {method} {path}"),
            &st,
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    V1,
    V2,
    Generate,
    OpenAi,
    Embeddings,
}

enum Route {
    Live,
    Ready,
    Metadata,
    V1Status,
    Metrics,
    Control,
    State,
    Infer(Api),
    WrongModel,
    NotFound,
}

impl Route {
    fn of(method: &Method, path: &str, st: &SimState) -> Route {
        let get = method == Method::GET;
        let post = method == Method::POST;
        match path {
            "/v2/health/live" | "/healthz" if get => return Route::Live,
            "/v2/health/ready" if get => return Route::Ready,
            "/metrics" if get => return Route::Metrics,
            "/sim/control" if post => return Route::Control,
            "/sim/state" if get => return Route::State,
            "/v1/chat/completions" | "/v1/completions" if post => return Route::Infer(Api::OpenAi),
            "/v1/embeddings" if post => return Route::Infer(Api::Embeddings),
            _ => {}
        }
        if let Some(rest) = path.strip_prefix("/v1/models/") {
            let (m, verb) = rest.split_once(':').map_or((rest, None), |(m, v)| (m, Some(v)));
            if m != st.model {
                return Route::WrongModel;
            }
            return match (verb, get, post) {
                (None, true, _) => Route::V1Status,
                (Some("predict" | "explain"), _, true) => Route::Infer(Api::V1),
                _ => Route::NotFound,
            };
        }
        if let Some(rest) = path.strip_prefix("/v2/models/") {
            let (m, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let tail = match tail.strip_prefix("versions/") {
                Some(v) => {
                    let (ver, t) = v.split_once('/').unwrap_or((v, ""));
                    if ver != st.version {
                        return Route::WrongModel;
                    }
                    t
                }
                None => tail,
            };
            if m != st.model {
                return Route::WrongModel;
            }
            return match (tail, get, post) {
                ("", true, _) => Route::Metadata,
                ("ready", true, _) => Route::Ready,
                ("infer", _, true) => Route::Infer(Api::V2),
                ("generate" | "generate_stream", _, true) => Route::Infer(Api::Generate),
                _ => Route::NotFound,
            };
        }
        Route::NotFound
    }
}

fn readiness(ready: bool, st: &SimState) -> Response<Body> {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, json!({"ready": ready}), st)
}

async fn control(st: Arc<SimState>, req: Request<Incoming>) -> Result<Response<Body>, Closed> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut current = serde_json::to_value(st.faults.read().clone()).unwrap_or_default();
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(p)) => Value::Object(p),
        _ => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "body must be a JSON object of fault settings",
                &st,
            ))
        }
    };
    if let (Some(c), Some(p)) = (current.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            c.insert(k.clone(), v.clone());
        }
    }
    match serde_json::from_value::<Faults>(current) {
        Ok(f) => {
            st.gate.send_replace(!f.stream_gate);
            *st.faults.write() = f;
            Ok(state(&st))
        }
        Err(e) => Ok(error(StatusCode::BAD_REQUEST, &format!("bad fault settings: {e}"), &st)),
    }
}

fn state(st: &SimState) -> Response<Body> {
    let (running, waiting) = st.load();
    json_response(
        StatusCode::OK,
        json!({
            "id": st.id, "model": st.model, "version": st.version,
            "faults": *st.faults.read(),
            "served": st.served.load(Ordering::Relaxed), "failed": st.failed.load(Ordering::Relaxed),
            "running": running, "waiting": waiting,
            "llm": {
                "prompt_tokens": st.llm.prompt_tokens.load(Ordering::Relaxed),
                "cached_tokens": st.llm.cached_tokens.load(Ordering::Relaxed),
                "generation_tokens": st.llm.generation_tokens.load(Ordering::Relaxed),
                "kv_cache_fill": st.llm.kv_usage(),
                "adapters": st.llm.adapters(),
            },
        }),
        st,
    )
}

/// Marks a request inside the server for the load metrics.
struct Busy(Arc<SimState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn infer(st: Arc<SimState>, req: Request<Incoming>, api: Api) -> Result<Response<Body>, Closed> {
    st.in_flight.fetch_add(1, Ordering::Relaxed);
    let busy = Busy(st.clone());
    let echo: serde_json::Map<String, Value> = [
        "traceparent",
        "tracestate",
        "x-forwarded-for",
        "x-forwarded-proto",
        "forwarded",
        "x-request-id",
        "x-user-id",
        "x-priority",
        "inference-header-content-length",
        // Hop-by-hop headers a proxy must not forward, so tests can see that none arrive.
        "connection",
        "keep-alive",
        "proxy-authorization",
        "upgrade",
        "x-hop",
        "te",
    ]
    .iter()
    .filter_map(|h| {
        req.headers()
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .map(|v| (h.to_string(), Value::from(v)))
    })
    .collect();
    // What reached the backend: lets tests see the protocol a proxy chose (HTTP/1.1, HTTP/2).
    let protocol = format!("{:?}", req.version());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Closed),
    };
    let faults = st.faults.read().clone();
    if faults.close {
        return Err(Closed);
    }
    if faults.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let (delay, fail) = {
        let mut rng = rand::rng();
        let jitter = if faults.jitter_ms > 0.0 {
            rng.random_range(-faults.jitter_ms..=faults.jitter_ms)
        } else {
            0.0
        };
        (
            (faults.latency_ms + jitter).max(0.0),
            rng.random::<f64>() < faults.error_rate,
        )
    };
    // Queue behind the simulated GPU's slots: latency grows with load, as on a real server.
    let (running, waiting) = st.load();
    let queued = if running >= st.capacity {
        f64::from(waiting) / f64::from(st.capacity) * delay
    } else {
        0.0
    };
    if delay + queued > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64((delay + queued) / 1000.0)).await;
    }
    if fail {
        st.failed.fetch_add(1, Ordering::Relaxed);
        st.metrics.count(false);
        let status = StatusCode::from_u16(faults.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(error(status, "injected failure", &st));
    }
    st.served.fetch_add(1, Ordering::Relaxed);
    st.metrics.count(true);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let served = json!({"served_by": st.id, "model_name": st.model, "model_version": st.version, "request_bytes": body.len(), "headers": echo, "protocol": protocol});
    let streaming = parsed.get("stream").and_then(Value::as_bool).unwrap_or(false);
    match api {
        Api::V2 => {
            let mut out = served;
            out["id"] = parsed.get("id").cloned().unwrap_or(Value::Null);
            out["outputs"] = json!([{"name": "output-0", "datatype": "FP32", "shape": [1], "data": [1.0]}]);
            Ok(json_response(StatusCode::OK, out, &st))
        }
        Api::V1 => {
            let n = parsed.get("instances").and_then(Value::as_array).map_or(1, Vec::len);
            let mut out = served;
            out["predictions"] = json!(vec![1; n]);
            Ok(json_response(StatusCode::OK, out, &st))
        }
        Api::Generate => Ok(token_stream(st.clone(), faults.latency_ms, None, busy)),
        Api::OpenAi | Api::Embeddings => {
            // The model server: prefill against the KV cache, then decode.
            let asked = parsed.get("model").and_then(Value::as_str).unwrap_or_default();
            let adapter = (!asked.is_empty() && asked != st.model).then_some(asked);
            let max_tokens = parsed.get("max_tokens").and_then(Value::as_u64).map(|n| n as u32);
            let pre = st.llm.prefill(&st.model, adapter, &body, max_tokens).await;
            let usage = usage(&pre, api == Api::Embeddings);
            if api == Api::Embeddings {
                let mut out = served;
                out["object"] = json!("list");
                out["model"] = json!(asked);
                out["data"] = json!([{"object": "embedding", "index": 0, "embedding": [0.125, -0.5, 0.25, 1.0]}]);
                out["usage"] = usage;
                return Ok(json_response(StatusCode::OK, out, &st));
            }
            if streaming {
                let with_usage = parsed
                    .pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let decode_ms = st.llm.config().decode_per_token.as_secs_f64() * 1000.0;
                return Ok(token_stream(st.clone(), decode_ms, Some((pre, with_usage)), busy));
            }
            tokio::time::sleep(st.llm.config().decode_per_token * pre.output_tokens).await;
            let mut out = served;
            out["object"] = json!("chat.completion");
            out["model"] = json!(asked);
            out["choices"] =
                json!([{"index": 0, "message": {"role": "assistant", "content": "sim"}, "finish_reason": "stop"}]);
            out["usage"] = usage;
            Ok(json_response(StatusCode::OK, out, &st))
        }
    }
}

/// OpenAI's `usage` of a request whose prefill came to `pre`.
fn usage(pre: &super::llm::Prefilled, embedding: bool) -> Value {
    let output = if embedding { 0 } else { u64::from(pre.output_tokens) };
    json!({
        "prompt_tokens": pre.prompt_tokens,
        "completion_tokens": output,
        "total_tokens": pre.prompt_tokens + output,
        "prompt_tokens_details": {"cached_tokens": pre.cached_tokens},
    })
}

/// Server-sent events, one token per `per_token_ms`, then `[DONE]`: an LLM token stream. An
/// OpenAI-style stream (`openai`: its prefill, and whether the client asked for usage) has as many
/// tokens as the prefill allotted, in chat-completion chunks, and ends with a usage chunk when asked.
fn token_stream(
    st: Arc<SimState>,
    per_token_ms: f64,
    openai: Option<(super::llm::Prefilled, bool)>,
    busy: Busy,
) -> Response<Body> {
    let tokens = openai.map_or(8, |(p, _)| p.output_tokens);
    let id = st.id.clone();
    let version = st.version.clone();
    let gate_of = st.clone();
    let events = stream::unfold((0u32, busy), move |(i, busy)| {
        let id = id.clone();
        let version = version.clone();
        let mut gate = gate_of.gate.subscribe();
        async move {
            if i > tokens {
                drop(busy);
                return None;
            }
            if i > 0 {
                // A closed gate holds the stream after its first event, until a test opens it.
                let _ = gate.wait_for(|open| *open).await;
                tokio::time::sleep(Duration::from_secs_f64(per_token_ms.max(1.0) / 1000.0)).await;
            }
            let mut line = String::new();
            if i == tokens {
                if let Some((pre, true)) = openai {
                    let last = json!({"object": "chat.completion.chunk", "choices": [], "usage": usage(&pre, false)});
                    line = format!("data: {last}\n\n");
                }
                line.push_str("data: [DONE]\n\n");
            } else {
                let mut event = json!({"token": i, "text": format!("t{i}"), "served_by": id, "model_version": version});
                if openai.is_some() {
                    event["object"] = json!("chat.completion.chunk");
                    event["choices"] = json!([{"index": 0, "delta": {"content": format!("t{i}")}}]);
                }
                line = format!("data: {event}\n\n");
            }
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), (i + 1, busy)))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header("x-served-by", st.id.as_str())
        .header("x-model-version", st.version.as_str())
        .body(StreamBody::new(events).boxed())
        .unwrap_or_default()
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).boxed()
}

fn json_response(status: StatusCode, v: Value, st: &SimState) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-served-by", st.id.as_str())
        .header("x-model-version", st.version.as_str())
        .body(full(v.to_string()))
        .unwrap_or_default()
}

fn error(status: StatusCode, msg: &str, st: &SimState) -> Response<Body> {
    json_response(status, json!({"error": msg}), st)
}
