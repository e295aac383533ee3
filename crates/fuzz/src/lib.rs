//! Fuzz harnesses that run under plain `cargo test` (no nightly toolchain or cargo-fuzz needed,
//! so CI runs them on every change): each target is fed its seed corpus
//! (`corpus/<target>/`), then byte-level mutations of those seeds, then inputs proptest
//! generates, and asserts what must hold for any input — no panic, what is accepted
//! round-trips, nothing unsafe reaches HAProxy.
//!
//! `FUZZ_CASES` sets the cases per property (default [`DEFAULT_CASES`]); a long run is
//! `FUZZ_CASES=200000 cargo test -p capstan-fuzz --release`. A failing case is shrunk and
//! printed; it becomes a unit test next to the code it broke and a seed of the target's corpus
//! (`crash-*`), so every later run replays it.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per property when `FUZZ_CASES` is not set: a few seconds per target.
pub const DEFAULT_CASES: u32 = 2_000;

/// The proptest configuration every harness uses.
pub fn config() -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        // Found crashes are kept as corpus seeds and unit tests instead (see the module doc).
        failure_persistence: None,
        ..Config::default()
    }
}

/// The folder of `target`'s seed corpus.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every seed of `target`'s corpus, and the repository's examples when `with_examples`.
pub fn corpus(target: &str, with_examples: bool) -> Vec<Vec<u8>> {
    let mut dirs = vec![corpus_dir(target)];
    if with_examples {
        dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"));
    }
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "txt"))
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    seeds.sort();
    assert!(
        !seeds.is_empty(),
        "no seeds for {target} under {}",
        corpus_dir(target).display()
    );
    seeds.into_iter().map(|(_, b)| b).collect()
}

/// One byte-level mutation, as a coverage-blind fuzzer would make.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Splice(usize, usize),
    Interesting(usize, &'static [u8]),
}

/// Byte strings JSON decoders and validators trip on.
const INTERESTING: &[&[u8]] = &[
    b"null",
    b"-1",
    b"0",
    b"4294967296",
    b"1e999",
    b"\"\"",
    b"[]",
    b"{}",
    b"\"\\u0000\"",
    b"\"a\\nb;c#\"",
    b"\"\xff\xfe\"",
    b"9223372036854775808",
    b"true",
];

fn apply(seed: &[u8], other: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in muts {
        let n = b.len().max(1);
        match *m {
            Mutation::Flip(i, x) => {
                if !b.is_empty() {
                    b[i % n] ^= x;
                }
            }
            Mutation::Insert(i, x) => b.insert(i % (b.len() + 1), x),
            Mutation::Delete(i, len) => {
                if !b.is_empty() {
                    let start = i % n;
                    let end = (start + len % 16).min(b.len());
                    b.drain(start..end);
                }
            }
            Mutation::Duplicate(i, len) => {
                if !b.is_empty() {
                    let start = i % n;
                    let end = (start + 1 + len % 64).min(b.len());
                    let piece = b[start..end].to_vec();
                    b.splice(end..end, piece);
                }
            }
            Mutation::Splice(i, j) => {
                if !other.is_empty() {
                    let from = j % other.len();
                    let at = i % (b.len() + 1);
                    b.splice(at..at, other[from..].iter().copied());
                }
            }
            Mutation::Interesting(i, s) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, s.iter().copied());
            }
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, l)| Mutation::Delete(i, l)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, l)| Mutation::Duplicate(i, l)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Splice(i, j)),
        (any::<usize>(), proptest::sample::select(INTERESTING))
            .prop_map(|(i, s)| Mutation::Interesting(i, s)),
    ]
}

/// Inputs for a target: a seed with 1–8 mutations (spliced with another seed at times), or
/// plain random bytes.
pub fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        4 => (0..n, 0..n, proptest::collection::vec(mutation(), 1..8))
            .prop_map(move |(a, b, m)| apply(&seeds[a], &seeds[b], &m)),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

/// JSON values over `fields` (names the decoders know, so generated documents get past the
/// first unknown-field check and reach the validators) and hostile scalars.
pub fn json_values(fields: &'static [&'static str]) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-2i64..70_000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
        proptest::sample::select(fields).prop_map(|s| Value::String(s.to_string())),
        "[a-z0-9:-]{1,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(fields), inner), 0..6).prop_map(
                |kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

/// Replaces the `n`th value (preorder, counting from the root) of `doc` with `leaf`.
fn replace_nth(doc: &mut serde_json::Value, n: &mut usize, leaf: &serde_json::Value) -> bool {
    if *n == 0 {
        *doc = leaf.clone();
        return true;
    }
    *n -= 1;
    match doc {
        serde_json::Value::Object(m) => m.values_mut().any(|v| replace_nth(v, n, leaf)),
        serde_json::Value::Array(a) => a.iter_mut().any(|v| replace_nth(v, n, leaf)),
        _ => false,
    }
}

/// Structure-aware mutations: a JSON seed with one to three of its values (anywhere in the
/// tree) replaced by hostile ones, so most of the document stays valid and the validators, not
/// the parser, are what is tested.
pub fn json_mutations(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let docs: Vec<Value> = seeds
        .iter()
        .filter_map(|s| serde_json::from_slice(s).ok())
        .collect();
    assert!(!docs.is_empty(), "no JSON seeds");
    let n = docs.len();
    let hostile = prop_oneof![
        Just(Value::Null),
        Just(Value::from(-1)),
        Just(Value::from(0)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(4_294_967_296u64)),
        Just(Value::from(1e300)),
        Just(Value::from("")),
        Just(Value::from("a\nb;c # d")),
        Just(Value::from("x".repeat(70_000))),
        Just(Value::Array(vec![])),
        Just(Value::Object(Default::default())),
        any::<i64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ];
    (
        0..n,
        proptest::collection::vec((any::<usize>(), hostile), 1..4),
    )
        .prop_map(move |(i, edits)| {
            let mut doc = docs[i].clone();
            for (at, leaf) in edits {
                let size = count(&doc);
                let mut k = at % size;
                replace_nth(&mut doc, &mut k, &leaf);
            }
            doc
        })
}

/// Values in `doc`, itself included.
fn count(doc: &serde_json::Value) -> usize {
    1 + match doc {
        serde_json::Value::Object(m) => m.values().map(count).sum(),
        serde_json::Value::Array(a) => a.iter().map(count).sum(),
        _ => 0,
    }
}

/// Every object key in the JSON seeds, to generate documents with (leaked: harnesses live for
/// the whole test binary).
pub fn vocabulary(seeds: &[Vec<u8>]) -> &'static [&'static str] {
    fn walk(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    out.insert(k.clone());
                    walk(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut keys = std::collections::BTreeSet::new();
    for s in seeds {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(s) {
            walk(&v, &mut keys);
        }
    }
    let keys: Vec<&'static str> = keys
        .into_iter()
        .map(|k| &*Box::leak(k.into_boxed_str()))
        .collect();
    Box::leak(keys.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_in_bounds_whatever_the_input() {
        let muts = [
            Mutation::Flip(usize::MAX, 1),
            Mutation::Delete(usize::MAX, usize::MAX),
            Mutation::Duplicate(usize::MAX, usize::MAX),
            Mutation::Splice(usize::MAX, usize::MAX),
            Mutation::Insert(usize::MAX, 0),
            Mutation::Interesting(3, b"null"),
        ];
        for seed in [&b""[..], b"x", b"{\"a\":1}"] {
            let out = apply(seed, b"other", &muts);
            assert!(!out.is_empty());
        }
    }
}
