//! DNS checks: zones, static record data, GSLB names inside their zones, regions and CIDR maps.

use std::collections::HashSet;

use super::context::Ctx;
use super::regions;
use crate::names::{in_zone, is_domain_name, normalize, owner_name};
use crate::schema::{GslbPolicy, RecordType};

pub(super) fn check(cx: &mut Ctx<'_>) {
    let cfg = cx.cfg;
    let Some(dns) = &cfg.dns else { return };
    if dns.listen.is_empty() {
        cx.err("dns.listen", "the DNS server needs at least one listen address");
    }
    regions::admin(cx, "dns.admin", &dns.admin);
    if dns.max_udp_payload < 512 {
        cx.err("dns.max_udp_payload", "must be at least 512 (RFC 1035)");
    }
    if dns.cookies.secret.is_some() && dns.cookies.key().is_none() {
        cx.err("dns.cookies.secret", "must be 32 hex digits (a 128-bit SipHash key)");
    }
    if dns.tcp.max_per_client == 0 || dns.tcp.max_connections == 0 {
        cx.err("dns.tcp", "connection caps must be at least 1");
    }
    let zones: Vec<String> = dns.zones.iter().map(|z| normalize(&z.name)).collect();
    cx.unique(
        "zone",
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| (format!("dns.zones[{i}].name"), z.as_str())),
    );
    let mut owners: Vec<(String, String, RecordType)> = Vec::new();
    for (i, z) in dns.zones.iter().enumerate() {
        let at = format!("dns.zones[{i}]");
        let zone = &zones[i];
        if !is_domain_name(&z.name) {
            cx.err(format!("{at}.name"), format!("`{}` is not a DNS name", z.name));
        }
        for (field, v) in [("mname", &z.soa.mname), ("rname", &z.soa.rname)] {
            if !is_domain_name(v) {
                cx.err(format!("{at}.soa.{field}"), format!("`{v}` is not a DNS name"));
            }
        }
        if z.ns.is_empty() {
            cx.err(format!("{at}.ns"), "a zone needs at least one name server");
        }
        for (k, ns) in z.ns.iter().enumerate() {
            if !is_domain_name(ns) {
                cx.err(format!("{at}.ns[{k}]"), format!("`{ns}` is not a DNS name"));
            }
        }
        for (k, r) in z.records.iter().enumerate() {
            let rat = format!("{at}.records[{k}]");
            let owner = owner_name(&r.name, zone);
            if !(r.name.trim() == "@" || is_domain_name(&r.name)) {
                cx.err(format!("{rat}.name"), format!("`{}` is not a DNS name or @", r.name));
                continue;
            }
            if !in_zone(&owner, zone) {
                cx.err(format!("{rat}.name"), format!("`{owner}` is outside zone `{zone}`"));
                continue;
            }
            if let Some(problem) = record_data_problem(r.kind, &r.value) {
                cx.err(format!("{rat}.value"), problem);
            }
            if r.kind == RecordType::Cname && &owner == zone {
                cx.err(format!("{rat}.type"), "a CNAME cannot sit at the zone apex");
            }
            owners.push((format!("{rat}.name"), owner, r.kind));
        }
    }
    for (path, owner, kind) in &owners {
        let clash = owners
            .iter()
            .find(|(p, o, k)| p != path && o == owner && (*kind == RecordType::Cname || *k == RecordType::Cname));
        if let Some((first, _, _)) = clash {
            if first < path {
                cx.err(
                    path.clone(),
                    format!("`{owner}` has a CNAME and other records (also {first}); a CNAME must stand alone"),
                );
            }
        }
    }
    gslb(cx, &zones, &owners);
    cidrs(cx);
}

/// What is wrong with a record's data for its type, if anything.
fn record_data_problem(kind: RecordType, value: &str) -> Option<String> {
    let v = value.trim();
    let ok = match kind {
        RecordType::A => v.parse::<std::net::Ipv4Addr>().is_ok(),
        RecordType::Aaaa => v.parse::<std::net::Ipv6Addr>().is_ok(),
        RecordType::Cname | RecordType::Ns => is_domain_name(v),
        RecordType::Txt => !v.is_empty(),
        RecordType::Mx => v
            .split_once(char::is_whitespace)
            .is_some_and(|(pref, host)| pref.parse::<u16>().is_ok() && is_domain_name(host.trim())),
    };
    (!ok).then(|| match kind {
        RecordType::A => format!("`{v}` is not an IPv4 address"),
        RecordType::Aaaa => format!("`{v}` is not an IPv6 address"),
        RecordType::Cname | RecordType::Ns => format!("`{v}` is not a DNS name"),
        RecordType::Txt => "TXT data cannot be empty".into(),
        RecordType::Mx => format!("`{v}` is not `preference host`, e.g. `10 mail.example.com`"),
    })
}

fn gslb(cx: &mut Ctx<'_>, zones: &[String], owners: &[(String, String, RecordType)]) {
    let Some(dns) = &cx.cfg.dns else { return };
    let names: Vec<String> = dns.gslb.iter().map(|g| normalize(&g.name)).collect();
    cx.unique(
        "GSLB name",
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("dns.gslb[{i}].name"), n.as_str())),
    );
    for (i, g) in dns.gslb.iter().enumerate() {
        let at = format!("dns.gslb[{i}]");
        let name = &names[i];
        if !is_domain_name(name) {
            cx.err(format!("{at}.name"), format!("`{}` is not a DNS name", g.name));
        } else if !zones.iter().any(|z| in_zone(name, z)) {
            cx.err(
                format!("{at}.name"),
                format!("`{name}` is outside every zone ({})", zones.join(", ")),
            );
        }
        if let Some((p, _, _)) = owners.iter().find(|(_, o, _)| o == name) {
            cx.err(format!("{at}.name"), format!("`{name}` is also a static record at {p}"));
        }
        let mut seen = HashSet::new();
        for (k, r) in g.regions.iter().enumerate() {
            let rat = format!("{at}.regions[{k}]");
            if !seen.insert(r.as_str()) {
                cx.err(rat, format!("region `{r}` is listed twice"));
                continue;
            }
            if let Some(region) = cx.region(rat.clone(), r) {
                gslb_region(cx, &rat, region, g.policy);
            }
        }
        if g.regions.is_empty() {
            let with_gateway: Vec<_> = cx.cfg.regions.iter().filter(|r| r.gateway.is_some()).collect();
            if with_gateway.is_empty() {
                cx.err(format!("{at}.regions"), "no region has a gateway to answer with");
            }
            for r in with_gateway {
                gslb_region(cx, &format!("{at}.regions"), r, g.policy);
            }
        }
        for region in g.weights.keys() {
            let wat = format!("{at}.weights.{region}");
            if g.policy != GslbPolicy::Weighted {
                cx.err(wat, "weights only apply to the `weighted` policy");
            } else if !g.regions.is_empty() && !g.regions.contains(region) {
                cx.err(wat, format!("region `{region}` is not among this name's regions"));
            } else {
                cx.region(wat, region);
            }
        }
        if g.max_answers == 0 {
            cx.err(format!("{at}.max_answers"), "must be at least 1");
        }
        for (k, m) in g.models.iter().enumerate() {
            if !cx.cfg.models.iter().any(|x| &x.name == m) {
                cx.err(format!("{at}.models[{k}]"), format!("unknown model `{m}`"));
            }
        }
    }
}

fn gslb_region(cx: &mut Ctx<'_>, at: &str, r: &crate::schema::Region, policy: GslbPolicy) {
    match &r.gateway {
        Some(gw) if !gw.public_addresses.is_empty() => {}
        _ => cx.err(
            at.to_string(),
            format!("region `{}` has no gateway public_addresses to answer with", r.name),
        ),
    }
    let mapped = cx
        .cfg
        .dns
        .as_ref()
        .is_some_and(|d| d.cidr_map.iter().any(|c| c.region == r.name));
    if policy == GslbPolicy::Nearest && r.location.is_none() && !mapped {
        cx.err(
            at.to_string(),
            format!(
                "region `{}` has no location and no cidr_map entry; `nearest` cannot place it",
                r.name
            ),
        );
    }
}

fn cidrs(cx: &mut Ctx<'_>) {
    let Some(dns) = &cx.cfg.dns else { return };
    for (i, c) in dns.cidr_map.iter().enumerate() {
        cx.region(format!("dns.cidr_map[{i}].region"), &c.region);
        if c.cidr != c.cidr.trunc() {
            cx.err(
                format!("dns.cidr_map[{i}].cidr"),
                format!("{} has host bits set; did you mean {}?", c.cidr, c.cidr.trunc()),
            );
        }
        for (j, d) in dns.cidr_map.iter().enumerate().take(i) {
            if c.cidr.contains(&d.cidr.network()) || d.cidr.contains(&c.cidr.network()) {
                cx.err(
                    format!("dns.cidr_map[{i}].cidr"),
                    format!(
                        "{} overlaps {} at dns.cidr_map[{j}]; prefixes must not overlap",
                        c.cidr, d.cidr
                    ),
                );
            }
        }
    }
}
