//! Table-driven checks of config errors: each case is a YAML text and the exact lines `meridian
//! check` must print for it (FILE:LINE:COL: path: message), all of them, in file order.

use std::path::Path;

use meridian_config::load_str;

/// A minimal valid config that cases extend.
const BASE: &str = "\
regions:
  - name: us-east
    zones: [us-east-1a, us-east-1b]
    gateway:
      listeners:
        - name: public
          address: 127.0.1.1:8080
      public_addresses: [127.0.1.1]
  - name: eu-west
    zones: [eu-west-1a]
";

fn errors(text: &str) -> Vec<String> {
    match load_str(text, "t.yaml", Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn case(name: &str, text: &str, expected: &[&str]) {
    let got = errors(text);
    assert_eq!(got, expected, "case `{name}`:\n{}", got.join("\n"));
}

#[test]
fn the_base_is_valid() {
    case("base", BASE, &[]);
}

#[test]
fn yaml_syntax_errors_name_the_spot() {
    let got = errors("regions:\n  - name: [us-east\n");
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("t.yaml:3:1: .: YAML syntax error:"), "{got:?}");
}

#[test]
fn type_errors_are_all_reported() {
    case(
        "types",
        &format!(
            "{BASE}gateway:\n  timeouts:\n    connect: 10\n  retries:\n    atempts: 3\n  limits:\n    max_request_body: lots\nbogus: 1\n"
        ),
        &[
            "t.yaml:13:14: gateway.timeouts.connect: duration `10` has no unit; write it with one, like 10s or 10ms",
            "t.yaml:15:5: gateway.retries.atempts: unknown field `atempts`, expected one of `attempts`, `on`, `budget_percent`, `min_concurrent`, `buffer_body`",
            "t.yaml:17:23: gateway.limits.max_request_body: invalid size `lots`; write a number and a unit, like 64KiB, 16MiB or 1GB",
            "t.yaml:18:1: bogus: unknown field `bogus`, expected one of `regions`, `gateway`, `models`, `dns`, `control`, `canaries`, `observability`",
        ],
    );
}

#[test]
fn type_errors_in_several_list_elements() {
    case(
        "elements",
        "regions:\n  - name: a\n    zones: x\n  - name: b\n    zones: [b1]\n    failover: 3\n",
        &[
            "t.yaml:3:12: regions[0].zones: invalid type: string \"x\", expected a sequence",
            "t.yaml:6:15: regions[1].failover: invalid type: integer `3`, expected a sequence",
        ],
    );
}

#[test]
fn missing_required_fields() {
    case(
        "no regions",
        "models: []\n",
        &["t.yaml:1:1: .: missing field `regions`"],
    );
    case(
        "endpoint without zone",
        &format!("{BASE}models:\n  - name: m\n    versions:\n      - name: v1\n        endpoints:\n          - {{ address: 127.0.0.1:1, region: us-east }}\n"),
        &["t.yaml:16:13: models[0].versions[0].endpoints[0]: missing field `zone`"],
    );
}

#[test]
fn region_references_and_duplicates() {
    case(
        "regions",
        "regions:\n  - name: a\n    zones: [z1]\n    failover: [mars, a, b, b]\n  - name: b\n    zones: [z1]\n  - name: a\n    zones: [z3]\n",
        &[
            "t.yaml:4:16: regions[0].failover[0]: unknown region `mars` (regions: a, b, a)",
            "t.yaml:4:22: regions[0].failover[1]: region `a` cannot fail over to itself",
            "t.yaml:4:28: regions[0].failover[3]: region `b` is listed twice",
            "t.yaml:6:13: regions[1].zones[0]: duplicate zone `z1` (first defined at regions[0].zones[0])",
            "t.yaml:7:11: regions[2].name: duplicate region `a` (first defined at regions[0].name)",
        ],
    );
}

#[test]
fn a_region_that_cannot_reach_a_model_is_stranded() {
    case(
        "strand",
        &format!("{BASE}models:\n  - name: m\n    versions:\n      - name: v1\n        endpoints:\n          - {{ address: 127.0.0.1:1, region: eu-west, zone: eu-west-1a }}\n"),
        &["t.yaml:2:5: regions[0].failover: region `us-east` cannot reach model `m`: its endpoints run only in eu-west; add one of those regions to the failover list"],
    );
}

#[test]
fn routing_rules() {
    let text = format!(
        "{BASE}models:
  - name: m
    versions:
      - name: v1
        endpoints: [{{ address: 127.0.0.1:1, region: us-east, zone: us-east-1b }}]
      - name: v2
        endpoints: [{{ address: 127.0.0.1:2, region: us-east, zone: us-west-1a }}]
    routes:
      - match:
          headers:
            - {{ name: x-seg, exact: a, prefix: b }}
            - {{ name: x-re, regex: \"(\" }}
        version: v3
      - split:
          - {{ version: v1, weight: 90 }}
          - {{ version: v2, weight: 5 }}
        shadow: {{ version: v9, percent: 150 }}
      - version: v1
"
    );
    case(
        "routes",
        &text,
        &[
            "t.yaml:17:68: models[0].versions[1].endpoints[0].zone: zone `us-west-1a` is not in region `us-east` (zones: us-east-1a, us-east-1b)",
            "t.yaml:21:15: models[0].routes[0].match.headers[0]: set exactly one of `exact`, `prefix`, `regex`",
            "t.yaml:22:36: models[0].routes[0].match.headers[1].regex: invalid regular expression: error: unclosed group",
            "t.yaml:23:18: models[0].routes[0].version: unknown version `v3` of model `m` (versions: v1, v2)",
            "t.yaml:24:9: models[0].routes[1].split: weights sum to 95, must be 100",
            "t.yaml:27:28: models[0].routes[1].shadow.version: unknown version `v9` of model `m` (versions: v1, v2)",
            "t.yaml:27:41: models[0].routes[1].shadow.percent: 150 is not a percentage between 0 and 100",
            "t.yaml:28:9: models[0].routes[2]: unreachable: routes[1] has no `match` and takes every request before this rule",
        ],
    );
}

#[test]
fn several_versions_need_a_catch_all() {
    let text = format!(
        "{BASE}models:
  - name: m
    versions:
      - {{ name: v1, endpoints: [{{ address: 127.0.0.1:1, region: us-east, zone: us-east-1a }}] }}
      - {{ name: v2, endpoints: [{{ address: 127.0.0.1:2, region: us-east, zone: us-east-1a }}] }}
"
    );
    case(
        "catch-all",
        &text,
        &["t.yaml:12:5: models[0].routes: model `m` has 2 versions but no rule without `match`; add a last rule that routes every other request"],
    );
}

#[test]
fn addresses_and_admin_tokens() {
    let text = "regions:
  - name: a
    zones: [a1]
    gateway:
      listeners:
        - { name: p, address: 0.0.0.0:8080 }
        - { name: q, address: 127.0.0.1:8080, protocols: [h2] }
        - { name: r, address: not-an-address }
      admin: { address: 10.0.0.1:9901 }
";
    case(
        "addresses",
        text,
        &["t.yaml:8:31: regions[0].gateway.listeners[2].address: invalid socket address syntax"],
    );
    let text = text.replace("not-an-address", "127.0.0.2:1");
    case(
        "binds",
        &text,
        &[
            "t.yaml:7:31: regions[0].gateway.listeners[1].address: address 127.0.0.1:8080 is already bound by regions[0].gateway.listeners[0].address",
            "t.yaml:7:59: regions[0].gateway.listeners[1].protocols[0]: h2 needs tls; use h2c for cleartext HTTP/2",
            "t.yaml:9:7: regions[0].gateway.admin.token: admin address 10.0.0.1:9901 is not loopback, so a token is required",
        ],
    );
}

#[test]
fn tls_files_must_exist_and_parse() {
    let text = "regions:
  - name: a
    zones: [a1]
    gateway:
      listeners:
        - name: tls
          address: 127.0.0.1:8443
          protocols: [http1, h2]
          tls:
            certificates:
              - server_names: [api.example.com]
                cert: tls/missing.pem
                key: multi-region.yaml
";
    let got = match load_str(
        text,
        "t.yaml",
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")),
    ) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("t.yaml:12:23: regions[0].gateway.listeners[0].tls.certificates[0].cert: cannot read "),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("t.yaml:13:22: regions[0].gateway.listeners[0].tls.certificates[0].key: "),
        "{got:?}"
    );
    assert!(got[1].contains("holds no PEM private key"), "{got:?}");
}

#[test]
fn dns_zones_records_and_gslb() {
    let text = format!(
        "{BASE}dns:
  listen: [127.0.0.1:5353]
  zones:
    - name: meridian.test
      soa: {{ mname: ns1.meridian.test, rname: hostmaster.meridian.test }}
      ns: [ns1.meridian.test]
      records:
        - {{ name: ns1, type: A, value: 300.1.1.1 }}
        - {{ name: www, type: CNAME, value: api.meridian.test }}
        - {{ name: www, type: TXT, value: hello }}
        - {{ name: mx, type: MX, value: mail.meridian.test }}
        - {{ name: other.example., type: A, value: 1.2.3.4 }}
  gslb:
    - {{ name: api.other.test, policy: failover }}
    - {{ name: api.meridian.test, policy: nearest, regions: [us-east, eu-west] }}
    - {{ name: w.meridian.test, policy: failover, weights: {{ us-east: 1 }} }}
  cidr_map:
    - {{ cidr: 10.1.0.0/16, region: us-east }}
    - {{ cidr: 10.1.2.0/24, region: us-east }}
    - {{ cidr: 10.9.0.1/16, region: pluto }}
"
    );
    case(
        "dns",
        &text,
        &[
            "t.yaml:18:40: dns.zones[0].records[0].value: `300.1.1.1` is not an IPv4 address",
            "t.yaml:20:19: dns.zones[0].records[2].name: `www.meridian.test` has a CNAME and other records (also dns.zones[0].records[1].name); a CNAME must stand alone",
            "t.yaml:21:40: dns.zones[0].records[3].value: `mail.meridian.test` is not `preference host`, e.g. `10 mail.example.com`",
            "t.yaml:22:19: dns.zones[0].records[4].name: `other.example` is outside zone `meridian.test`",
            "t.yaml:24:15: dns.gslb[0].name: `api.other.test` is outside every zone (meridian.test)",
            "t.yaml:25:70: dns.gslb[1].regions[1]: region `eu-west` has no gateway public_addresses to answer with",
            "t.yaml:25:70: dns.gslb[1].regions[1]: region `eu-west` has no location and no cidr_map entry; `nearest` cannot place it",
            "t.yaml:26:70: dns.gslb[2].weights.us-east: weights only apply to the `weighted` policy",
            "t.yaml:29:15: dns.cidr_map[1].cidr: 10.1.2.0/24 overlaps 10.1.0.0/16 at dns.cidr_map[0]; prefixes must not overlap",
            "t.yaml:30:15: dns.cidr_map[2].cidr: 10.9.0.1/16 has host bits set; did you mean 10.9.0.0/16?",
            "t.yaml:30:36: dns.cidr_map[2].region: unknown region `pluto` (regions: us-east, eu-west)",
        ],
    );
}

#[test]
fn canary_plans() {
    let text = format!(
        "{BASE}models:
  - name: m
    versions:
      - {{ name: v1, endpoints: [{{ address: 127.0.0.1:1, region: us-east, zone: us-east-1a }}] }}
canaries:
  - name: c
    model: m
    stable: v1
    canary: v2
    steps:
      - {{ weight: 50, pause: 1m }}
      - {{ weight: 20, pause: 1m }}
    analysis: {{ success_rate: 99 }}
"
    );
    case(
        "canary",
        &text,
        &[
            "t.yaml:16:5: canaries[0].route: model `m` has no rule without `match` for the plan to move",
            "t.yaml:19:13: canaries[0].canary: unknown version `v2` of model `m`",
            "t.yaml:22:19: canaries[0].steps[1].weight: 20 is below the previous step's 50; steps only move forward",
            "t.yaml:23:31: canaries[0].analysis.success_rate: 99 is not a ratio between 0 and 1",
        ],
    );
}

#[test]
fn scaling_needs_sane_bounds_and_a_workload() {
    case(
        "scale",
        &format!(
            "{BASE}models:\n  - name: m\n    versions:\n      - name: v1\n        endpoints:\n          - {{ address: 127.0.0.9:8000, region: us-east, zone: us-east-1a }}\n        scale: {{ min: 3, max: 2, target_concurrency: 0 }}\n"
        ),
        &[
            "t.yaml:17:9: models[0].versions[0].scale.workload: name the workload to scale, or discover the version from a Kubernetes Service (its Deployment is scaled)",
            "t.yaml:17:23: models[0].versions[0].scale.min: min 3 is above max 2",
            "t.yaml:17:54: models[0].versions[0].scale.target_concurrency: target_concurrency must be at least 1",
        ],
    );
}
