//! Mutated requests against the real binaries (seeded, bounded): HTTP/1.1 requests with bytes
//! flipped, inserted, deleted and lines duplicated go to a real gateway and, the same bytes, to a
//! real NGINX proxying the same backend. Afterwards the gateway is alive and serves a good request;
//! every mutated request whose request line still parses and that NGINX answers gets an answer from
//! the gateway too before the close, and every 4xx the gateway writes itself has the KServe
//! `{"error": ...}` body (pingora's own 400 has none). Mutated DNS queries go to the real DNS
//! server over UDP and TCP, and mutated HTTP/2 requests (recorded from a real client) to the
//! gateway; both keep answering, and every reply answers the query it came for. The counts are
//! printed. Nets 119 (HTTP/1), 120 (DNS), 121 (h2).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BASE: &[u8] = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-User-Id: u1\r\nContent-Length: 13\r\n\r\n{\"inputs\":[]}";

/// xorshift64*: the harness is seeded, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `base` with one to three mutations at positions in `from..base.len() - keep` (flipped bits,
/// inserted and deleted bytes, inserted separators, and for text a duplicated line); the bytes
/// before `from` and the last `keep` stay as they are.
fn mutate(rng: &mut Rng, base: &[u8], from: usize, keep: usize) -> Vec<u8> {
    let split = base.len() - keep;
    let (mut part, tail) = (base[from..split].to_vec(), &base[split..]);
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(part.len());
        match rng.below(5) {
            0 => part[at] ^= 1 << rng.below(8),
            1 => part.insert(at, rng.below(256) as u8),
            2 => {
                part.remove(at);
            }
            3 => {
                let odd = b"\r\n\t:; \"\0\x7f";
                part.insert(at, odd[rng.below(odd.len())])
            }
            _ => {
                let lines: Vec<&[u8]> = part.split_inclusive(|b| *b == b'\n').collect();
                let l = lines[rng.below(lines.len())].to_vec();
                part.splice(at..at, l);
            }
        }
        if part.is_empty() {
            part.push(0);
        }
    }
    [&base[..from], &part, tail].concat()
}

/// The status and body a server answered `bytes` with, or `None` when it closed (or went quiet
/// for two seconds) without a response. The write side stays open: NGINX takes a client's FIN as
/// an abort (499) and answers nothing, so the response is read until it is whole instead.
fn exchange(addr: &str, bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(bytes).ok()?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while !whole(&out) {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    let status = text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| out[p + 4..].to_vec())
        .unwrap_or_default();
    Some((status, body))
}

/// Whether `out` holds a whole response: its head and as many body bytes as Content-Length says
/// (or the last chunk of a chunked body).
fn whole(out: &[u8]) -> bool {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let body = &out[end + 4..];
    if let Some(n) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return n.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
    }
    head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n")
}

/// Whether the request line (up to the first CRLF) is `METHOD SP target SP HTTP/1.x`.
fn request_line_parses(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let line = &bytes[..end];
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && parts[0].iter().all(u8::is_ascii_uppercase)
        && parts[1].first() == Some(&b'/')
        && parts[1].iter().all(|b| b.is_ascii_graphic())
        && (parts[2] == b"HTTP/1.1" || parts[2] == b"HTTP/1.0")
}

/// NGINX stopped as its master expects (TERM, then reaped): a SIGKILLed master leaves its worker
/// holding the port.
struct Nginx(Proc);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.child.id().to_string()).status();
        let _ = self.0.child.wait();
    }
}

#[test]
fn mutated_http1_requests_are_answered_wherever_nginx_answers() {
    let dir = scratch("mutate");
    let mut w = World::new(119);
    let gw = w.gateway("r", &["r-a"]);
    let backend = w.backend("m", "v1", "s1", "r", "r-a");
    let cfg = w.write(&dir);
    let _sim = sim(&backend, "s1", "m", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "r", None, admin, public);
    let nginx_at = "127.119.0.80:8080";
    let conf = format!(
        "worker_processes 1; pid {dir}/nginx.pid; error_log {dir}/nginx.err warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};\n\
           server {{ listen {nginx_at}; location / {{ proxy_pass http://{backend}; }} }} }}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args(["-c", dir.join("nginx.conf").to_str().unwrap(), "-g", "daemon off;"])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (Debian package nginx)");
    let _nginx = Nginx(Proc {
        child,
        name: "nginx".into(),
    });
    wait_until("nginx proxies", Duration::from_secs(10), || {
        exchange(nginx_at, BASE).is_some_and(|(s, _)| s == 200)
    });

    let mut rng = Rng(0x6d65_7269_6469_616e);
    let body = BASE.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let cases: Vec<Vec<u8>> = (0..400)
        .map(|_| mutate(&mut rng, BASE, 0, BASE.len() + 2 - body))
        .collect();
    let (mut parseable, mut both, mut silent, mut ours_4xx, mut bare) = (0, 0, Vec::new(), 0, Vec::new());
    for bytes in &cases {
        let ours = exchange(public, bytes);
        if let Some((status, body)) = &ours {
            if (400..500).contains(status) {
                ours_4xx += 1;
                if !body.starts_with(b"{\"error\":") {
                    bare.push(String::from_utf8_lossy(bytes).to_string());
                }
            }
        }
        if !request_line_parses(bytes) {
            continue;
        }
        parseable += 1;
        let theirs = exchange(nginx_at, bytes);
        if theirs.is_some() {
            both += 1;
            if ours.is_none() {
                silent.push(String::from_utf8_lossy(bytes).to_string());
            }
        }
    }
    println!(
        "mutation harness: {} requests, {parseable} with a parseable request line, NGINX answered {both} of those, \
         the gateway closed {} of those silently; {ours_4xx} gateway 4xx, {} without the KServe body",
        cases.len(),
        silent.len(),
        bare.len()
    );
    assert!(
        silent.is_empty(),
        "closed without an answer where NGINX answers: {:?}",
        &silent[..silent.len().min(5)]
    );
    assert!(
        bare.is_empty(),
        "4xx without the KServe body: {:?}",
        &bare[..bare.len().min(5)]
    );
    // Still alive, still serving.
    let a = infer(&client(), public, "/v2/models/m/infer", &[]);
    assert_eq!(a.status, 200);
}

/// Good queries the DNS mutations start from: an A, an SOA at the apex, an ANY, and an A with
/// EDNS (OPT, 1232-byte payload).
fn dns_bases() -> Vec<Vec<u8>> {
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let question = |name: &str, t: RecordType, edns: bool| {
        let mut q = Message::query();
        q.metadata.id = 0x4d52;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            q.set_edns(e);
        }
        q.to_vec().unwrap()
    };
    vec![
        question("ns1.meridian.test.", RecordType::A, false),
        question("meridian.test.", RecordType::SOA, false),
        question("meridian.test.", RecordType::ANY, false),
        question("ns1.meridian.test.", RecordType::A, true),
    ]
}

/// Whether `reply` is a DNS response to `query`: the QR bit set and the query's ID.
fn answers(reply: &[u8], query: &[u8]) -> bool {
    reply.len() >= 12 && reply[2] & 0x80 != 0 && query.len() >= 2 && reply[..2] == query[..2]
}

#[test]
fn mutated_dns_packets_over_udp_and_tcp_leave_the_server_answering() {
    use std::net::UdpSocket;
    let dir = scratch("mutate-dns");
    let mut w = World::new(120);
    w.gateway("r", &["r-a"]);
    w.announce("r");
    let at = w.dns();
    // Every mutated query should be judged on its bytes, not on the rate.
    w.dns_mut().rrl.enabled = false;
    let cfg = w.write(&dir);
    let _dns = dns_server(&cfg, &dir);
    let bases = dns_bases();
    let good = &bases[0];
    let udp = UdpSocket::bind("127.120.9.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let ask_udp = |q: &[u8]| -> Option<Vec<u8>> {
        udp.send_to(q, &at.listen).ok()?;
        let mut buf = [0u8; 4096];
        let (n, _) = udp.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    };
    wait_until("DNS answers", Duration::from_secs(10), || {
        ask_udp(good).is_some_and(|r| answers(&r, good))
    });

    // UDP: one at a time, so every reply is matched to its query.
    let mut rng = Rng(0x646e_735f_7564_7021);
    let (mut udp_answered, mut udp_silent, mut strays) = (0, 0, Vec::new());
    for i in 0..1500 {
        let base = &bases[i % bases.len()];
        let q = mutate(&mut rng, base, 0, 0);
        match ask_udp(&q) {
            Some(r) if answers(&r, &q) => udp_answered += 1,
            Some(r) => strays.push((q, r)),
            None => udp_silent += 1,
        }
    }

    // TCP: a length prefix (sometimes mutated with the message), then the write side closed.
    let (mut tcp_answered, mut tcp_closed) = (0, 0);
    for i in 0..300 {
        let base = &bases[i % bases.len()];
        let framed = [&(base.len() as u16).to_be_bytes()[..], base].concat();
        let from = if i % 3 == 0 { 0 } else { 2 };
        let bytes = mutate(&mut rng, &framed, from, 0);
        let mut s = TcpStream::connect(&at.listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if out.len() >= 2 {
            let n = u16::from_be_bytes([out[0], out[1]]) as usize;
            assert!(
                out.len() >= 2 + n,
                "a reply over TCP is whole: {n} announced, {} read",
                out.len() - 2
            );
            assert!(answers(&out[2..2 + n], &bytes[2..]), "a TCP reply answers its query");
            tcp_answered += 1;
        } else {
            tcp_closed += 1;
        }
    }
    println!(
        "mutation harness (DNS): UDP 1500 mutated queries, {udp_answered} answered, {udp_silent} unanswered, \
         {} replies to another ID; TCP 300, {tcp_answered} answered, {tcp_closed} closed",
        strays.len()
    );
    assert!(
        strays.is_empty(),
        "replies that answer another query: {:?}",
        &strays[..strays.len().min(3)]
    );
    // Most mutations leave a query the server can judge (answer, NXDOMAIN, FORMERR, NOTIMP).
    assert!(udp_answered > 750, "{udp_answered} of 1500 answered");
    // Still alive, still answering, over both transports.
    assert!(ask_udp(good).is_some_and(|r| answers(&r, good)));
    let mut s = TcpStream::connect(&at.listen).unwrap();
    s.write_all(&[&(good.len() as u16).to_be_bytes()[..], good].concat())
        .unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    assert!(answers(&reply, good));
}

/// The bytes a real HTTP/2 client (reqwest, prior knowledge) sends for one V2 infer request,
/// recorded on a listener that acknowledges its settings: the preface, SETTINGS, WINDOW_UPDATE,
/// HEADERS (HPACK) and DATA up to the end of the stream.
fn h2_request_bytes() -> Vec<u8> {
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.121.9.2:0").unwrap();
    let url = format!("http://{}/v2/models/m/infer", listener.local_addr().unwrap());
    let client = std::thread::spawn(move || {
        let c = reqwest::blocking::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let _ = c
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"inputs":[]}"#)
            .send();
    });
    let (mut s, _) = listener.accept().unwrap();
    // Our empty SETTINGS, then an ACK of theirs.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0])
        .unwrap();
    let mut got = vec![0u8; 24];
    s.read_exact(&mut got).unwrap();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        let (kind, flags) = (head[3], head[4]);
        // The client's ACK of our SETTINGS is not part of its request.
        if !(kind == 4 && flags & 1 != 0) {
            got.extend_from_slice(&head);
            got.extend_from_slice(&payload);
        }
        if (kind == 0 || kind == 1) && flags & 1 != 0 {
            break;
        }
    }
    drop(s);
    client.join().unwrap();
    got
}

#[test]
fn mutated_h2_requests_leave_the_gateway_serving() {
    let dir = scratch("mutate-h2");
    let mut w = World::new(121);
    let gw = w.gateway("q", &["q-a"]);
    let backend = w.backend("m", "v1", "s1", "q", "q-a");
    let cfg = w.write(&dir);
    let _sim = sim(&backend, "s1", "m", "v1", &[]);
    let (public, admin) = (gw.public.as_str(), gw.admin.as_str());
    let _gw = gateway(&cfg, "q", None, admin, public);
    let base = h2_request_bytes();
    // The request, then the client's GOAWAY: the server finishes what it took and closes (a FIN
    // instead would abort the stream unanswered).
    let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let send = |bytes: &[u8]| -> Vec<u8> {
        let mut s = TcpStream::connect(public).unwrap();
        // A mutated frame length leaves the server waiting for bytes that never come: a second
        // of quiet ends those.
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.write_all(&[bytes, &goaway[..]].concat());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    // The recording itself is a request the gateway answers: a HEADERS frame on stream 1.
    let whole = send(&base);
    assert!(
        frames(&whole).any(|(kind, stream)| kind == 1 && stream == 1),
        "{whole:?}"
    );

    let mut rng = Rng(0x6832_635f_6d75_7421);
    let (mut answered, mut refused, mut closed, mut quiet) = (0, 0, 0, 0);
    for _ in 0..200 {
        // The preface stays: without it the bytes are HTTP/1 garbage (the first test's ground).
        let out = send(&mutate(&mut rng, &base, 24, 0));
        if out.is_empty() {
            closed += 1;
            continue;
        }
        // A server's first frame is its SETTINGS, whatever the client sent after the preface.
        assert_eq!(frames(&out).next().map(|f| f.0), Some(4), "{out:?}");
        if frames(&out).any(|(kind, stream)| kind == 1 && stream != 0) {
            answered += 1;
        } else if frames(&out).any(|(kind, _)| kind == 7 || kind == 3) {
            refused += 1;
        } else {
            quiet += 1;
        }
    }
    println!(
        "mutation harness (h2): 200 mutated requests, {answered} answered (HEADERS), {refused} refused \
         (GOAWAY or RST_STREAM), {closed} closed without a frame, {quiet} waiting for more"
    );
    // Still alive, still serving, over h2 and HTTP/1.1.
    assert!(frames(&send(&base)).any(|(kind, stream)| kind == 1 && stream == 1));
    assert_eq!(infer(&client(), public, "/v2/models/m/infer", &[]).status, 200);
}

/// The (type, stream) of each whole HTTP/2 frame in `bytes`.
fn frames(bytes: &[u8]) -> impl Iterator<Item = (u8, u32)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = bytes.get(at..at + 9)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        at += 9 + len;
        (at <= bytes.len()).then_some((head[3], stream))
    })
}
