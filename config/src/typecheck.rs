//! Finding every type error in a document, not just the first one serde stops at.
//!
//! Each top-level section (and each element of a list section) is checked on its own, so one bad
//! section does not hide errors in the others. Within a section serde still stops at the first
//! error: to report the rest, the offending key is removed from a scratch copy and the value is
//! checked again, until it passes or nothing more can be removed. A field that only went missing
//! because an earlier pass removed it is not reported again.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::schema::{CanaryPlan, Control, Dns, GatewayPolicy, Model, Observability, Region};

/// The top-level keys and how to type-check each one on its own, so that one bad section does not
/// hide errors in the others. Keep in step with [`crate::Config`]'s fields.
const SECTIONS: &[(&str, SectionKind)] = &[
    ("regions", SectionKind::ListOf(check_as::<Region>)),
    ("gateway", SectionKind::One(check_as::<GatewayPolicy>)),
    ("models", SectionKind::ListOf(check_as::<Model>)),
    ("dns", SectionKind::One(check_as::<Dns>)),
    ("control", SectionKind::One(check_as::<Control>)),
    ("canaries", SectionKind::ListOf(check_as::<CanaryPlan>)),
    ("observability", SectionKind::One(check_as::<Observability>)),
];

/// A type check of one part of the document: the serde path and message of each error found.
type SectionCheck = fn(&serde_json::Value) -> Vec<(String, String)>;

/// How a top-level section is type-checked on its own.
enum SectionKind {
    /// The section is one value of a type.
    One(SectionCheck),
    /// The section is a list; each element is checked on its own.
    ListOf(SectionCheck),
}

fn check_as<T: for<'de> Deserialize<'de>>(v: &serde_json::Value) -> Vec<(String, String)> {
    all_errors::<T>(v)
}

/// Type-checks each top-level section (and each list element) on its own, so that one mistake does
/// not hide the others.
pub(crate) fn type_errors(value: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(root) = value.as_object() else {
        return vec![(
            ".".into(),
            "the config must be a mapping of sections (regions, models, ...)".into(),
        )];
    };
    for key in root.keys() {
        if !SECTIONS.iter().any(|(name, _)| name == key) {
            let known: Vec<_> = SECTIONS.iter().map(|(n, _)| format!("`{n}`")).collect();
            out.push((
                key.clone(),
                format!("unknown field `{key}`, expected one of {}", known.join(", ")),
            ));
        }
    }
    if !root.contains_key("regions") {
        out.push((".".into(), "missing field `regions`".into()));
    }
    for (name, kind) in SECTIONS {
        let Some(section) = root.get(*name) else { continue };
        match kind {
            SectionKind::One(check) => out.extend(check(section).into_iter().map(|(p, m)| (join(name, &p), m))),
            SectionKind::ListOf(check) => match section.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let at = format!("{name}[{i}]");
                        out.extend(check(item).into_iter().map(|(p, m)| (join(&at, &p), m)));
                    }
                }
                None if section.is_null() => {}
                None => out.push((name.to_string(), "invalid type: expected a list".into())),
            },
        }
    }
    out
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() || prefix == "." {
        return if path.is_empty() { ".".into() } else { path.to_string() };
    }
    match path {
        "." | "" => prefix.to_string(),
        p if p.starts_with('[') => format!("{prefix}{p}"),
        p => format!("{prefix}.{p}"),
    }
}

/// Most errors reported for one section, so a pathological file cannot loop for long.
const MAX_ERRORS: usize = 64;

/// Every type error in `value` as `T`, as (path, message) pairs relative to `value`.
pub(crate) fn all_errors<T: for<'de> Deserialize<'de>>(value: &Value) -> Vec<(String, String)> {
    let mut scratch = value.clone();
    let mut removed: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for _ in 0..MAX_ERRORS * 2 {
        let Err(e) = serde_path_to_error::deserialize::<_, T>(&scratch) else {
            break;
        };
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let target = if let Some(field) = quoted_after(&message, "missing field `") {
            // Reported unless an earlier pass removed it; either way, drop the parent to go on.
            if !removed.contains(&join(&path, field)) {
                out.push((path.clone(), message));
            }
            path
        } else {
            let target = quoted_after(&message, "unknown field `").map_or(path.clone(), |f| with_key(&path, f));
            out.push((path, message));
            target
        };
        let target = nearest_key(&target);
        if target.is_empty() || !remove(&mut scratch, &target) || out.len() >= MAX_ERRORS {
            break;
        }
        removed.insert(target);
    }
    out
}

/// `path` extended by `key`, unless serde already put the key at its end.
pub(crate) fn with_key(path: &str, key: &str) -> String {
    if path == key || path.ends_with(&format!(".{key}")) {
        path.to_string()
    } else {
        join(path, key)
    }
}

/// The text between `prefix` and the next backtick.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix).and_then(|rest| rest.split('`').next())
}

/// A list element cannot be removed without renumbering its siblings, so removal climbs to the
/// nearest mapping key: `a.b[2].c` stays, `a.b[2]` becomes `a.b`.
fn nearest_key(path: &str) -> String {
    let mut p = path;
    while p.ends_with(']') {
        p = &p[..p.rfind('[').unwrap_or(0)];
    }
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// Removes the mapping entry at `path`; false when there is none.
fn remove(value: &mut Value, path: &str) -> bool {
    let (parent, key) = match path.rfind('.') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let mut v = value;
    for part in parent.split('.').filter(|s| !s.is_empty()) {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            let Some(next) = v.get_mut(name) else { return false };
            v = next;
        }
        for idx in rest
            .split('[')
            .filter_map(|r| r.trim_end_matches(']').parse::<usize>().ok())
        {
            let Some(next) = v.get_mut(idx) else { return false };
            v = next;
        }
    }
    v.as_object_mut().is_some_and(|m| m.remove(key).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::GatewayPolicy;

    #[test]
    fn reports_every_type_error_in_a_section() {
        let v: Value = serde_json::json!({
            "timeouts": {"connect": 10},
            "retries": {"atempts": 3, "budget_percent": "lots"},
        });
        let errs = all_errors::<GatewayPolicy>(&v);
        let paths: Vec<_> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"timeouts.connect"), "{errs:?}");
        assert!(
            paths.contains(&"retries.atempts"),
            "an unknown field is reported at its key: {errs:?}"
        );
        assert!(paths.contains(&"retries.budget_percent"), "{errs:?}");
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}
