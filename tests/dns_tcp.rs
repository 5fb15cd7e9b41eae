//! DNS over TCP under its limits (net 122): a client at its connection cap has the next one closed
//! at accept while its open ones and another client (the real `dig`, over TCP) are answered; an
//! idle connection is closed by the server; pipelined queries on one connection are answered in
//! order; a closed connection gives its slot back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use meridian_config::units;

/// A query for `ns1.meridian.test A` with `id`, framed for TCP.
fn framed(id: u16) -> Vec<u8> {
    let mut q = Message::query();
    q.metadata.id = id;
    q.add_query(Query::query(
        Name::from_ascii("ns1.meridian.test.").unwrap(),
        RecordType::A,
    ));
    let bytes = q.to_vec().unwrap();
    [&(bytes.len() as u16).to_be_bytes()[..], &bytes].concat()
}

/// The next framed reply on `s`, decoded; `None` when the server closed the connection.
fn reply(s: &mut TcpStream) -> Option<Message> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut bytes = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut bytes).ok()?;
    Some(Message::from_vec(&bytes).unwrap())
}

/// A connection that has been answered once (so the server holds its slot).
fn answered(at: &str, id: u16) -> Option<TcpStream> {
    let mut s = TcpStream::connect(at).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&framed(id)).ok()?;
    let m = reply(&mut s)?;
    (m.metadata.id == id && m.answers.len() == 1).then_some(s)
}

#[test]
fn tcp_connections_are_capped_per_client_and_idle_ones_closed() {
    let dir = scratch("dns-tcp");
    let mut w = World::new(122);
    w.gateway("r", &["r-a"]);
    let at = w.dns();
    let tcp = &mut w.dns_mut().tcp;
    tcp.max_per_client = 3;
    tcp.idle_timeout = units::Duration::secs(2);
    let cfg = w.write(&dir);
    let _dns = dns_server(&cfg, &dir);
    wait_until("DNS answers over TCP", Duration::from_secs(10), || {
        answered(&at.listen, 1).is_some()
    });

    // Pipelined: three queries in one write, three replies in order.
    let mut s = TcpStream::connect(&at.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[framed(7), framed(8), framed(9)].concat()).unwrap();
    let ids: Vec<u16> = (0..3).map(|_| reply(&mut s).unwrap().metadata.id).collect();
    assert_eq!(ids, [7, 8, 9]);
    drop(s);

    // This client (127.0.0.1) fills its three slots; the fourth connection is closed unanswered.
    wait_until("the pipelined connection is closed", Duration::from_secs(10), || {
        metric_sum(&scrape(&at.admin), "meridian_dns_tcp_connections", &[]) == 0.0
    });
    let held: Vec<TcpStream> = (10..13)
        .map(|id| answered(&at.listen, id).expect("under the cap"))
        .collect();
    let mut fourth = TcpStream::connect(&at.listen).unwrap();
    fourth.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = fourth.write_all(&framed(13));
    assert!(reply(&mut fourth).is_none(), "over the cap: closed at accept");
    // Another client is not affected, and the held connections still answer.
    assert_eq!(
        dig(&at.listen, "ns1.meridian.test", &["-b", "127.122.9.2", "+tcp"]),
        ["127.0.0.1"]
    );
    let mut first = held.into_iter().next().unwrap();
    first.write_all(&framed(14)).unwrap();
    assert_eq!(reply(&mut first).map(|m| m.metadata.id), Some(14));
    let metrics = scrape(&at.admin);
    assert_eq!(
        metric_sum(&metrics, "meridian_dns_tcp_refused_total", &["reason=\"per_client\""]),
        1.0
    );

    // Idle: the server closes a held connection that sends nothing more (EOF, well before our
    // own read timeout), and a closed connection gives its slot back.
    first.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        first.read(&mut byte).ok(),
        Some(0),
        "the server closed the idle connection"
    );
    wait_until("slots come back", Duration::from_secs(30), || {
        answered(&at.listen, 20).is_some()
    });
}
