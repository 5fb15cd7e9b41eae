//! Gateway observability end to end: exact Prometheus counts after real traffic, promtool's lint,
//! and JSON access log lines.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use meridian_config::schema::LogFormat;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[test]
fn metrics_count_every_request_and_pass_promtool() {
    let dir = scratch("metrics");
    let mut w = World::new(60);
    let gw = w.gateway("r", &["r-a"]);
    let at = w.backend("iris", "v1", "iris-a", "r", "r-a");
    w.config.observability.access_log.format = LogFormat::Json;
    let cfg = w.write(&dir);
    let _sim = sim(&at, "iris-a", "iris", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let c = client();
    for _ in 0..37 {
        assert_eq!(infer(&c, public, "/v2/models/iris/infer", &[]).status, 200);
    }
    for i in 0..5 {
        assert_eq!(
            infer(&c, public, &format!("/v2/models/no-such-{i}/infer"), &[]).status,
            404
        );
    }
    for _ in 0..3 {
        assert_eq!(infer(&c, public, "/v2/models/iris/versions/v9/infer", &[]).status, 404);
    }
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        infer(&c, public, "/v2/models/iris/infer", &[("traceparent", tp)]).status,
        200
    );

    let text = c.get(format!("http://{admin}/metrics")).send().unwrap().text().unwrap();
    let ok = r#"inference_requests_total{model_name="iris",model_version="v1",status="200"}"#;
    assert_eq!(value(&text, ok), Some(38.0), "{text}");
    assert_eq!(
        value(
            &text,
            r#"inference_requests_total{model_name="unknown",model_version="",status="404"}"#
        ),
        Some(5.0),
        "unknown models share one label value"
    );
    assert_eq!(
        value(
            &text,
            r#"inference_requests_total{model_name="iris",model_version="",status="404"}"#
        ),
        Some(3.0)
    );
    assert!(!text.contains("no-such"), "client-chosen names never become labels");
    assert_eq!(
        value(
            &text,
            r#"inference_latency_seconds_count{model_name="iris",model_version="v1"}"#
        ),
        Some(38.0)
    );
    let les: BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with("inference_latency_seconds_bucket{") && l.contains(r#"model_version="v1""#))
        .filter_map(|l| {
            l.split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        })
        .collect();
    let want: BTreeSet<String> = [
        "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(les, want, "the buckets dashboards rely on");
    assert_eq!(
        value(
            &text,
            r#"inference_latency_seconds_bucket{model_name="iris",model_version="v1",le="+Inf"}"#
        ),
        Some(38.0)
    );
    assert_eq!(
        value(
            &text,
            r#"meridian_upstream_attempts_total{endpoint="iris-a",model_name="iris",model_version="v1",outcome="success"}"#
        ),
        Some(38.0)
    );
    assert_eq!(
        value(
            &text,
            r#"meridian_endpoint_state{endpoint="iris-a",locality="region",model_name="iris",model_version="v1",state="healthy"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "meridian_config_generation"), Some(1.0));

    // promtool's lint of the exposition (naming, types, units).
    assert_promtool_accepts("the gateway's metrics", &text);

    // One JSON access log line per request, with the trace id when the client sent one.
    let log = cfg.with_extension("r.out");
    wait_until("access log lines", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with('{'))
            .count()
            >= 46
    });
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/v2/models/")))
        .collect();
    assert_eq!(
        lines.len(),
        46,
        "one line per model request (the harness's health probes are logged too)"
    );
    let traced = lines
        .iter()
        .find(|l| l["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736")
        .expect("traced line");
    assert_eq!(traced["model"], "iris");
    assert_eq!(traced["version"], "v1");
    assert_eq!(traced["endpoint"], "iris-a");
    assert_eq!(traced["locality"], "region");
    assert_eq!(traced["status"], 200);
    assert_eq!(traced["bytes_in"], 13);
    assert!(traced["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(lines.iter().filter(|l| l["status"] == 404).count(), 8);
}
