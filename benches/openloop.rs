//! An open-loop HTTP/1.1 load generator: requests go out on a fixed schedule whatever the answers,
//! spread over keep-alive connections, and latency is measured per request, so percentiles at a
//! rate below saturation compare proxies fairly (a closed-loop tool like wrk measures latency at
//! whatever rate the proxy sustains instead).
//!
//! ```text
//! cargo bench --bench openloop -- --url http://127.50.0.1:8080/v2/models/bench/infer \
//!     --rate 20000 --seconds 10 --connections 64 [--body '{...}']
//! ```
//!
//! Each connection sends at `rate / connections` per second on its own schedule (phases spread
//! evenly); a request whose slot comes while the previous one is still out waits for it, and is
//! counted as late (the schedule slipped). Latency is from the moment a request is written to its
//! last response byte. Prints one line: `sent ok errors late achieved/s p50 p90 p99 p999 max` (ms).
//! Without `--url` (as under `cargo test`) it measures a tiny in-process server and checks itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// What to send and how fast.
#[derive(Clone, Debug)]
struct Plan {
    addr: SocketAddr,
    host: String,
    path: String,
    body: Bytes,
    rate: f64,
    seconds: f64,
    connections: usize,
}

/// What came back.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    late: u64,
}

fn parse(args: &[String]) -> Option<Plan> {
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let url: http::Uri = get("--url")?.parse().expect("--url is a URL");
    let authority = url.authority().expect("--url has a host and port").as_str().to_string();
    let addr = authority.parse().expect("--url's host is IP:PORT");
    Some(Plan {
        addr,
        host: authority,
        path: url.path_and_query().map_or("/".into(), |p| p.as_str().to_string()),
        body: Bytes::from(get("--body").unwrap_or_else(|| {
            r#"{"id":"1","inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#
                .to_string()
        })),
        rate: get("--rate").map_or(1000.0, |r| r.parse().expect("--rate is a number")),
        seconds: get("--seconds").map_or(10.0, |s| s.parse().expect("--seconds is a number")),
        connections: get("--connections").map_or(32, |c| c.parse().expect("--connections is a number")),
    })
}

/// One connection's schedule, from `start + phase`, every `period`, until `end`.
async fn connection(plan: Plan, start: tokio::time::Instant, phase: Duration, period: Duration) -> Tally {
    let mut tally = Tally::default();
    let end = start + Duration::from_secs_f64(plan.seconds);
    let mut sender = None;
    let mut slot = start + phase;
    while slot < end {
        let now = tokio::time::Instant::now();
        if now < slot {
            tokio::time::sleep_until(slot).await;
        } else if now > slot + period {
            tally.late += 1;
        }
        slot += period;
        if sender.is_none() {
            sender = match tokio::net::TcpStream::connect(plan.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    match hyper::client::conn::http1::handshake(TokioIo::new(s)).await {
                        Ok((tx, conn)) => {
                            tokio::spawn(conn);
                            Some(tx)
                        }
                        Err(_) => None,
                    }
                }
                Err(_) => None,
            };
        }
        let Some(tx) = sender.as_mut() else {
            tally.errors += 1;
            continue;
        };
        let req = http::Request::post(plan.path.as_str())
            .header(http::header::HOST, plan.host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(plan.body.clone()))
            .expect("a valid request");
        let sent = Instant::now();
        let answer = async {
            let resp = tx.send_request(req).await?;
            let ok = resp.status().is_success();
            resp.into_body().collect().await?;
            Ok::<bool, hyper::Error>(ok)
        };
        match answer.await {
            Ok(true) => {
                let us = sent.elapsed().as_micros();
                tally.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(false) => tally.errors += 1,
            Err(_) => {
                tally.errors += 1;
                sender = None;
            }
        }
    }
    tally
}

/// Runs the plan on one thread (the client must not take both cores from the proxy it measures).
fn run(plan: &Plan) -> Tally {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let period = Duration::from_secs_f64(plan.connections as f64 / plan.rate);
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let tasks: Vec<_> = (0..plan.connections)
            .map(|i| {
                let phase = period.mul_f64(i as f64 / plan.connections as f64);
                tokio::spawn(connection(plan.clone(), start, phase, period))
            })
            .collect();
        let mut all = Tally::default();
        for t in tasks {
            let t = t.await.expect("a connection task");
            all.latencies_us.extend(t.latencies_us);
            all.errors += t.errors;
            all.late += t.late;
        }
        all
    })
}

/// The `q` quantile of sorted latencies, in milliseconds.
fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn report(plan: &Plan, mut t: Tally) -> [f64; 5] {
    t.latencies_us.sort_unstable();
    let l = &t.latencies_us;
    let qs = [
        quantile(l, 0.5),
        quantile(l, 0.9),
        quantile(l, 0.99),
        quantile(l, 0.999),
        quantile(l, 1.0),
    ];
    println!(
        "sent {} ok {} errors {} late {} achieved/s {:.0} p50 {:.3} p90 {:.3} p99 {:.3} p999 {:.3} max {:.3}",
        l.len() as u64 + t.errors,
        l.len(),
        t.errors,
        t.late,
        l.len() as f64 / plan.seconds,
        qs[0],
        qs[1],
        qs[2],
        qs[3],
        qs[4]
    );
    qs
}

/// A tiny in-process server, for the self-check.
fn self_check() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let plan = Plan {
        addr,
        host: addr.to_string(),
        path: "/".into(),
        body: Bytes::from_static(b"{}"),
        rate: 2000.0,
        seconds: 0.25,
        connections: 4,
    };
    let tally = run(&plan);
    assert_eq!(tally.errors, 0);
    let n = tally.latencies_us.len() as f64;
    assert!(
        (400.0..=560.0).contains(&n),
        "about rate x seconds requests go out: {n}"
    );
    let qs = report(&plan, tally);
    assert!(qs.windows(2).all(|w| w[0] <= w[1]), "quantiles ascend: {qs:?}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match parse(&args) {
        Some(plan) => {
            let tally = run(&plan);
            report(&plan, tally);
        }
        None => self_check(),
    }
}
