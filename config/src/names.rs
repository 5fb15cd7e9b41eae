//! DNS names as the config writes them and the DNS server answers them: what counts as a name, how
//! one is normalized, and how a record's owner name relates to its zone. Shared by validation and
//! the DNS server, so both read a name the same way.

/// Whether `name` is a DNS name: labels of letters, digits, '-' and '_', 1..=63 bytes each.
pub fn is_domain_name(name: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// `name` lowercased, without its trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether `name` is `zone` or below it.
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// The full owner name of a record written as `@`, a relative name, or a full name in the zone.
pub fn owner_name(written: &str, zone: &str) -> String {
    let w = written.trim();
    if w == "@" {
        return zone.to_string();
    }
    let n = normalize(w);
    if written.ends_with('.') || in_zone(&n, zone) {
        n
    } else {
        format!("{n}.{zone}")
    }
}
