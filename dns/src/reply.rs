//! One question to one reply, for both transports: [`crate::respond`] builds the UDP and the TCP
//! wire message from the same [`Reply`].
//! Here: NOTIMP for non-queries, FORMERR without a question, the answer core's records, AA, the
//! response EDNS sized for the client and us (RFC 9715), the ECS option echoed with the scope the
//! decision used (RFC 7871), the COOKIE option (RFC 7873, [`crate::cookie`]), and the metrics.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{LowerName, RecordType};

use crate::answer::{answer, Answer};
use crate::cookie::{judge, Judged};
use crate::gslb::Client;
use crate::metrics::{protocol_index, qtype_index, rcode_index};
use crate::state::DnsState;
use crate::zones::ZoneSet;

/// A reply ready to encode.
pub struct Reply {
    /// Header flags and response code.
    pub metadata: Metadata,
    /// Records for the answer and authority sections.
    pub answer: Answer,
    /// The response's EDNS, when the query had one.
    pub edns: Option<Edns>,
    /// The query brought back a valid server cookie: its source address is proven.
    pub verified: bool,
}

/// Builds the reply to a query with header `req`, question `question`, EDNS `req_edns`, from `src`.
pub fn reply(
    state: &DnsState,
    zones: &ZoneSet,
    req: &Metadata,
    question: Option<(&LowerName, RecordType)>,
    req_edns: Option<&Edns>,
    src: IpAddr,
    tcp: bool,
) -> Reply {
    let mut metadata = Metadata::response_from_request(req);
    let cookie = zones
        .cookies
        .as_ref()
        .and_then(|secret| match req_edns?.options().get(EdnsCode::Cookie)? {
            EdnsOption::Unknown(_, data) => Some(judge(secret, data, src, state.clock.unix_secs())),
            _ => None,
        });
    // A malformed cookie makes the query malformed (RFC 7873 section 5.2.2).
    let question = question.filter(|_| cookie != Some(Judged::Malformed));
    let ecs = req_edns.and_then(|e| match e.options().get(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(s)) => Some(*s),
        _ => None,
    });
    let (answer, qtype) = match (req.op_code, question) {
        (OpCode::Query, Some((name, qtype))) => {
            let client = Client {
                resolver: src,
                subnet: ecs.map(|s| (s.addr(), s.source_prefix())),
            };
            let a: Answer = answer(zones, name, qtype, &state.health_now.load(), &client);
            if let Some(g) = zones.zone_of(name).and_then(|z| z.gslb.get(name)) {
                for r in &a.regions {
                    if let Some(c) = g.answer_counters.get(*r) {
                        c.inc();
                    }
                }
            }
            (a, qtype_index(qtype))
        }
        (OpCode::Query, None) => (
            Answer {
                rcode: ResponseCode::FormErr,
                ..Answer::default()
            },
            11,
        ),
        _ => (
            Answer {
                rcode: ResponseCode::NotImp,
                ..Answer::default()
            },
            11,
        ),
    };
    metadata.authoritative = answer.authoritative;
    metadata.response_code = answer.rcode;
    let edns = req_edns.map(|r| {
        let mut e = Edns::new();
        e.set_max_payload(r.max_payload().clamp(512, zones.max_udp_payload.max(512)));
        if let Some(s) = ecs {
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                s.addr(),
                s.source_prefix(),
                answer.scope.unwrap_or(0),
            )));
        }
        if let Some(Judged::Answer { option, .. }) = &cookie {
            e.options_mut()
                .insert(EdnsOption::Unknown(crate::cookie::CODE, option.to_vec()));
        }
        e
    });
    let verified = matches!(cookie, Some(Judged::Answer { verified: true, .. }));
    state
        .metrics
        .query(qtype, rcode_index(answer.rcode), protocol_index(tcp));
    Reply {
        metadata,
        answer,
        edns,
        verified,
    }
}
