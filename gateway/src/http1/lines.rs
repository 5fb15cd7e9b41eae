//! Field lines copied from one HTTP/1 header block into another head: a proxied head keeps most
//! of its fields, and those a client or backend wrote in the usual form (`name: value` and CRLF)
//! lie next to each other in the block, so each run of kept lines is one copy rather than four
//! per field. A line in any other form (no space or several after the colon, a bare LF) is
//! rewritten in the usual form.

use bytes::Bytes;
use meridian_gateway_core::head::field_line;

/// Where a piece of a header block lies: offset and length.
pub type Span = (u32, u32);

/// Appends to `out` the fields of `block` (name and value spans, in block order) that `keep`
/// keeps, as field lines, after `block[start.0..start.1]` (the start line when it is reused as it
/// came, else empty).
pub fn copy_kept(
    block: &[u8],
    start: (usize, usize),
    fields: impl Iterator<Item = (Span, Span)>,
    mut keep: impl FnMut(&[u8], &[u8]) -> bool,
    out: &mut Vec<u8>,
) {
    // The run of lines not yet copied: block[run.0..run.1].
    let mut run = start;
    for (n, v) in fields {
        let (name, value) = (bytes(block, n), bytes(block, v));
        if !keep(name, value) {
            continue;
        }
        let (start, name_end) = (n.0 as usize, (n.0 + n.1) as usize);
        let (value_start, value_end) = (v.0 as usize, (v.0 + v.1) as usize);
        let usual = value_start == name_end + 2
            && block.get(name_end..value_start) == Some(b": ")
            && block.get(value_end..value_end + 2) == Some(b"\r\n");
        if usual && start == run.1 {
            run.1 = value_end + 2;
            continue;
        }
        out.extend_from_slice(&block[run.0..run.1]);
        if usual {
            run = (start, value_end + 2);
        } else {
            field_line(out, name, value);
            run = (0, 0);
        }
    }
    out.extend_from_slice(&block[run.0..run.1]);
}

/// Appends the status line of a response with `status`, with its standard reason phrase.
pub fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The bytes of `span` in `block` (none if it lies outside).
pub fn bytes(block: &[u8], (at, len): Span) -> &[u8] {
    block.get(at as usize..(at + len) as usize).unwrap_or_default()
}

/// [`bytes`] as a handle on `block`'s buffer, for keeping past the borrow without a copy.
pub fn shared(block: &Bytes, span: Span) -> Bytes {
    let (at, len) = (span.0 as usize, span.1 as usize);
    if at + len <= block.len() {
        block.slice(at..at + len)
    } else {
        Bytes::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spans of each field of `block` (as httparse reads it) and the lines `keep` keeps.
    fn copied(block: &[u8], keep: &[&str]) -> String {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut fields);
        req.parse(block).unwrap();
        let base = block.as_ptr() as usize;
        let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
        let spans: Vec<_> = req
            .headers
            .iter()
            .map(|f| (at(f.name.as_bytes()), at(f.value)))
            .collect();
        let mut out = Vec::new();
        copy_kept(
            block,
            (0, 0),
            spans.into_iter(),
            |n, _| keep.iter().any(|k| k.as_bytes() == n),
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn runs_of_usual_lines_are_copied_and_others_rewritten() {
        let block = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd:4\r\ne:  5  \r\nf: 6\r\ng: 7\n\r\n";
        let all = ["a", "b", "c", "d", "e", "f", "g"];
        assert_eq!(
            copied(block, &all),
            "a: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\nf: 6\r\ng: 7\r\n"
        );
        assert_eq!(copied(block, &["a", "c", "f"]), "a: 1\r\nc: 3\r\nf: 6\r\n");
        assert_eq!(copied(block, &["b", "c", "e"]), "b: 2\r\nc: 3\r\ne: 5\r\n");
        assert_eq!(copied(block, &[]), "");
        assert_eq!(copied(block, &["g"]), "g: 7\r\n");
    }
}
