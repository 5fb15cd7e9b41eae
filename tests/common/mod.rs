//! Shared harness of the end-to-end tests: real `meridian` processes on distinct loopback
//! addresses, readiness by signals (a printed line, an admin endpoint), never by sleeping.

#![allow(dead_code)]

pub mod browser;
pub mod kube;
pub mod world;
#[allow(unused_imports)]
pub use world::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Kills the process now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name, e.g. "HUP".
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig} {}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_meridian")
}

/// Starts a simulated backend and waits for its `listening on` line.
pub fn sim(addr: &str, id: &str, model: &str, version: &str, extra: &[&str]) -> Proc {
    let mut child = Command::new(bin())
        .args([
            "sim-backend",
            "--listen",
            addr,
            "--id",
            id,
            "--model",
            model,
            "--version",
            version,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sim-backend");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read sim-backend stdout");
    assert!(
        line.contains("listening on"),
        "sim-backend {id} did not start: {line:?}"
    );
    Proc {
        child,
        name: format!("sim {id}"),
    }
}

/// A lab stopped as Ctrl-C stops it (its parts with it) when dropped, even by a failing test.
pub struct LabGuard(pub Proc);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if matches!(self.0.child.try_wait(), Ok(None)) {
            self.0.signal("INT");
            let _ = self.0.child.wait();
        }
    }
}

/// What the lab prints after "lab is up".
pub type LabLines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Starts `meridian lab --out OUT` and waits for "lab is up"; returns it, what it printed, and the
/// rest of its output.
pub fn lab(out: &Path) -> (Proc, String, LabLines) {
    let mut child = Command::new(bin())
        .args(["lab", "--duration", "10m", "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut printed = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let up = line.starts_with("lab is up");
        printed.push(line);
        if up {
            break;
        }
    }
    let lab = Proc {
        child,
        name: "lab".into(),
    };
    (lab, printed.join("\n"), lines)
}

/// The live cells of the status page of the admin API at `admin` (`/status.json`).
pub fn status_cells(admin: &str) -> Value {
    let r = client().get(format!("http://{admin}/status.json")).send().unwrap();
    r.json::<Value>().unwrap()["cells"].clone()
}

/// A scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("meridian-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a config file atomically (write, then rename), as a config management tool would.
pub fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts a gateway and waits until its admin API says ready and its public listener answers.
pub fn gateway(config: &Path, region: &str, zone: Option<&str>, admin: &str, public: &str) -> Proc {
    let log = std::fs::File::create(config.with_extension(format!("{region}.log"))).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["gateway", "--config"]).arg(config).args(["--region", region]);
    if let Some(z) = zone {
        cmd.args(["--zone", z]);
    }
    let out = std::fs::File::create(config.with_extension(format!("{region}.out"))).unwrap();
    let child = cmd.stdout(out).stderr(log).spawn().expect("spawn gateway");
    let p = Proc {
        child,
        name: format!("gateway {region}"),
    };
    let c = client();
    wait_until("gateway ready", Duration::from_secs(30), || {
        c.get(format!("http://{admin}/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
            && c.get(format!("http://{public}/v2/health/live"))
                .send()
                .is_ok_and(|r| r.status() == 200)
    });
    p
}

/// A blocking HTTP client with a bound on every request (a hang fails the test instead of stalling it).
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Polls a condition on observable state until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The answer to one inference request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub served_by: String,
    pub version: String,
}

/// POSTs a V2 inference with the given headers.
pub fn infer(c: &reqwest::blocking::Client, public: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = c.post(format!("http://{public}{path}")).body(r#"{"inputs":[]}"#);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().unwrap_or(Value::Null);
            let served_by = body["served_by"].as_str().unwrap_or_default().to_string();
            let version = body["model_version"].as_str().unwrap_or_default().to_string();
            Answer {
                status,
                body,
                served_by,
                version,
            }
        }
        Err(e) => Answer {
            status: 0,
            body: Value::String(e.to_string()),
            served_by: String::new(),
            version: String::new(),
        },
    }
}

/// Changes a sim backend's faults.
pub fn sim_control(addr: &str, patch: Value) {
    let r = client()
        .post(format!("http://{addr}/sim/control"))
        .json(&patch)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A sim backend's state (served counts, faults).
pub fn sim_state(addr: &str) -> Value {
    client()
        .get(format!("http://{addr}/sim/state"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The gateway's endpoint view from its admin API.
pub fn endpoints(admin: &str) -> Vec<Value> {
    let v: Value = client()
        .get(format!("http://{admin}/endpoints"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["endpoints"].as_array().cloned().unwrap_or_default()
}

/// One endpoint's state by id (the first occurrence).
pub fn endpoint(admin: &str, id: &str) -> Value {
    endpoints(admin)
        .into_iter()
        .find(|e| e["id"] == id)
        .unwrap_or(Value::Null)
}

/// POSTs to the admin API.
pub fn admin_post(admin: &str, path: &str) -> (u16, Value) {
    let r = client().post(format!("http://{admin}{path}")).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// Closed-loop load: `threads` clients POSTing V2 inferences to `public` until stopped, counting
/// successes and failures.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients.
    pub fn start(public: &str, path: &str, threads: usize) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let workers = (0..threads)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let (public, path) = (public.to_string(), path.to_string());
                std::thread::spawn(move || {
                    let c = client();
                    while !stop.load(Ordering::Relaxed) {
                        let a = infer(&c, &public, &path, &[]);
                        if a.status == 200 { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            workers,
        }
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more requests have succeeded.
    pub fn wait_for_more(&self, n: u64, what: &str) {
        let base = self.ok();
        wait_until(what, Duration::from_secs(30), || self.ok() >= base + n);
    }

    /// Stops the clients; returns (succeeded, failed).
    pub fn stop(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.join().unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// The admin `/metrics` text of a running process.
pub fn scrape(admin: &str) -> String {
    client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// The sum of the samples of metric `name` whose labels include every `label="value"` given.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads a streaming response until its first server-sent event is complete; returns what arrived.
pub fn first_event(resp: &mut reqwest::blocking::Response) -> String {
    use std::io::Read;
    let mut got = String::new();
    let mut buf = [0u8; 1024];
    while !got.contains("\n\n") {
        let n = resp.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended before its first event: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

/// Starts `meridian ARGS` and waits for a stdout line containing `banner` (its readiness signal);
/// stderr goes to `log`.
pub fn start(name: &str, args: &[&str], log: &Path, banner: &str) -> Proc {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(banner) => break,
            Some(Ok(_)) => {}
            _ => panic!("{name} exited before saying {banner:?}; see {}", log.display()),
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child,
        name: name.into(),
    }
}

/// `dig +short` for an A record against a DNS server at `server` (`IP:PORT`).
pub fn dig_a(server: &str, name: &str) -> Vec<String> {
    dig(server, name, &[])
}

/// `dig +short` for `name A` at `server` (`IP:PORT`) with more options (`-b SOURCE`, `+tcp`):
/// the answer lines.
pub fn dig(server: &str, name: &str, more: &[&str]) -> Vec<String> {
    let (ip, port) = server.rsplit_once(':').unwrap();
    let out = Command::new("dig")
        .args([
            &format!("@{ip}"),
            "-p",
            port,
            name,
            "A",
            "+short",
            "+time=2",
            "+tries=1",
        ])
        .args(more)
        .output()
        .expect("dig (Debian package bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect()
}

/// Starts `meridian dns` on `config`, logging to `dns.log` in `dir`, once it is listening.
pub fn dns_server(config: &Path, dir: &Path) -> Proc {
    start(
        "dns",
        &["dns", "--config", config.to_str().unwrap()],
        &dir.join("dns.log"),
        "listening",
    )
}

/// Asserts that `promtool check metrics` (Debian package prometheus) accepts an exposition.
pub fn assert_promtool_accepts(what: &str, text: &str) {
    use std::io::Write;
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed; make test installs it");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test PKI made fresh for a test (rcgen): in `dir`, `ca.pem`; `api.pem`/`api.key` for
/// api.example.com and *.api.example.com; `other.pem`/`other.key` for other.example.com (server
/// certificates); `client.pem`/`client.key` (a client certificate for mutual TLS). Returns `dir`.
pub fn test_pki(dir: &Path) -> PathBuf {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Meridian test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    for (name, sans, usage) in [
        (
            "api",
            vec!["api.example.com", "*.api.example.com"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        ("other", vec!["other.example.com"], ExtendedKeyUsagePurpose::ServerAuth),
        (
            "client",
            vec!["client.example.com"],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans.into_iter().map(String::from).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    dir.to_path_buf()
}

/// A body of unknown length: an HTTP/1.1 client sends it chunked, an HTTP/2 one without a
/// `content-length`.
pub struct ChunkReader {
    chunks: std::collections::VecDeque<Vec<u8>>,
}

impl ChunkReader {
    pub fn new(chunks: Vec<Vec<u8>>) -> Self {
        ChunkReader { chunks: chunks.into() }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.chunks.pop_front() {
            Some(c) => {
                let n = c.len().min(buf.len());
                buf[..n].copy_from_slice(&c[..n]);
                if n < c.len() {
                    self.chunks.push_front(c[n..].to_vec());
                }
                Ok(n)
            }
            None => Ok(0),
        }
    }
}

/// The client's side of an HTTP/2 connection's start: the preface and an empty SETTINGS frame.
pub const H2_CLIENT_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
pub const FRAME_HEADERS: u8 = 0x1;
pub const FRAME_SETTINGS: u8 = 0x4;
pub const FRAME_GOAWAY: u8 = 0x7;

/// The type and payload of the next HTTP/2 frame read from `s`; `None` once the connection is
/// closed. A read that times out fails the test.
pub fn next_frame(s: &mut std::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use std::io::Read;
    let mut head = [0u8; 9];
    match s.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("reading an HTTP/2 frame: {e}"),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    Some((head[3], payload))
}
