//! Failover drills over network namespaces: each region runs in its own namespace (gateway and
//! sim backends in two zones) behind a veth link to the root namespace, where the clients and the
//! DNS server are. (a) A zone's backends die under load: the gateway spills to the other zone.
//! (b) A region's link goes down: DNS stops answering with it and the other region serves.
//! (c) The link comes back: failback. Measured failover times and losses are written to stderr
//! (uncaptured, so they show in CI's log). Without root or `ip netns`, the drills say so and skip;
//! the same behaviours run on loopback in gateway_failover.rs, dns_e2e.rs and control_feed.rs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use meridian_config::schema::{GslbPolicy, RegionControl};

/// Runs `ip ARGS`, failing the test when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether network namespaces can be made here (root and iproute2).
fn netns_available(probe: &str) -> bool {
    let made = Command::new("ip")
        .args(["netns", "add", probe])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let _ = Command::new("ip").args(["netns", "del", probe]).status();
    }
    made
}

/// A region's namespace and its link to the root namespace; removed when dropped.
struct Region {
    ns: String,
    host_if: String,
    procs: Vec<Proc>,
}

impl Region {
    fn new(tag: &str, n: u8) -> Region {
        let ns = format!("mdr-{tag}-{}", std::process::id());
        let host_if = format!("mdh{n}{}", std::process::id() % 100_000);
        let peer_if = format!("mdp{n}{}", std::process::id() % 100_000);
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer_if]);
        ip(&["link", "set", &peer_if, "netns", &ns]);
        ip(&["addr", "add", &format!("10.77.{n}.1/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("10.77.{n}.2/24"),
            "dev",
            &peer_if,
        ]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", &peer_if, "up"]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        Region {
            ns,
            host_if,
            procs: Vec::new(),
        }
    }

    /// Starts `meridian ARGS` inside the namespace; waits for `banner` on stdout when given.
    fn run(&mut self, name: &str, args: &[&str], log: &std::path::Path, banner: Option<&str>) -> usize {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_meridian")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        if let Some(b) = banner {
            loop {
                match lines.next() {
                    Some(Ok(l)) if l.contains(b) => break,
                    Some(Ok(_)) => {}
                    _ => panic!("{name} did not start; see {}", log.display()),
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.procs.push(Proc {
            child,
            name: name.into(),
        });
        self.procs.len() - 1
    }

    /// Kills a process of this region (SIGKILL, as a crash would).
    fn kill(&mut self, name: &str) {
        self.procs.retain(|p| p.name != name);
    }

    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Regions us and eu, each in its own namespace (gateway and control on 10.77.N.2, backends on
/// the namespace's own loopback), failing over to each other; DNS in the root namespace.
fn world() -> (World, DnsAt) {
    let mut w = World::new(77);
    for (n, (name, other)) in [("us", "eu"), ("eu", "us")].into_iter().enumerate() {
        let ip = format!("10.77.{}.2", n + 1);
        let zones = [format!("{name}-a"), format!("{name}-b")];
        w.gateway_at(name, &[&zones[0], &zones[1]], &ip);
        w.announce(name);
        w.admin_token(name, "drill");
        w.region_of(name).failover = vec![other.into()];
        for (k, zone) in zones.iter().enumerate() {
            let at = format!("127.0.{}.{}:8001", n + 1, k + 1);
            w.endpoint_at("m", "v1", zone, &at, name, zone);
        }
    }
    w.region_of("us").control = Some(RegionControl {
        address: "10.77.1.2:9902".parse().unwrap(),
    });
    let t = &mut w.config.control.telemetry;
    (t.interval, t.timeout) = (ms(200), ms(200));
    let hc = &mut w.config.gateway.health_check;
    (hc.interval, hc.timeout, hc.healthy_threshold, hc.unhealthy_threshold) = (ms(200), ms(200), 1, 2);
    let dns = w.dns_probing(ms(200), ms(300));
    let d = w.dns_mut();
    let mut api = gslb("api.meridian.test", GslbPolicy::Failover, &["us", "eu"]);
    api.ttl = secs(1);
    d.gslb.push(api);
    (w, dns)
}

fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "drill: {line}");
}

fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn failover_drills_over_network_namespaces() {
    if !netns_available(&format!("mdr-probe-{}", std::process::id())) {
        report("network namespaces unavailable (needs root and iproute2): skipped; loopback drills run in gateway_failover, dns_e2e and control_feed");
        return;
    }
    let dir = scratch("drills");
    let (world, dns_at) = world();
    let cfg = world.write(&dir);
    let cfg_s = cfg.to_str().unwrap().to_string();
    let mut regions = Vec::new();
    for (n, r) in [(1u8, "us"), (2u8, "eu")] {
        let mut region = Region::new(r, n);
        for zone in ["a", "b"] {
            let addr = format!("127.0.{n}.{}:8001", if zone == "a" { 1 } else { 2 });
            let id = format!("{r}-{zone}");
            region.run(
                &id,
                &[
                    "sim-backend",
                    "--listen",
                    &addr,
                    "--id",
                    &id,
                    "--model",
                    "m",
                    "--latency",
                    "1ms",
                ],
                &dir.join(format!("{id}.log")),
                Some("listening on"),
            );
        }
        if r == "us" {
            region.run(
                "control-us",
                &["control", "--config", &cfg_s, "--region", "us"],
                &dir.join("control-us.log"),
                Some("listening on"),
            );
        }
        let zone = format!("{r}-a");
        region.run(
            &format!("gateway-{r}"),
            &[
                "gateway",
                "--config",
                &cfg_s,
                "--region",
                r,
                "--zone",
                &zone,
                "--threads",
                "1",
            ],
            &dir.join(format!("gateway-{r}.log")),
            None,
        );
        let c = client();
        wait_until("gateway ready across its link", Duration::from_secs(30), || {
            c.get(format!("http://10.77.{n}.2:9901/readyz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
        regions.push(region);
    }
    let _dns = dns_server(&cfg, &dir);
    let dns = dns_at.listen.as_str();
    wait_until("DNS answers with us", Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == ["10.77.1.2"]
    });

    // (a) us-a's backend dies under load; the us gateway spills to us-b.
    let load = Load::start("10.77.1.2:8080", "/v2/models/m/infer", 4);
    load.wait_for_more(500, "load before the zone loss");
    regions[0].kill("us-a");
    load.wait_for_more(5000, "load after the zone loss");
    let (ok, failed) = load.stop();
    let loss = failed as f64 / (ok + failed) as f64;
    report(&format!(
        "(a) zone us-a's backend killed under load: {failed} of {} requests failed ({:.3}%)",
        ok + failed,
        loss * 100.0
    ));
    assert!(loss < 0.001, "{failed} of {} failed", ok + failed);

    // (b) us's link goes down: DNS answers with eu, whose gateway serves.
    regions[0].link(false);
    let failover = time_until(Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == ["10.77.2.2"]
    });
    report(&format!(
        "(b) us link down: DNS answered eu after {} ms (probe interval 200 ms x unhealthy threshold 2 = 400 ms, plus the 300 ms probe timeout)",
        failover.as_millis()
    ));
    assert_eq!(
        infer(&client(), "10.77.2.2:8080", "/v2/models/m/infer", &[]).status,
        200
    );

    // (c) the link comes back: failback once the probes pass again.
    regions[0].link(true);
    let failback = time_until(Duration::from_secs(20), || {
        dig_a(dns, "api.meridian.test") == ["10.77.1.2"]
    });
    report(&format!(
        "(c) us link back: DNS answered us again after {} ms (healthy threshold 1)",
        failback.as_millis()
    ));
    assert_eq!(
        infer(&client(), "10.77.1.2:8080", "/v2/models/m/infer", &[]).status,
        200
    );

    // (d) us's control loop dies: its gateway and DNS keep serving on the last state.
    wait_until("DNS follows us's control", Duration::from_secs(20), || {
        scrape(&dns_at.admin).contains("meridian_state_feed_staleness_seconds{region=\"us\"}")
    });
    regions[0].kill("control-us");
    let load = Load::start("10.77.1.2:8080", "/v2/models/m/infer", 2);
    load.wait_for_more(1000, "load with control gone");
    let (ok, failed) = load.stop();
    let dns_answer = dig_a(dns, "api.meridian.test");
    let stale = metric_sum(&scrape("10.77.1.2:9901"), "meridian_state_feed_staleness_seconds", &[]);
    report(&format!(
        "(d) us control killed: {failed} of {} requests failed, DNS still answers {dns_answer:?}, gateway feed staleness {stale:.1} s",
        ok + failed
    ));
    assert_eq!(failed, 0);
    assert_eq!(dns_answer, ["10.77.1.2"]);
}
