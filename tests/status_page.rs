//! The operator's view of a running lab: the gateway's and the DNS server's status pages in a real
//! browser (headless Chromium), a drain through the page's own button, and `meridian explain` (CLI
//! and admin `POST /explain`) giving the documented answers for a pin, a header rule, a sticky
//! split key and an unknown model, which real requests then confirm.

mod common;

use std::process::Command;
use std::time::Duration;

use common::browser::Browser;
use common::*;
use serde_json::{json, Value};

const GATEWAY_ADMIN: &str = "127.0.1.1:9901";
const PUBLIC: &str = "127.0.1.1:8080";

#[test]
fn status_pages_and_explain_on_a_running_lab() {
    let out = scratch("status-page");
    let (lab, _, _rest) = lab(&out);
    let _lab = LabGuard(lab);
    let config = out.join("meridian-lab.yaml");
    let c = client();
    for _ in 0..20 {
        assert_eq!(infer(&c, PUBLIC, "/v2/models/sklearn-iris/infer", &[]).status, 200);
    }

    // The gateway's page: both regions, every endpoint the admin API lists, the v1/v2 split.
    let mut page = Browser::open(&format!("http://{GATEWAY_ADMIN}/"), &out.join("chromium"));
    let dom = page.dom();
    for region in ["us-east", "eu-west"] {
        assert!(dom.contains(&format!("<td>{region}</td>")), "region {region} in\n{dom}");
    }
    let ids: Vec<String> = endpoints(GATEWAY_ADMIN)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    for id in &ids {
        assert!(dom.contains(&format!("<td>{id}</td>")), "endpoint {id} in\n{dom}");
    }
    assert!(dom.contains("split v1 90% / v2 10%"), "{dom}");
    assert!(
        dom.contains(">sklearn-iris<") || dom.contains("Model sklearn-iris"),
        "{dom}"
    );

    // Its refresh script runs: it stamps the time of each refresh from /status.json.
    wait_until("the page refreshes itself", Duration::from_secs(20), || {
        page.eval("document.getElementById('updated').textContent")
            .as_str()
            .is_some_and(|t| t.starts_with("updated"))
    });

    // Drain through the page's own button: the gateway drains the endpoint, and the page shows it
    // drained (and offers undrain) without being loaded again.
    let target = "iris-v1-us-east-1a-1";
    let state = format!("document.querySelector('[data-f=\"ep/sklearn-iris/v1/{target}/state\"]').textContent");
    let button = format!("document.querySelector('button[data-post=\"/endpoints/{target}/\"]')");
    assert_eq!(page.eval(&state), json!("available"));
    assert_eq!(page.eval(&format!("{button}.textContent")), json!("drain"));
    page.eval(&format!("{button}.click()"));
    wait_until("the page shows the drain", Duration::from_secs(20), || {
        page.eval(&state) == json!("drained")
    });
    assert_eq!(page.eval(&format!("{button}.textContent")), json!("undrain"));
    assert_eq!(
        endpoint(GATEWAY_ADMIN, target)["drained"],
        json!(true),
        "the gateway drained it"
    );
    // And a fresh load (what --dump-dom sees) agrees.
    page.navigate(&format!("http://{GATEWAY_ADMIN}/"));
    assert_eq!(page.eval(&state), json!("drained"));
    let shot = out.join("status-page.png");
    page.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a screenshot"
    );
    if let Ok(to) = std::env::var("MERIDIAN_SCREENSHOT") {
        std::fs::copy(&shot, to).unwrap();
    }
    page.eval(&format!("{button}.click()"));
    wait_until("undrained", Duration::from_secs(20), || {
        page.eval(&state) == json!("available")
    });

    // Chromium's own --dump-dom of the DNS server's page: both regions up, each region's clients
    // answered with their own region.
    let dump = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", out.join("chromium-dns").display()))
        .arg("http://127.0.0.1:9953/")
        .output()
        .unwrap();
    let dns = String::from_utf8_lossy(&dump.stdout);
    for (region, ip) in [("us-east", "127.0.1.1"), ("eu-west", "127.0.2.1")] {
        assert!(
            dns.contains(&format!(
                "<td>{region}</td><td>{ip}</td><td class=\"good\" data-f=\"region/{region}/health\">up</td>"
            )),
            "{region} up in\n{dns}"
        );
        assert!(
            dns.contains(&format!(">{region} {ip}</td>")),
            "{region}'s clients get {ip}:\n{dns}"
        );
    }

    // The page off loopback holds no state and asks for the token (the lab's admin API has none
    // configured, so only the loopback path is exercised end to end; the unit tests cover the rest).

    // meridian explain on the lab's config: the documented answers.
    let explain = |args: &[&str]| -> Value {
        let o = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["explain", "--json", "--config"])
            .arg(&config)
            .args(["--region", "us-east", "--zone", "us-east-1a"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // A pin: the path's version, no rule tried.
    let pin = explain(&["POST", "/v2/models/sklearn-iris/versions/v2/infer"]);
    assert_eq!(pin["pin"], json!({"version": "v2", "source": "path", "found": true}));
    assert_eq!(pin["rules"], json!([]));
    assert_eq!(pin["outcome"]["version"], "v2");
    // A header rule: rule 0 (premium) matches on x-user-segment.
    let rule = explain(&["POST", "/v2/models/sklearn-iris/infer", "-H", "x-user-segment: premium"]);
    assert_eq!(rule["rules"][0]["matched"], true);
    assert_eq!(rule["rules"][0]["conditions"][0]["values"], json!(["premium"]));
    assert_eq!(
        (rule["outcome"]["version"].as_str(), rule["outcome"]["rule"].as_u64()),
        (Some("v2"), Some(0))
    );
    // A sticky split: rule 0 does not match, rule 1 splits 90/10 on x-user-id; the lowest score
    // wins, and the real gateway sends that key to that version every time.
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let header = format!("x-user-id: {user}");
        let x = explain(&["POST", "/v2/models/sklearn-iris/infer", "-H", &header]);
        assert_eq!(x["rules"][0]["matched"], false);
        assert_eq!(x["rules"][1]["target"], "split v1=90 v2=10");
        let split = &x["split"];
        assert_eq!(split["key_source"], "header x-user-id");
        assert_eq!(split["key"], user);
        let best = split["scores"]
            .as_array()
            .unwrap()
            .iter()
            .min_by(|a, b| a["score"].as_f64().unwrap().total_cmp(&b["score"].as_f64().unwrap()))
            .unwrap();
        assert_eq!(best["version"], split["chosen"]);
        assert_eq!(x["outcome"]["version"], split["chosen"]);
        for _ in 0..3 {
            let a = infer(&c, PUBLIC, "/v2/models/sklearn-iris/infer", &[("x-user-id", user)]);
            assert_eq!(
                json!(a.version),
                split["chosen"],
                "{user}: explain and the gateway agree"
            );
        }
        // The pick is in the gateway's own zone first (level 0 takes everything while it is up).
        assert_eq!(x["levels"][0]["locality"], "zone");
        assert_eq!(x["pick"]["level"], 0);
    }
    // An unknown model: the 404 the gateway answers.
    let unknown = explain(&["POST", "/v2/models/nope/infer"]);
    assert_eq!(
        unknown["outcome"],
        json!({"kind": "refused", "status": 404, "error": "model nope not found"})
    );
    assert_eq!(infer(&c, PUBLIC, "/v2/models/nope/infer", &[]).status, 404);

    // The live gateway's POST /explain: the same answer with its live state (the drained endpoint
    // shows as such, and is not picked).
    let (status, _) = admin_post(GATEWAY_ADMIN, "/endpoints/iris-v1-us-east-1a-1/drain");
    assert_eq!(status, 200);
    let ask = |format: &str, query: Value| {
        let url = format!("http://{GATEWAY_ADMIN}/explain?format={format}");
        c.post(url).json(&query).send().unwrap().text().unwrap()
    };
    let live = |query: Value| -> Value { serde_json::from_str(&ask("json", query)).unwrap() };
    let premium =
        json!({"method": "POST", "path": "/v2/models/sklearn-iris/infer", "headers": {"x-user-segment": "premium"}});
    assert_eq!(live(premium)["outcome"]["version"], "v2");
    let live = live(json!({"method": "POST", "path": "/v2/models/sklearn-iris/versions/v1/infer"}));
    let zone = &live["levels"][0];
    assert_eq!(zone["endpoints"][0]["id"], "iris-v1-us-east-1a-1");
    assert_eq!(zone["endpoints"][0]["out"], json!(["drained"]));
    assert_eq!(zone["endpoints"][0]["usable"], false);
    assert_ne!(live["pick"]["id"], "iris-v1-us-east-1a-1", "{live}");
    let text = ask("text", json!({"method": "POST", "path": "/v2/models/nope/infer"}));
    assert!(text.contains("refused     404 model nope not found"), "{text}");
    let bad = c
        .post(format!("http://{GATEWAY_ADMIN}/explain"))
        .body("{")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().unwrap()["error"]
        .as_str()
        .unwrap()
        .starts_with("explain body"));
}
