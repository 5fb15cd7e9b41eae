//! The DNS server's status page (`/` on its admin listener) and its live cells (`/status.json`): the
//! world as this server answers it. Each region's health (its gateway probes and its control loop's
//! report), and for every GSLB name the regions a client in each region's subnets gets now, from
//! the same answer function the queries use.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use hickory_proto::rr::{LowerName, RData, RecordType};
use meridian_statuspage::{Cell, Page, Section, Table, Tone};

use crate::answer::answer;
use crate::gslb::Client;
use crate::state::DnsState;

/// The DNS server's status page as of now.
pub fn page(state: &DnsState) -> Page {
    let zones = state.zones.load();
    let health = state.health();
    let now = state.clock.now();
    let mut page = Page {
        title: "Meridian DNS · world view".into(),
        sections: Vec::new(),
    };

    let mut me = Section::new("DNS server");
    me.fact(
        "serial",
        Cell::live("dns/serial", state.serial().to_string(), Tone::Plain),
    );
    me.fact("config", Cell::text(zones.snap.file.clone()));
    let apexes: Vec<_> = zones.zones.iter().map(|z| z.apex.to_string()).collect();
    me.fact("zones", Cell::text(apexes.join(", ")));
    page.sections.push(me);

    let mut regions = Section::new("Regions");
    let mut t = Table::new(&[
        "region",
        "gateway addresses",
        "health",
        "probes",
        "why",
        "control report",
        "report age",
    ]);
    let by_index = state.by_index.load();
    for (i, r) in zones.regions.iter().enumerate() {
        let key = |k: &str| format!("region/{}/{k}", r.name);
        let rh = by_index.get(i);
        let probes = rh.is_some_and(|h| h.healthy.load(Ordering::Relaxed));
        let reason = rh
            .and_then(|h| h.reason.lock().ok().map(|s| s.clone()))
            .unwrap_or_default();
        let up = health.up(i, &[]);
        let report = match health.capacity.get(i).cloned().flatten() {
            Some(c) => {
                let mut models: Vec<_> = c.iter().map(|(m, n)| format!("{m}: {n} serving")).collect();
                models.sort();
                models.join(", ")
            }
            None => "none (probes decide)".into(),
        };
        let age = rh
            .and_then(|h| h.feed_staleness(now))
            .map_or(String::new(), |s| format!("{s:.0}s"));
        let addresses: Vec<_> = r.addresses.iter().map(IpAddr::to_string).collect();
        t.row(vec![
            Cell::text(r.name.to_string()),
            Cell::text(addresses.join(", ")),
            Cell::live(
                key("health"),
                if up { "up" } else { "down" },
                if up { Tone::Good } else { Tone::Bad },
            ),
            Cell::live(
                key("probes"),
                if probes { "passing" } else { "failing" },
                if probes { Tone::Good } else { Tone::Bad },
            ),
            Cell::live(key("reason"), reason, Tone::Plain),
            Cell::live(key("report"), report, Tone::Plain),
            Cell::live(key("age"), age, Tone::Plain),
        ]);
    }
    regions.table(None, t);
    page.sections.push(regions);

    // What each region's clients are answered now.
    let mut answers = Section::new("Answers");
    for zone in &zones.zones {
        let mut names: Vec<_> = zone.gslb.keys().collect();
        names.sort();
        for name in names {
            let mut t = Table::new(&["client", "from subnet", "answered with"]);
            for (net, r) in zones.cidrs.entries() {
                let client_ip = net.hosts().next().unwrap_or(net.addr());
                let client = Client {
                    resolver: client_ip,
                    subnet: None,
                };
                let (answered, tone) = answered(&zones, name, &health, &client);
                let region = zones.regions.get(*r).map_or("", |r| &r.name);
                t.row(vec![
                    Cell::text(format!("{region} client {client_ip}")),
                    Cell::text(net.to_string()),
                    Cell::live(format!("answer/{name}/{net}"), answered, tone),
                ]);
            }
            answers.table(Some(name.to_string()), t);
        }
    }
    page.sections.push(answers);
    page
}

/// The regions (and addresses) `client` is answered with for `name`, in words.
fn answered(
    zones: &crate::zones::ZoneSet,
    name: &LowerName,
    health: &crate::answer::Health,
    client: &Client,
) -> (String, Tone) {
    let a = answer(zones, name, RecordType::A, health, client);
    let addresses: Vec<IpAddr> = a
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    if addresses.is_empty() {
        return ("nothing (NODATA: no region up)".into(), Tone::Bad);
    }
    let mut parts = Vec::new();
    for ip in addresses {
        let region = zones.regions.iter().find(|r| r.addresses.contains(&ip));
        parts.push(format!("{} {ip}", region.map_or("?", |r| &r.name)));
    }
    (parts.join(", "), Tone::Plain)
}
