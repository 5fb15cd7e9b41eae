//! The hickory-server adapter: hands each request to [`reply`](crate::reply::reply) and encodes the
//! result with hickory's response builder, which also sets TC when the answer does not fit the
//! response EDNS payload size.

use std::sync::Arc;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::reply::reply;
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
        let tcp = request.protocol() == Protocol::Tcp;
        let info = request.request_info().ok();
        let question = info.as_ref().map(|i| (i.query.name(), i.query.query_type()));
        let r = reply(
            &self.state,
            &zones,
            &request.metadata,
            question,
            request.edns.as_ref(),
            request.src().ip(),
            tcp,
        );
        let msg = MessageResponseBuilder::new(&request.queries, r.edns.as_ref()).build(
            r.metadata,
            r.answer.answers.iter(),
            r.answer.authority.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("sending a DNS response failed: {e}");
                failed(request, ResponseCode::ServFail)
            }
        }
    }
}
