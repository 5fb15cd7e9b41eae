//! The house rules the compiler alone does not check: no import circles between the top-level
//! modules of the gateway, its core and the config crate (a circle means two files are one idea, or
//! a third is missing), and a decision core that reaches no I/O, no runtime timer and no clock of
//! its own. A folder module (`proxy/`, `validate/`, `schema/`) counts as one node: its files are
//! one idea split by stage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

/// The code of a file: its unit tests and comments left out.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`lib` for the crate root).
fn node(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// Edges between top-level modules, from `crate::name` paths.
fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(root) {
        let from = node(root, &file);
        let text = code(&file);
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from && from != "lib" && from != "main" {
                edges.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    edges
}

/// A circle in the graph, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn no_import_circles() {
    for crate_src in [
        "gateway/src",
        "gateway/core/src",
        "config/src",
        "dns/src",
        "control/src",
    ] {
        let edges = graph(&root(crate_src));
        assert!(!edges.is_empty(), "{crate_src}: no modules read");
        if let Some(c) = circle(&edges) {
            panic!("{crate_src}: import circle {}", c.join(" -> "));
        }
    }
    // The check itself finds a circle where there is one.
    let mut looped = BTreeMap::new();
    looped.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    looped.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(circle(&looped).is_some());
}

#[test]
fn the_decision_core_reaches_no_io_and_no_clock_of_its_own() {
    let manifest = std::fs::read_to_string(root("gateway/core/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap();
    let deps = deps.split("[dev-dependencies]").next().unwrap();
    for banned in [
        "pingora",
        "prometheus",
        "reqwest",
        "hyper",
        "axum",
        "opentelemetry",
        "kube",
    ] {
        assert!(!deps.contains(banned), "gateway/core depends on {banned}");
    }
    let tokio = deps.lines().find(|l| l.starts_with("tokio")).unwrap_or_default();
    assert!(
        tokio.is_empty() || tokio.contains(r#"features = ["sync"]"#) && tokio.contains("default-features = false"),
        "gateway/core may use tokio's sync one-shots only: {tokio}"
    );
    for file in sources(&root("gateway/core/src")) {
        let text = code(&file);
        for banned in [
            "pingora",
            "tokio::time",
            "tokio::net",
            "tokio::io",
            "std::fs",
            "std::net::Tcp",
            "std::net::Udp",
            "Instant::now",
            "SystemTime::now",
            "thread::sleep",
        ] {
            assert!(!text.contains(banned), "{} uses {banned}", file.display());
        }
    }
}
