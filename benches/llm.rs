//! The shared-prefix chat workload, through the gateway to 8 sim backends that model KV caches,
//! prefill and decode (`meridian sim-backend --kv-blocks ... --prefill-per-1k-tokens ...`), once per
//! balancing policy: round robin, power of two choices (the gateway's default), and the LLM-aware
//! pick (`llm:`). Each policy starts from cold caches and steps its offered rate up, open loop.
//!
//! The workload follows llm-d's published one (research/llm-routing.md): `--groups` groups sharing
//! a ~6,000-token system prompt, each request a fresh ~1,200-token question from one of five users
//! of a random group, streamed, 8 output tokens. Each backend's cache holds `--kv-blocks` 64-token
//! blocks, a fraction of the whole working set.
//!
//! ```text
//! benches/llm/run.sh                          # builds release, runs the default steps
//! target/release/deps/llm-* --bin target/release/meridian --rates 5,10,20,40 --seconds 20
//! ```
//!
//! Per policy and rate: requests sent and answered, throughput, the backends' prefix-cache hit rate
//! (cached / prompt tokens, from their counters) and time to first token (p50, p90) as the client
//! saw it. Without `--bin` (as under `cargo test`) it checks its request bodies and exits.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_config::build;
use meridian_config::schema::{Balancer, Config, LlmRouting, Timeouts};
use meridian_config::units::Duration as Span;
use serde_json::{json, Value};

const BACKENDS: usize = 8;
const PREFIX_BYTES: usize = 6_000 * 4;
const QUESTION_BYTES: usize = 1_200 * 4;

struct Args {
    bin: String,
    rates: Vec<f64>,
    seconds: f64,
    groups: usize,
    kv_blocks: usize,
    prefill_per_1k: String,
    policies: Vec<String>,
}

fn args() -> Option<Args> {
    let argv: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    Some(Args {
        bin: get("--bin")?,
        rates: get("--rates")
            .unwrap_or_else(|| "5,10,20,40".into())
            .split(',')
            .map(|r| r.parse().expect("--rates: numbers"))
            .collect(),
        seconds: get("--seconds").map_or(20.0, |s| s.parse().expect("--seconds: a number")),
        groups: get("--groups").map_or(150, |s| s.parse().expect("--groups: a number")),
        kv_blocks: get("--kv-blocks").map_or(4_000, |s| s.parse().expect("--kv-blocks: a number")),
        prefill_per_1k: get("--prefill-per-1k-tokens").unwrap_or_else(|| "20ms".into()),
        policies: get("--policies")
            .unwrap_or_else(|| "round-robin,p2c,llm".into())
            .split(',')
            .map(str::to_string)
            .collect(),
    })
}

/// A group's shared system prompt: its number first, so groups differ from their first block.
fn system_prompt(group: usize) -> String {
    let mut s = format!("Group {group}. You are the support assistant for product line {group}. ");
    let mut i = 0;
    while s.len() < PREFIX_BYTES {
        s.push_str(&format!(
            "Section {group}.{i}: the device must be reset before the firmware update is applied. "
        ));
        i += 1;
    }
    s.truncate(PREFIX_BYTES);
    s
}

/// A fresh question of `user`, numbered `n` so no two are alike.
fn question(user: usize, n: u64) -> String {
    let mut q = format!("User {user} asks (request {n}): ");
    while q.len() < QUESTION_BYTES {
        q.push_str("what does the blinking amber light mean after the update, and how do I fix it? ");
    }
    q.truncate(QUESTION_BYTES);
    q
}

fn body(system: &str, user: usize, n: u64) -> String {
    json!({
        "model": "llama",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question(user, n)}],
        "stream": true,
        "max_tokens": 8,
    })
    .to_string()
}

/// The gateway config for one policy.
fn config(policy: &str, public: SocketAddr, admin: SocketAddr, backends: &[SocketAddr], kv_blocks: usize) -> Config {
    let mut cfg = Config::default();
    cfg.regions.push(build::region("r", &["r-a"]));
    cfg.regions[0].gateway = Some(build::gateway(public, admin));
    cfg.observability.access_log.enabled = false;
    let mut model = build::model("llama");
    let mut version = build::version("v1");
    for (i, b) in backends.iter().enumerate() {
        version
            .endpoints
            .push(build::endpoint(Some(&format!("b{i}")), *b, "r", "r-a"));
    }
    model.versions.push(version);
    model.timeouts = Some(Timeouts {
        request: Span::secs(600),
        first_byte: Span::secs(600),
        ..Timeouts::default()
    });
    match policy {
        "round-robin" => model.balancer = Balancer::RoundRobin,
        "p2c" => {}
        // The gateway's model of each cache as large as the backends' (`--kv-blocks`).
        "llm" => {
            model.llm = Some(LlmRouting {
                index_blocks: kv_blocks as u32,
                ..LlmRouting::default()
            })
        }
        other => panic!("unknown policy {other}"),
    }
    cfg.models.push(model);
    cfg
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The backends' prompt and cached token counters, summed.
async fn tokens(c: &reqwest::Client, backends: &[SocketAddr]) -> (u64, u64) {
    let mut sum = (0, 0);
    for b in backends {
        let s: Value = c
            .get(format!("http://{b}/sim/state"))
            .send()
            .await
            .expect("sim state")
            .json()
            .await
            .expect("sim state JSON");
        sum.0 += s["llm"]["prompt_tokens"].as_u64().unwrap_or(0);
        sum.1 += s["llm"]["cached_tokens"].as_u64().unwrap_or(0);
    }
    sum
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One step: `rate` requests a second for `seconds`, open loop. Returns the table row's figures.
async fn step(
    c: &reqwest::Client,
    url: &str,
    prompts: &Arc<Vec<String>>,
    rate: f64,
    seconds: f64,
    seq: &mut u64,
) -> (usize, usize, Vec<f64>, f64) {
    let start = Instant::now();
    let n = (rate * seconds) as u64;
    let mut tasks = Vec::new();
    for k in 0..n {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        *seq += 1;
        let (group, user) = ((*seq * 7919) as usize % prompts.len(), (*seq % 5) as usize);
        let body = body(&prompts[group], user, *seq);
        let (c, url) = (c.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let mut r = c
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            if r.status() != 200 {
                return None;
            }
            let first = r.chunk().await.ok()??;
            let ttft = sent.elapsed().as_secs_f64();
            drop(first);
            while r.chunk().await.ok()?.is_some() {}
            Some(ttft)
        }));
    }
    let mut ttfts = Vec::new();
    for t in tasks {
        if let Ok(Some(ttft)) = t.await {
            ttfts.push(ttft);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    ttfts.sort_by(f64::total_cmp);
    (n as usize, ttfts.len(), ttfts, elapsed)
}

async fn policy(a: &Args, policy: &str, prompts: &Arc<Vec<String>>) -> Vec<String> {
    let public: SocketAddr = "127.70.0.1:8080".parse().unwrap();
    let admin: SocketAddr = "127.70.0.1:9901".parse().unwrap();
    let backends: Vec<SocketAddr> = (0..BACKENDS)
        .map(|i| format!("127.70.1.{}:8000", i + 1).parse().unwrap())
        .collect();
    let dir = std::env::temp_dir().join(format!("meridian-llm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{policy}.yaml"));
    std::fs::write(
        &file,
        meridian_config::to_yaml(&config(policy, public, admin, &backends, a.kv_blocks)),
    )
    .unwrap();
    let mut procs = Procs(Vec::new());
    for (i, b) in backends.iter().enumerate() {
        let kv = a.kv_blocks.to_string();
        let child = Command::new(&a.bin)
            .args([
                "sim-backend",
                "--listen",
                &b.to_string(),
                "--id",
                &format!("b{i}"),
                "--model",
                "llama",
            ])
            .args(["--latency", "0ms", "--capacity", "100000", "--kv-blocks", &kv])
            .args([
                "--prefill-per-1k-tokens",
                &a.prefill_per_1k,
                "--decode-per-token",
                "5ms",
                "--output-tokens",
                "8",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sim-backend");
        procs.0.push(child);
    }
    let gw = Command::new(&a.bin)
        .args(["gateway", "--config"])
        .arg(&file)
        .args(["--threads", "1"])
        .env("MERIDIAN_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn gateway");
    procs.0.push(gw);
    let c = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
    for _ in 0..300 {
        let ready = c.get(format!("http://{admin}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("http://{public}/v1/chat/completions");
    let mut rows = Vec::new();
    let mut seq = 0;
    for &rate in &a.rates {
        let before = tokens(&c, &backends).await;
        let (sent, ok, ttfts, elapsed) = step(&c, &url, prompts, rate, a.seconds, &mut seq).await;
        let after = tokens(&c, &backends).await;
        let (prompt, cached) = (after.0 - before.0, after.1 - before.1);
        rows.push(format!(
            "| {policy} | {rate} | {sent} | {ok} | {:.1} | {:.0}% | {:.3} | {:.3} |",
            ok as f64 / elapsed,
            100.0 * cached as f64 / prompt.max(1) as f64,
            percentile(&ttfts, 0.5),
            percentile(&ttfts, 0.9),
        ));
    }
    rows
}

fn main() {
    let Some(a) = args() else {
        // Under `cargo test`: the workload's shape, no processes.
        let b = body(&system_prompt(3), 1, 42);
        assert!(
            b.len() > PREFIX_BYTES + QUESTION_BYTES && b.len() < 64 * 1024,
            "{}",
            b.len()
        );
        assert_ne!(system_prompt(1)[..64], system_prompt(2)[..64]);
        println!("llm bench: pass --bin target/release/meridian to run it (benches/llm/run.sh)");
        return;
    };
    let prompts = Arc::new((0..a.groups).map(system_prompt).collect::<Vec<_>>());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| policy | offered req/s | sent | answered | answered/s | prefix-cache hit rate | TTFT p50 s | TTFT p90 s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in &a.policies {
        for row in rt.block_on(policy(&a, p, &prompts)) {
            println!("{row}");
        }
    }
}
