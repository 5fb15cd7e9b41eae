//! Property tests of the DNS wire path (the UDP answer the server sends for a datagram, and the
//! question reader RRL keys on) over arbitrary and generated messages: arbitrary bytes are answered
//! with FORMERR or dropped, never a panic; a query for any name gets a response with its ID and
//! its question; RRL's question reader agrees with hickory's parser.

use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use meridian_dns::respond::respond;
use meridian_dns::state::DnsState;
use proptest::prelude::*;

fn state() -> &'static DnsState {
    static STATE: std::sync::OnceLock<DnsState> = std::sync::OnceLock::new();
    STATE.get_or_init(|| {
        use meridian_config::build;
        let mut cfg = meridian_config::Config::default();
        let mut region = build::region("r", &["r-a"]);
        let mut gw = build::gateway("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        gw.public_addresses = vec!["192.0.2.1".parse().unwrap()];
        region.gateway = Some(gw);
        cfg.regions.push(region);
        let mut dns = build::dns(
            "127.0.0.1:3".parse().unwrap(),
            "127.0.0.1:4".parse().unwrap(),
            "meridian.test",
            "192.0.2.53",
        );
        dns.rrl.enabled = false;
        dns.gslb.push(build::gslb(
            "api.meridian.test",
            meridian_config::schema::GslbPolicy::Failover,
            &["r"],
        ));
        cfg.dns = Some(dns);
        let dir = std::env::temp_dir().join(format!("meridian-dns-prop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meridian.yaml");
        std::fs::write(&path, meridian_config::to_yaml(&cfg)).unwrap();
        DnsState::start(&path, Arc::new(meridian_clock::SystemClock)).unwrap()
    })
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,18}[a-zA-Z0-9])?"
}

proptest! {
    #[test]
    fn arbitrary_datagrams_get_formerr_or_nothing(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let src = "192.0.2.99:5353".parse().unwrap();
        if let Some(out) = respond(state(), &bytes, src, false, None).map(|r| r.bytes) {
            let m = Message::from_vec(&out).expect("a reply parses");
            prop_assert_eq!(m.metadata.message_type, MessageType::Response);
            prop_assert_eq!(&out[..2], &bytes[..2], "the query's ID");
        }
        let _ = meridian_dns::rrl::question(&bytes);
    }

    #[test]
    fn every_query_is_answered_with_its_id_and_question(
        labels in prop::collection::vec(label(), 1..5),
        in_zone in any::<bool>(),
        id in any::<u16>(),
        qtype in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::MX, RecordType::NS, RecordType::SOA, RecordType::CNAME, RecordType::ANY]),
    ) {
        let mut text = labels.join(".");
        text.push_str(if in_zone { ".meridian.test." } else { ".example.org." });
        let name = Name::from_ascii(&text).unwrap();
        let mut q = Message::query();
        q.metadata.id = id;
        q.add_query(Query::query(name.clone(), qtype));
        let bytes = q.to_vec().unwrap();
        let question = meridian_dns::rrl::question(&bytes).expect("one question");
        prop_assert_eq!(question.len(), bytes.len() - 12, "the question is the rest of the query");
        let out = respond(state(), &bytes, "192.0.2.99:5353".parse().unwrap(), false, None).expect("answered").bytes;
        let m = Message::from_vec(&out).unwrap();
        prop_assert_eq!(m.metadata.id, id);
        prop_assert_eq!(m.queries.len(), 1);
        prop_assert_eq!(m.queries[0].name().to_ascii().to_lowercase(), text.to_lowercase());
        if in_zone {
            prop_assert!(m.metadata.authoritative, "authoritative for its zone");
            prop_assert_ne!(m.metadata.response_code, ResponseCode::Refused);
        } else {
            prop_assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        }
    }
}
