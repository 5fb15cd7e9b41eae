//! Token accounting from an OpenAI-style response as it streams past: the `usage` object
//! (`prompt_tokens`, `completion_tokens`) that a JSON answer carries and a token stream sends in its
//! last event (`stream_options.include_usage`), read without holding the body back. Only the last
//! [`TAIL`] bytes are kept, because `usage` comes last; the answer is read once the body ended.

use serde::Deserialize;

/// Bytes of the body's end kept for reading `usage`.
pub const TAIL: usize = 2048;

/// Tokens a response reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Generated (output) tokens.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// The end of a response body, fed chunk by chunk.
#[derive(Debug, Default)]
pub struct UsageScanner {
    tail: Vec<u8>,
    chunks: u32,
}

impl UsageScanner {
    /// Takes the next piece of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.chunks += 1;
        if chunk.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - TAIL..]);
            return;
        }
        let keep = TAIL - chunk.len();
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        self.tail.extend_from_slice(chunk);
    }

    /// Body chunks seen so far (a stream's events, roughly).
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// The last `usage` object of the body seen, if it had one.
    pub fn usage(&self) -> Option<Usage> {
        const KEY: &[u8] = b"\"usage\"";
        let at = self.tail.windows(KEY.len()).rposition(|w| w == KEY)?;
        let rest = &self.tail[at + KEY.len()..];
        let colon = rest.iter().position(|&b| !b.is_ascii_whitespace())?;
        let value = rest[colon..].strip_prefix(b":")?;
        let mut stream = serde_json::Deserializer::from_slice(value).into_iter::<Usage>();
        stream.next()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(body: &str, piece: usize) -> Option<Usage> {
        let mut s = UsageScanner::default();
        for c in body.as_bytes().chunks(piece) {
            s.feed(c);
        }
        s.usage()
    }

    #[test]
    fn reads_usage_from_answers_and_streams_in_any_pieces() {
        let answer = format!(
            r#"{{"id":"x","choices":[{{"message":{{"content":"{}"}}}}],"usage": {{"prompt_tokens":7200,"completion_tokens":8,"total_tokens":7208}}}}"#,
            "long text ".repeat(1000)
        );
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        for piece in [1, 7, 100, 5000] {
            assert_eq!(
                scan(&answer, piece),
                Some(Usage {
                    prompt_tokens: 7200,
                    completion_tokens: 8
                })
            );
            assert_eq!(
                scan(stream, piece),
                Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 3
                })
            );
        }
        assert_eq!(scan("data: {\"choices\":[]}\n\ndata: [DONE]\n\n", 3), None);
        assert_eq!(scan(r#"{"usage": "not an object"}"#, 3), None);
        assert_eq!(scan(r#"{"usage": {"prompt_tokens": 5"#, 3), None, "cut short");
    }
}
