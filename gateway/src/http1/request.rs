//! A client's request head as this path reads it (httparse), and which requests it takes: HTTP/1.1
//! with a body of declared length (or none). Everything else is [`Parsed::Other`] and goes to
//! pingora's HTTP/1 session on the same connection, which answers exactly as it always has:
//! HTTP/1.0, `CONNECT`, `Transfer-Encoding`, `Expect`, `Upgrade`, gRPC content (answered in gRPC's
//! shape by pingora's path), more than [`MAX_HEADERS`] fields, and whatever httparse or the `http`
//! types refuse (pingora's 400s stay pingora's).

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use super::framing::{content_length, lists};

/// Header fields this path reads at most; a request with more is pingora's.
pub const MAX_HEADERS: usize = 64;

/// A request head this path serves.
#[derive(Debug)]
pub struct Head {
    /// Method, target, version and fields, as the rest of the gateway reads any request.
    pub parts: Parts,
    /// Bytes of the header block, blank line included.
    pub len: usize,
    /// The declared body length (0 without one).
    pub body: u64,
    /// Whether the client asked to close the connection after this request.
    pub close: bool,
}

/// What a read buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// A whole head this path serves.
    Head(Box<Head>),
    /// The start of a head: read more.
    Partial,
    /// A request (or bytes) this path leaves to pingora.
    Other,
    /// Not an HTTP request at all, or a malformed one (what httparse or the `http` types refuse):
    /// 400 with the reason, and the connection closes.
    Malformed(&'static str),
}

/// The HTTP/2 connection preface (prior knowledge h2c), which is pingora's to serve.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Reads the request head at the start of `buf`, if it is whole.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // More fields than this path reads, and the h2c preface, are pingora's.
        Err(httparse::Error::TooManyHeaders) => return Parsed::Other,
        Err(_) if buf.starts_with(H2_PREFACE) => return Parsed::Other,
        Err(e) => return Parsed::Malformed(malformed(e)),
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if method == Method::CONNECT {
        return Parsed::Other;
    }
    // One copy of the header block; the target and every field value are slices of it (one
    // allocation, where a copy per value would be one each).
    let block = Bytes::copy_from_slice(&buf[..len]);
    let slice = |s: &[u8]| {
        let at = s.as_ptr() as usize - buf.as_ptr() as usize;
        block.slice(at..at + s.len())
    };
    let Ok(uri) = Uri::from_maybe_shared(slice(path.as_bytes())) else {
        return Parsed::Malformed("the request target is not a URI");
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut body = None;
    let mut close = false;
    for f in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_maybe_shared(slice(f.value)),
        ) else {
            return Parsed::Malformed("a header field is malformed");
        };
        if name == http::header::CONTENT_LENGTH {
            body = match content_length(f.value, body) {
                Some(n) => Some(n),
                None => return Parsed::Malformed("Content-Length is not one number"),
            };
        } else if name == http::header::TRANSFER_ENCODING
            || name == http::header::EXPECT
            || name == http::header::UPGRADE
            || (name == http::header::CONTENT_TYPE && f.value.starts_with(b"application/grpc"))
        {
            return Parsed::Other;
        } else if name == http::header::CONNECTION {
            close |= lists(f.value, b"close");
        }
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parsed::Head(Box::new(Head {
        parts,
        len,
        body: body.unwrap_or(0),
        close,
    }))
}

/// What a client is told of a head httparse refuses.
fn malformed(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "a header field name is malformed",
        httparse::Error::HeaderValue => "a header field value is malformed",
        httparse::Error::NewLine => "a line does not end in CRLF",
        httparse::Error::Status | httparse::Error::Token => "the request line is malformed",
        httparse::Error::TooManyHeaders => "too many header fields", // (pingora's, above)
        httparse::Error::Version => "the HTTP version is not 1.0 or 1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(wire: &str) -> Head {
        match parse(wire.as_bytes()) {
            Parsed::Head(h) => *h,
            other => panic!("{wire:?}: {other:?}"),
        }
    }

    fn is_other(wire: &str) -> bool {
        matches!(parse(wire.as_bytes()), Parsed::Other)
    }

    #[test]
    fn reads_what_the_rest_of_the_gateway_reads() {
        let wire = "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\nX-User-Id: 7\r\nContent-Length: 12\r\n\r\n{\"inputs\":1}";
        let h = head(wire);
        assert_eq!(h.parts.method, Method::POST);
        assert_eq!(h.parts.uri.path(), "/v2/models/m/infer");
        assert_eq!(h.parts.headers["x-user-id"], "7");
        assert_eq!((h.len, h.body, h.close), (wire.len() - 12, 12, false));
        assert!(head("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").close);
        // Absolute-form targets parse; the gateway routes them by path alone.
        assert_eq!(head("GET http://x/v2 HTTP/1.1\r\n\r\n").parts.uri.path(), "/v2");
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(matches!(
            parse(b"POST /v2/models/m/infer HTTP/1.1\r\nHost:"),
            Parsed::Partial
        ));
        assert!(matches!(parse(b""), Parsed::Partial));
    }

    #[test]
    fn what_this_path_does_not_take_goes_to_pingora() {
        for wire in [
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-type: application/grpc+proto\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(is_other(wire), "{wire:?}");
        }
        // Malformed: answered 400 here (with the reason), never handed on.
        for (wire, why) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "Content-Length is not one number",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "Content-Length is not one number",
            ),
            (
                "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                "a header field name is malformed",
            ),
            ("\x16\x03\x01garbage\r\n\r\n", "the request line is malformed"),
            ("GET / HTTP/1.7\r\n\r\n", "the HTTP version is not 1.0 or 1.1"),
        ] {
            match parse(wire.as_bytes()) {
                Parsed::Malformed(got) => assert_eq!(got, why, "{wire:?}"),
                other => panic!("{wire:?}: {other:?}"),
            }
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert!(is_other(&format!("GET / HTTP/1.1\r\n{many}\r\n")));
        // The same length twice is one length.
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n").body,
            2
        );
    }
}
