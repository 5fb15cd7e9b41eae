//! Stopping and replacing a gateway without losing requests: SIGTERM lets a token stream in
//! progress finish while new connections are refused; `--upgrade` hands the listening sockets to
//! a new process under load with no failed request.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn config(n: u8) -> String {
    format!(
        "
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners: [{{ name: public, address: 127.96.{n}.1:8080 }}]
      admin: {{ address: 127.96.{n}.1:9901 }}
      shutdown_grace: 60s
models:
  - name: llm
    versions: [{{ name: v1, endpoints: [{{ id: s1, address: 127.96.{n}.2:8000, region: r, zone: r-a }}] }}]
"
    )
}

fn readyz(admin: &str) -> Option<Value> {
    client().get(format!("http://{admin}/readyz")).send().ok()?.json().ok()
}

#[test]
fn sigterm_lets_a_stream_in_progress_finish() {
    let dir = scratch("sigterm");
    let cfg = dir.join("meridian.yaml");
    write_config(&cfg, &config(0));
    let (public, admin, backend) = ("127.96.0.1:8080", "127.96.0.1:9901", "127.96.0.2:8000");
    let _sim = sim(backend, "s1", "llm", "v1", &["--latency", "1ms"]);
    let mut gw = gateway(&cfg, "r", None, admin, public);

    // A token stream held by the backend after its first event.
    sim_control(backend, json!({"stream_gate": true}));
    let mut resp = client()
        .post(format!("http://{public}/v2/models/llm/generate_stream"))
        .body("{}")
        .send()
        .unwrap();
    first_event(&mut resp);

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

    // The stream finishes whole, then the gateway exits on its own, cleanly.
    sim_control(backend, json!({"stream_gate": false}));
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
    let cfg = dir.join("meridian.yaml");
    write_config(&cfg, &config(1));
    let (public, admin, backend) = ("127.96.1.1:8080", "127.96.1.1:9901", "127.96.1.2:8000");
    let _sim = sim(backend, "s1", "llm", "v1", &["--latency", "1ms"]);
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
