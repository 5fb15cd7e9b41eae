//! The gateway as a public edge: streaming without buffering, request size limits, HTTP/2 cleartext.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::*;
use meridian_config::schema::{HealthCheck, Limits, Protocol, Retries, Timeouts, TlsVersion, Upstream, UpstreamTls};
use meridian_config::units::ByteSize;
use serde_json::json;

#[test]
fn streams_limits_and_h2c() {
    let dir = scratch("edge");
    let mut w = World::new(90);
    let gw = w.gateway("r", &["r-a"]);
    w.gateway_of("r").listeners[0].protocols = vec![Protocol::Http1, Protocol::H2c];
    let g = &mut w.config.gateway;
    (g.limits.max_request_headers, g.limits.max_request_body) = (ByteSize::kib(2), ByteSize::kib(1));
    g.retries.attempts = 0;
    g.timeouts.client_header = secs(1);
    let s1 = w.backend("llm", "v1", "s1", "r", "r-a");
    let cfg = w.write(&dir);
    let _sim = sim(&s1, "s1", "llm", "v1", &["--latency", "1ms"]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();

    // Streaming: the backend holds its token stream after the first event until the test opens the
    // gate. The first event must reach the client through the gateway while the backend is still
    // holding: a buffering proxy would deadlock here (and fail at the client's 20 s bound).
    sim_control(&s1, json!({"stream_gate": true}));
    let mut resp = c
        .post(format!("http://{public}/v2/models/llm/generate_stream"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let got = first_event(&mut resp);
    assert!(
        got.starts_with("data: {") && got.contains("\"token\":0") && !got.contains("[DONE]"),
        "{got}"
    );
    sim_control(&s1, json!({"stream_gate": false}));
    let mut rest = String::new();
    resp.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("\"token\":7") && rest.trim_end().ends_with("data: [DONE]"),
        "{rest}"
    );

    // 413: a declared body over the 1KiB limit, and a streamed (chunked) one.
    let big = "x".repeat(4096);
    let r = c
        .post(format!("http://{public}/v2/models/llm/infer"))
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"], "request body is 4096 bytes, more than the 1024 allowed");
    let chunks = std::iter::repeat_n(bytes_of(&big[..512]), 8);
    let r = c
        .post(format!("http://{public}/v2/models/llm/infer"))
        .body(reqwest::blocking::Body::new(ChunkReader::new(chunks.collect())))
        .send();
    match r {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => panic!("a streamed body over the limit must get 413, got {e}"),
    }
    // Never an open proxy: an absolute-form URI for another host is routed by its path like any
    // request (here: no inference route, 404 from the gateway), and CONNECT is refused.
    for (request, status) in [
        (
            "GET http://127.0.0.1:9/ HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\r\n",
            "HTTP/1.1 404 ",
        ),
        (
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nhost: 127.0.0.1:22\r\n\r\n",
            "HTTP/1.1 405 ",
        ),
    ] {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(public).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with(status), "{request:?} -> {answer}");
    }
    // Slowloris: a client dripping header lines (each well within pingora's per-read timeout)
    // gets a 408 once the whole block has not arrived within client_header (1s), and is closed.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(public).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        s.write_all(b"POST /v2/models/llm/infer HTTP/1.1\r\nhost: gw\r\n")
            .unwrap();
        let mut answer = Vec::new();
        for i in 0..300 {
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    if s.write_all(format!("x-drip-{i}: .\r\n").as_bytes()).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(
            answer.contains(r#"{"error":"request headers were not received within 1s"}"#),
            "{answer}"
        );
    }
    // 431: a header block over the 2KiB limit.
    let r = c
        .post(format!("http://{public}/v2/models/llm/infer"))
        .header("x-padding", "p".repeat(3000))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 431);
    // Requests under the limits pass, and the backend was not blamed for the client's oversize bodies.
    // Forwarding headers extend the chain the client sent.
    let a = infer(
        &c,
        public,
        "/v2/models/llm/infer",
        &[
            ("forwarded", "for=192.0.2.7;proto=https"),
            ("x-forwarded-for", "192.0.2.7"),
        ],
    );
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["headers"]["forwarded"],
        "for=192.0.2.7;proto=https, for=127.0.0.1;proto=http"
    );
    assert_eq!(a.body["headers"]["x-forwarded-for"], "192.0.2.7, 127.0.0.1");
    assert_eq!(a.body["headers"]["x-forwarded-proto"], "http");
    // Hop-by-hop headers, and those the client's Connection header names, stop at the gateway.
    let a = infer(
        &c,
        public,
        "/v2/models/llm/infer",
        &[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "gzip"),
        ],
    );
    assert_eq!(a.status, 200);
    for h in ["connection", "x-hop", "keep-alive", "proxy-authorization", "te"] {
        assert!(a.body["headers"].get(h).is_none(), "{h} forwarded: {}", a.body);
    }
    assert_eq!(endpoint(admin, "s1")["ejected"], false);

    // HTTP/2 with prior knowledge (h2c) on the same listener.
    let h2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = h2
        .post(format!("http://{public}/v2/models/llm/infer"))
        .body(r#"{"inputs":[]}"#)
        .send()
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["served_by"], "s1");
}

fn bytes_of(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// The TLS test's world: a TLS listener (api.example.com, and other.example.com unless left
/// out) with a client CA, beside a plain one.
fn tls_world(pki: &Path, with_other: bool) -> (World, Gw, String, String) {
    let mut w = World::new(91);
    let gw = w.gateway("r", &["r-a"]);
    let tls_at = format!("{}:8443", gw.ip);
    let file = |f: &str| pki.join(f);
    let mut certs = vec![(&["api.example.com"][..], file("api.pem"), file("api.key"))];
    if with_other {
        certs.push((&["other.example.com"][..], file("other.pem"), file("other.key")));
    }
    let mut listener = tls_listener("tls", &tls_at, &certs);
    listener.protocols = vec![Protocol::Http1, Protocol::H2];
    listener.tls.as_mut().unwrap().client_ca = Some(file("ca.pem"));
    w.gateway_of("r").listeners.insert(0, listener);
    let t1 = w.backend("llm", "v1", "t1", "r", "r-a");
    (w, gw, tls_at, t1)
}

#[test]
fn tls_sni_certificates_mutual_tls_alpn_and_reload() {
    let dir = scratch("tls");
    let pki = test_pki(&dir);
    let examples = pki.to_str().unwrap();
    let (w, gw, tls_at, t1) = tls_world(&pki, true);
    let cfg = w.write(&dir);
    let _sim = sim(&t1, "t1", "llm", "v1", &[]);
    let _gw = gateway(&cfg, "r", None, &gw.admin, &gw.public);
    let read = |f: &str| std::fs::read(format!("{examples}/{f}")).unwrap();
    let ca = reqwest::Certificate::from_pem(&read("ca.pem")).unwrap();
    let identity = reqwest::Identity::from_pem(&[read("client.pem"), read("client.key")].concat()).unwrap();
    let client = |with_identity: bool| {
        let mut b = reqwest::blocking::Client::builder()
            .add_root_certificate(ca.clone())
            .resolve("api.example.com", tls_at.parse().unwrap())
            .resolve("other.example.com", tls_at.parse().unwrap())
            .timeout(Duration::from_secs(20));
        if with_identity {
            b = b.identity(identity.clone());
        }
        b.build().unwrap()
    };
    let tls = client(true);
    // Each name gets its own certificate (the client checks the name), over HTTP/2 by ALPN.
    for host in ["api.example.com", "other.example.com"] {
        let r = tls
            .post(format!("https://{host}:8443/v2/models/llm/infer"))
            .body(r#"{"inputs":[]}"#)
            .send()
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), r.version()),
            (200, reqwest::Version::HTTP_2),
            "{host}"
        );
        let body = r.json::<serde_json::Value>().unwrap();
        assert_eq!(body["served_by"], "t1");
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
        assert_eq!(body["headers"]["forwarded"], "for=127.0.0.1;proto=https");
    }
    // Mutual TLS: no client certificate, no connection.
    assert!(client(false)
        .get("https://api.example.com:8443/v2/health/live")
        .send()
        .is_err());
    // A client that does not trust the CA is refused at the handshake.
    let untrusting = reqwest::blocking::Client::builder()
        .resolve("api.example.com", tls_at.parse().unwrap())
        .tls_built_in_root_certs(false)
        .identity(identity.clone())
        .build()
        .unwrap();
    assert!(untrusting
        .get("https://api.example.com:8443/v2/health/live")
        .send()
        .is_err());
    // Reload without the other.example.com certificate: that name now gets the default one, which the
    // client rejects, while api.example.com keeps working (no restart).
    tls_world(&pki, false).0.rewrite(&cfg);
    let (status, body) = admin_post(&gw.admin, "/reload");
    assert_eq!(status, 200, "{body}");
    let fresh = client(true);
    assert!(fresh
        .get("https://other.example.com:8443/v2/health/live")
        .send()
        .is_err());
    assert_eq!(
        fresh
            .get("https://api.example.com:8443/v2/health/live")
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn admission_sheds_by_priority_queues_and_meets_the_deadline() {
    let dir = scratch("admission");
    let mut w = World::new(92);
    let gw = w.gateway("r", &["r-a"]);
    let b1 = w.backend("busy", "v1", "b1", "r", "r-a");
    let o1 = w.backend("ordered", "v1", "o1", "r", "r-a");
    let limits = |concurrency, queue, timeout, shed_at| {
        let mut l = Limits {
            per_model_concurrency: Some(concurrency),
            shed_sheddable_at: shed_at,
            ..Limits::default()
        };
        (l.queue.size, l.queue.timeout) = (queue, timeout);
        l
    };
    let busy = w.model("busy");
    busy.limits = Some(limits(2, 1, secs(2), 50.0));
    busy.timeouts = Some(Timeouts {
        first_byte: secs(20),
        ..Timeouts::default()
    });
    busy.retries = Some(Retries {
        attempts: 0,
        ..Retries::default()
    });
    w.model("ordered").limits = Some(limits(1, 1, secs(20), 100.0));
    let cfg = w.write(&dir);
    let _sim = sim(&b1, "b1", "busy", "v1", &[]);
    let _ordered = sim(&o1, "o1", "ordered", "v1", &["--latency", "1ms"]);
    // Client threads outlive this frame as far as the compiler knows.
    let (public, admin): (&'static str, &'static str) = (gw.public.leak(), gw.admin.leak());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();
    let metric = |name: &str| -> f64 {
        let text = c.get(format!("http://{admin}/metrics")).send().unwrap().text().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    // Two requests hold both slots (the backend hangs).
    sim_control(&b1, json!({"hang": true}));
    let holders: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || infer(&client(), public, "/v2/models/busy/infer", &[]).status))
        .collect();
    wait_until("both slots taken", Duration::from_secs(10), || {
        endpoint(admin, "b1")["in_flight"] == 2
    });

    // Sheddable: refused at once with 429 and Retry-After.
    let r = c
        .post(format!("http://{public}/v2/models/busy/infer"))
        .header("x-priority", "sheddable")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    // Standard: waits in the queue, then 503 at the deadline.
    let queued = std::thread::spawn(move || {
        let r = client()
            .post(format!("http://{public}/v2/models/busy/infer"))
            .body("{}")
            .send()
            .unwrap();
        (r.status().as_u16(), r.headers().get("retry-after").is_some())
    });
    wait_until("one request queued", Duration::from_secs(10), || {
        metric(r#"meridian_queue_waiting{model_name="busy"} "#) == 1.0
    });
    // The queue (size 1) is full: the next standard request is refused with 429.
    assert_eq!(infer(&c, public, "/v2/models/busy/infer", &[]).status, 429);
    assert_eq!(queued.join().unwrap(), (503, true));
    assert_eq!(
        metric(r#"meridian_shed_total{model_name="busy",priority="sheddable",reason="low_priority"} "#),
        1.0
    );
    assert_eq!(
        metric(r#"meridian_shed_total{model_name="busy",priority="standard",reason="queue_full"} "#),
        1.0
    );
    assert_eq!(
        metric(r#"meridian_shed_total{model_name="busy",priority="standard",reason="queue_deadline"} "#),
        1.0
    );
    // The two holders stay hung until the harness stops the processes.
    drop(holders);

    // Order: with one slot held by a token stream, a sheddable, a critical and a standard request
    // arrive. The queue holds one, critical waits past it, standard displaces sheddable; when the
    // slot frees, critical goes first, then standard.
    sim_control(&o1, json!({"stream_gate": true}));
    let mut stream = c
        .post(format!("http://{public}/v2/models/ordered/generate_stream"))
        .body("{}")
        .send()
        .unwrap();
    first_event(&mut stream);
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Each class's request carries its own trace id, so the gateway's access log (written before a
    // request gives its slot up) shows the order they were served in.
    let trace = |class: &str| {
        let digit = ["critical", "standard", "sheddable"]
            .iter()
            .position(|c| *c == class)
            .unwrap_or(3)
            + 1;
        format!("{digit:0>32}")
    };
    let send = |class: &'static str| {
        let done = done.clone();
        let traceparent = format!("00-{}-00f067aa0ba902b7-01", trace(class));
        std::thread::spawn(move || {
            let r = client()
                .post(format!("http://{public}/v2/models/ordered/infer"))
                .header("x-priority", class)
                .header("traceparent", traceparent)
                .body("{}")
                .send()
                .unwrap();
            done.lock().unwrap().push((class, r.status().as_u16()));
        })
    };
    let waiting = |n: f64| {
        wait_until("queue length", Duration::from_secs(10), || {
            metric(r#"meridian_queue_waiting{model_name="ordered"} "#) == n
        })
    };
    let sheddable = send("sheddable");
    waiting(1.0);
    let critical = send("critical");
    waiting(2.0);
    let standard = send("standard");
    sheddable.join().unwrap();
    assert_eq!(
        *done.lock().unwrap(),
        [("sheddable", 429)],
        "displaced by the standard request"
    );
    waiting(2.0);
    sim_control(&o1, json!({"stream_gate": false}));
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    critical.join().unwrap();
    standard.join().unwrap();
    let mut outcomes = done.lock().unwrap().clone();
    outcomes.sort();
    assert_eq!(outcomes, [("critical", 200), ("sheddable", 429), ("standard", 200)]);
    let log = cfg.with_extension("r.out");
    let served = || -> Vec<&'static str> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"status\":200"))
            .filter_map(|l| ["critical", "standard"].into_iter().find(|c| l.contains(&trace(c))))
            .collect()
    };
    wait_until("both served requests logged", Duration::from_secs(10), || {
        served().len() == 2
    });
    assert_eq!(served(), ["critical", "standard"], "critical goes first");
    assert_eq!(
        metric(r#"meridian_shed_total{model_name="ordered",priority="sheddable",reason="displaced"} "#),
        1.0
    );
}

#[test]
fn openai_requests_route_by_the_body_model() {
    let dir = scratch("openai");
    let mut w = World::new(93);
    let gw = w.gateway("r", &["r-a"]);
    let l1 = w.backend("llama", "v1", "l1", "r", "r-a");
    let m1 = w.backend("mistral", "v1", "m1", "r", "r-a");
    let cfg = w.write(&dir);
    let _l = sim(&l1, "l1", "llama", "v1", &[]);
    let _m = sim(&m1, "m1", "mistral", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();
    let post = |body: String| {
        c.post(format!("http://{public}/v1/chat/completions"))
            .body(body)
            .send()
            .unwrap()
    };

    // The model picks the backend; the whole body still reaches it (the peek loses nothing).
    let body = r#"{"model":"llama","messages":[{"role":"user","content":"hi"}]}"#.to_string();
    let r = post(body.clone());
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (v["served_by"].as_str(), v["request_bytes"].as_u64()),
        (Some("l1"), Some(body.len() as u64))
    );
    // `model` last, after 20KB of messages, arriving in several chunks.
    let late = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}],"model":"mistral"}}"#,
        "x".repeat(20_000)
    );
    let r = post(late.clone());
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (v["served_by"].as_str(), v["request_bytes"].as_u64()),
        (Some("m1"), Some(late.len() as u64))
    );
    // Streaming chat completions pass through as SSE.
    let r = post(r#"{"model":"llama","stream":true,"messages":[]}"#.into());
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(r.text().unwrap().trim_end().ends_with("data: [DONE]"));
    // Errors: unknown model 404, no model 400, not JSON 400, model beyond the peek window 400.
    assert_eq!(post(r#"{"model":"gpt-9"}"#.into()).status(), 404);
    assert_eq!(post(r#"{"messages":[]}"#.into()).status(), 400);
    assert_eq!(post("nonsense".into()).status(), 400);
    let far = format!(r#"{{"messages":["{}"],"model":"llama"}}"#, "y".repeat(70_000));
    let r = post(far);
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().unwrap();
    assert!(e["error"].as_str().unwrap().contains("first 64KiB"), "{e}");
}

/// TLS to backends, verified against the configured CA and server name, over HTTP/1.1 and h2;
/// a backend whose certificate does not match is never used (health checks verify it too).
#[test]
fn upstream_tls_verifies_backends_against_the_configured_ca() {
    let dir = scratch("upstream-tls");
    let pki = test_pki(&dir);
    let tls = pki.to_str().unwrap();
    let mut w = World::new(98);
    let gw = w.gateway("r", &["r-a"]);
    w.config.gateway.retries.attempts = 0;
    let upstream = |h2: bool, name: &str| Upstream {
        h2,
        tls: Some(UpstreamTls {
            ca: Some(pki.join("ca.pem")),
            server_name: Some(name.into()),
        }),
    };
    let mut backend = |model: &str, version: &str, id: &str, up: Upstream| {
        let at = w.backend_on(model, version, id, "r", "r-a", 8443);
        w.version(model, version).upstream = up;
        at
    };
    let t1 = backend("secure", "v1", "t1", upstream(false, "api.example.com"));
    let t2 = backend("secure", "v2", "t2", upstream(true, "api.example.com"));
    let t3 = backend("secure", "v3", "t3", upstream(false, "impostor.example.org"));
    let t4 = backend("impostor", "v1", "t4", upstream(false, "impostor.example.org"));
    w.route("secure", pin("v1"));
    w.model("impostor").health_check = Some(HealthCheck {
        enabled: false,
        ..HealthCheck::default()
    });
    let cfg = w.write(&dir);
    let (cert, key) = (format!("{tls}/api.pem"), format!("{tls}/api.key"));
    let tls_args = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let _s1 = sim(&t1, "t1", "secure", "v1", &tls_args);
    let _s2 = sim(&t2, "t2", "secure", "v2", &tls_args);
    let _s3 = sim(&t3, "t3", "secure", "v3", &tls_args);
    let _s4 = sim(&t4, "t4", "impostor", "v1", &tls_args);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();

    let a = infer(&c, public, "/v2/models/secure/infer", &[]);
    assert_eq!((a.status, a.served_by.as_str()), (200, "t1"), "{:?}", a.body);
    assert_eq!(a.body["protocol"], "HTTP/1.1");
    let a = infer(&c, public, "/v2/models/secure/versions/v2/infer", &[]);
    assert_eq!((a.status, a.served_by.as_str()), (200, "t2"), "{:?}", a.body);
    assert_eq!(a.body["protocol"], "HTTP/2.0");
    // The v3 backend's certificate is not for the configured name: its health checks fail, and
    // the proxy (trying it anyway in panic mode, as its level has no healthy endpoint) refuses
    // the handshake: 502, never the backend's answer.
    assert_eq!(endpoint(admin, "t3")["healthy"], false);
    assert_eq!(endpoint(admin, "t1")["healthy"], true);
    let a = infer(&c, public, "/v2/models/secure/versions/v3/infer", &[]);
    assert_eq!((a.status, a.served_by.as_str()), (502, ""), "{:?}", a.body);
    // Without health checks, the same: the handshake fails.
    let a = infer(&c, public, "/v2/models/impostor/infer", &[]);
    assert_eq!(a.status, 502, "{:?}", a.body);
    assert_eq!(a.served_by, "", "{:?}", a.body);
}

/// What `openssl s_client` makes of a handshake at one TLS version: true when it completed.
fn openssl_handshake(addr: &str, version_flag: &str) -> bool {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-servername",
            "api.example.com",
            version_flag,
        ])
        // OpenSSL 3 will not even offer TLS 1.0/1.1 above security level 0.
        .args(["-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client (Debian package openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Cipher is ") && !text.contains("Cipher is (NONE)")
}

/// TLS 1.0/1.1 never complete, `min_version: "1.3"` refuses 1.2, and certificate files renewed
/// on disk (no config change) are picked up, while a broken file leaves the old one serving.
#[test]
fn tls_versions_and_certificates_renewed_on_disk() {
    let dir = scratch("tls-renew");
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let examples = test_pki(&pki).to_str().unwrap().to_string();
    let copy = |from: &str, to: &str| {
        let tmp = dir.join(format!("{to}.tmp"));
        std::fs::copy(format!("{examples}/{from}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(to)).unwrap();
    };
    copy("api.pem", "live.pem");
    copy("api.key", "live.key");
    let mut w = World::new(99);
    let gw = w.gateway("r", &["r-a"]);
    let (modern, default) = (format!("{}:8443", gw.ip), format!("{}:8444", gw.ip));
    let live_files = [(
        &["api.example.com", "other.example.com"][..],
        "live.pem".into(),
        "live.key".into(),
    )];
    let mut tls13 = tls_listener("modern", &modern, &live_files);
    tls13.tls.as_mut().unwrap().min_version = TlsVersion::Tls13;
    let listeners = &mut w.gateway_of("r").listeners;
    listeners.insert(0, tls_listener("default", &default, &live_files));
    listeners.insert(0, tls13);
    let t1 = w.backend("llm", "v1", "t1", "r", "r-a");
    let cfg = w.write(&dir);
    let _sim = sim(&t1, "t1", "llm", "v1", &[]);
    let _gw = gateway(&cfg, "r", None, &gw.admin, &gw.public);

    for (addr, v1_2) in [(modern.as_str(), false), (default.as_str(), true)] {
        assert!(!openssl_handshake(addr, "-tls1"), "{addr}: TLS 1.0 must be refused");
        assert!(!openssl_handshake(addr, "-tls1_1"), "{addr}: TLS 1.1 must be refused");
        assert_eq!(openssl_handshake(addr, "-tls1_2"), v1_2, "{addr}: TLS 1.2");
        assert!(openssl_handshake(addr, "-tls1_3"), "{addr}: TLS 1.3");
    }

    let ca = reqwest::Certificate::from_pem(&std::fs::read(format!("{examples}/ca.pem")).unwrap()).unwrap();
    let live = |host: &str| {
        reqwest::blocking::Client::builder()
            .add_root_certificate(ca.clone())
            .resolve(host, modern.parse().unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
            .get(format!("https://{host}:8443/v2/health/live"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    };
    // The api.example.com certificate is served; other.example.com is not in it.
    assert!(live("api.example.com"));
    assert!(!live("other.example.com"));
    // Renewed on disk as cert-manager or a mounted Secret would (atomic renames): the new
    // certificate serves without a reload request.
    copy("other.key", "live.key");
    copy("other.pem", "live.pem");
    wait_until("renewed certificate served", Duration::from_secs(20), || {
        live("other.example.com")
    });
    assert!(!live("api.example.com"));
    // A broken renewal is refused; the last good certificate keeps serving.
    std::fs::write(dir.join("live.pem"), "not a certificate").unwrap();
    let log = cfg.with_extension("r.log");
    wait_until("broken certificate refused", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("certificates not reloaded"))
    });
    assert!(live("other.example.com"));
}

/// A client connection with nothing in progress for `timeouts.keepalive` is closed: HTTP/1
/// after its last response, HTTP/2 with a GOAWAY naming the last stream served. One with a
/// request in progress is not idle, however long the request takes.
#[test]
fn idle_connections_close_after_the_keepalive() {
    use std::io::Write;
    let dir = scratch("keepalive");
    let mut w = World::new(129);
    let gw = w.gateway("r", &["r-a"]);
    w.gateway_of("r").listeners[0].protocols = vec![Protocol::Http1, Protocol::H2c];
    w.config.gateway.timeouts.keepalive = secs(1);
    let s1 = w.backend("llm", "v1", "s1", "r", "r-a");
    let cfg = w.write(&dir);
    let _sim = sim(&s1, "s1", "llm", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let connect = || {
        let s = std::net::TcpStream::connect(public).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };

    // HTTP/1: two requests on one connection (kept alive), then the gateway closes it.
    let mut h1 = connect();
    let mut answers = String::new();
    for _ in 0..2 {
        h1.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = h1.read(&mut buf).unwrap();
        answers.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(answers.matches("HTTP/1.1 200 ").count(), 2, "{answers}");
    let mut rest = Vec::new();
    h1.read_to_end(&mut rest).expect("closed by the gateway, not timed out");
    assert!(rest.is_empty(), "{rest:?}");

    // HTTP/1 on pingora's leg (a chunked body is handed to it): the same keep-alive, not pingora's.
    let mut handed = connect();
    handed
        .write_all(
            b"POST /v2/models/llm/infer HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n\
              d\r\n{\"inputs\":[]}\r\n0\r\n\r\n",
        )
        .unwrap();
    let mut answer = Vec::new();
    handed
        .read_to_end(&mut answer)
        .expect("closed by the gateway, not timed out");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.contains("\"served_by\":\"s1\""),
        "{answer}"
    );

    // HTTP/2: a token stream held open past the keep-alive is not cut (its connection is busy).
    sim_control(&s1, json!({"stream_gate": true}));
    let h2c = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut resp = h2c
        .post(format!("http://{public}/v2/models/llm/generate_stream"))
        .body("{}")
        .send()
        .unwrap();
    first_event(&mut resp);
    // Not a synchronisation: the keep-alive (1s) has to pass with the stream open.
    std::thread::sleep(Duration::from_secs(3));
    sim_control(&s1, json!({"stream_gate": false}));
    let mut tokens = String::new();
    resp.read_to_string(&mut tokens).unwrap();
    assert!(tokens.trim_end().ends_with("data: [DONE]"), "{tokens}");

    // HTTP/2: one stream (GET /v2/health/live, HPACK literals), its answer, then GOAWAY with
    // no error and stream 1 as the last served, then the close.
    let mut h2 = connect();
    h2.write_all(H2_CLIENT_START).unwrap();
    let path = b"/v2/health/live";
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, 0x02, b'g', b'w']);
    let mut headers = vec![0, 0, block.len() as u8, FRAME_HEADERS, 0x5, 0, 0, 0, 1];
    headers.extend_from_slice(&block);
    h2.write_all(&headers).unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = next_frame(&mut h2) {
        frames.push(frame);
    }
    let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
    assert!(kinds.contains(&FRAME_HEADERS), "no answer: {kinds:?}");
    let goaway = frames
        .iter()
        .find(|f| f.0 == FRAME_GOAWAY)
        .expect("closed without GOAWAY");
    assert_eq!(goaway.1[..8], [0, 0, 0, 1, 0, 0, 0, 0], "last stream 1, NO_ERROR");
}
