//! The client's side of a request as the stages see it. Two kinds of connection carry requests:
//! pingora's server sessions (HTTP/2 streams, whether our own HTTP/2 front or pingora's proxy
//! serves them, and the HTTP/1 requests our own path leaves to pingora) and the gateway's own
//! HTTP/1 path ([`crate::http1`]). The stages that decide, retry, proxy over our own
//! upstream client and account are written once, over this trait; each kind of connection says how
//! it reads its head and writes an answer.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::request::Parts;
use meridian_gateway_core::head::RequestHead;
use meridian_gateway_core::reply::Reply;
use pingora::http::ResponseHeader;
use pingora::protocols::http::{HttpTask, ServerSession};
use pingora::ErrorType::InvalidHTTPHeader;
use pingora::OrErr;

use crate::http1::client::ResponseHead;
use crate::http1::framing::Framing;

/// One request's client side.
pub trait Downstream: Send {
    /// How this kind of connection holds a request's head.
    type Head: RequestHead;
    /// The request's head.
    fn head(&self) -> &Self::Head;
    /// The client's address, when the connection has one.
    fn client(&self) -> Option<SocketAddr>;
    /// Whether the client connection is TLS.
    fn tls(&self) -> bool;
    /// The status of the response head already sent, if one was.
    fn written(&self) -> Option<u16>;
    /// Whether the request body streamed past what can be sent again.
    fn truncated(&self) -> bool;
    /// Response body bytes sent so far.
    fn bytes_sent(&self) -> usize;
    /// Closes the connection after this response (and says so in it).
    fn close(&mut self);
    /// Sends a backend's response head; `end`: there is no body.
    fn write_head(&mut self, head: &ResponseHead, end: bool) -> impl Future<Output = pingora::Result<()>> + Send;
    /// Sends an HTTP/2 backend's response head; `end`: there is no body.
    fn write_parts(
        &mut self,
        head: http::response::Parts,
        end: bool,
    ) -> impl Future<Output = pingora::Result<()>> + Send;
    /// Sends an HTTP/2 backend's trailers, which end the response (an HTTP/1 client's response
    /// ends without them: none of its clients asks for trailers).
    fn write_trailers(&mut self, trailers: http::HeaderMap) -> impl Future<Output = pingora::Result<()>> + Send;
    /// Resolves when the client is known to have gone: an HTTP/2 client reset its stream. An
    /// HTTP/1 client's going shows only when it is written to, so for it this never resolves.
    fn gone(&mut self) -> impl Future<Output = ()> + Send;
    /// Sends a piece of the response body; `end`: it is the last.
    fn write_body(&mut self, data: Bytes, end: bool) -> impl Future<Output = pingora::Result<()>> + Send;
    /// Sends the gateway's own answer, whole.
    fn reply(&mut self, reply: &Reply) -> impl Future<Output = pingora::Result<()>> + Send;

    /// The connection's forwarding fields for a request that has none, as HTTP/1 field lines,
    /// when the connection keeps them (made once per connection, not per request).
    fn first_hop(&self) -> Option<&[u8]> {
        None
    }

    /// The client's IP address.
    fn client_ip(&self) -> Option<IpAddr> {
        self.client().map(|a| a.ip())
    }
}

/// Readies an HTTP/2 backend's response head for an HTTP/1 client, which learns where the body
/// ends from the head: one that ends with its head gets `Content-Length: 0` where its status and
/// the `method` allow a body. Returns whether the body's end is known (else it goes chunked).
pub(super) fn framed_for_http1(head: &mut http::response::Parts, end: bool, method: &http::Method) -> bool {
    let length = head.headers.contains_key(http::header::CONTENT_LENGTH);
    let status = head.status.as_u16();
    let bodiless = *method == http::Method::HEAD || status < 200 || status == 204 || status == 304;
    if end && !length && !bodiless {
        head.headers
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
    }
    length || end
}

/// Sends a backend's response head `h` on a pingora session; `framed`: it has a length.
async fn write_framed(s: &mut ServerSession, mut h: ResponseHeader, framed: bool, end: bool) -> pingora::Result<()> {
    // pingora frames an HTTP/1.1 body by its fields: without a length, chunked (as the backend
    // sent it) rather than until the close. HTTP/2 frames its own.
    if !framed && s.req_header().version == http::Version::HTTP_11 {
        h.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    write_response_head(s, Box::new(h), end).await
}

/// Sends a response head on a pingora session; with `end`, as the whole response. pingora's
/// `write_response_header` leaves an HTTP/2 stream open, and a session that then closes without
/// `finish` (a failure's answer) resets the stream with CANCEL: a trailers-only gRPC status would
/// be lost. Its task interface ends the stream with the head.
///
/// Writes go to the server session itself, not through pingora_proxy's `Session`, whose only
/// addition is its downstream modules: the gateway adds none, and the one pingora adds
/// (compression) is off.
pub(super) async fn write_response_head(
    s: &mut ServerSession,
    h: Box<ResponseHeader>,
    end: bool,
) -> pingora::Result<()> {
    if end && s.req_header().version == http::Version::HTTP_2 {
        s.response_duplex_vec(vec![HttpTask::Header(h, true)]).await.map(|_| ())
    } else {
        s.write_response_header(h).await
    }
}

/// A backend's field value, kept in the buffer it arrived in.
fn value_of(value: Bytes) -> pingora::Result<http::HeaderValue> {
    http::HeaderValue::from_maybe_shared(value).or_err(InvalidHTTPHeader, "field value")
}

impl Downstream for ServerSession {
    type Head = Parts;

    fn head(&self) -> &Parts {
        ServerSession::req_header(self)
    }

    fn client(&self) -> Option<SocketAddr> {
        self.client_addr().and_then(|a| a.as_inet()).copied()
    }

    fn tls(&self) -> bool {
        self.digest().is_some_and(|d| d.ssl_digest.is_some())
    }

    fn written(&self) -> Option<u16> {
        self.response_written().map(|r| r.status.as_u16())
    }

    fn truncated(&self) -> bool {
        self.retry_buffer_truncated()
    }

    fn bytes_sent(&self) -> usize {
        self.body_bytes_sent()
    }

    fn close(&mut self) {
        self.set_keepalive(None);
    }

    async fn write_head(&mut self, head: &ResponseHead, end: bool) -> pingora::Result<()> {
        let h = if self.req_header().version == http::Version::HTTP_2 {
            // HTTP/2 names go in lower case: no map of the names as they came, one insertion per
            // field instead of two.
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = http::StatusCode::from_u16(head.status).or_err(InvalidHTTPHeader, "status")?;
            for (name, value) in head.end_to_end() {
                let name = http::HeaderName::from_bytes(name).or_err(InvalidHTTPHeader, "field name")?;
                parts
                    .headers
                    .try_append(name, value_of(value)?)
                    .or_err(InvalidHTTPHeader, "fields")?;
            }
            ResponseHeader::from(parts)
        } else {
            let mut h = ResponseHeader::build(head.status, Some(16))?;
            for (name, value) in head.end_to_end() {
                h.append_header(Bytes::copy_from_slice(name), value_of(value)?)?;
            }
            h
        };
        let framed = matches!(head.framing, Framing::Length(_));
        write_framed(self, h, framed, end).await
    }

    async fn write_parts(&mut self, mut head: http::response::Parts, end: bool) -> pingora::Result<()> {
        let framed = framed_for_http1(&mut head, end, &self.req_header().method);
        write_framed(self, ResponseHeader::from(head), framed, end).await
    }

    async fn write_trailers(&mut self, trailers: http::HeaderMap) -> pingora::Result<()> {
        if self.req_header().version == http::Version::HTTP_2 {
            self.write_response_trailers(trailers).await
        } else {
            self.write_response_body(Bytes::new(), true).await
        }
    }

    async fn gone(&mut self) {
        match self.watch_h2_stream_close() {
            Some(reset) => {
                let _ = reset.await;
            }
            None => std::future::pending().await,
        }
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> pingora::Result<()> {
        self.write_response_body(data, end).await
    }

    async fn reply(&mut self, reply: &Reply) -> pingora::Result<()> {
        super::reply::send(self, reply).await
    }
}
