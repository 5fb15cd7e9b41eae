//! One request's client side on our HTTP/1 front ([`super::h1`]) ([`Downstream`] for the shared stages): the
//! response head written from the backend's fields as they came (their case kept), the body framed
//! for the client (the backend's length, else chunked), and the gateway's own answers. A head waits
//! in the connection's write buffer for the first piece of body, so a small response leaves in one
//! write.

use std::net::SocketAddr;

use bytes::Bytes;
use meridian_gateway_core::head::{field_line, RequestHead};
use meridian_gateway_core::reply::Reply;
use pingora::{Error, ErrorType};

use super::downstream::framed_for_http1;
use super::forward::first_hop_lines;
use super::h1::Connection;
use super::Downstream;
use crate::http1::client::ResponseHead;
use crate::http1::framing::{encode_chunk, Framing, LAST_CHUNK};
use crate::http1::lines::status_line;
use crate::http1::request::Request;

/// A request being answered on a connection of our HTTP/1 path.
pub struct Exchange<'a> {
    conn: &'a mut Connection,
    head: Request<'a>,
    status: Option<u16>,
    sent: usize,
    close: bool,
    chunked: bool,
}

impl<'a> Exchange<'a> {
    /// The answer to `head` on `conn`; `close`: the connection ends after it.
    pub fn new(conn: &'a mut Connection, head: Request<'a>, close: bool) -> Exchange<'a> {
        if let (None, Some(client)) = (&conn.first_hop, conn.client) {
            conn.first_hop = Some(first_hop_lines(client.ip(), conn.tls));
        }
        Exchange {
            conn,
            head,
            status: None,
            sent: 0,
            close,
            chunked: false,
        }
    }

    /// Whether the connection ends after this answer.
    pub fn closing(&self) -> bool {
        self.close
    }

    /// Starts a response head in the write buffer: the status line.
    fn status_line(&mut self, status: u16) {
        status_line(&mut self.conn.out, status);
        self.status = Some(status);
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        field_line(&mut self.conn.out, name, value);
    }

    /// Ends the head: the connection's fate, then the blank line.
    fn end_head(&mut self) {
        if self.close {
            self.field(b"connection", b"close");
        }
        self.conn.out.extend_from_slice(b"\r\n");
    }

    /// Ends a backend's response head: chunked framing when it has no length (`chunked`), and with
    /// `end` (no body) the response.
    async fn end_response_head(&mut self, chunked: bool, end: bool) -> pingora::Result<()> {
        self.chunked = chunked;
        if chunked {
            self.field(b"transfer-encoding", b"chunked");
        }
        self.end_head();
        if end {
            if chunked {
                self.conn.out.extend_from_slice(LAST_CHUNK);
            }
            self.flush(&[]).await?;
        }
        Ok(())
    }

    /// Sends what is buffered, then `data`.
    async fn flush(&mut self, data: &[u8]) -> pingora::Result<()> {
        self.conn
            .write(data)
            .await
            .map_err(|e| Error::because(ErrorType::WriteError, "writing to the client", e).into_down())
    }
}

impl<'a> Downstream for Exchange<'a> {
    type Head = Request<'a>;

    fn head(&self) -> &Request<'a> {
        &self.head
    }

    fn client(&self) -> Option<SocketAddr> {
        self.conn.client
    }

    fn tls(&self) -> bool {
        self.conn.tls
    }

    fn first_hop(&self) -> Option<&[u8]> {
        self.conn.first_hop.as_deref()
    }

    fn written(&self) -> Option<u16> {
        self.status
    }

    fn truncated(&self) -> bool {
        false // the body is read whole before the request goes upstream
    }

    fn bytes_sent(&self) -> usize {
        self.sent
    }

    fn close(&mut self) {
        self.close = true;
    }

    async fn write_head(&mut self, head: &ResponseHead, end: bool) -> pingora::Result<()> {
        head.write_http1(&mut self.conn.out);
        self.status = Some(head.status);
        self.end_response_head(!matches!(head.framing, Framing::Length(_)), end)
            .await
    }

    async fn write_parts(&mut self, mut head: http::response::Parts, end: bool) -> pingora::Result<()> {
        let framed = framed_for_http1(&mut head, end, self.head.method());
        self.status_line(head.status.as_u16());
        for (name, value) in &head.headers {
            self.field(name.as_str().as_bytes(), value.as_bytes());
        }
        self.end_response_head(!framed, end).await
    }

    async fn write_trailers(&mut self, _trailers: http::HeaderMap) -> pingora::Result<()> {
        self.write_body(Bytes::new(), true).await
    }

    async fn gone(&mut self) {
        std::future::pending().await
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> pingora::Result<()> {
        self.sent += data.len();
        if !self.chunked {
            return self.flush(&data).await;
        }
        if !data.is_empty() {
            encode_chunk(&mut self.conn.out, &data);
        }
        if end {
            self.conn.out.extend_from_slice(LAST_CHUNK);
        }
        self.flush(&[]).await
    }

    async fn reply(&mut self, reply: &Reply) -> pingora::Result<()> {
        let body = reply.body();
        self.status_line(reply.status);
        self.field(b"content-type", b"application/json");
        self.field(b"content-length", itoa::Buffer::new().format(body.len()).as_bytes());
        if let Some(s) = reply.retry_after {
            self.field(b"retry-after", itoa::Buffer::new().format(s).as_bytes());
        }
        self.end_head();
        if *self.head.method() == http::Method::HEAD {
            return self.flush(&[]).await;
        }
        self.sent += body.len();
        self.flush(body.as_bytes()).await
    }
}
