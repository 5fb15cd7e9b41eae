//! Stopping and replacing a gateway without losing requests: SIGTERM lets a token stream in
//! progress finish while new connections are refused; `--upgrade` hands the listening sockets to
//! a new process under load with no failed request.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use meridian_config::schema::Protocol;
use serde_json::{json, Value};

/// One gateway with a minute of shutdown grace and one backend.
fn world(net: u8) -> (World, Gw, String) {
    let mut w = World::new(net);
    let gw = w.gateway("r", &["r-a"]);
    w.gateway_of("r").shutdown_grace = secs(60);
    let backend = w.backend("llm", "v1", "s1", "r", "r-a");
    (w, gw, backend)
}

fn readyz(admin: &str) -> Option<Value> {
    client().get(format!("http://{admin}/readyz")).send().ok()?.json().ok()
}

#[test]
fn sigterm_lets_a_stream_in_progress_finish() {
    sigterm_with_a_stream_in_progress(96, client());
}

/// Over HTTP/2 the stream's connection stays open until the stream ends, and the gateway exits.
#[test]
fn sigterm_lets_an_http2_stream_in_progress_finish() {
    let h2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    sigterm_with_a_stream_in_progress(128, h2);
}

fn sigterm_with_a_stream_in_progress(net: u8, c: reqwest::blocking::Client) {
    let dir = scratch(&format!("sigterm-{net}"));
    let (mut w, at, backend) = world(net);
    w.gateway_of("r").listeners[0].protocols = vec![Protocol::Http1, Protocol::H2c];
    let cfg = w.write(&dir);
    let (public, admin) = (at.public.as_str(), at.admin.as_str());
    let _sim = sim(&backend, "s1", "llm", "v1", &["--latency", "1ms"]);
    let mut gw = gateway(&cfg, "r", None, admin, public);

    // A token stream held by the backend after its first event.
    sim_control(&backend, json!({"stream_gate": true}));
    let mut resp = c
        .post(format!("http://{public}/v2/models/llm/generate_stream"))
        .body("{}")
        .send()
        .unwrap();
    first_event(&mut resp);
    // An idle HTTP/2 connection, past its handshake.
    let mut idle = TcpStream::connect(public).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    idle.write_all(H2_CLIENT_START).unwrap();
    assert_eq!(next_frame(&mut idle).map(|f| f.0), Some(FRAME_SETTINGS));

    gw.signal("TERM");
    // Draining: readiness turns false, the public listener closes, the process stays up.
    wait_until("readiness reports draining", Duration::from_secs(10), || {
        readyz(admin).is_some_and(|r| r["draining"] == true && r["ready"] == false)
    });
    wait_until("public listener closed", Duration::from_secs(10), || {
        TcpStream::connect(public).is_err()
    });
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the gateway exited with a stream in progress"
    );
    // The idle connection is told to go (GOAWAY) by the stop, not dropped by the exit.
    let mut frames = Vec::new();
    while !frames.contains(&FRAME_GOAWAY) {
        match next_frame(&mut idle) {
            Some((kind, _)) => frames.push(kind),
            None => panic!("closed without GOAWAY after {frames:?}"),
        }
    }
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "GOAWAY came with the exit, not the stop"
    );
    // Told to go, the client closes its idle connection (a stop waits for open ones).
    drop(idle);

    // The stream finishes whole, then the gateway exits on its own, cleanly.
    sim_control(&backend, json!({"stream_gate": false}));
    let mut rest = String::new();
    resp.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("\"token\":7") && rest.trim_end().ends_with("data: [DONE]"),
        "{rest}"
    );
    let mut status = None;
    wait_until("gateway exits after draining", Duration::from_secs(20), || {
        status = gw.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
}

#[test]
fn upgrade_hands_over_the_sockets_under_load_without_a_failed_request() {
    let dir = scratch("upgrade");
    let (w, at, backend) = world(95);
    let cfg = w.write(&dir);
    let (public, admin) = (at.public.as_str(), at.admin.as_str());
    let _sim = sim(&backend, "s1", "llm", "v1", &["--latency", "1ms"]);
    let mut old = gateway(&cfg, "r", None, admin, public);

    let load = Load::start(public, "/v2/models/llm/infer", 4);
    load.wait_for_more(100, "load through the old process");

    let out = std::fs::File::create(dir.join("new.out")).unwrap();
    let err = std::fs::File::create(dir.join("new.log")).unwrap();
    let new = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["gateway", "--config"])
        .arg(&cfg)
        .args(["--region", "r", "--upgrade"])
        .stdout(out)
        .stderr(err)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _new = Proc {
        child: new,
        name: "new gateway".into(),
    };

    // The old process hands its sockets over, drains and exits by itself.
    let mut status = None;
    wait_until("old gateway exits", Duration::from_secs(60), || {
        status = old.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "old gateway: {status:?}");
    load.wait_for_more(200, "load through the new process");
    let (ok, failed) = load.stop();

    // Only the new process is left, and it served the requests after the handover.
    let metrics = scrape(admin);
    let served = metric_sum(&metrics, "inference_requests_total", &["status=\"200\""]);
    assert!(served >= 200.0, "new process served {served}:\n{metrics}");
    println!("upgrade under load: {ok} requests succeeded, {failed} failed");
    assert_eq!(failed, 0, "{ok} succeeded");
}
