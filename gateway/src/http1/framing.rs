//! Where an HTTP/1 message body ends (RFC 9112 section 6): a declared length, the chunked coding, or
//! the close of the connection; and the body's data taken out of a read buffer as it arrives, with
//! the chunked coding removed. Chunk sizes are read by httparse's `parse_chunk_size`; this module only
//! keeps the state between them. No I/O: the caller reads into the buffer and asks again.

use bytes::{Buf, Bytes, BytesMut};

/// Most bytes of trailer fields after a chunked body (they are read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (a response with neither).
    Close,
}

impl Framing {
    /// A framing with no body at all.
    pub const EMPTY: Framing = Framing::Length(0);
}

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// A chunk size line that is not one.
    #[error("invalid chunk size")]
    ChunkSize,
    /// A chunk's data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    /// Trailer fields longer than we read.
    #[error("trailer fields over {MAX_TRAILERS} bytes")]
    Trailers,
    /// The connection closed before the body ended.
    #[error("the connection closed before the body ended")]
    Incomplete,
}

/// What [`Decoder::step`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body data (never empty).
    Data(Bytes),
    /// The buffer holds no more of the body: read more, then ask again.
    NeedMore,
    /// The body ended.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Bytes of a declared length still to come.
    Length(u64),
    /// Before a chunk size line.
    Size,
    /// Bytes of the current chunk still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields after the last chunk, `read` bytes of them so far.
    Trailers(usize),
    /// Until the connection closes.
    Close,
    /// Ended.
    Done,
}

/// Takes one body's data out of a read buffer, piece by piece.
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    /// A decoder for a body framed by `framing`.
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
            Framing::Close => State::Close,
        };
        Decoder { state }
    }

    /// Whether the body ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of the body out of `buf`; `eof` says the connection has closed (no
    /// more bytes will come). Bytes after the body's end stay in `buf` (the next message's).
    pub fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Step, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Length(left) => return self.counted(buf, eof, left, State::Done, State::Length),
                State::Close => {
                    if buf.is_empty() {
                        if eof {
                            self.state = State::Done;
                            return Ok(Step::Done);
                        }
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                State::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers(0)
                        } else {
                            State::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => return more(eof),
                    Err(_) => return Err(FramingError::ChunkSize),
                },
                State::Data(left) => return self.counted(buf, eof, left, State::DataEnd, State::Data),
                State::DataEnd => {
                    if buf.len() < 2 {
                        return more(eof);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(FramingError::ChunkEnd);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers(read) => {
                    // Field lines up to an empty line; dropped (HTTP/1 trailers are rare and
                    // hop-by-hop for our purposes).
                    let Some(at) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if read + buf.len() > MAX_TRAILERS {
                            return Err(FramingError::Trailers);
                        }
                        return more(eof);
                    };
                    buf.advance(at + 2);
                    self.state = if at == 0 {
                        State::Done
                    } else {
                        State::Trailers(read + at + 2)
                    };
                    if read + at > MAX_TRAILERS {
                        return Err(FramingError::Trailers);
                    }
                }
            }
        }
    }

    /// Up to `left` more bytes of a counted run (a `Content-Length` body or one chunk's data):
    /// `then` once they have all come, else `rest` of what is left.
    fn counted(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
        left: u64,
        then: State,
        rest: fn(u64) -> State,
    ) -> Result<Step, FramingError> {
        if buf.is_empty() {
            return more(eof);
        }
        let n = left.min(buf.len() as u64);
        let data = buf.split_to(n as usize).freeze();
        self.state = if n == left { then } else { rest(left - n) };
        Ok(Step::Data(data))
    }
}

/// Nothing more in the buffer: an error once the connection closed, else a request for more.
fn more(eof: bool) -> Result<Step, FramingError> {
    if eof {
        Err(FramingError::Incomplete)
    } else {
        Ok(Step::NeedMore)
    }
}

/// Adds one `Content-Length` field's `value` to the length seen so far (`seen`): the same length
/// twice is one length; anything else that is not one number is `None` (RFC 9112 section 6.3: a
/// message to refuse, never to guess at).
pub fn content_length(value: &[u8], seen: Option<u64>) -> Option<u64> {
    let n = meridian_gateway_core::head::length(value)?;
    match seen {
        Some(prev) if prev != n => None,
        _ => Some(n),
    }
}

/// Whether a comma-separated field `value` lists `token` (case-insensitive): `Connection: close`,
/// `Transfer-Encoding: chunked`.
pub fn lists(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Appends one chunk of the chunked coding holding `data` (never empty) to `out`.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write as _;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of the chunked coding, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the data and what was left after the end.
    fn decode(framing: Framing, input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), FramingError> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut out = Vec::new();
        loop {
            let eof = fed == input.len();
            match d.step(&mut buf, eof)? {
                Step::Data(b) => {
                    assert!(!b.is_empty());
                    out.extend_from_slice(&b);
                }
                Step::Done => return Ok((out, buf.to_vec())),
                Step::NeedMore => {
                    assert!(!eof, "asked for more after the end of input");
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (data, rest) = decode(Framing::Chunked, wire, step).unwrap();
            assert_eq!(data, b"hello world", "step {step}");
            // The bytes after the body are the next message's, untouched (unless read past).
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
    }

    #[test]
    fn lengths_stop_at_the_end_and_keep_what_follows() {
        let (data, rest) = decode(Framing::Length(5), b"helloGET /", 64).unwrap();
        assert_eq!((data.as_slice(), rest.as_slice()), (&b"hello"[..], &b"GET /"[..]));
        assert_eq!(decode(Framing::EMPTY, b"", 1).unwrap().0, b"");
        assert_eq!(decode(Framing::Length(5), b"hel", 1), Err(FramingError::Incomplete));
    }

    #[test]
    fn content_lengths_are_digits_only() {
        assert_eq!(content_length(b" 42 ", None), Some(42));
        assert_eq!(content_length(b"18446744073709551615", None), None, "20 digits");
        assert_eq!(
            content_length(b"9999999999999999999", None),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [&b""[..], b"+1", b"-1", b"1 2", b"0x10", b"1,1"] {
            assert_eq!(content_length(bad, None), None, "{bad:?}");
        }
        assert_eq!(content_length(b"7", Some(7)), Some(7));
        assert_eq!(content_length(b"7", Some(8)), None);
    }

    #[test]
    fn close_delimited_bodies_end_with_the_connection() {
        assert_eq!(decode(Framing::Close, b"all of it", 4).unwrap().0, b"all of it");
    }

    #[test]
    fn malformed_chunks_are_errors_not_guesses() {
        assert_eq!(decode(Framing::Chunked, b"zz\r\n", 64), Err(FramingError::ChunkSize));
        assert_eq!(decode(Framing::Chunked, b"2\r\nabXY", 64), Err(FramingError::ChunkEnd));
        assert_eq!(decode(Framing::Chunked, b"2\r\nab", 64), Err(FramingError::Incomplete));
        let long = [b"0\r\n".as_slice(), &vec![b'a'; MAX_TRAILERS + 10]].concat();
        assert_eq!(decode(Framing::Chunked, &long, 4096), Err(FramingError::Trailers));
    }

    #[test]
    fn encoding_round_trips() {
        let mut out = Vec::new();
        encode_chunk(&mut out, b"hello");
        encode_chunk(&mut out, &[b'x'; 300]);
        out.extend_from_slice(LAST_CHUNK);
        let (data, rest) = decode(Framing::Chunked, &out, 7).unwrap();
        assert_eq!(data.len(), 305);
        assert!(rest.is_empty());
    }
}
