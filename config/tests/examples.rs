//! The shipped examples load, compile, express every capability, and satisfy the JSON Schema.

use std::path::{Path, PathBuf};

use meridian_config::schema::{GslbPolicy, RecordType};
use meridian_config::{json_schema, load_file, Snapshot};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

#[test]
fn examples_load_and_compile() {
    for name in ["single-region.yaml", "multi-region.yaml"] {
        let snap = Snapshot::load(&example(name)).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert!(!snap.models.is_empty());
        let m = snap.model("sklearn-iris").expect("sklearn-iris is in every example");
        assert!(
            !snap.models[m].routes.is_empty(),
            "every model compiles to at least one rule"
        );
    }
}

#[test]
fn the_full_example_uses_every_capability() {
    let c = load_file(&example("multi-region.yaml")).unwrap().config;
    let gws: Vec<_> = c.regions.iter().filter_map(|r| r.gateway.as_ref()).collect();
    assert!(c.regions.len() >= 2 && c.regions.iter().all(|r| !r.failover.is_empty() && r.location.is_some()));
    assert!(gws.iter().any(|g| g
        .listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()))));
    assert!(gws.iter().any(|g| g.admin.token.is_some()));
    let routes: Vec<_> = c.models.iter().flat_map(|m| &m.routes).collect();
    let headers: Vec<_> = routes
        .iter()
        .filter_map(|r| r.matches.as_ref())
        .flat_map(|m| &m.headers)
        .collect();
    assert!(
        headers.iter().any(|h| h.exact.is_some())
            && headers.iter().any(|h| h.prefix.is_some())
            && headers.iter().any(|h| h.regex.is_some())
    );
    assert!(routes
        .iter()
        .any(|r| !r.split.is_empty() && r.sticky.is_some() && r.shadow.is_some()));
    assert!(routes.iter().any(|r| r.priority.is_some()));
    let versions: Vec<_> = c.models.iter().flat_map(|m| &m.versions).collect();
    assert!(
        versions.iter().any(|v| v.discovery.is_some())
            && versions.iter().any(|v| v.upstream.tls.is_some() && v.upstream.h2)
    );
    assert!(c
        .models
        .iter()
        .any(|m| m.outlier_detection.is_some() && m.health_check.is_none()));
    assert!(c
        .models
        .iter()
        .any(|m| m.timeouts.is_some() && m.retries.is_some() && m.limits.is_some()));
    assert!(c.models.iter().any(|m| m.health_check.is_some()));
    let dns = c.dns.as_ref().unwrap();
    for p in [
        GslbPolicy::Failover,
        GslbPolicy::Weighted,
        GslbPolicy::Nearest,
        GslbPolicy::AllHealthy,
    ] {
        assert!(dns.gslb.iter().any(|g| g.policy == p), "{p:?}");
    }
    for t in [
        RecordType::A,
        RecordType::Aaaa,
        RecordType::Cname,
        RecordType::Txt,
        RecordType::Mx,
    ] {
        assert!(dns.zones.iter().flat_map(|z| &z.records).any(|r| r.kind == t), "{t:?}");
    }
    assert!(!dns.cidr_map.is_empty() && c.canaries.iter().any(|p| p.analysis.p99_latency.is_some()));
    assert!(c.control.kubernetes.is_some() && c.control.state_file.is_some());
    assert!(c.observability.tracing.otlp_endpoint.is_some());
}

#[test]
fn defaults_are_the_anchor_defaults() {
    let c = load_file(&example("single-region.yaml")).unwrap().config;
    let g = &c.gateway;
    assert_eq!(g.locality.overprovisioning_factor, 1.4);
    assert_eq!(g.locality.panic_threshold, 50.0);
    assert_eq!(g.outlier_detection.consecutive_5xx, 3);
    assert_eq!(g.outlier_detection.interval.get().as_secs(), 10);
    assert_eq!(g.outlier_detection.base_ejection_time.get().as_secs(), 30);
    assert_eq!(g.outlier_detection.max_ejection_time.get().as_secs(), 300);
    assert_eq!(g.outlier_detection.max_ejection_percent, 50.0);
    assert_eq!(g.outlier_detection.success_rate.stdev_factor, 1.9);
    assert_eq!(g.outlier_detection.success_rate.minimum_hosts, 5);
    assert_eq!(g.outlier_detection.success_rate.request_volume, 100);
    assert_eq!(g.health_check.path, "/v2/health/ready");
    assert_eq!(g.retries.budget_percent, 20.0);
    assert_eq!(g.retries.min_concurrent, 3);
    assert_eq!(g.limits.per_endpoint_concurrency, 1000);
}

#[test]
fn the_json_schema_accepts_the_examples_and_rejects_a_typo() {
    let schema = json_schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
    for name in ["single-region.yaml", "multi-region.yaml"] {
        let text = std::fs::read_to_string(example(name)).unwrap();
        let doc = meridian_config::source::Document::parse(&text).unwrap();
        let errs: Vec<_> = validator
            .iter_errors(&doc.value)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect();
        assert!(errs.is_empty(), "{name}: {errs:?}");
    }
    let bad = serde_json::json!({"regions": [{"name": "a", "zones": ["z"], "falover": []}]});
    assert!(!validator.is_valid(&bad), "an unknown key must fail the schema");
}

#[test]
fn secrets_are_redacted_when_shown() {
    let c = load_file(&example("multi-region.yaml")).unwrap().config;
    let shown = serde_json::to_string(&c).unwrap();
    assert!(!shown.contains("change-me") && shown.contains("<redacted>"));
}

#[test]
fn every_example_writes_back_as_yaml_that_loads_to_the_same_config() {
    for name in ["single-region.yaml", "multi-region.yaml"] {
        let path = example(name);
        let first = load_file(&path).unwrap().config;
        let text = meridian_config::to_yaml(&first);
        let again = meridian_config::load_str(&text, name, path.parent().unwrap())
            .unwrap_or_else(|e| panic!("{name} written back:\n{e}\n{text}"))
            .config;
        assert_eq!(meridian_config::to_yaml(&again), text, "{name}");
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&first).unwrap(),
            "{name}"
        );
    }
}
