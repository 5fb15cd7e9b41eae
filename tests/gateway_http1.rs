//! HTTP/1 on the wire through the gateway's own HTTP/1 path: keep-alive and pipelined requests,
//! upstream connections reused, every response framing a backend may use (length, chunked, until
//! close, none), hop-by-hop fields dropped and field case kept, a backend closing an idle
//! connection, idle upstream connections closed on their own (past the idle timeout, or once the
//! backend closed them), and the requests the path hands to pingora (HTTP/1.0, chunked bodies,
//! `Expect`) served on the same connection. The backend is a scripted one in this file, so the test sees
//! which upstream connection carried each request.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// What the scripted backend saw: per model request, the connection it came on and its fields.
#[derive(Clone, Debug)]
struct Seen {
    conn: usize,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A backend answering by the request's `x-mode` field:
/// `length` (default) a declared length with hop-by-hop fields to drop; `chunked` three chunks;
/// `close` no length, body until the close; `nobody` 204; `drop` a normal answer, then the
/// connection closes without a word (an idle keep-alive connection the backend gave up);
/// `giveup` the same, but only the backend's sending side closes, so it sees when the gateway
/// lets go of its end.
struct Backend {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The connections the gateway closed, in order.
    closed: Mutex<Receiver<usize>>,
}

impl Backend {
    fn start(addr: &str) -> Backend {
        let listener = TcpListener::bind(addr).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let (closed, closes) = channel();
        std::thread::spawn(move || {
            for (conn, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let (log, closed) = (log.clone(), closed.clone());
                std::thread::spawn(move || serve(conn, stream, &log, &closed));
            }
        });
        Backend {
            seen,
            closed: Mutex::new(closes),
        }
    }

    /// Waits for the gateway to close connection `conn` (bounded: one it keeps fails the test).
    fn await_close(&self, conn: &serde_json::Value) {
        let closes = self.closed.lock().unwrap();
        let limit = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = limit.saturating_duration_since(std::time::Instant::now());
            match closes.recv_timeout(left) {
                Ok(c) if serde_json::json!(c) == *conn => return,
                Ok(_) => {} // another connection (the health checker's)
                Err(_) => panic!("the gateway kept idle backend connection {conn} open"),
            }
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// One backend connection: requests in order until the client closes (reported on `closed`) or a
/// mode ends it.
fn serve(conn: usize, stream: TcpStream, log: &Mutex<Vec<Seen>>, closed: &Sender<usize>) {
    let mut out = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    while let Some((path, headers, body)) = read_request(&mut r, &mut out) {
        let field = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        if path.starts_with("/v2/health") {
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            continue;
        }
        let mode = field("x-mode").unwrap_or_default();
        log.lock().unwrap().push(Seen {
            conn,
            path: path.clone(),
            headers: headers.clone(),
            body: body.clone(),
        });
        let text = format!("{{\"conn\":{conn},\"path\":\"{path}\",\"bytes\":{}}}", body.len());
        let answer = match mode.as_str() {
            "chunked" => {
                let (a, b) = text.split_at(text.len() / 2);
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                    a.len(),
                    b.len()
                )
            }
            "close" => format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{text}"),
            "nobody" => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Custom-Case: Kept\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n{text}",
                text.len()
            ),
        };
        let _ = out.write_all(answer.as_bytes());
        if mode == "close" || mode == "drop" {
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        if mode == "giveup" {
            let _ = out.shutdown(std::net::Shutdown::Write);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            break;
        }
    }
    let _ = closed.send(conn);
}

/// A request's path, fields and body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

/// Reads a request: its path, fields and body (declared length or chunked); answers `Expect:
/// 100-continue` on `out` before reading the body.
fn read_request(r: &mut impl BufRead, out: &mut impl Write) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_string();
    let headers = read_fields(r)?;
    let field = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v);
    if field("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let body = if field("transfer-encoding").is_some() {
        read_chunked(r)?
    } else {
        let n: usize = field("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; n];
        r.read_exact(&mut body).ok()?;
        body
    };
    Some((path, headers, body))
}

fn read_fields(r: &mut impl BufRead) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            return Some(headers);
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.to_string(), v.trim().to_string()));
    }
}

fn read_chunked(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        if n == 0 {
            read_fields(r)?;
            return Some(body);
        }
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..n]);
    }
}

/// A response as the client read it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn field(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response to a request with method `method`, framed as HTTP/1.1 says.
fn read_response(r: &mut impl BufRead, method: &str) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let headers = read_fields(r).unwrap();
    let field = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v);
    let body = if method == "HEAD" || status == 204 || status == 100 {
        Vec::new()
    } else if field("transfer-encoding").is_some() {
        read_chunked(r).unwrap()
    } else if let Some(n) = field("content-length") {
        let mut body = vec![0; n.parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        body
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body).unwrap();
        body
    };
    Response { status, headers, body }
}

/// A client connection to the gateway.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, raw: &str) {
        self.w.write_all(raw.as_bytes()).unwrap();
    }

    fn read(&mut self, method: &str) -> Response {
        read_response(&mut self.r, method)
    }
}

/// A POST to model `m` with `mode`, on a kept-alive connection.
fn post(mode: &str, body: &str) -> String {
    format!(
        "POST /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\nx-mode: {mode}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Tries the gateway counted as the endpoint's failure.
fn gateway_failures(gw: &Gw) -> f64 {
    let metrics = scrape(&gw.admin);
    metric_sum(
        &metrics,
        "meridian_upstream_attempts_total",
        &["outcome=\"gateway_failure\""],
    )
}

/// A gateway over one scripted backend for model `m`.
fn world(net: u8, name: &str) -> (Gw, Backend, Proc) {
    world_with(net, name, |_| {})
}

/// [`world`], with its config changed by `tweak` first.
fn world_with(net: u8, name: &str, tweak: impl FnOnce(&mut World)) -> (Gw, Backend, Proc) {
    let dir = scratch(name);
    let mut w = World::new(net);
    tweak(&mut w);
    let gw = w.gateway("r", &["r-a"]);
    let hc = &mut w.config.gateway.health_check;
    (hc.interval, hc.timeout) = (ms(200), ms(500));
    let addr = w.addrs.host(10) + ":8000";
    w.endpoint_at("m", "v1", "b1", &addr, "r", "r-a");
    let cfg = w.write(&dir);
    let backend = Backend::start(&addr);
    let proc = gateway(&cfg, "r", None, &gw.admin, &gw.public);
    (gw, backend, proc)
}

#[test]
fn keep_alive_pipelining_and_every_response_framing() {
    let (gw, backend, _gw) = world(110, "http1-framing");
    let mut c = Client::connect(&gw.public);

    // Two requests in one write: two answers in order, both over one backend connection.
    c.send(&(post("length", "{\"a\":1}") + &post("length", "{\"b\":22}")));
    let (a, b) = (c.read("POST"), c.read("POST"));
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(
        (a.json()["bytes"].as_u64(), b.json()["bytes"].as_u64()),
        (Some(7), Some(8))
    );
    assert_eq!(
        a.json()["conn"],
        b.json()["conn"],
        "the backend connection is kept and reused"
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].conn, seen[1].conn);
    // Hop-by-hop fields end at the gateway (those `Connection` names too); the rest keep their case.
    assert_eq!(a.field("X-Custom-Case"), Some("Kept"));
    assert!(a.headers.iter().any(|(k, _)| k == "X-Custom-Case"), "{:?}", a.headers);
    for hop in ["connection", "keep-alive"] {
        assert_eq!(a.field(hop), None, "{hop}: {:?}", a.headers);
    }
    // The backend got the forwarding fields and not the client's hop-by-hop ones.
    let fields = &seen[0].headers;
    let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("x-forwarded-proto"), Some("http"));
    assert_eq!(get("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(get("content-length"), Some("7"));
    assert_eq!(seen[0].body, b"{\"a\":1}");

    // Chunked from the backend: the client gets the whole body, chunked again.
    c.send(&post("chunked", "{}"));
    let r = c.read("POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.field("transfer-encoding"), Some("chunked"));
    assert_eq!(r.json()["path"], "/v2/models/m/infer");

    // No body at all.
    c.send(&post("nobody", "{}"));
    let r = c.read("POST");
    assert_eq!((r.status, r.body.len()), (204, 0));

    // Until the close: the client still gets a framed body on its kept connection, and the
    // backend connection that closed is not used again.
    c.send(&post("close", "{}"));
    let r = c.read("POST");
    assert_eq!(r.status, 200);
    let closed_conn = r.json()["conn"].clone();
    c.send(&post("length", "{}"));
    let r = c.read("POST");
    assert_eq!(r.status, 200);
    assert_ne!(r.json()["conn"], closed_conn);

    // HEAD: a head, no body, and the connection goes on.
    c.send("HEAD /v2/models/m HTTP/1.1\r\nhost: gw\r\n\r\n");
    let r = c.read("HEAD");
    assert_eq!(r.status, 200);
    c.send(&post("length", "{}"));
    assert_eq!(c.read("POST").status, 200);

    // The gateway's own answers keep the connection too.
    c.send("POST /v2/models/nope/infer HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\n\r\n{}");
    let r = c.read("POST");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "model nope not found");
    c.send("GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n");
    assert_eq!(c.read("GET").status, 200);

    // Field names in any case: read case-insensitively and sent on lowercase; a field the
    // client's `Connection` names ends here, the forwarding chain grows, and the target goes on
    // with its query but without its fragment.
    c.send("POST /v2/models/m/infer?trace=1#frag HTTP/1.1\r\nHost: gw\r\nX-Mode: length\r\nConnection: X-Drop\r\nX-Drop: 1\r\nX-Forwarded-For: 192.0.2.7\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(c.read("POST").status, 200);
    let last = backend.seen().pop().unwrap();
    assert_eq!(last.path, "/v2/models/m/infer?trace=1");
    let get = |n: &str| last.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!((get("host"), get("x-mode")), (Some("gw"), Some("length")));
    assert_eq!(get("x-forwarded-for"), Some("192.0.2.7, 127.0.0.1"));
    for gone in ["x-drop", "connection"] {
        assert!(
            !last.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(gone)),
            "{gone}: {:?}",
            last.headers
        );
    }

    // A client that asks to close gets its answer, then the close.
    c.send(&post("length", "{}").replacen("host: gw\r\n", "host: gw\r\nconnection: close\r\n", 1));
    let r = c.read("POST");
    assert_eq!((r.status, r.field("connection")), (200, Some("close")));
    let mut rest = Vec::new();
    assert_eq!(c.r.read_to_end(&mut rest).unwrap(), 0, "the connection closes");
}

#[test]
fn handed_over_requests_and_idle_backend_closes() {
    let (gw, backend, _gw) = world(111, "http1-handover");
    let mut c = Client::connect(&gw.public);

    // The backend answers, then closes the kept connection while it idles in the pool: the next
    // request meets the close before any answer and goes again on a fresh connection, unharmed.
    c.send(&post("drop", "{}"));
    let first = c.read("POST");
    assert_eq!(first.status, 200);
    for _ in 0..3 {
        c.send(&post("length", "{}"));
        let r = c.read("POST");
        assert_eq!(r.status, 200);
        assert_ne!(r.json()["conn"], first.json()["conn"]);
    }
    assert_eq!(
        gateway_failures(&gw),
        0.0,
        "a connection closed while idle is not the endpoint's failure"
    );

    // A body of unknown length (chunked): pingora's path serves it on the same connection, and
    // the request after it too.
    c.send("POST /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n");
    let r = c.read("POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["bytes"], 7);
    c.send(&post("length", "{}"));
    assert_eq!(c.read("POST").status, 200);
    assert!(backend.seen().iter().any(|s| s.body == b"{\"a\":1}"));

    // Expect: 100-continue: the client hears 100, sends its body, gets the answer.
    let mut c = Client::connect(&gw.public);
    c.send("POST /v2/models/m/infer HTTP/1.1\r\nhost: gw\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n");
    let r = c.read("POST");
    assert_eq!(r.status, 100);
    c.send("{}");
    let r = c.read("POST");
    assert_eq!(r.status, 200);

    // HTTP/1.0.
    let mut c = Client::connect(&gw.public);
    c.send("POST /v2/models/m/infer HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}");
    let r = c.read("POST");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/v2/models/m/infer");
    assert!(backend.seen().iter().all(|s| s.path == "/v2/models/m/infer"));

    // The backend gives up on a kept connection while it idles, and no request follows: the
    // gateway lets go of its end on its own (not left half-closed until some next request).
    let mut c = Client::connect(&gw.public);
    c.send(&post("giveup", "{}"));
    let r = c.read("POST");
    assert_eq!(r.status, 200);
    backend.await_close(&r.json()["conn"]);
}

#[test]
fn idle_backend_connections_close_past_the_idle_timeout() {
    let (gw, backend, _gw) = world_with(125, "http1-idle", |w| w.config.gateway.timeouts.idle = secs(1));
    let mut c = Client::connect(&gw.public);
    c.send(&post("length", "{}"));
    let first = c.read("POST");
    assert_eq!(first.status, 200);
    // No more requests: the kept connection closes once idle past 1 s, with no request to find it.
    backend.await_close(&first.json()["conn"]);
    // The next request opens a fresh one, unharmed.
    c.send(&post("length", "{}"));
    let next = c.read("POST");
    assert_eq!(next.status, 200);
    assert_ne!(next.json()["conn"], first.json()["conn"]);
    assert_eq!(gateway_failures(&gw), 0.0);
}
