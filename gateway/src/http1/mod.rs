//! HTTP/1.1 as the gateway's own path reads and writes it, on httparse: request heads from clients
//! ([`request`]), connections to plain-HTTP/1 backends ([`client`]), body framing ([`framing`]) and
//! the hand-over of a client connection to pingora ([`rewind`]). Each connection is driven by the
//! request's own task, with one read and one write per message where the bytes allow: the common
//! inference call (a small body of declared length to a plain-HTTP/1 backend) costs a fraction of
//! pingora's HTTP/1 session and client (benches/README.md has the figures).
//!
//! No request logic lives here and nothing here imports the request path: the client connection
//! loop that uses these pieces is [`crate::proxy`]'s `h1` stage, and what a request is and where it
//! goes is decided by the same stages as on pingora's path.
//!
//! | file | what it holds |
//! | --- | --- |
//! | [`request`] | which request heads our path takes, read in place (offsets into the read buffer, no `HeaderMap`) |
//! | [`client`] | backend connections: one write per request, the response head, the pool |
//! | [`framing`] | where a body ends (length, chunked, close), no I/O |
//! | [`lines`] | field lines copied from one head into another, a run at a time |
//! | [`rewind`] | a connection handed to pingora with the bytes already read in front |

pub mod client;
pub mod framing;
pub mod lines;
pub mod request;
pub mod rewind;

use std::io::IoSlice;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read buffer of a new connection (client or backend); it grows when a read finds less than
/// [`READ_MIN`] free, so a message larger than the buffer is read in a few calls, not many.
pub(crate) const READ_BUF: usize = 8 * 1024;
const READ_MIN: usize = 2 * 1024;

/// Reads what the socket has into `buf`, growing it first when little room is left.
pub(crate) async fn read_more<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_MIN {
        buf.reserve(READ_BUF);
    }
    stream.read_buf(buf).await
}

/// Writes `head` then `body`, in one vectored write when the socket takes it all.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(stream: &mut W, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut sent = 0;
    let total = head.len() + body.len();
    while sent < total {
        let n = if sent < head.len() {
            if body.is_empty() {
                stream.write(&head[sent..]).await?
            } else {
                let bufs = [IoSlice::new(&head[sent..]), IoSlice::new(body)];
                stream.write_vectored(&bufs).await?
            }
        } else {
            stream.write(&body[sent - head.len()..]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        sent += n;
    }
    stream.flush().await
}
