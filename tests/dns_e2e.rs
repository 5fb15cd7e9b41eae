//! The DNS server end to end over real UDP and TCP sockets, with a Rust client (hickory-proto
//! messages on std sockets) and the real `dig`; region health from real probes of real HTTP servers.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use meridian_config::schema::{AllDown, CidrRegion, GeoPoint, GslbPolicy, Record, RecordType as Data};
use serde_json::json;

/// Where [`World::dns`] puts this test's DNS server (net 70).
const DNS: &str = "127.70.0.53:5353";
const ADMIN: &str = "127.70.0.53:9953";

/// Two regions whose gateways DNS probes at a sim on each gateway IP's port 8000; us also answers
/// with an IPv6 address.
fn two_regions(net: u8) -> (World, Gw, Gw) {
    let mut w = World::new(net);
    let mut region = |name: &str, lat: f64, lon: f64| {
        let gw = w.gateway(name, &[&format!("{name}-a")]);
        w.announce(name);
        let r = w.region_of(name);
        r.location = Some(GeoPoint { lat, lon });
        r.gateway.as_mut().unwrap().health_url = Some(format!("http://{}:8000/v2/health/ready", gw.ip));
        gw
    };
    let us = region("us", 38.9, -77.0);
    let eu = region("eu", 53.3, -6.3);
    (w, us, eu)
}

/// The first test's world: static records (a TXT set too big for UDP), failover and nearest
/// names, a CIDR map; `extra` adds one more record.
fn world(extra: Option<Record>) -> (World, Gw, Gw) {
    let (mut w, us, eu) = two_regions(70);
    w.gateway_of("us").public_addresses.push("fd00::1".parse().unwrap());
    assert_eq!(w.dns_probing(ms(100), ms(500)).listen, DNS);
    let d = w.dns_mut();
    let zone = &mut d.zones[0];
    zone.soa.minimum = secs(60);
    zone.records.extend([
        record("www", Data::Cname, "api.meridian.test"),
        record("@", Data::Mx, "10 mail.meridian.test"),
        record("@", Data::Txt, "v=spf1 -all"),
    ]);
    zone.records
        .extend((0..40).map(|i| record("big", Data::Txt, &format!("chunk-{i:02}-{}", "x".repeat(40)))));
    zone.records.extend(extra);
    d.gslb = vec![
        gslb("api.meridian.test", GslbPolicy::Failover, &["us", "eu"]),
        gslb("near.meridian.test", GslbPolicy::Nearest, &["us", "eu"]),
    ];
    d.cidr_map = [("10.2.0.0/16", "eu"), ("10.1.0.0/16", "us")]
        .map(|(cidr, region)| CidrRegion {
            cidr: cidr.parse().unwrap(),
            region: region.into(),
        })
        .into();
    (w, us, eu)
}

fn query(name: &str, t: RecordType, edns: Option<Edns>) -> Vec<u8> {
    let mut m = Message::new(0x4d52, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    if let Some(e) = edns {
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn udp(q: &[u8]) -> Message {
    udp_from(DNS, "127.0.0.1:0", q)
}

/// One UDP exchange, retried like a resolver does (UDP may drop a datagram, e.g. after a flood).
fn udp_from(dns: &str, from: &str, q: &[u8]) -> Message {
    let s = UdpSocket::bind(from).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        s.send_to(q, dns).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Message::from_vec(&buf[..n]).unwrap();
        }
    }
    panic!("no answer from {dns} after 3 tries");
}

fn tcp(q: &[u8]) -> Message {
    let mut s = TcpStream::connect(DNS).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn dig(args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.70.0.53", "-p", "5353", "+time=3", "+tries=1"])
        .args(args)
        .stdout(Stdio::piped())
        .output()
        .expect("dig (Debian bind9-dnsutils) must be installed; make test installs it");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn authoritative_answers_gslb_failover_ecs_truncation_and_reload() {
    let dir = scratch("dns");
    let (w, us, eu) = world(None);
    let cfg = w.write(&dir);
    let (us_hc, eu_hc) = (format!("{}:8000", us.ip), format!("{}:8000", eu.ip));
    let (us_ip, eu_ip) = (us.ip.as_str(), eu.ip.as_str());
    // The regions' gateway health endpoints: sim backends whose readiness the test switches.
    let _us = sim(&us_hc, "us-gw", "m", "v1", &[]);
    let _eu = sim(&eu_hc, "eu-gw", "m", "v1", &[]);
    let _dns = dns_server(&cfg, &dir);
    let c = client();
    wait_until("dns admin", Duration::from_secs(20), || {
        c.get(format!("http://{ADMIN}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    wait_until("dns answers", Duration::from_secs(20), || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        s.send_to(&query("ns1.meridian.test.", RecordType::A, None), DNS)
            .is_ok()
            && s.recv_from(&mut [0u8; 512]).is_ok()
    });

    // Static records, AA, NXDOMAIN and NODATA with the SOA, REFUSED outside our zones.
    let m = udp(&query("ns1.meridian.test.", RecordType::A, None));
    assert!(m.metadata.authoritative);
    assert_eq!(a_records(&m), ["127.0.0.1"]);
    let nx = udp(&query("nope.meridian.test.", RecordType::A, None));
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert_eq!(nx.authorities.first().map(|r| r.record_type()), Some(RecordType::SOA));
    let nodata = udp(&query("ns1.meridian.test.", RecordType::AAAA, None));
    assert_eq!(
        (nodata.metadata.response_code, nodata.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(
        nodata.authorities.first().map(|r| r.record_type()),
        Some(RecordType::SOA)
    );
    let refused = udp(&query("example.com.", RecordType::A, None));
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert_eq!(udp(&query("meridian.test.", RecordType::MX, None)).answers.len(), 1);
    assert_eq!(
        udp(&query("www.meridian.test.", RecordType::A, None)).answers.len(),
        2,
        "CNAME + target"
    );
    let v6 = udp(&query("api.meridian.test.", RecordType::AAAA, None));
    assert!(matches!(v6.answers.first().map(|r| &r.data), Some(RData::AAAA(_))));

    // Malformed packets never crash the server.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [&b"\x00"[..], b"garbage that is not dns at all", &[0xffu8; 40]] {
        s.send_to(junk, DNS).unwrap();
    }
    assert_eq!(
        a_records(&udp(&query("ns1.meridian.test.", RecordType::A, None))),
        ["127.0.0.1"]
    );

    // A large answer: TC over plain UDP (512 bytes), complete over TCP, and dig retries over TCP itself.
    let big = udp(&query("big.meridian.test.", RecordType::TXT, None));
    assert!(
        big.metadata.truncation,
        "TC must be set when the answer does not fit 512 bytes"
    );
    assert_eq!(
        tcp(&query("big.meridian.test.", RecordType::TXT, None)).answers.len(),
        40
    );
    let mut e = Edns::new();
    e.set_max_payload(4096);
    let edns_big = udp(&query("big.meridian.test.", RecordType::TXT, Some(e)));
    assert!(
        edns_big.metadata.truncation,
        "our max_udp_payload is 1232, below 40 x ~55 bytes"
    );
    let d = dig(&["big.meridian.test", "TXT"]);
    assert!(d.contains("ANSWER: 40"), "dig falls back to TCP: {d}");

    // GSLB failover: us while its probes pass, eu once they fail, us again on recovery.
    assert_eq!(
        a_records(&udp(&query("api.meridian.test.", RecordType::A, None))),
        [us_ip]
    );
    sim_control(&us_hc, json!({"ready": false}));
    wait_until("failover to eu", Duration::from_secs(10), || {
        a_records(&udp(&query("api.meridian.test.", RecordType::A, None))) == [eu_ip]
    });
    let regions: serde_json::Value = c.get(format!("http://{ADMIN}/regions")).send().unwrap().json().unwrap();
    let us = regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "us")
        .unwrap()
        .clone();
    assert_eq!(us["healthy"], false);
    assert!(us["reason"].as_str().unwrap().contains("503"), "{us}");
    sim_control(&us_hc, json!({"ready": true}));
    wait_until("failback to us", Duration::from_secs(10), || {
        a_records(&udp(&query("api.meridian.test.", RecordType::A, None))) == [us_ip]
    });

    // nearest + ECS: the client subnet picks the region and the scope is echoed (RFC 7871).
    let mut e = Edns::new();
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        "10.2.3.0".parse().unwrap(),
        24,
        0,
    )));
    let m = udp(&query("near.meridian.test.", RecordType::A, Some(e)));
    assert_eq!(a_records(&m), [eu_ip]);
    match m.edns.as_ref().and_then(|e| e.options().get(EdnsCode::Subnet)) {
        Some(EdnsOption::Subnet(s)) => assert_eq!((s.source_prefix(), s.scope_prefix()), (24, 16)),
        other => panic!("ECS not echoed: {other:?}"),
    }
    let d = dig(&["near.meridian.test", "A", "+subnet=10.1.7.0/24"]);
    assert!(d.contains(us_ip) && d.contains("10.1.7.0/24/16"), "{d}");
    assert!(d.contains("flags: qr aa"), "{d}");

    // Reload by file change: a new record appears and the SOA serial moves.
    let serial = |m: &Message| match m.answers.first().map(|r| &r.data) {
        Some(RData::SOA(s)) => s.serial,
        _ => 0,
    };
    let before = serial(&udp(&query("meridian.test.", RecordType::SOA, None)));
    world(Some(record("added", Data::A, "127.0.0.99"))).0.rewrite(&cfg);
    wait_until("reload", Duration::from_secs(10), || {
        a_records(&udp(&query("added.meridian.test.", RecordType::A, None))) == ["127.0.0.99"]
    });
    assert!(serial(&udp(&query("meridian.test.", RecordType::SOA, None))) > before);

    // Metrics count queries by type and rcode, and GSLB answers by region.
    let text = c.get(format!("http://{ADMIN}/metrics")).send().unwrap().text().unwrap();
    assert!(
        text.contains(r#"meridian_dns_queries_total{protocol="udp",qtype="A",rcode="NXDOMAIN"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"meridian_dns_queries_total{protocol="tcp",qtype="TXT",rcode="NOERROR"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"meridian_dns_gslb_answers_total{name="api.meridian.test.",region="eu"}"#),
        "{text}"
    );
    assert!(text.contains(r#"meridian_dns_region_healthy{region="us"} 1"#), "{text}");
}

/// Where [`World::dns`] puts the second test's DNS server (net 71).
const DNS2: &str = "127.71.0.53:5353";
const ADMIN2: &str = "127.71.0.53:9953";

/// The second test's world: a name for every policy (fail-open and fail-closed failover, all
/// healthy, weighted, nearest with a model whose capacity control reports), and a CIDR map.
fn world2() -> (World, Gw, Gw) {
    let (mut w, us, eu) = two_regions(71);
    let never_started = ["us", "eu"].map(|r| (r, w.addrs.host(1) + ":8000"));
    for (region, at) in &never_started {
        w.endpoint_at("m", "v1", "", at, region, &format!("{region}-a"));
    }
    assert_eq!(w.dns_probing(ms(100), ms(300)).listen, DNS2);
    let d = w.dns_mut();
    d.zones[0].records.clear();
    let mut closed = gslb("closed.meridian.test", GslbPolicy::Failover, &["us", "eu"]);
    closed.when_all_down = AllDown::FailClosed;
    let mut weighted = gslb("weighted.meridian.test", GslbPolicy::Weighted, &[]);
    weighted.weights = [("us".to_string(), 50), ("eu".to_string(), 50)].into();
    let mut near = gslb("near.meridian.test", GslbPolicy::Nearest, &["us", "eu"]);
    near.models = vec!["m".into()];
    d.gslb = vec![
        gslb("open.meridian.test", GslbPolicy::Failover, &["us", "eu"]),
        closed,
        gslb("all.meridian.test", GslbPolicy::AllHealthy, &[]),
        weighted,
        near,
    ];
    d.cidr_map = vec![CidrRegion {
        cidr: "127.71.9.0/24".parse().unwrap(),
        region: "eu".into(),
    }];
    (w, us, eu)
}

fn ask(name: &str) -> Vec<String> {
    a_records(&udp_from(DNS2, "127.0.0.1:0", &query(name, RecordType::A, None)))
}

#[test]
fn every_policy_fail_open_closed_reports_source_placement_and_fuzz() {
    let dir = scratch("dns2");
    let (w, us_gw, eu_gw) = world2();
    let cfg = w.write(&dir);
    let (us_hc, eu_hc) = (format!("{}:8000", us_gw.ip), format!("{}:8000", eu_gw.ip));
    let (us_ip, eu_ip) = (us_gw.ip.as_str(), eu_gw.ip.as_str());
    let mut us = sim(&us_hc, "us-gw", "m", "v1", &[]);
    let _eu = sim(&eu_hc, "eu-gw", "m", "v1", &[]);
    let mut dns = dns_server(&cfg, &dir);
    let c = client();
    wait_until("dns admin", Duration::from_secs(20), || {
        c.get(format!("http://{ADMIN2}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    let both = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    wait_until("first answers", Duration::from_secs(10), || {
        ask("open.meridian.test.") == [us_ip]
    });

    // Every policy with both regions up.
    assert_eq!(both(ask("all.meridian.test.")), [us_ip, eu_ip]);
    let w = ask("weighted.meridian.test.");
    assert_eq!(w.len(), 1);
    for _ in 0..10 {
        assert_eq!(
            ask("weighted.meridian.test."),
            w,
            "weighted is stable for one client subnet"
        );
    }
    assert_eq!(
        ask("near.meridian.test."),
        [us_ip],
        "an unplaced client gets the first healthy region"
    );
    // nearest by the resolver's own address (no ECS): 127.71.9.0/24 is mapped to eu.
    let from_eu = udp_from(DNS2, "127.71.9.5:0", &query("near.meridian.test.", RecordType::A, None));
    assert_eq!(a_records(&from_eu), [eu_ip]);

    // A control report of no healthy capacity for the name's model takes us out of `near` only.
    let put = |body: serde_json::Value| {
        c.put(format!("http://{ADMIN2}/regions/us/report"))
            .json(&body)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(put(json!({"models": {"m": 0}})), 200);
    assert_eq!(ask("near.meridian.test."), [eu_ip]);
    assert_eq!(
        ask("open.meridian.test."),
        [eu_ip],
        "a name for all models needs some capacity: us reported none at all"
    );
    assert_eq!(put(json!({"models": {"m": 3}})), 200);
    assert_eq!(ask("near.meridian.test."), [us_ip]);
    assert_eq!(
        c.put(format!("http://{ADMIN2}/regions/mars/report"))
            .json(&json!({"models": {}}))
            .send()
            .unwrap()
            .status(),
        404
    );

    // us's gateway stops answering altogether (the process dies): failover to eu.
    us.kill();
    wait_until("failover", Duration::from_secs(10), || {
        ask("open.meridian.test.") == [eu_ip]
    });
    assert_eq!(ask("all.meridian.test."), [eu_ip]);
    assert_eq!(ask("weighted.meridian.test."), [eu_ip]);

    // Everything down: fail open answers as if all were up, fail closed answers nothing.
    sim_control(&eu_hc, json!({"ready": false}));
    wait_until("eu down", Duration::from_secs(10), || {
        ask("closed.meridian.test.").is_empty()
    });
    let closed = udp_from(
        DNS2,
        "127.0.0.1:0",
        &query("closed.meridian.test.", RecordType::A, None),
    );
    assert_eq!(
        (closed.metadata.response_code, closed.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(
        closed.authorities.first().map(|r| r.record_type()),
        Some(RecordType::SOA)
    );
    assert_eq!(
        ask("open.meridian.test."),
        [us_ip],
        "fail open: the first region in order"
    );
    assert_eq!(both(ask("all.meridian.test.")), [us_ip, eu_ip]);

    // Failback once us answers again.
    let _us2 = sim(&us_hc, "us-gw", "m", "v1", &[]);
    wait_until("failback", Duration::from_secs(10), || {
        ask("closed.meridian.test.") == [us_ip]
    });

    // Fuzz: random packets and every truncation of a valid EDNS+ECS query; the server lives on.
    let mut e = Edns::new();
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        "10.9.8.0".parse().unwrap(),
        24,
        0,
    )));
    let valid = query("near.meridian.test.", RecordType::A, Some(e));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for cut in 0..valid.len() {
        s.send_to(&valid[..cut], DNS2).unwrap();
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..2000 {
        let len = 1 + (i % 300);
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        s.send_to(&pkt, DNS2).unwrap();
    }
    let mut tcp_junk = TcpStream::connect(DNS2).unwrap();
    let _ = tcp_junk.write_all(&[0x00, 0x40, 1, 2, 3]);
    drop(tcp_junk);
    assert!(
        dns.child.try_wait().unwrap().is_none(),
        "the DNS server must survive malformed input"
    );
    assert_eq!(ask("closed.meridian.test."), [us_ip]);
}
