//! `meridian lab` end to end: it comes up, its printed commands work, its config passes `meridian
//! check`, and Ctrl-C (SIGINT) stops every part.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_lab_comes_up_serves_and_stops_cleanly() {
    let out = scratch("lab");
    let (lab, text, lines) = lab(&out);
    assert!(text.contains("us-east   gateway http://127.0.1.1:8080"), "{text}");
    assert!(text.contains("dig @127.0.0.1 -p 5353 api.meridian.test"), "{text}");
    assert!(
        text.contains("us-east   gateway  http://127.0.1.1:9901/"),
        "status page URLs: {text}"
    );
    assert!(text.contains("world     DNS      http://127.0.0.1:9953/"), "{text}");
    let c = client();

    // The printed curl commands: v1 by the split, v2 by the premium rule and by a pin.
    let a = infer(&c, "127.0.1.1:8080", "/v2/models/sklearn-iris/infer", &[]);
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(
        a.served_by.contains("us-east-1a"),
        "the gateway's own zone first: {}",
        a.served_by
    );
    assert_eq!(
        infer(
            &c,
            "127.0.1.1:8080",
            "/v2/models/sklearn-iris/infer",
            &[("x-user-segment", "premium")]
        )
        .version,
        "v2"
    );
    assert_eq!(
        infer(&c, "127.0.1.1:8080", "/v2/models/sklearn-iris/versions/v2/infer", &[]).version,
        "v2"
    );
    // eu-west has no v2: its gateway fails over to us-east for it.
    let eu = infer(&c, "127.0.2.1:8080", "/v2/models/sklearn-iris/versions/v2/infer", &[]);
    assert_eq!((eu.status, eu.version.as_str()), (200, "v2"));
    assert!(eu.served_by.contains("us-east"), "{}", eu.served_by);
    let r = c
        .post("http://127.0.1.1:8080/v1/models/sklearn-iris:predict")
        .body(r#"{"instances":[[1,2,3,4]]}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // The printed dig commands: nearest by the client's subnet.
    let dig = |args: &[&str]| {
        let o = Command::new("dig")
            .args(["@127.0.0.1", "-p", "5353", "+short", "+time=2"])
            .args(args)
            .output()
            .expect("dig installed by make test");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(dig(&["api.meridian.test"]), "127.0.1.1");
    assert_eq!(dig(&["-b", "127.0.2.9", "api.meridian.test"]), "127.0.2.1");
    assert_eq!(dig(&["api.meridian.test", "+subnet=127.0.2.0/24"]), "127.0.2.1");

    // Each region's control loop feeds its gateway: the feed's version reaches the gateway.
    assert!(text.contains("state feed http://127.0.1.1:9902/v1/state"), "{text}");
    wait_until(
        "us-east gateway follows its control loop",
        Duration::from_secs(20),
        || metric_sum(&scrape("127.0.1.1:9901"), "meridian_state_feed_version", &[]) >= 1.0,
    );

    // The config it wrote passes `meridian check`.
    let cfg = out.join("meridian-lab.yaml");
    let check = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("check")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // Ctrl-C stops everything: the lab exits 0 and the ports are free again.
    lab.signal("INT");
    let mut lab = lab;
    let status = lab.child.wait().unwrap();
    assert!(status.success(), "lab exit: {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "lab: stopped"), "{rest:?}");
    wait_until("ports freed", Duration::from_secs(10), || {
        std::net::TcpListener::bind("127.0.1.1:8080").is_ok()
    });
}
