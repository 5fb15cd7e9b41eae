//! The alerting, dashboard and autoscaling assets: the PrometheusRule's rules pass `promtool check
//! rules` and every alert's `promtool test rules` case, the dashboard only queries metrics that
//! Meridian emits (or the GPU exporters' documented names), and the KEDA ScaledObject and the
//! prometheus-adapter rules behind the GPU HPA hold valid PromQL over known metrics and point at
//! workloads and versions the shipped config has. (kubernetes-validate checks the HPA and the
//! ConfigMap with every other manifest; KEDA's CRD is not in its schemas, so its fields are
//! checked here.)

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

/// Metrics the autoscaling assets may query: Meridian's demand signals and the servers' and GPU
/// exporters' documented names.
const SCALING_SIGNALS: [&str; 4] = [
    "meridian_version_concurrency",
    "meridian_activation_held",
    "nv_inference_pending_request_count",
    "DCGM_FI_DEV_GPU_UTIL",
];

/// Checks `queries` with `promtool check rules` (as recording rules) and that each reads one of
/// [`SCALING_SIGNALS`].
fn check_promql(queries: &[String]) {
    for q in queries {
        assert!(
            SCALING_SIGNALS.iter().any(|m| q.contains(m)),
            "{q} reads no known signal"
        );
    }
    let rules: Vec<_> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("meridian:autoscaling_query_{i}"), "expr": q}))
        .collect();
    let work = std::env::temp_dir().join(format!("meridian-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let file = serde_json::json!({"groups": [{"name": "autoscaling", "rules": rules}]});
    std::fs::write(work.join("queries.yaml"), file.to_string()).unwrap();
    let out = promtool(&["check", "rules", "queries.yaml"], &work);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
    std::fs::remove_dir_all(&work).ok();
}

#[test]
fn the_autoscaling_assets_query_known_signals_of_shipped_versions() {
    let scaling = dir().join("../autoscaling");
    let config = yaml(&dir().join("../base/meridian.yaml"));
    // KEDA: each trigger a Prometheus query of a version the config ships, scaling its Deployment.
    let so = yaml(&scaling.join("keda-scaledobject.yaml"));
    assert_eq!(
        (so["apiVersion"].as_str(), so["kind"].as_str()),
        (Some("keda.sh/v1alpha1"), Some("ScaledObject"))
    );
    let target = &so["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    let discovered: Vec<(String, String, String)> = config["models"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| {
            m["versions"].as_array().unwrap().iter().map(move |v| {
                let k = &v["discovery"]["kubernetes"];
                (
                    m["name"].as_str().unwrap().to_string(),
                    v["name"].as_str().unwrap().to_string(),
                    k["service"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect();
    let (model, version, _) = discovered
        .iter()
        .find(|(_, _, svc)| target["name"] == svc.as_str())
        .expect("the ScaledObject scales the Deployment of a shipped version");
    assert_eq!(so["metadata"]["namespace"], "models");
    let mut queries = Vec::new();
    for t in so["spec"]["triggers"].as_array().unwrap() {
        assert_eq!(t["type"], "prometheus");
        let md = &t["metadata"];
        assert!(md["serverAddress"].as_str().unwrap().starts_with("http"));
        assert!(
            md["threshold"].as_str().unwrap().parse::<f64>().is_ok(),
            "KEDA wants a quoted number"
        );
        queries.push(md["query"].as_str().unwrap().to_string());
    }
    assert!(
        queries[0].contains(&format!("model_name=\"{model}\",model_version=\"{version}\"")),
        "{}",
        queries[0]
    );
    // prometheus-adapter: its rule's queries, templates filled in, and the HPA asks for its metric.
    let cm = yaml(&scaling.join("prometheus-adapter-rules.yaml"));
    let rules = meridian_config::source::Document::parse(cm["data"]["config.yaml"].as_str().unwrap())
        .unwrap()
        .value;
    let rule = &rules["rules"][0];
    let filled = rule["metricsQuery"]
        .as_str()
        .unwrap()
        .replace("<<.Series>>", "DCGM_FI_DEV_GPU_UTIL")
        .replace("<<.LabelMatchers>>", "namespace=\"models\",pod=\"p\"")
        .replace("<<.GroupBy>>", "pod");
    queries.push(rule["seriesQuery"].as_str().unwrap().to_string());
    queries.push(filled);
    check_promql(&queries);
    let hpa = yaml(&scaling.join("hpa-gpu-utilization.yaml"));
    assert_eq!(hpa["spec"]["metrics"][0]["pods"]["metric"]["name"], rule["name"]["as"]);
    assert!(discovered
        .iter()
        .any(|(_, _, svc)| hpa["spec"]["scaleTargetRef"]["name"] == svc.as_str()));
}
