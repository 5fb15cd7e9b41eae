//! The hickory-server adapter: decodes the client's EDNS (payload size, Client Subnet), asks the
//! answer core, and encodes the response with AA, the SOA on negative answers, the ECS option echoed
//! with its scope (RFC 7871), and TC when the answer does not fit the client's UDP buffer (hickory
//! truncates to the response EDNS payload size).

use std::sync::Arc;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::answer::{answer, Answer};
use crate::gslb::Client;
use crate::metrics::{qtype_label, rcode_label};
use crate::state::DnsState;

/// Answers queries from the shared state.
pub struct Handler {
    /// Shared state.
    pub state: Arc<DnsState>,
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let zones = self.state.zones.load();
        let proto = if request.protocol() == Protocol::Tcp {
            "tcp"
        } else {
            "udp"
        };
        let builder_edns;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let (rcode, qtype) = if request.metadata.op_code != OpCode::Query {
            (ResponseCode::NotImp, "other")
        } else {
            match request.request_info() {
                Err(_) => (ResponseCode::FormErr, "other"),
                Ok(info) => {
                    let q = info.query;
                    let ecs = request
                        .edns
                        .as_ref()
                        .and_then(|e| match e.options().get(EdnsCode::Subnet) {
                            Some(EdnsOption::Subnet(s)) => Some(*s),
                            _ => None,
                        });
                    let client = Client {
                        resolver: request.src().ip(),
                        subnet: ecs.map(|s| (s.addr(), s.source_prefix())),
                    };

                    let a: Answer = answer(&zones, q.name(), q.query_type(), &self.state.health(), &client);
                    for r in &a.regions {
                        self.state
                            .metrics
                            .answers
                            .with_label_values(&[q.name().to_string().as_str(), &*zones.regions[*r].name])
                            .inc();
                    }
                    builder_edns = request.edns.as_ref().map(|req| {
                        let mut e = Edns::new();
                        // Never more than the client can take, nor more than we allow (RFC 9715).
                        e.set_max_payload(req.max_payload().clamp(512, zones.max_udp_payload.max(512)));
                        if let Some(s) = ecs {
                            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                                s.addr(),
                                s.source_prefix(),
                                a.scope.unwrap_or(0),
                            )));
                        }
                        e
                    });
                    metadata.authoritative = a.authoritative;
                    metadata.response_code = a.rcode;
                    let msg = MessageResponseBuilder::new(&request.queries, builder_edns.as_ref()).build(
                        metadata,
                        a.answers.iter(),
                        a.authority.iter(),
                        std::iter::empty(),
                        std::iter::empty(),
                    );
                    let label = qtype_label(q.query_type());
                    self.state
                        .metrics
                        .queries
                        .with_label_values(&[label, rcode_label(a.rcode), proto])
                        .inc();
                    return match response.send_response(msg).await {
                        Ok(info) => info,
                        Err(e) => {
                            tracing::debug!("sending a DNS response failed: {e}");
                            failed(request, ResponseCode::ServFail)
                        }
                    };
                }
            }
        };
        self.state
            .metrics
            .queries
            .with_label_values(&[qtype, rcode_label(rcode), proto])
            .inc();
        let msg = MessageResponseBuilder::new(&request.queries, None).error_msg(&request.metadata, rcode);
        response
            .send_response(msg)
            .await
            .unwrap_or_else(|_| failed(request, rcode))
    }
}
