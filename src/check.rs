//! `meridian check FILE`: the operator's pre-flight for a config change.

use std::path::Path;
use std::process::ExitCode;

use meridian_config::{load_file, Config};

/// Prints a one-line summary and exits 0 for a valid file, or every error and exits 1.
pub fn run(file: &Path) -> ExitCode {
    match load_file(file) {
        Ok(loaded) => {
            println!("{}: ok ({})", file.display(), summary(&loaded.config));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for d in &errors.0 {
                println!("{d}");
            }
            eprintln!(
                "{}: {} error{}",
                file.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

fn summary(c: &Config) -> String {
    let versions: usize = c.models.iter().map(|m| m.versions.len()).sum();
    let endpoints: usize = c
        .models
        .iter()
        .flat_map(|m| &m.versions)
        .map(|v| v.endpoints.len())
        .sum();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut parts = vec![
        plural(c.regions.len(), "region"),
        plural(c.models.len(), "model"),
        plural(versions, "version"),
        plural(endpoints, "static endpoint"),
    ];
    if let Some(d) = &c.dns {
        parts.push(plural(d.zones.len(), "DNS zone"));
        parts.push(plural(d.gslb.len(), "GSLB name"));
    }
    parts.push(plural(c.canaries.len(), "canary plan"));
    parts.join(", ")
}
