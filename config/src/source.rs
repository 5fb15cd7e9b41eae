//! YAML text to a plain value plus an index from field paths to source positions.
//!
//! serde gives precise field paths (`models[0].routes[2].split`) but YAML parsers that feed serde
//! directly lose positions for errors found after deserialization. So the document is parsed once
//! with saphyr's marked nodes, converted to a `serde_json::Value` for serde, and every node's position
//! is kept by its path. Type errors and semantic errors then share one way to name a place.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in the config file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// A parsed document: its value and where each path sits in the text.
#[derive(Debug, Default)]
pub struct Document {
    /// The document as a plain value, ready for serde.
    pub value: Value,
    /// Position of each node's value, by path.
    values: HashMap<String, Pos>,
    /// Position of each mapping key, by the path of its value.
    keys: HashMap<String, Pos>,
}

impl Document {
    /// Parses YAML text; a syntax error comes back with its position.
    pub fn parse(text: &str) -> Result<Document, (Pos, String)> {
        let docs = MarkedYaml::load_from_str(text).map_err(|e| {
            let m = e.marker();
            (
                Pos {
                    line: m.line(),
                    col: m.col() + 1,
                },
                e.info().to_string(),
            )
        })?;
        let mut doc = Document::default();
        match docs.into_iter().next() {
            Some(root) => doc.value = doc.convert(&root, String::new())?,
            None => doc.value = Value::Object(Map::new()),
        }
        Ok(doc)
    }

    /// Where to point for an error at `path`: the key for a mapping or list (its line reads best),
    /// the value itself for a scalar; the nearest ancestor that exists when the path does not.
    pub fn locate(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            let is_collection = self
                .values
                .get(p)
                .is_some_and(|_| matches!(self.lookup(p), Some(Value::Object(_) | Value::Array(_))));
            let found = if is_collection {
                self.keys.get(p).or_else(|| self.values.get(p))
            } else {
                self.values.get(p).or_else(|| self.keys.get(p))
            };
            if let Some(pos) = found {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return Pos { line: 1, col: 1 },
            }
        }
    }

    /// Position of the key that names `path`, if `path` is a mapping entry.
    pub fn key_pos(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied()
    }

    fn lookup(&self, path: &str) -> Option<&Value> {
        let mut v = &self.value;
        for seg in segments(path) {
            v = match seg {
                Seg::Key(k) => v.get(k)?,
                Seg::Index(i) => v.get(i)?,
            };
        }
        Some(v)
    }

    fn convert(&mut self, node: &MarkedYaml<'_>, path: String) -> Result<Value, (Pos, String)> {
        let start = node.span.start;
        let pos = Pos {
            line: start.line(),
            col: start.col() + 1,
        };
        let value = match &node.data {
            YamlData::Value(s) => scalar(s),
            YamlData::Representation(text, _, _) => Value::String(text.to_string()),
            YamlData::Tagged(_, inner) => return self.convert(inner, path),
            YamlData::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.convert(item, format!("{path}[{i}]"))?);
                }
                Value::Array(out)
            }
            YamlData::Mapping(entries) => {
                let mut out = Map::new();
                for (k, v) in entries {
                    let key = match &k.data {
                        YamlData::Value(s) => match scalar(s) {
                            Value::String(s) => s,
                            other => other.to_string(),
                        },
                        YamlData::Representation(text, _, _) => text.to_string(),
                        _ => {
                            let kp = Pos {
                                line: k.span.start.line(),
                                col: k.span.start.col() + 1,
                            };
                            return Err((kp, "mapping keys must be plain strings".into()));
                        }
                    };
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.keys.insert(
                        child.clone(),
                        Pos {
                            line: k.span.start.line(),
                            col: k.span.start.col() + 1,
                        },
                    );
                    let v = self.convert(v, child)?;
                    out.insert(key, v);
                }
                Value::Object(out)
            }
            YamlData::Alias(_) => return Err((pos, "unresolved YAML alias".into())),
            YamlData::BadValue => Value::Null,
        };
        self.values.insert(path, pos);
        Ok(value)
    }
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

/// One step of a field path.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into its steps.
fn segments(path: &str) -> impl Iterator<Item = Seg<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        let key = (!key.is_empty()).then_some(Seg::Key(key));
        let idx = rest
            .split('[')
            .filter_map(|r| r.trim_end_matches(']').parse().ok())
            .map(Seg::Index);
        key.into_iter().chain(idx.collect::<Vec<_>>())
    })
}

/// The path one step up: `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "a:\n  b:\n    - x: 1\n      y: [1, 2]\n    - x: two\nc: 10s\n";

    #[test]
    fn values_and_positions() {
        let doc = Document::parse(TEXT).unwrap();
        assert_eq!(doc.value["a"]["b"][1]["x"], "two");
        assert_eq!(doc.value["a"]["b"][0]["x"], 1);
        assert_eq!(doc.locate("a.b[1].x"), Pos { line: 5, col: 10 });
        assert_eq!(
            doc.locate("a.b[0].y"),
            Pos { line: 4, col: 7 },
            "a list points at its key"
        );
        assert_eq!(doc.locate("c"), Pos { line: 6, col: 4 });
        assert_eq!(
            doc.locate("a.b[1].missing"),
            Pos { line: 5, col: 7 },
            "nearest ancestor"
        );
        assert_eq!(doc.key_pos("a.b"), Some(Pos { line: 2, col: 3 }));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let (pos, msg) = Document::parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(pos.line >= 1 && !msg.is_empty(), "{pos:?} {msg}");
    }

    #[test]
    fn empty_document_is_an_empty_mapping() {
        assert_eq!(Document::parse("").unwrap().value, Value::Object(Map::new()));
    }
}
