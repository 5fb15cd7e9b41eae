//! Config values with every optional part at its default, for programs that write configs instead
//! of operators (`meridian lab`, the end-to-end tests): they build the schema's own types, so a
//! renamed field breaks their build rather than their output, and [`crate::to_yaml`] writes them.

use std::net::SocketAddr;

use crate::schema::{
    Admin, Discovery, Dns, Endpoint, GslbName, GslbPolicy, HeaderMatch, KubeDiscovery, Listener, Model, Record,
    RecordType, Region, RegionGateway, Route, RouteMatch, Soa, StickyKey, Version, WeightedVersion, Zone,
};
use crate::units::Duration;

/// A region with these zones, no failover, gateway or control loop.
pub fn region(name: &str, zones: &[&str]) -> Region {
    Region {
        name: name.into(),
        zones: zones.iter().map(|z| z.to_string()).collect(),
        location: None,
        failover: Vec::new(),
        gateway: None,
        control: None,
    }
}

/// A plain listener speaking the default protocols.
pub fn listener(name: &str, address: SocketAddr) -> Listener {
    Listener {
        name: name.into(),
        address,
        protocols: Vec::new(),
        tls: None,
    }
}

/// A region's gateway with one plain listener named `public` and an admin listener.
pub fn gateway(public: SocketAddr, admin: SocketAddr) -> RegionGateway {
    RegionGateway {
        listeners: vec![listener("public", public)],
        admin: Admin::at(admin),
        public_addresses: Vec::new(),
        health_url: None,
        shutdown_grace: Duration::secs(30),
        shutdown_delay: Duration::secs(2),
    }
}

/// A model with no versions or rules yet, and the gateway-wide policy.
pub fn model(name: &str) -> Model {
    Model {
        name: name.into(),
        versions: Vec::new(),
        routes: Vec::new(),
        health_check: None,
        outlier_detection: None,
        retries: None,
        timeouts: None,
        limits: None,
        balancer: Default::default(),
        llm: None,
    }
}

/// A version with no endpoints yet, over plain HTTP/1.1.
pub fn version(name: &str) -> Version {
    Version {
        name: name.into(),
        endpoints: Vec::new(),
        discovery: None,
        upstream: Default::default(),
        scale: None,
    }
}

/// A static endpoint of weight 1 (id: the address, unless given).
pub fn endpoint(id: Option<&str>, address: SocketAddr, region: &str, zone: &str) -> Endpoint {
    Endpoint {
        id: id.map(str::to_string),
        address,
        grpc_port: None,
        region: region.into(),
        zone: zone.into(),
        weight: 1,
        metrics_url: None,
    }
}

/// A rule sending requests whose header `name` equals `value` to `version`.
pub fn header_rule(name: &str, value: &str, version: &str) -> Route {
    Route {
        matches: Some(RouteMatch {
            headers: vec![HeaderMatch {
                name: name.into(),
                exact: Some(value.into()),
                ..HeaderMatch::default()
            }],
        }),
        version: Some(version.into()),
        ..Route::default()
    }
}

/// A rule sending every request to `version`.
pub fn pin(version: &str) -> Route {
    Route {
        version: Some(version.into()),
        ..Route::default()
    }
}

/// A weighted split between versions, sticky on header `sticky` when given.
pub fn split(weights: &[(&str, u32)], sticky: Option<&str>) -> Route {
    Route {
        split: weights
            .iter()
            .map(|(v, w)| WeightedVersion {
                version: v.to_string(),
                weight: *w,
            })
            .collect(),
        sticky: sticky.map(|h| StickyKey::Header(h.into())),
        ..Route::default()
    }
}

/// A DNS server on `listen` (admin on `admin`), authoritative for `zone` with its SOA, one name
/// server `ns1.<zone>` and that name server's A record at `ns_ip`.
pub fn dns(listen: SocketAddr, admin: SocketAddr, zone: &str, ns_ip: &str) -> Dns {
    let ns = format!("ns1.{zone}");
    Dns {
        listen: vec![listen],
        admin: Admin::at(admin),
        zones: vec![Zone {
            name: zone.into(),
            ttl: Duration::secs(300),
            soa: Soa {
                mname: ns.clone(),
                rname: format!("hostmaster.{zone}"),
                refresh: Duration::secs(3600),
                retry: Duration::secs(600),
                expire: Duration::secs(604_800),
                minimum: Duration::secs(60),
            },
            ns: vec![ns],
            records: vec![record("ns1", RecordType::A, ns_ip)],
        }],
        gslb: Vec::new(),
        cidr_map: Vec::new(),
        probe: Default::default(),
        max_udp_payload: 1232,
        rrl: Default::default(),
        tcp: Default::default(),
        cookies: Default::default(),
    }
}

/// A static record with the zone's TTL.
pub fn record(name: &str, kind: RecordType, value: &str) -> Record {
    Record {
        name: name.into(),
        kind,
        value: value.into(),
        ttl: None,
    }
}

/// A GSLB name over `regions` (every gateway region when empty), with the default TTL.
pub fn gslb(name: &str, policy: GslbPolicy, regions: &[&str]) -> GslbName {
    GslbName {
        name: name.into(),
        policy,
        regions: regions.iter().map(|r| r.to_string()).collect(),
        weights: Default::default(),
        ttl: Duration::secs(30),
        when_all_down: Default::default(),
        max_answers: 8,
        models: Vec::new(),
    }
}

/// Kubernetes discovery of a version in `namespace` on REST `port`: the EndpointSlices of
/// `service` when given, else the Pods `selector` picks; no gRPC port.
pub fn kube(namespace: &str, service: Option<&str>, selector: &[(&str, &str)], port: u16) -> Discovery {
    Discovery::Kubernetes(KubeDiscovery {
        namespace: namespace.into(),
        service: service.map(str::to_string),
        selector: selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        port,
        grpc_port: None,
        port_name: "http".into(),
        grpc_port_name: "grpc".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Config;

    #[test]
    fn built_values_match_what_the_loader_defaults_to() {
        let mut cfg = Config::default();
        let mut r = region("r", &["r-a"]);
        r.gateway = Some(gateway(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:9901".parse().unwrap(),
        ));
        cfg.regions.push(r);
        let mut m = model("m");
        let mut v = version("v1");
        v.endpoints
            .push(endpoint(None, "127.0.0.1:1".parse().unwrap(), "r", "r-a"));
        m.versions.push(v);
        cfg.models.push(m);
        cfg.dns = Some(dns(
            "127.0.0.1:5353".parse().unwrap(),
            "127.0.0.1:9953".parse().unwrap(),
            "meridian.test",
            "127.0.0.1",
        ));
        let defaults_filled = crate::load_str(
            "
regions:
  - name: r
    zones: [r-a]
    gateway: { listeners: [{ name: public, address: 127.0.0.1:8080 }] }
models:
  - { name: m, versions: [{ name: v1, endpoints: [{ address: 127.0.0.1:1, region: r, zone: r-a }] }] }
dns:
  listen: [127.0.0.1:5353]
  zones:
    - name: meridian.test
      soa: { mname: ns1.meridian.test, rname: hostmaster.meridian.test }
      ns: [ns1.meridian.test]
      records: [{ name: ns1, type: A, value: 127.0.0.1 }]
",
            "t",
            std::path::Path::new("."),
        )
        .unwrap()
        .config;
        assert_eq!(crate::to_yaml(&cfg), crate::to_yaml(&defaults_filled));
    }
}
