//! LLM-aware routing end to end, through real sim backends modelling KV caches: chat requests that
//! share a long prompt prefix go to the backend that holds it (and hit its cache there), keep
//! going there while it is not overloaded, and leave it when it is; LoRA adapters route to their
//! model; embeddings are answered in OpenAI's shape.

mod common;

use std::io::Read;

use common::*;
use meridian_config::schema::LlmRouting;
use serde_json::{json, Value};

/// A chat request with `system` as its shared prefix.
fn chat(model: &str, system: &str, question: &str, stream: bool) -> String {
    json!({
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "stream": stream,
        "max_tokens": 2,
    })
    .to_string()
}

/// A long system prompt: `tag` makes groups distinct from their first block.
fn system_prompt(tag: &str) -> String {
    long_prompt(tag, 40)
}

/// A system prompt of `lines` sentences (74 bytes each) after `tag`.
fn long_prompt(tag: &str, lines: usize) -> String {
    format!("{tag}: ") + &"You answer questions about the attached product manual, citing sections. ".repeat(lines)
}

#[test]
fn shared_prefixes_stick_to_the_backend_that_holds_them_until_it_is_overloaded() {
    let dir = scratch("llm");
    let mut w = World::new(112);
    let gw = w.gateway("r", &["r-a"]);
    let sims: Vec<String> = (0..4)
        .map(|i| w.backend("llama", "v1", &format!("g{i}"), "r", "r-a"))
        .collect();
    w.model("llama").llm = Some(LlmRouting {
        overload_margin: 2,
        adapters: vec!["sql-lora".into()],
        ..LlmRouting::default()
    });
    let cfg = w.write(&dir);
    let _sims: Vec<_> = sims
        .iter()
        .enumerate()
        .map(|(i, a)| {
            sim(
                a,
                &format!("g{i}"),
                "llama",
                "v1",
                &["--latency", "1ms", "--output-tokens", "2"],
            )
        })
        .collect();
    let _gw = gateway(&cfg, "r", None, &gw.admin, &gw.public);
    let c = client();
    let url = format!("http://{}/v1/chat/completions", gw.public);
    let post = |body: String| -> Value {
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = r.status();
        let answer: Value = r.json().unwrap();
        assert_eq!(status, 200, "{answer}");
        answer
    };

    // Three groups, eight questions each: every question of a group lands where its first did, and
    // from the second on its prefix is in that backend's cache. The third group's prompt (~150 KB,
    // ~37k tokens) is held whole (`llm.max_prompt`, 1 MiB): it names its model after `messages`,
    // past the 64 KiB a streamed body is read for it, and its prefix is hashed too.
    let mut homes = std::collections::HashMap::new();
    for (group, lines) in [("alpha", 40), ("beta", 40), ("long", 2000)] {
        let system = long_prompt(group, lines);
        let first = post(chat("llama", &system, "question 0", false));
        let home = first["served_by"].as_str().unwrap().to_string();
        homes.insert(group, home.clone());
        assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        for q in 1..8 {
            let r = post(chat("llama", &system, &format!("question {q}"), false));
            assert_eq!(r["served_by"], home.as_str(), "group {group}, question {q}");
            let cached = r["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
            let prompt = r["usage"]["prompt_tokens"].as_u64().unwrap();
            assert!(cached * 10 >= prompt * 8, "{cached} of {prompt} cached");
        }
    }

    // The admin's POST /explain reads the same prompt index the pick does: the next alpha question
    // is named by its body, only alpha's home holds its prefix, and the pick goes there.
    let body = chat("llama", &long_prompt("alpha", 40), "question 9", false);
    let query = json!({"method": "POST", "path": "/v1/chat/completions", "body": body});
    let x: Value = c
        .post(format!("http://{}/explain", gw.admin))
        .json(&query)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (x["classified"]["api"].as_str(), x["classified"]["model"].as_str()),
        (Some("openai"), Some("llama")),
        "{x}"
    );
    let holders: Vec<&str> = x["levels"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["llm"]["prefix"].as_f64().unwrap() >= 0.8)
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(holders, [homes["alpha"].as_str()], "{x}");
    assert_eq!(x["pick"]["id"], homes["alpha"].as_str(), "{x}");
    assert!(x["pick"]["prefix"].as_f64().unwrap() >= 0.8, "{x}");

    // Overload: streams held open after their first token pile up on the holder; past the margin
    // (2 more than the least loaded other), the prompt goes elsewhere.
    let system = system_prompt("gamma");
    let home = post(chat("llama", &system, "warm up", false))["served_by"]
        .as_str()
        .unwrap()
        .to_string();
    for s in &sims {
        sim_control(s, json!({"stream_gate": true}));
    }
    let mut open = Vec::new();
    let mut served = Vec::new();
    for q in 0..6 {
        let mut r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(chat("llama", &system, &format!("held {q}"), true))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let first = first_event(&mut r);
        let event: Value = serde_json::from_str(first.trim().trim_start_matches("data: ")).unwrap();
        served.push(event["served_by"].as_str().unwrap().to_string());
        open.push(r);
    }
    assert!(served[..3].iter().all(|s| *s == home), "{served:?}");
    assert!(
        served[3..].iter().any(|s| *s != home),
        "the overloaded holder is bypassed: {served:?}"
    );
    for s in &sims {
        sim_control(s, json!({"stream_gate": false}));
    }
    for mut r in open {
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    }

    // A LoRA adapter named as the model routes to its model, and the backend sees the adapter.
    let r = post(chat("sql-lora", &system_prompt("delta"), "q", false));
    assert_eq!(r["model"], "sql-lora");
    let loaded = sims.iter().any(|s| sim_state(s)["llm"]["adapters"][0] == "sql-lora");
    assert!(loaded, "the adapter was loaded on the backend that served it");

    // Embeddings: OpenAI's shape, with usage.
    let r = c
        .post(format!("http://{}/v1/embeddings", gw.public))
        .header("content-type", "application/json")
        .body(json!({"model": "llama", "input": "embed me"}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().unwrap();
    assert_eq!(
        (e["object"].as_str(), e["data"][0]["object"].as_str()),
        (Some("list"), Some("embedding"))
    );
    assert!(e["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn tokens_are_accounted_from_usage_and_limited_per_tenant() {
    let dir = scratch("llm-tokens");
    let mut w = World::new(113);
    let gw = w.gateway("r", &["r-a"]);
    let sims: Vec<String> = (0..2)
        .map(|i| w.backend("llama", "v1", &format!("t{i}"), "r", "r-a"))
        .collect();
    w.model("llama").llm = Some(LlmRouting {
        token_limit: Some(meridian_config::schema::TokenLimit {
            tokens_per_minute: 600,
            burst: None,
            tenant_header: "x-tenant".into(),
        }),
        ..LlmRouting::default()
    });
    let cfg = w.write(&dir);
    let _sims: Vec<_> = sims
        .iter()
        .enumerate()
        .map(|(i, a)| {
            sim(
                a,
                &format!("t{i}"),
                "llama",
                "v1",
                &["--latency", "1ms", "--output-tokens", "3"],
            )
        })
        .collect();
    let _gw = gateway(&cfg, "r", None, &gw.admin, &gw.public);
    let c = client();
    let url = format!("http://{}/v1/chat/completions", gw.public);
    let send = |tenant: &str, body: String| {
        c.post(&url)
            .header("content-type", "application/json")
            .header("x-tenant", tenant)
            .body(body)
            .send()
            .unwrap()
    };

    // Answers and streams (asking for usage) from tenants with tokens to spare: the gateway's
    // token counts are the sum of what the answers reported.
    let (mut input, mut output) = (0, 0);
    for i in 0..4 {
        let r = send(
            &format!("small-{i}"),
            chat("llama", "be brief", &format!("q{i}"), false),
        );
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        input += v["usage"]["prompt_tokens"].as_u64().unwrap();
        output += v["usage"]["completion_tokens"].as_u64().unwrap();
        let mut body: Value = serde_json::from_str(&chat("llama", "be brief", &format!("s{i}"), true)).unwrap();
        body["stream_options"] = json!({"include_usage": true});
        let mut r = send(&format!("small-{i}"), body.to_string());
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        let last = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e.get("usage").is_some())
            .expect("a usage chunk");
        input += last["usage"]["prompt_tokens"].as_u64().unwrap();
        output += last["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let m = scrape(&gw.admin);
    let sum = |kind: &str| {
        metric_sum(
            &m,
            "gen_ai_client_token_usage_sum",
            &[
                &format!("gen_ai_token_type=\"{kind}\""),
                "gen_ai_request_model=\"llama\"",
            ],
        )
    };
    assert_eq!((sum("input"), sum("output")), (input as f64, output as f64));
    assert_eq!(
        metric_sum(&m, "gen_ai_server_time_to_first_token_seconds_count", &[]),
        8.0
    );
    assert!(metric_sum(&m, "gen_ai_server_time_per_output_token_seconds_count", &[]) >= 8.0);
    assert_promtool_accepts("gateway with gen_ai metrics", &m);

    // A tenant whose answers used its 600 tokens a minute is refused (429, Retry-After), and
    // another tenant is still served.
    let long = "please summarize this paragraph of the manual again. ".repeat(20);
    let mut refused = None;
    for i in 0..8 {
        let r = send("heavy", chat("llama", &long, &format!("h{i}"), false));
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let r = refused.expect("the heavy tenant runs out of tokens");
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = r.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("tokens"), "{body}");
    assert_eq!(send("light", chat("llama", "hi", "q", false)).status(), 200);
    let m = scrape(&gw.admin);
    assert!(metric_sum(&m, "meridian_token_limited_total", &["model_name=\"llama\""]) >= 1.0);
}
