//! Region checks: names, zones, locations, failover order, gateway listeners and bind addresses.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::context::{check_http_url, Ctx};
use super::tls;
use crate::schema::{Admin, Protocol};

pub(super) fn check(cx: &mut Ctx<'_>) {
    let cfg = cx.cfg;
    if cfg.regions.is_empty() {
        cx.err("regions", "at least one region is required");
    }
    cx.unique(
        "region",
        cfg.regions
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("regions[{i}].name"), r.name.as_str())),
    );
    cx.unique(
        "zone",
        cfg.regions.iter().enumerate().flat_map(|(i, r)| {
            r.zones
                .iter()
                .enumerate()
                .map(move |(j, z)| (format!("regions[{i}].zones[{j}]"), z.as_str()))
        }),
    );
    let mut binds: Vec<Bind> = Vec::new();
    for (i, r) in cfg.regions.iter().enumerate() {
        let at = format!("regions[{i}]");
        cx.name(format!("{at}.name"), "region name", &r.name);
        if r.zones.is_empty() {
            cx.err(format!("{at}.zones"), "a region needs at least one zone");
        }
        for (j, z) in r.zones.iter().enumerate() {
            cx.name(format!("{at}.zones[{j}]"), "zone name", z);
        }
        if let Some(loc) = r.location {
            if !(-90.0..=90.0).contains(&loc.lat) {
                cx.err(
                    format!("{at}.location.lat"),
                    format!("{} is not a latitude (-90..90)", loc.lat),
                );
            }
            if !(-180.0..=180.0).contains(&loc.lon) {
                cx.err(
                    format!("{at}.location.lon"),
                    format!("{} is not a longitude (-180..180)", loc.lon),
                );
            }
        }
        let mut seen = HashSet::new();
        for (j, f) in r.failover.iter().enumerate() {
            let path = format!("{at}.failover[{j}]");
            if f == &r.name {
                cx.err(path, format!("region `{f}` cannot fail over to itself"));
            } else if !seen.insert(f.as_str()) {
                cx.err(path, format!("region `{f}` is listed twice"));
            } else {
                cx.region(path, f);
            }
        }
        if let Some(gw) = &r.gateway {
            if gw.listeners.is_empty() {
                cx.err(
                    format!("{at}.gateway.listeners"),
                    "a gateway needs at least one listener",
                );
            }
            cx.unique(
                "listener",
                gw.listeners
                    .iter()
                    .enumerate()
                    .map(|(j, l)| (format!("{at}.gateway.listeners[{j}].name"), l.name.as_str())),
            );
            for (j, l) in gw.listeners.iter().enumerate() {
                let lat = format!("{at}.gateway.listeners[{j}]");
                binds.push((format!("{lat}.address"), l.address, Some(i)));
                listener_protocols(cx, &lat, &l.protocols, l.tls.is_some());
                if let Some(t) = &l.tls {
                    tls::check_listener(cx, &format!("{lat}.tls"), t);
                }
            }
            admin(cx, &format!("{at}.gateway.admin"), &gw.admin);
            binds.push((format!("{at}.gateway.admin.address"), gw.admin.address, Some(i)));
            if let Some(url) = &gw.health_url {
                check_http_url(cx, format!("{at}.gateway.health_url"), url);
            }
        }
        if let Some(c) = &r.control {
            binds.push((format!("{at}.control.address"), c.address, Some(i)));
        }
    }
    if let Some(dns) = &cfg.dns {
        for (i, a) in dns.listen.iter().enumerate() {
            binds.push((format!("dns.listen[{i}]"), *a, None));
        }
        binds.push(("dns.admin.address".into(), dns.admin.address, None));
    }
    bind_conflicts(cx, &binds);
    strands(cx);
}

fn listener_protocols(cx: &mut Ctx<'_>, at: &str, protocols: &[Protocol], tls: bool) {
    for (k, p) in protocols.iter().enumerate() {
        match (p, tls) {
            (Protocol::H2c, true) => cx.err(
                format!("{at}.protocols[{k}]"),
                "h2c is cleartext HTTP/2; with tls use h2",
            ),
            (Protocol::H2, false) => cx.err(
                format!("{at}.protocols[{k}]"),
                "h2 needs tls; use h2c for cleartext HTTP/2",
            ),
            _ => {}
        }
    }
}

/// Checks an admin listener: a non-loopback address must require a token.
pub(super) fn admin(cx: &mut Ctx<'_>, at: &str, a: &Admin) {
    if !a.address.ip().is_loopback() && a.token.as_ref().is_none_or(|t| t.expose().is_empty()) {
        cx.err(
            format!("{at}.token"),
            format!("admin address {} is not loopback, so a token is required", a.address),
        );
    }
}

/// Two listeners cannot bind the same socket (a wildcard IP conflicts with any IP on its port).
fn bind_conflicts(cx: &mut Ctx<'_>, binds: &[Bind]) {
    let mut by_port: HashMap<u16, Vec<&Bind>> = HashMap::new();
    for b in binds {
        by_port.entry(b.1.port()).or_default().push(b);
    }
    for (path, addr, host) in binds {
        let clash = by_port[&addr.port()].iter().find(|(p, a, other)| {
            p != path
                // Regions run on their own machines; the DNS server may share one with any of them.
                && (host == other || host.is_none() || other.is_none())
                && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
                && binds.iter().position(|(q, ..)| q == p) < binds.iter().position(|(q, ..)| q == path)
        });
        if let Some((first, ..)) = clash {
            cx.err(path.clone(), format!("address {addr} is already bound by {first}"));
        }
    }
}

/// A bound address: its field path, the address, and the region whose machines bind it (`None`
/// for the DNS server).
type Bind = (String, SocketAddr, Option<usize>);

/// A region with a gateway must reach every statically served model through itself or the regions
/// it fails over to; otherwise that region's clients get 503 forever.
fn strands(cx: &mut Ctx<'_>) {
    let cfg = cx.cfg;
    for (i, r) in cfg.regions.iter().enumerate() {
        if r.gateway.is_none() {
            continue;
        }
        let reach: HashSet<&str> = std::iter::once(r.name.as_str())
            .chain(r.failover.iter().map(String::as_str))
            .collect();
        for m in &cfg.models {
            if m.versions.iter().any(|v| v.discovery.is_some()) {
                continue; // endpoints appear at run time; nothing to prove here
            }
            let hosted: Vec<&str> = m
                .versions
                .iter()
                .flat_map(|v| v.endpoints.iter().map(|e| e.region.as_str()))
                .collect();
            if !hosted.is_empty() && !hosted.iter().any(|h| reach.contains(h)) {
                let mut where_: Vec<&str> = hosted.clone();
                where_.sort_unstable();
                where_.dedup();
                cx.err(
                    format!("regions[{i}].failover"),
                    format!(
                        "region `{}` cannot reach model `{}`: its endpoints run only in {}; add one of those regions to the failover list",
                        r.name,
                        m.name,
                        where_.join(", ")
                    ),
                );
            }
        }
    }
}
