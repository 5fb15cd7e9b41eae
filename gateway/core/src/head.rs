//! A request's head as the decisions read it. Two kinds of head reach them: pingora's
//! `http::request::Parts` (HTTP/2, and the HTTP/1 requests left to pingora) and the gateway's own
//! HTTP/1 path's parsed header block, which is never copied into an `http::HeaderMap` (building
//! one, then hashing every lookup, cost a tenth of a proxied request's instructions). Both answer
//! the same few questions through [`RequestHead`], so one decision serves both.

use http::request::Parts;
use http::{HeaderName, Method, Version};

/// What the gateway reads of a request's head. Field names are lowercase (`HeaderName`'s form),
/// values the bytes as sent.
pub trait RequestHead: Sync {
    /// The method.
    fn method(&self) -> &Method;
    /// The HTTP version the client spoke.
    fn version(&self) -> Version;
    /// The target's path (no query).
    fn path(&self) -> &str;
    /// The target in origin form: path and query (`/` when the target has no path).
    fn path_and_query(&self) -> &str;
    /// The target's authority (an HTTP/2 `:authority` or an absolute-form target), if any.
    fn authority(&self) -> Option<&str>;
    /// The first value of field `name`.
    fn get(&self, name: &HeaderName) -> Option<&[u8]>;
    /// Every value of field `name`, in order.
    fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]>;
    /// Every field, in order.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// Whether the request has field `name`.
    fn contains(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// The first value of field `name`, when it is text.
    fn get_str(&self, name: &HeaderName) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of field `name` given as text in any case (a configured or propagated
    /// name): one pass over the fields, for the lookups off the common path.
    fn find(&self, name: &str) -> Option<&[u8]> {
        self.fields()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The declared body length (`Content-Length`), when there is one and it is a number.
    fn content_length(&self) -> Option<u64> {
        length(self.get(&http::header::CONTENT_LENGTH)?)
    }

    /// Appends to `out` this request as an HTTP/1.1 head to a backend, less its blank line: the
    /// request line in origin form and the fields `keep` keeps, in order. A head read from
    /// HTTP/1 bytes copies runs of its own lines instead.
    fn write_http1(&self, out: &mut Vec<u8>, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        request_line(out, self.method(), self.path_and_query());
        for (name, value) in self.fields() {
            if keep(name, value) {
                field_line(out, name, value);
            }
        }
    }
}

/// Appends an HTTP/1.1 request line for `method` and `target` (origin form).
pub fn request_line(out: &mut Vec<u8>, method: &Method, target: &str) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(REQUEST_LINE_END);
}

/// How a request line to a backend ends.
pub const REQUEST_LINE_END: &[u8] = b" HTTP/1.1\r\n";

/// Appends the HTTP/1 field line `name: value`.
pub fn field_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: 1*DIGIT (RFC 9110 8.6) with optional surrounding whitespace, at most
/// 19 digits so it fits a u64; anything else is `None`.
pub fn length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &d in digits {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

impl RequestHead for Parts {
    fn method(&self) -> &Method {
        &self.method
    }

    fn version(&self) -> Version {
        self.version
    }

    fn path(&self) -> &str {
        self.uri.path()
    }

    fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    fn authority(&self) -> Option<&str> {
        self.uri.authority().map(|a| a.as_str())
    }

    fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        self.headers.get(name).map(|v| v.as_bytes())
    }

    fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.headers.get_all(name).into_iter().map(|v| v.as_bytes())
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
    }
}
