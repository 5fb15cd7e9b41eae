//! The alerting and dashboard assets: the PrometheusRule's rules pass `promtool check rules` and
//! every alert's `promtool test rules` case, and the dashboard only queries metrics that Meridian
//! emits (or the GPU exporters' documented names).

use std::path::Path;
use std::process::Command;

fn dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/multi-region/observability"
    ))
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    meridian_config::source::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .value
}

fn promtool(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool (Debian package prometheus) must be installed; make test installs it");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let rule = yaml(&dir().join("prometheusrule.yaml"));
    assert_eq!(rule["kind"], "PrometheusRule");
    let work = std::env::temp_dir().join(format!("meridian-rules-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    // JSON is YAML: the PrometheusRule's spec is exactly a Prometheus rule file.
    std::fs::write(
        work.join("meridian.rules.yaml"),
        serde_json::to_string_pretty(&rule["spec"]).unwrap(),
    )
    .unwrap();
    std::fs::copy(dir().join("alerts.test.yaml"), work.join("alerts.test.yaml")).unwrap();
    let checked = promtool(&["check", "rules", "meridian.rules.yaml"], &work);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    promtool(&["test", "rules", "alerts.test.yaml"], &work);
    // Every alert has at least one unit test case.
    let tests = std::fs::read_to_string(work.join("alerts.test.yaml")).unwrap();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "alert {name} has no promtool test"
            );
        }
    }
    std::fs::remove_dir_all(&work).ok();
}

#[test]
fn the_dashboard_queries_only_known_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("meridian-dashboard.json")).unwrap()).unwrap();
    let known = [
        // Meridian's own (gateway, DNS; canary and state-feed metrics come with issue 7).
        "inference_requests_total",
        "inference_latency_seconds_bucket",
        "meridian_endpoint_gpu_headroom",
        "meridian_endpoint_ejections_total",
        "meridian_endpoint_state",
        "meridian_locality_level_share",
        "meridian_dns_region_healthy",
        "meridian_retries_total",
        "meridian_canary_weight",
        // GPU exporters.
        "nv_gpu_utilization",
        "DCGM_FI_DEV_GPU_UTIL",
    ];
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 7);
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| {
                    w.starts_with("inference_")
                        || w.starts_with("meridian_")
                        || w.starts_with("nv_")
                        || w.starts_with("DCGM_")
                })
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                assert!(known.contains(&n), "panel {:?} queries unknown metric {n}", p["title"]);
            }
        }
    }
    for title in [
        "Requests per second by model",
        "p99 latency by model",
        "Error rate (5xx) by model",
        "GPU utilization",
        "Ejections",
        "Region health (DNS view)",
        "Canary weights",
    ] {
        assert!(panels.iter().any(|p| p["title"] == title), "missing panel {title}");
    }
}
