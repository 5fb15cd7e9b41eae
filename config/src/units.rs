//! Human-friendly units for the config: durations (`10s`, `1m30s`) and sizes (`16MiB`).
//!
//! Operators write units the way they say them; the runtime wants `std::time::Duration` and byte
//! counts. These newtypes parse with `humantime` and `bytesize` (no hand-rolled parsers), print back
//! in the same form so a config round-trips, and describe themselves to the JSON Schema.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `500ms`, `10s`, `5m`, `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// A duration of whole seconds, for defaults.
    pub const fn secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    /// A duration of milliseconds, for defaults.
    pub const fn millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    /// The runtime value.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

/// A duration or size that does not parse, with how to write one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration.
    #[error("invalid duration `{input}` ({reason}); write a number and a unit, like 500ms, 10s, 5m or 1h")]
    Duration {
        /// What was written.
        input: String,
        /// The parser's words.
        reason: String,
    },
    /// Not a size.
    #[error("invalid size `{0}`; write a number and a unit, like 64KiB, 16MiB or 1GB")]
    Size(String),
}

impl FromStr for Duration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| UnitError::Duration {
                input: s.into(),
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like 10s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "duration `{v}` has no unit; write it with one, like {v}s or {v}ms"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "duration `{v}` has no unit; write it with one, like {v}s"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+\\s*)+$",
            "description": "A duration with a unit: 500ms, 10s, 5m, 1h30m",
            "examples": ["10s", "500ms", "5m"]
        })
    }
}

/// A size in bytes written as `16MiB`, `64KiB`, `1GB` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// A size of `n` KiB, for defaults.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    /// A size of `n` MiB, for defaults.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        bytesize::ByteSize::from_str(s.trim())
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|_| UnitError::Size(s.into()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];
        // Print the largest unit that divides exactly, so the value round-trips without loss.
        let (unit, div) = UNITS
            .iter()
            .copied()
            .find(|(_, d)| self.0 >= *d && self.0.is_multiple_of(*d))
            .unwrap_or(("B", 1));
        write!(f, "{}{}", self.0 / div, unit)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 16MiB, or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*([KMGTPE]i?B|[kKmMgGtTpPeE]|B)?\\s*$"}
            ],
            "description": "A size: 64KiB, 16MiB, 1GB, or a number of bytes",
            "examples": ["16MiB", "64KiB"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (text, d) in [
            ("10s", std::time::Duration::from_secs(10)),
            ("500ms", std::time::Duration::from_millis(500)),
            ("5m", std::time::Duration::from_secs(300)),
            ("1h 30m", std::time::Duration::from_secs(5400)),
        ] {
            let parsed: Duration = text.parse().unwrap();
            assert_eq!(parsed.0, d);
            let again: Duration = parsed.to_string().parse().unwrap();
            assert_eq!(again, parsed, "{text} -> {parsed} must parse back");
        }
    }

    #[test]
    fn duration_without_unit_is_rejected_with_a_hint() {
        let err = serde_json::from_str::<Duration>("10").unwrap_err().to_string();
        assert!(err.contains("has no unit; write it with one, like 10s"), "{err}");
        assert!("ten"
            .parse::<Duration>()
            .unwrap_err()
            .to_string()
            .contains("invalid duration `ten`"));
    }

    #[test]
    fn sizes_round_trip() {
        for (text, n) in [
            ("16MiB", 16 << 20),
            ("64KiB", 64 << 10),
            ("1GB", 1_000_000_000),
            ("512", 512),
        ] {
            let parsed: ByteSize = text.parse().unwrap();
            assert_eq!(parsed.0, n, "{text}");
            let again: ByteSize = parsed.to_string().parse().unwrap();
            assert_eq!(again, parsed, "{text} -> {parsed} must parse back");
        }
        assert_eq!(ByteSize::mib(16).to_string(), "16MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(serde_json::from_str::<ByteSize>("1024").unwrap(), ByteSize(1024));
        assert!("lots".parse::<ByteSize>().is_err());
    }
}
