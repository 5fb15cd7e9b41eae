//! deploy/multi-region: every Kubernetes manifest validates against the Kubernetes 1.33 schemas
//! offline (kubernetes-validate, strict: unknown fields fail), each region's overlay renders and
//! validates where kubectl is installed, and the config they ship passes `meridian check`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/multi-region")
}

/// The Python that has kubernetes-validate: the virtual environment `make test` creates (Debian's
/// own python3 refuses pip installs, PEP 668), else whatever `python3` is on PATH.
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn validate(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.33.0"])
        .args(args)
        .output()
        .expect("python3 with kubernetes-validate (PyPI; make test installs it in .venv)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    text
}

/// Kubernetes resources (not kustomizations, not the Meridian config, not CRD-typed ones: the
/// Prometheus operator's and KEDA's are checked in observability_deploy.rs).
fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(manifests(&p));
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let is_yaml = p.extension().is_some_and(|e| e == "yaml");
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if is_yaml
            && text.contains("apiVersion:")
            && !name.starts_with("kustomization")
            && !text.contains("monitoring.coreos.com")
            && !text.contains("keda.sh/")
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn every_manifest_validates_offline() {
    let files = manifests(&deploy());
    let names: Vec<String> = files.iter().map(|p| p.to_string_lossy().to_string()).collect();
    assert!(names.iter().any(|n| n.ends_with("base/gateway.yaml")), "{names:?}");
    let args: Vec<&str> = names.iter().map(String::as_str).collect();
    let text = validate(&args);
    for kind in [
        "deployment/meridian-gateway",
        "poddisruptionbudget/meridian-gateway",
        "horizontalpodautoscaler/meridian-gateway",
        "horizontalpodautoscaler/sklearn-iris-v1-gpu",
        "configmap/prometheus-adapter-gpu-rules",
        "clusterrole/meridian-control",
        "daemonset/meridian-gpu-agent",
        "service/meridian-dns",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{text}"
        );
    }
}

#[test]
fn overlays_render_and_validate() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        println!("kubectl not installed: overlays not rendered (their resources were validated one by one)");
        return;
    }
    for region in ["us-east", "eu-west"] {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(deploy().join("overlays").join(region))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rendered = std::env::temp_dir().join(format!("meridian-{region}-{}.yaml", std::process::id()));
        std::fs::write(&rendered, &out.stdout).unwrap();
        let text = validate(&[rendered.to_str().unwrap()]);
        assert!(
            text.contains("passed for resource deployment/meridian-control"),
            "{text}"
        );
        let yaml = String::from_utf8_lossy(&out.stdout);
        assert!(
            yaml.contains(&format!("- {region}")),
            "the overlay sets --region {region}"
        );
    }
}

#[test]
fn the_shipped_config_passes_meridian_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("check")
        .arg(deploy().join("base/meridian.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
