//! The model of an OpenAI-style request (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`) is the `model` field of its JSON body. The gateway peeks at the body only as far
//! as that field: a serde visitor reads the top-level object key by key, skips other values without
//! building them, and stops at `model`. A body cut short before `model` asks for more bytes.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::prefix::Peek;

/// Records `model` as soon as it is read: serde_json then fails the early stop (it expects the
/// object's end), and that error is expected.
struct ModelOnly<'a>(&'a std::cell::RefCell<Option<String>>);

impl<'de> Visitor<'de> for ModelOnly<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with a `model` field")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "model" {
                let m = map.next_value::<String>()?;
                *self.0.borrow_mut() = Some(m.clone());
                return Ok(Some(m));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(None)
    }
}

/// Looks for the top-level `model` in a body prefix.
pub fn peek(prefix: &[u8]) -> Peek {
    let found = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(prefix);
    let result = (&mut de).deserialize_map(ModelOnly(&found));
    if let Some(m) = found.into_inner() {
        return Peek::Model(m, None);
    }
    match result {
        Ok(Some(m)) => Peek::Model(m, None),
        Ok(None) => Peek::Invalid("the request body has no `model` field".into()),
        Err(e) if e.is_eof() || at_end(prefix, &e) => Peek::NeedMore,
        Err(e) => Peek::Invalid(format!(
            "the request body is not a JSON object with a string `model`: {e}"
        )),
    }
}

/// Whether a parse error stands at the last byte of `prefix`: a token cut there (a `-` that a
/// number's digits would follow) is incomplete, not wrong, and more bytes decide.
fn at_end(prefix: &[u8], e: &serde_json::Error) -> bool {
    let line = prefix.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = prefix.len() - prefix.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    e.line() == line && e.column() >= column
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_model_first_or_late_and_asks_for_more() {
        assert_eq!(
            peek(br#"{"model":"llama","messages":[]}"#),
            Peek::Model("llama".into(), None)
        );
        let late = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}],"stream":true,"model":"m2"}}"#,
            "x".repeat(5000)
        );
        assert_eq!(peek(late.as_bytes()), Peek::Model("m2".into(), None));
        // Cut anywhere before the model's value ends: ask for more.
        for cut in [1, 10, 100, late.len() - 4] {
            assert_eq!(peek(&late.as_bytes()[..cut]), Peek::NeedMore, "cut at {cut}");
        }
        // Stops at `model`: what follows may be incomplete.
        assert_eq!(
            peek(br#"{"model":"a","messages":[{"role""#),
            Peek::Model("a".into(), None)
        );
    }

    #[test]
    fn invalid_bodies() {
        assert!(matches!(peek(br#"{"messages":[]}"#), Peek::Invalid(m) if m.contains("no `model`")));
        assert!(matches!(peek(br#"{"model":42}"#), Peek::Invalid(_)));
        assert!(matches!(peek(br#"[1,2]"#), Peek::Invalid(_)));
        assert!(matches!(peek(b"not json"), Peek::Invalid(_)));
    }
}
