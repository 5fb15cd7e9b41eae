//! HTTP/2 clients (h2c, prior knowledge) on the gateway's own HTTP/2 front: requests it serves on
//! its own upstream leg, the gateway's own answers, a model named in the body, and the streams it
//! hands to pingora's leg (bodies of unknown length past what it holds), which must reach the
//! backend whole after the front already read and decided on part of them.

mod common;

use common::*;
use meridian_config::schema::Protocol;
use serde_json::Value;

/// An h2c client that sends every request on one connection.
fn h2c() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `body` in chunks of 8 KiB, sent without a declared length.
fn undeclared(body: &str) -> reqwest::blocking::Body {
    let chunks = body.as_bytes().chunks(8 * 1024).map(<[u8]>::to_vec).collect();
    reqwest::blocking::Body::new(ChunkReader::new(chunks))
}

#[test]
fn http2_streams_are_served_decided_and_handed_over_whole() {
    let dir = scratch("http2");
    let mut w = World::new(127);
    let gw = w.gateway("r", &["r-a"]);
    w.gateway_of("r").listeners[0].protocols = vec![Protocol::Http1, Protocol::H2c];
    let s1 = w.backend("llm", "v1", "s1", "r", "r-a");
    let l1 = w.backend("llama", "v1", "l1", "r", "r-a");
    let cfg = w.write(&dir);
    let _s = sim(&s1, "s1", "llm", "v1", &[]);
    let _l = sim(&l1, "l1", "llama", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = h2c();
    let post = |path: &str, body: reqwest::blocking::Body| -> (u16, Value) {
        let r = c.post(format!("http://{public}{path}")).body(body).send().unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    let served = |v: &Value| (v["served_by"].as_str().map(str::to_owned), v["request_bytes"].as_u64());

    // The backend's fields reach the client (names in lower case, as HTTP/2 has them), its
    // connection's hop-by-hop ones do not.
    let small = r#"{"inputs":[]}"#;
    let r = c
        .post(format!("http://{public}/v2/models/llm/infer"))
        .body(small)
        .send()
        .unwrap();
    let field = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        (field("x-served-by"), field("x-model-version"), field("content-type")),
        (Some("s1".into()), Some("v1".into()), Some("application/json".into()))
    );
    assert_eq!((field("connection"), field("keep-alive")), (None, None));

    // A V2 call with a declared length, and one without (its stream's end ends it).
    let (status, v) = post("/v2/models/llm/infer", small.into());
    assert_eq!(
        (status, served(&v)),
        (200, (Some("s1".into()), Some(small.len() as u64)))
    );
    let (status, v) = post("/v2/models/llm/infer", undeclared(small));
    assert_eq!(
        (status, served(&v)),
        (200, (Some("s1".into()), Some(small.len() as u64)))
    );
    // The model named in the body (OpenAI), after a peek at it.
    let chat = r#"{"model":"llama","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, v) = post("/v1/chat/completions", chat.into());
    assert_eq!(
        (status, served(&v)),
        (200, (Some("l1".into()), Some(chat.len() as u64)))
    );

    // Past what the front holds (64 KiB), without a declared length: pingora's leg takes the
    // stream with the part already read, and decides it again from that part.
    let big = format!(r#"{{"inputs":["{}"]}}"#, "x".repeat(200_000));
    let (status, v) = post("/v2/models/llm/infer", undeclared(&big));
    assert_eq!((status, served(&v)), (200, (Some("s1".into()), Some(big.len() as u64))));
    let big_chat = format!(
        r#"{{"model":"llama","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "y".repeat(200_000)
    );
    let (status, v) = post("/v1/chat/completions", undeclared(&big_chat));
    assert_eq!(
        (status, served(&v)),
        (200, (Some("l1".into()), Some(big_chat.len() as u64)))
    );

    // The gateway's own answers: liveness, an unknown model, a body that names no model.
    let r = c.get(format!("http://{public}/v2/health/live")).send().unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    let (status, v) = post("/v2/models/nope/infer", small.into());
    assert_eq!(status, 404);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("nope")), "{v}");
    let (status, v) = post("/v1/chat/completions", r#"{"messages":[]}"#.into());
    assert_eq!(status, 400);
    assert!(v["error"].is_string(), "{v}");

    // Each stream is accounted once, whichever leg served it.
    let m = scrape(admin);
    let ok = |model: &str| {
        metric_sum(
            &m,
            "inference_requests_total",
            &[&format!("model_name=\"{model}\""), "status=\"200\""],
        )
    };
    assert_eq!((ok("llm"), ok("llama")), (4.0, 2.0), "{m}");
}
