//! What every semantic check shares: the config, where relative paths start, regions by name, the
//! findings so far, and the small checks several sections make (names, percentages, URLs).

use std::collections::HashMap;
use std::path::Path;

use crate::schema::{Config, Region};

/// What checks share: the config, where relative paths start, regions by name, and the findings.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a Config,
    pub base_dir: &'a Path,
    pub regions: HashMap<&'a str, &'a Region>,
    pub errors: Vec<(String, String)>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(cfg: &'a Config, base_dir: &'a Path) -> Self {
        let mut regions = HashMap::new();
        for r in &cfg.regions {
            regions.entry(r.name.as_str()).or_insert(r);
        }
        Ctx {
            cfg,
            base_dir,
            regions,
            errors: Vec::new(),
        }
    }

    /// Records a problem at `path`.
    pub fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push((path.into(), message.into()));
    }

    /// Records a duplicate for every name seen before, naming where it was first defined.
    pub fn unique<'n>(&mut self, what: &str, items: impl IntoIterator<Item = (String, &'n str)>) {
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (path, name) in items {
            match seen.get(name) {
                Some(first) => self.err(path, format!("duplicate {what} `{name}` (first defined at {first})")),
                None => {
                    seen.insert(name, path);
                }
            }
        }
    }

    /// Checks a name used in URLs, metrics and DNS labels.
    pub fn name(&mut self, path: String, what: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.err(
                path,
                format!(
                    "invalid {what} `{name}`: use letters, digits, '-', '_' and '.', starting with a letter or digit"
                ),
            );
        }
    }

    /// Checks that `value` is a percentage.
    pub fn percent(&mut self, path: String, value: f64) {
        if !(0.0..=100.0).contains(&value) {
            self.err(path, format!("{value} is not a percentage between 0 and 100"));
        }
    }

    /// Checks that a region exists, returning it.
    pub fn region(&mut self, path: String, name: &str) -> Option<&'a Region> {
        let found = self.regions.get(name).copied();
        if found.is_none() {
            let known: Vec<_> = self.cfg.regions.iter().map(|r| r.name.as_str()).collect();
            self.err(path, format!("unknown region `{name}` (regions: {})", known.join(", ")));
        }
        found
    }
}

/// Checks an `http://` or `https://` URL.
pub(super) fn check_http_url(cx: &mut Ctx<'_>, path: String, url: &str) {
    let ok = url
        .parse::<http::Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if !ok {
        cx.err(path, format!("`{url}` is not an http:// or https:// URL"));
    }
}
