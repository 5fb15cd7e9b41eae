//! A client's request head as this path reads it (httparse), and which requests it takes: HTTP/1.1
//! in origin form with a body of declared length (or none). Everything else is [`Parsed::Other`]
//! and goes to pingora's HTTP/1 session on the same connection, which answers exactly as it always
//! has: HTTP/1.0, `CONNECT`, absolute- and asterisk-form targets, `Transfer-Encoding`, `Expect`,
//! `Upgrade`, gRPC content (answered in gRPC's shape by pingora's path), more than
//! [`MAX_HEADERS`] fields, and whatever httparse refuses (pingora's 400s stay pingora's).
//!
//! The head stays where it was read: [`Head`] holds where the target and each field lie in the
//! read buffer (field names lowercased there, in place), and [`Request`] reads them over those
//! bytes for the gateway's decisions ([`RequestHead`]). No `http::HeaderMap` is built and nothing is
//! copied or allocated per field.

use http::{HeaderName, Method, Version};
use meridian_gateway_core::head::{request_line, RequestHead, REQUEST_LINE_END};
use smallvec::SmallVec;

use super::framing::{content_length, lists};
use super::lines::{bytes, copy_kept, Span};

/// Header fields this path reads at most; a request with more is pingora's.
pub const MAX_HEADERS: usize = 64;

/// A request head this path serves, as offsets into the bytes it was read from.
#[derive(Debug)]
pub struct Head {
    method: Method,
    /// The target (origin form: path and query).
    target: Span,
    /// The path's length within the target.
    path: u32,
    /// Each field's name (lowercase) and value.
    fields: SmallVec<[(Span, Span); 12]>,
    /// The declared body length, when the head declares one.
    declared: Option<u64>,
    /// Bytes of the header block, blank line included.
    pub len: usize,
    /// The declared body length (0 without one).
    pub body: u64,
    /// Whether the client asked to close the connection after this request.
    pub close: bool,
}

impl Head {
    /// This head over `block`, the bytes it was parsed from (at least its first [`Head::len`]).
    pub fn over<'a>(&'a self, block: &'a [u8]) -> Request<'a> {
        // The parser took the target as visible ASCII; it is made text once per view.
        let target = std::str::from_utf8(bytes(block, self.target)).unwrap_or_default();
        Request {
            head: self,
            block,
            target,
        }
    }
}

/// A parsed head over its bytes: what the gateway's decisions read.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    head: &'a Head,
    block: &'a [u8],
    target: &'a str,
}

impl RequestHead for Request<'_> {
    fn method(&self) -> &Method {
        &self.head.method
    }

    fn version(&self) -> Version {
        Version::HTTP_11
    }

    fn path(&self) -> &str {
        self.target.get(..self.head.path as usize).unwrap_or_default()
    }

    fn path_and_query(&self) -> &str {
        self.target
    }

    fn authority(&self) -> Option<&str> {
        None // origin form only
    }

    fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        let name = name.as_str().as_bytes();
        self.fields().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    fn get_all<'b>(&'b self, name: &'b HeaderName) -> impl Iterator<Item = &'b [u8]> {
        let name = name.as_str().as_bytes();
        self.fields().filter(move |(k, _)| *k == name).map(|(_, v)| v)
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let block = self.block;
        self.head
            .fields
            .iter()
            .map(move |&(k, v)| (bytes(block, k), bytes(block, v)))
    }

    fn content_length(&self) -> Option<u64> {
        self.head.declared
    }

    fn write_http1(&self, out: &mut Vec<u8>, keep: impl FnMut(&[u8], &[u8]) -> bool) {
        // The request line as it came when it is already origin form HTTP/1.1 with one space
        // each side of the target (no fragment, no leading blank line): the first run of lines.
        let (at, len) = self.head.target;
        let (at, end) = (at as usize, (at + len) as usize);
        let method = self.head.method.as_str().as_bytes();
        let line = end + REQUEST_LINE_END.len();
        let start = if at == method.len() + 1
            && self.block.starts_with(method)
            && self.block.get(end..line) == Some(REQUEST_LINE_END)
        {
            (0, line)
        } else {
            request_line(out, &self.head.method, self.target);
            (0, 0)
        };
        copy_kept(self.block, start, self.head.fields.iter().copied(), keep, out);
    }
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
    /// Not an HTTP request at all, or a malformed one (what httparse refuses): 400 with the
    /// reason, and the connection closes.
    Malformed(&'static str),
}

/// The start of the HTTP/2 connection preface (prior knowledge h2c): the HTTP/2 front serves it.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Reads the request head at the start of `buf`, if it is whole, and lowercases its field names
/// in place (HTTP/1 names are case-insensitive; the gateway reads and forwards them lowercase).
pub fn parse(buf: &mut [u8]) -> Parsed {
    let parsed = read(buf);
    if let Parsed::Head(head) = &parsed {
        for &((at, len), _) in &head.fields {
            buf[at as usize..(at + len) as usize].make_ascii_lowercase();
        }
    }
    parsed
}

/// [`parse`] without the lowercasing.
fn read(buf: &[u8]) -> Parsed {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
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
    if method == Method::CONNECT || !path.starts_with('/') {
        return Parsed::Other;
    }
    // httparse lets raw non-ASCII bytes through; a URI has none (they are percent-encoded).
    if !path.is_ascii() {
        return Parsed::Malformed("the request target is not a URI");
    }
    let span = |s: &[u8]| ((s.as_ptr() as usize - buf.as_ptr() as usize) as u32, s.len() as u32);
    let mut fields = SmallVec::new();
    let mut body = None;
    let mut close = false;
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            body = match content_length(f.value, body) {
                Some(n) => Some(n),
                None => return Parsed::Malformed("Content-Length is not one number"),
            };
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
            || (name.eq_ignore_ascii_case(b"content-type") && f.value.starts_with(b"application/grpc"))
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= lists(f.value, b"close");
        }
        fields.push((span(name), span(f.value)));
    }
    // The path ends at the query or the fragment; a fragment is the client's own, neither routed
    // on nor sent on.
    let t = path.as_bytes();
    let path_len = t.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(t.len());
    let target_len = match t.get(path_len) {
        Some(b'?') => t[path_len..]
            .iter()
            .position(|&b| b == b'#')
            .map_or(t.len(), |q| path_len + q),
        _ => path_len,
    };
    let head = Head {
        method,
        target: span(&t[..target_len]),
        path: path_len as u32,
        fields,
        declared: body,
        len,
        body: body.unwrap_or(0),
        close,
    };
    Parsed::Head(Box::new(head))
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

    /// The head `wire` sends on to a backend, all fields kept.
    fn sent_on(wire: &str) -> String {
        let (h, buf) = head(wire);
        let mut out = Vec::new();
        h.over(&buf).write_http1(&mut out, |_, _| true);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_request_line_is_reused_when_it_is_origin_form_http11() {
        let same = "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n";
        assert_eq!(sent_on(&format!("{same}\r\n")), same);
        // Otherwise it is written anew: a fragment, a leading blank line, HTTP/1.1 always.
        assert_eq!(
            sent_on("GET /p#frag HTTP/1.1\r\nHost: a\r\n\r\n"),
            "GET /p HTTP/1.1\r\nhost: a\r\n"
        );
        assert_eq!(
            sent_on("\r\nGET /p HTTP/1.1\r\nhost:a\r\n\r\n"),
            "GET /p HTTP/1.1\r\nhost: a\r\n"
        );
    }

    fn parsed(wire: &str) -> (Parsed, Vec<u8>) {
        let mut buf = wire.as_bytes().to_vec();
        (parse(&mut buf), buf)
    }

    fn head(wire: &str) -> (Head, Vec<u8>) {
        match parsed(wire) {
            (Parsed::Head(h), buf) => (*h, buf),
            (other, _) => panic!("{wire:?}: {other:?}"),
        }
    }

    fn is_other(wire: &str) -> bool {
        matches!(parsed(wire).0, Parsed::Other)
    }

    #[test]
    fn reads_what_the_rest_of_the_gateway_reads() {
        let wire = "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\nX-User-Id: 7\r\nX-User-Id: 8\r\nContent-Length: 12\r\n\r\n{\"inputs\":1}";
        let (h, buf) = head(wire);
        let r = h.over(&buf);
        assert_eq!(*r.method(), Method::POST);
        assert_eq!(
            (r.path(), r.path_and_query()),
            ("/v2/models/m/infer", "/v2/models/m/infer?x=1")
        );
        let user = HeaderName::from_static("x-user-id");
        assert_eq!(r.get(&user), Some(&b"7"[..]));
        assert_eq!(r.get_all(&user).collect::<Vec<_>>(), [&b"7"[..], b"8"]);
        assert_eq!(r.get_str(&http::header::HOST), Some("a"));
        assert_eq!(r.find("X-USER-ID"), Some(&b"7"[..]));
        assert_eq!(r.content_length(), Some(12));
        // Names are lowercased where they were read; values are as sent.
        assert_eq!(r.fields().next(), Some((&b"host"[..], &b"a"[..])));
        assert!(std::str::from_utf8(&buf)
            .unwrap()
            .contains("x-user-id: 7\r\nx-user-id: 8\r\ncontent-length: 12"));
        assert_eq!((h.len, h.body, h.close), (wire.len() - 12, 12, false));
        let (h, buf) = head("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(h.close);
        assert_eq!(h.over(&buf).content_length(), None);
        let (h, buf) = head("GET /a?b#c HTTP/1.1\r\n\r\n");
        assert_eq!((h.over(&buf).path(), h.over(&buf).path_and_query()), ("/a", "/a?b"));
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(matches!(
            parsed("POST /v2/models/m/infer HTTP/1.1\r\nHost:").0,
            Parsed::Partial
        ));
        assert!(matches!(parsed("").0, Parsed::Partial));
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
            "GET http://x/v2 HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
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
            ("GET /caf\u{e9} HTTP/1.1\r\n\r\n", "the request target is not a URI"),
            ("GET / HTTP/1.7\r\n\r\n", "the HTTP version is not 1.0 or 1.1"),
        ] {
            match parsed(wire).0 {
                Parsed::Malformed(got) => assert_eq!(got, why, "{wire:?}"),
                other => panic!("{wire:?}: {other:?}"),
            }
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert!(is_other(&format!("GET / HTTP/1.1\r\n{many}\r\n")));
        // The same length twice is one length.
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n")
                .0
                .body,
            2
        );
    }
}
