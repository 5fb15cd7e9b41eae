//! Property test of config loading: the shipped example, mutated (lines deleted, duplicated,
//! swapped, bytes overwritten), never panics the loader, and every error it reports names
//! FILE:LINE:COL within the file and a field path.

use std::path::Path;

use meridian_config::load_str;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../examples/multi-region.yaml");

#[derive(Clone, Debug)]
enum Mutation {
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
    Overwrite(prop::sample::Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
        any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<prop::sample::Index>(), "[ -~]{1,12}").prop_map(|(a, s)| Mutation::Overwrite(a, s)),
    ]
}

fn apply(text: &str, ms: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for m in ms {
        if lines.is_empty() {
            break;
        }
        match m {
            Mutation::Delete(i) => {
                lines.remove(i.index(lines.len()));
            }
            Mutation::Duplicate(i) => {
                let at = i.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
            Mutation::Swap(a, b) => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
            Mutation::Overwrite(i, s) => {
                let n = lines.len();
                let line = &mut lines[i.index(n)];
                let at = (i.index(line.len() + 1)).min(line.len());
                let at = (0..=at).rev().find(|k| line.is_char_boundary(*k)).unwrap_or(0);
                line.replace_range(at..(at + s.len()).min(line.len()).max(at), s);
            }
        }
    }
    lines.join("\n") + "\n"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn mutated_configs_load_or_say_where(ms in prop::collection::vec(mutation(), 1..4)) {
        let text = apply(EXAMPLE, &ms);
        let lines = text.lines().count() + 1;
        let base = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"));
        if let Err(e) = load_str(&text, "m.yaml", base) {
            prop_assert!(!e.0.is_empty());
            for err in e.0.iter().map(ToString::to_string) {
                let mut parts = err.splitn(4, ':');
                prop_assert_eq!(parts.next(), Some("m.yaml"), "{}", err);
                let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
                let col: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                prop_assert!(line >= 1 && line <= lines && col >= 1, "{} (the file has {} lines)", err, lines);
                prop_assert!(parts.next().is_some_and(|rest| rest.len() > 2), "{}", err);
            }
        }
    }
}
