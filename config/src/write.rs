//! Writing a config as YAML, for the programs that generate one (`meridian lab`, the end-to-end
//! tests) from the schema's own types instead of text templates, so what they write is what
//! `meridian check` reads back. Unlike every other serialization of a config (the admin API's
//! `/config`, logs), a written file carries its secrets: the file is the config, not a view of it.

use crate::schema::{with_secrets_revealed, Config};

/// The config as a YAML document that loads back to the same config.
pub fn to_yaml(config: &Config) -> String {
    // Every schema type serializes (plain data, durations and sizes as their written form).
    with_secrets_revealed(|| serde_saphyr::to_string(config)).expect("a config serializes to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;

    const CONFIG: &str = "
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners: [{ name: public, address: 127.0.0.1:8080 }]
      admin: { address: 0.0.0.0:9901, token: s3cret }
gateway:
  timeouts: { request: 1m 30s }
  limits: { max_request_body: 64KiB }
models:
  - name: m
    versions: [{ name: v1, endpoints: [{ address: 127.0.0.1:1, region: r, zone: r-a }] }]
";

    #[test]
    fn written_configs_load_back_with_their_secrets() {
        let first = load_str(CONFIG, "a.yaml", std::path::Path::new(".")).unwrap().config;
        let text = to_yaml(&first);
        let again = load_str(&text, "b.yaml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .config;
        assert_eq!(to_yaml(&again), text, "a fixed point");
        assert!(text.contains("s3cret"), "{text}");
        let shown = serde_json::to_string(&again).unwrap();
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "views still redact"
        );
    }
}
