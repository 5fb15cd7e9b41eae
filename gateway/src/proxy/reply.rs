//! Writing the gateway's own answers ([`Reply`]) to the client: KServe-style JSON over HTTP, or for
//! gRPC clients a trailers-only status (errors) or one unary message (`ServerLive`/`ServerReady`).

use bytes::Bytes;
use http::HeaderMap;
use meridian_gateway_core::grpc::{encode_message, is_grpc, status_code};
use meridian_gateway_core::reply::{Content, Reply};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

use super::downstream::write_response_head;

/// Writes `reply` to the client in the shape its protocol expects.
pub async fn send(session: &mut ServerSession, reply: &Reply) -> pingora::Result<()> {
    let grpc = is_grpc(&**session.req_header());
    match &reply.content {
        Content::GrpcMessage(message) => send_grpc_message(session, message).await,
        Content::Error(message) if grpc => {
            send_grpc_status(session, status_code(reply.status), message, reply.retry_after).await
        }
        _ => send_http(session, reply).await,
    }
}

async fn send_http(session: &mut ServerSession, reply: &Reply) -> pingora::Result<()> {
    let body = reply.body();
    let mut h = ResponseHeader::build(reply.status, Some(4))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    if let Some(s) = reply.retry_after {
        h.insert_header("retry-after", s.to_string())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    write_response_head(session, Box::new(h), head_only).await?;
    if !head_only {
        session.write_response_body(Bytes::from(body), true).await?;
    }
    Ok(())
}

/// A trailers-only response: the status in the header block, no body.
async fn send_grpc_status(
    session: &mut ServerSession,
    code: u8,
    message: &str,
    retry_after: Option<u32>,
) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(200, Some(4))?;
    h.insert_header("content-type", "application/grpc")?;
    h.insert_header("grpc-status", code.to_string())?;
    h.insert_header("grpc-message", encode_message(message))?;
    if let Some(s) = retry_after {
        h.insert_header("retry-after", s.to_string())?;
    }
    write_response_head(session, Box::new(h), true).await
}

/// A unary answer: one message, then `grpc-status: 0` in the trailers.
async fn send_grpc_message(session: &mut ServerSession, message: &[u8]) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(200, Some(2))?;
    h.insert_header("content-type", "application/grpc")?;
    session.write_response_header(Box::new(h)).await?;
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    session.write_response_body(Bytes::from(frame), false).await?;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    session.write_response_trailers(trailers).await
}
