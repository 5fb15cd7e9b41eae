//! Response-rate limiting end to end (nets 118, 123): a flood of UDP queries from one source gets
//! most answers dropped and every second one truncated (TC), while another source, and the flooded
//! one over TCP (with the real `dig`), are answered in full; the limited responses are counted. A
//! client that returns a valid DNS cookie is not limited; a forged cookie is.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// `dig` from `source` (`+tcp` when asked): the answer, short form.
fn dig_from(source: &str, server: &str, tcp: bool) -> String {
    let more = if tcp {
        vec!["-b", source, "+tcp"]
    } else {
        vec!["-b", source]
    };
    dig(server, "ns1.meridian.test", &more).join("\n")
}

#[test]
fn a_flood_from_one_source_is_limited_and_others_are_served() {
    let dir = scratch("rrl");
    let mut w = World::new(118);
    w.gateway("r", &["r-a"]);
    w.announce("r");
    let at = w.dns();
    let rrl = &mut w.dns_mut().rrl;
    (rrl.responses_per_second, rrl.slip) = (2, 2);
    let cfg = w.write(&dir);
    let _dns = dns_server(&cfg, &dir);
    wait_until("DNS answers", Duration::from_secs(10), || {
        dig_from("127.118.8.1", &at.listen, false) == "127.0.0.1"
    });

    // 300 queries from 127.118.9.1, as fast as the socket takes them.
    let sock = UdpSocket::bind("127.118.9.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let name = Name::from_ascii("ns1.meridian.test.").unwrap();
    let started = std::time::Instant::now();
    for id in 0..300u16 {
        let mut q = Message::query();
        q.metadata.id = id;
        q.metadata.recursion_desired = false;
        q.add_query(Query::query(name.clone(), RecordType::A));
        sock.send_to(&q.to_vec().unwrap(), &at.listen).unwrap();
    }
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let m = Message::from_vec(&buf[..n]).unwrap();
        if m.metadata.truncation {
            assert!(m.answers.is_empty(), "a slipped answer is the question alone");
            truncated += 1;
        } else {
            assert_eq!(m.answers.len(), 1);
            full += 1;
        }
    }
    let dropped = 300 - full - truncated;
    // The bucket holds 2 and refills 2 a second over however long the server took.
    let refilled = 2 + (2.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    println!("rrl flood: {full} answered, {truncated} truncated, {dropped} dropped of 300");
    assert!(full <= refilled, "{full} answered, at most {refilled}");
    assert!(
        (100..=160).contains(&truncated),
        "every 2nd limited one slips: {truncated}"
    );
    assert!(dropped >= 100, "{dropped}");

    // Another /24 is not affected; the flooded source still gets its answer over TCP.
    assert_eq!(dig_from("127.118.8.1", &at.listen, false), "127.0.0.1");
    assert_eq!(dig_from("127.118.9.1", &at.listen, true), "127.0.0.1");
    // The server's own count (the client may miss a datagram): all but a few limited, half slipped.
    let metrics = scrape(&at.admin);
    let count = |action: &str| {
        let label = format!("action=\"{action}\"");
        metric_sum(&metrics, "meridian_dns_rrl_limited_total", &[&label]) as usize
    };
    let (slipped, dropped) = (count("slipped"), count("dropped"));
    // (The kernel may drop some of a flood before the server reads it.)
    assert!(slipped + dropped >= 200, "{slipped} slipped, {dropped} dropped");
    assert!(slipped.abs_diff(dropped) <= 1, "{slipped} slipped, {dropped} dropped");
    assert!(slipped >= truncated);
}

/// A query for `ns1.meridian.test A` with `id` and a COOKIE option holding `cookie`.
fn with_cookie(id: u16, cookie: &[u8]) -> Vec<u8> {
    use hickory_proto::op::Edns;
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let mut q = Message::query();
    q.metadata.id = id;
    q.add_query(Query::query(
        Name::from_ascii("ns1.meridian.test.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut().insert(EdnsOption::Unknown(10, cookie.to_vec()));
    q.set_edns(e);
    q.to_vec().unwrap()
}

/// The COOKIE option of a reply.
fn cookie_of(m: &Message) -> Option<Vec<u8>> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match m.edns.as_ref()?.options().get(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        _ => None,
    }
}

#[test]
fn a_client_with_a_valid_server_cookie_is_not_rate_limited() {
    let dir = scratch("cookies");
    let mut w = World::new(123);
    w.gateway("r", &["r-a"]);
    let at = w.dns();
    let rrl = &mut w.dns_mut().rrl;
    (rrl.responses_per_second, rrl.slip) = (1, 0);
    let cfg = w.write(&dir);
    let _dns = dns_server(&cfg, &dir);
    wait_until("DNS answers", Duration::from_secs(10), || {
        dig_from("127.123.8.1", &at.listen, false) == "127.0.0.1"
    });
    // The real dig sends a client cookie and checks the server's.
    let out = Command::new("dig")
        .args([
            &format!("@{}", at.listen.rsplit_once(':').unwrap().0),
            "-p",
            "5353",
            "ns1.meridian.test",
            "+cookie",
            "-b",
            "127.123.7.1",
        ])
        .output()
        .expect("dig");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("COOKIE:") && text.contains("(good)"), "{text}");

    let sock = UdpSocket::bind("127.123.9.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let ask = |q: &[u8]| -> Option<Message> {
        sock.send_to(q, &at.listen).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        Some(Message::from_vec(&buf[..n]).unwrap())
    };
    // A client cookie alone gets the client cookie back with a 16-byte server cookie.
    let first = ask(&with_cookie(1, b"meridian")).expect("answered");
    let cookie = cookie_of(&first).expect("a COOKIE option");
    assert_eq!((cookie.len(), &cookie[..8]), (24, &b"meridian"[..]));
    // A malformed cookie (7 bytes) makes a malformed query.
    let bad = ask(&with_cookie(2, b"7 bytes")).expect("answered");
    assert_eq!(bad.metadata.response_code, hickory_proto::op::ResponseCode::FormErr);

    // 60 queries at once, 1 a second allowed: with the server cookie each is answered; a forged
    // one proves nothing, so that flood is limited (slip 0: dropped).
    let flood = |cookie: &[u8]| {
        for id in 100..160 {
            sock.send_to(&with_cookie(id, cookie), &at.listen).unwrap();
        }
        let mut buf = [0u8; 4096];
        let mut answered = 0;
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            answered += usize::from(Message::from_vec(&buf[..n]).unwrap().answers.len() == 1);
        }
        answered
    };
    assert_eq!(flood(&cookie), 60, "a proven address is not limited");
    let mut forged = cookie.clone();
    forged[23] ^= 1;
    let started = std::time::Instant::now();
    let answered = flood(&forged);
    // The bucket holds 1 and refills 1 a second over however long the flood took.
    let refilled = 1 + started.elapsed().as_secs_f64().ceil() as usize;
    assert!(answered <= refilled, "{answered} of 60 answered, at most {refilled}");
}
