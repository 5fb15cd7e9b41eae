//! `meridian check` and `meridian schema` through the real binary: exit codes and exact output.

use std::process::Command;

fn meridian() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
}

#[test]
fn check_accepts_the_examples_with_a_summary() {
    for (file, summary) in [
        (
            "config/examples/single-region.yaml",
            "ok (1 region, 1 model, 1 version, 2 static endpoints, 0 canary plans)",
        ),
        (
            "config/examples/multi-region.yaml",
            "ok (2 regions, 3 models, 4 versions, 6 static endpoints, 1 DNS zone, 4 GSLB names, 1 canary plan)",
        ),
    ] {
        let out = meridian().arg("check").arg(file).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{file}: {summary}")
        );
    }
}

#[test]
fn check_prints_every_error_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("meridian-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "regions:\n  - name: a\n    zones: [a1]\n    failover: [b]\nmodels:\n  - name: m\n    versions:\n      - name: v1\n        endpoints:\n          - { address: 127.0.0.1:1, region: a, zone: a2 }\n",
    )
    .unwrap();
    let out = meridian().arg("check").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let f = file.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{f}:4:16: regions[0].failover[0]: unknown region `b` (regions: a)\n\
             {f}:10:54: models[0].versions[0].endpoints[0].zone: zone `a2` is not in region `a` (zones: a1)\n"
        )
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), format!("{f}: 2 errors"));
    let missing = meridian().arg("check").arg(dir.join("nope.yaml")).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("nope.yaml:1:1: .: cannot read config file"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn schema_is_json_with_the_top_level_sections() {
    let out = meridian().arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "regions",
        "gateway",
        "models",
        "dns",
        "control",
        "canaries",
        "observability",
    ] {
        assert!(v["properties"][key].is_object(), "schema lacks {key}");
    }
    assert_eq!(v["required"], serde_json::json!(["regions"]));
}
