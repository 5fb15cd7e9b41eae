//! Response-rate limiting end to end: a flood of UDP queries from one source gets most answers
//! dropped and every second one truncated (TC), while another source, and the flooded one over TCP
//! (with the real `dig`), are answered in full; the limited responses are counted.

mod common;

use std::net::UdpSocket;
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
