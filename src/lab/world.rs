//! The lab's plan (who listens where), its config file, and its child processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use meridian_config::schema::{CidrRegion, Config, GeoPoint, GslbPolicy, RegionControl};
use meridian_config::units::Duration as Period;

use super::LabArgs;

const REGIONS: [(&str, &str, f64, f64); 4] = [
    ("us-east", "us-east-1", 38.9, -77.0),
    ("eu-west", "eu-west-1", 53.3, -6.3),
    ("ap-south", "ap-south-1", 19.1, 72.9),
    ("sa-east", "sa-east-1", -23.5, -46.6),
];
const ZONE_LETTERS: [&str; 3] = ["a", "b", "c"];

/// A simulated backend of the plan.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Endpoint id.
    pub id: String,
    /// Listen address.
    pub addr: String,
    /// Region index.
    pub region: usize,
    /// Zone name.
    pub zone: String,
    /// Model version.
    pub version: &'static str,
}

/// The lab: its plan and, once started, its processes.
pub struct World {
    args: LabArgs,
    /// Region names in order.
    pub regions: Vec<String>,
    /// Zone names by region.
    pub zones: Vec<Vec<String>>,
    /// Every backend.
    pub backends: Vec<Backend>,
    /// Where the config is written.
    pub config: PathBuf,
    children: Arc<Mutex<Vec<(String, Child)>>>,
}

/// What chaos mode needs to act on the running lab.
#[derive(Clone)]
pub struct Handle {
    /// Backends.
    pub backends: Vec<Backend>,
    /// Region names.
    pub regions: Vec<String>,
    /// The binary, to restart a region's gateway.
    pub exe: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// Folder for logs.
    pub out: PathBuf,
    /// Child processes by name.
    pub children: Arc<Mutex<Vec<(String, Child)>>>,
}

/// The gateway address of region `i` (us-east is 127.0.1.1, eu-west 127.0.2.1, ...).
pub fn gateway_ip(i: usize) -> String {
    format!("127.0.{}.1", i + 1)
}

impl World {
    /// Plans addresses for the requested shape.
    pub fn plan(args: &LabArgs) -> World {
        let mut regions = Vec::new();
        let mut zones = Vec::new();
        let mut backends = Vec::new();
        for (ri, (name, prefix, _, _)) in REGIONS.iter().take(args.regions as usize).enumerate() {
            regions.push(name.to_string());
            let zs: Vec<String> = ZONE_LETTERS
                .iter()
                .take(args.zones as usize)
                .map(|l| format!("{prefix}{l}"))
                .collect();
            for (zi, z) in zs.iter().enumerate() {
                let versions: &[&'static str] = if ri == 0 { &["v1", "v2"] } else { &["v1"] };
                for (vi, v) in versions.iter().enumerate() {
                    for b in 0..args.backends as usize {
                        let host = 10 + vi * 100 + zi * 10 + b + 1;
                        backends.push(Backend {
                            id: format!("iris-{v}-{z}-{}", b + 1),
                            addr: format!("127.0.{}.{host}:8000", ri + 1),
                            region: ri,
                            zone: z.clone(),
                            version: v,
                        });
                    }
                }
            }
            zones.push(zs);
        }
        let config = args.out.join("meridian-lab.yaml");
        World {
            args: args.clone(),
            regions,
            zones,
            backends,
            config,
            children: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The generated config, built from the config crate's own types.
    pub fn config(&self) -> Config {
        use meridian_config::build;
        let addr = |s: String| -> SocketAddr { s.parse().expect("the lab's addresses are literal IPs and ports") };
        let mut cfg = Config::default();
        for (i, name) in self.regions.iter().enumerate() {
            let (_, _, lat, lon) = REGIONS[i];
            let ip = gateway_ip(i);
            let zones: Vec<&str> = self.zones[i].iter().map(String::as_str).collect();
            let mut region = build::region(name, &zones);
            region.location = Some(GeoPoint { lat, lon });
            region.failover = self.regions.iter().filter(|o| *o != name).cloned().collect();
            let mut gw = build::gateway(addr(format!("{ip}:8080")), addr(format!("{ip}:9901")));
            gw.public_addresses = vec![ip.parse().expect("an IP")];
            gw.shutdown_delay = Period::millis(500);
            region.gateway = Some(gw);
            region.control = Some(RegionControl {
                address: addr(format!("{ip}:9902")),
            });
            cfg.regions.push(region);
        }
        let t = &mut cfg.control.telemetry;
        (t.interval, t.timeout) = (Period::secs(1), Period::millis(500));
        let hc = &mut cfg.gateway.health_check;
        (hc.interval, hc.timeout, hc.healthy_threshold, hc.unhealthy_threshold) =
            (Period::secs(1), Period::millis(500), 1, 2);
        let od = &mut cfg.gateway.outlier_detection;
        (od.interval, od.base_ejection_time) = (Period::secs(2), Period::secs(10));
        let mut model = build::model("sklearn-iris");
        for v in ["v1", "v2"] {
            let mut version = build::version(v);
            for b in self.backends.iter().filter(|b| b.version == v) {
                let ep = build::endpoint(Some(&b.id), addr(b.addr.clone()), &self.regions[b.region], &b.zone);
                version.endpoints.push(ep);
            }
            model.versions.push(version);
        }
        let mut premium = build::header_rule("x-user-segment", "premium", "v2");
        premium.name = Some("premium".into());
        let mut default = build::split(&[("v1", 90), ("v2", 10)], Some("x-user-id"));
        default.name = Some("default".into());
        model.routes = vec![premium, default];
        cfg.models.push(model);
        let mut dns = build::dns(
            addr("127.0.0.1:5353".into()),
            addr("127.0.0.1:9953".into()),
            "meridian.test",
            "127.0.0.1",
        );
        let p = &mut dns.probe;
        (p.interval, p.timeout, p.healthy_threshold, p.unhealthy_threshold) =
            (Period::secs(1), Period::millis(500), 1, 2);
        let mut api = build::gslb("api.meridian.test", GslbPolicy::Nearest, &[]);
        api.ttl = Period::secs(5);
        dns.gslb.push(api);
        dns.cidr_map = self
            .regions
            .iter()
            .enumerate()
            .map(|(i, region)| CidrRegion {
                cidr: format!("127.0.{}.0/24", i + 1).parse().expect("a CIDR"),
                region: region.clone(),
            })
            .collect();
        cfg.dns = Some(dns);
        cfg
    }

    /// The config file's text, which `meridian check` accepts.
    pub fn config_text(&self) -> String {
        format!(
            "# Generated by `meridian lab`. Check it with: meridian check <this file>\n{}",
            meridian_config::to_yaml(&self.config())
        )
    }

    /// Writes the config file.
    pub fn write_config(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.args.out).with_context(|| format!("creating {}", self.args.out.display()))?;
        std::fs::write(&self.config, self.config_text())
            .with_context(|| format!("writing {}", self.config.display()))?;
        meridian_config::load_file(&self.config)
            .map_err(|e| anyhow::anyhow!("the lab's own config is invalid:\n{e}"))?;
        Ok(())
    }

    /// A handle for chaos mode.
    pub fn handle(&self) -> Handle {
        Handle {
            backends: self.backends.clone(),
            regions: self.regions.clone(),
            exe: std::env::current_exe().unwrap_or_else(|_| "meridian".into()),
            config: self.config.clone(),
            out: self.args.out.clone(),
            children: self.children.clone(),
        }
    }

    /// Starts every part and waits until each one answers.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let h = self.handle();
        for b in &self.backends {
            h.spawn(
                &b.id,
                &[
                    "sim-backend",
                    "--listen",
                    &b.addr,
                    "--id",
                    &b.id,
                    "--version",
                    b.version,
                    "--latency",
                    "5ms",
                    "--jitter",
                    "2ms",
                ],
            )?;
        }
        for b in &self.backends {
            wait_http(&format!("http://{}/v2/health/live", b.addr)).await?;
        }
        for (i, r) in self.regions.iter().enumerate() {
            let config = self.config.to_string_lossy();
            h.spawn(
                &format!("control-{r}"),
                &["control", "--config", &config, "--region", r],
            )?;
            wait_http(&format!("http://{}:9902/healthz", gateway_ip(i))).await?;
        }
        for i in 0..self.regions.len() {
            h.start_gateway(i)?;
        }
        h.spawn("dns", &["dns", "--config", &self.config.to_string_lossy()])?;
        for i in 0..self.regions.len() {
            wait_http(&format!("http://{}:9901/readyz", gateway_ip(i))).await?;
        }
        wait_http("http://127.0.0.1:9953/healthz").await?;
        // Readiness alone could come from another lab holding the same addresses: make sure every
        // part that answered is ours and still running.
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        for (name, c) in children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                anyhow::bail!(
                    "{name} exited ({status}); see {} (is another lab or service using its address?)",
                    self.args.out.join(format!("{name}.log")).display()
                );
            }
        }
        Ok(())
    }

    /// Prints what runs where and how to try it.
    pub fn print(&self) {
        println!(
            "meridian lab: {} regions, {} backends",
            self.regions.len(),
            self.backends.len()
        );
        for (i, r) in self.regions.iter().enumerate() {
            let ip = gateway_ip(i);
            println!(
                "  {r:<9} gateway http://{ip}:8080   admin http://{ip}:9901   zones {}",
                self.zones[i].join(", ")
            );
            for b in self.backends.iter().filter(|b| b.region == i) {
                println!("            {:<24} {:<4} {} ({})", b.id, b.version, b.addr, b.zone);
            }
        }
        println!(
            "  dns       127.0.0.1:5353 (udp, tcp)   admin http://127.0.0.1:9953   api.meridian.test by nearest region"
        );
        for (i, r) in self.regions.iter().enumerate() {
            println!(
                "  control   {r:<9} state feed http://{}:9902/v1/state (readiness, GPU headroom, drains)",
                gateway_ip(i)
            );
        }
        println!("  config    {}", self.config.display());
        println!();
        println!("Status pages (open in a browser):");
        for (i, r) in self.regions.iter().enumerate() {
            println!("  {r:<9} gateway  http://{}:9901/", gateway_ip(i));
        }
        println!("  world     DNS      http://127.0.0.1:9953/");
        println!();
        println!("Try:");
        println!("  curl -s -X POST http://127.0.1.1:8080/v2/models/sklearn-iris/infer -d '{{\"inputs\":[]}}'");
        println!("  curl -s -X POST http://127.0.1.1:8080/v2/models/sklearn-iris/infer -H 'x-user-segment: premium' -d '{{}}'");
        println!("  curl -s -X POST http://127.0.1.1:8080/v2/models/sklearn-iris/versions/v2/infer -d '{{}}'");
        println!(
            "  curl -s -X POST http://127.0.1.1:8080/v1/models/sklearn-iris:predict -d '{{\"instances\":[[1,2,3,4]]}}'"
        );
        println!("  curl -s http://127.0.1.1:9901/endpoints");
        println!("  curl -s http://127.0.1.1:9901/metrics | grep inference_requests_total");
        println!("  dig @127.0.0.1 -p 5353 api.meridian.test");
        if self.regions.len() > 1 {
            println!("  dig @127.0.0.1 -p 5353 -b 127.0.2.9 api.meridian.test      # a client in eu-west's subnet");
        }
        println!("  dig @127.0.0.1 -p 5353 api.meridian.test +subnet=127.0.1.0/24");
        println!("  curl -s http://127.0.0.1:9953/regions");
        println!("  {} check {}", self.handle().exe.display(), self.config.display());
        println!(
            "  {} explain --config {} --region us-east POST /v2/models/sklearn-iris/infer -H 'x-user-id: alice'",
            self.handle().exe.display(),
            self.config.display()
        );
        println!();
        println!("lab is up; logs in {}; Ctrl-C stops it", self.args.out.display());
    }

    /// Stops every child process.
    pub fn stop(&mut self) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        for (_, c) in children.iter_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for (name, c) in children.iter_mut() {
            // Up to 5 s for it to go.
            for _ in 0..250 {
                if !matches!(c.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("lab: {name} did not stop on SIGTERM; killing it");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        children.clear();
    }
}

impl Handle {
    /// Starts a child of this binary, logging to the out folder.
    pub fn spawn(&self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.out.join(format!("{name}.log")))?;
        let err = log.try_clone()?;
        let child = Command::new(&self.exe)
            .args(args)
            .env("MERIDIAN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), child));
        Ok(())
    }

    /// Starts region `i`'s gateway.
    pub fn start_gateway(&self, i: usize) -> anyhow::Result<()> {
        let zone = format!("{}a", REGIONS[i].1);
        let name = format!("gateway-{}", self.regions[i]);
        self.spawn(
            &name,
            &[
                "gateway",
                "--config",
                &self.config.to_string_lossy(),
                "--region",
                &self.regions[i],
                "--zone",
                &zone,
                "--threads",
                "1",
            ],
        )
    }

    /// Stops a named child (SIGKILL, as a crash would).
    pub fn kill(&self, name: &str) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pos) = children.iter().position(|(n, _)| n == name) {
            let (_, mut c) = children.remove(pos);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `url` answers 200 (the part is up), for at most 30 s.
pub async fn wait_http(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} did not come up within 30 s")
}
