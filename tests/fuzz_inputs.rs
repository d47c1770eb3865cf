//! The fuzz targets' inputs in `cargo test`, so CI keeps them honest. Each fuzz target's check
//! lives in `fuzz/checks/<target>.rs` and is included here as is, so this file runs the very
//! function the fuzz target runs. For every target it owns two kinds of tests: the replay of
//! every committed seed in `fuzz/corpus/<target>/` (which fails if there is none, so it cannot
//! pass vacuously), and proptest properties feeding generated inputs through the check:
//! arbitrary bytes, byte-level mutations of the committed seeds, and inputs shaped like the
//! target's format (URLs, selectors, query strings, tokens, JSON/YAML documents edited from the
//! seeds with the format's own words, protobuf envelopes, CSV lines, durations). A check that
//! panics fails the test with the smallest input proptest found; once the product code is
//! fixed, that input belongs in the target's corpus. `PROPTEST_CASES` sets the number of
//! generated inputs per property for a longer run.

#![forbid(unsafe_code)]

use std::fmt;
use std::panic::catch_unwind;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

#[path = "../fuzz/checks/cached_object.rs"]
mod cached_object;
#[path = "../fuzz/checks/continue_token.rs"]
mod continue_token;
#[path = "../fuzz/checks/duration_flag.rs"]
mod duration_flag;
#[path = "../fuzz/checks/encryption_config.rs"]
mod encryption_config;
#[path = "../fuzz/checks/kubeconfig.rs"]
mod kubeconfig;
#[path = "../fuzz/checks/list_options.rs"]
mod list_options;
#[path = "../fuzz/checks/patches.rs"]
mod patches;
#[path = "../fuzz/checks/protobuf_body.rs"]
mod protobuf_body;
#[path = "../fuzz/checks/seed_yaml.rs"]
mod seed_yaml;
#[path = "../fuzz/checks/selectors.rs"]
mod selectors;
#[path = "../fuzz/checks/structural_schema.rs"]
mod structural_schema;
#[path = "../fuzz/checks/token_file.rs"]
mod token_file;
#[path = "../fuzz/checks/vw_url.rs"]
mod vw_url;

/// Generated inputs per property of a quick check (microseconds an input).
const CASES: u32 = 1000;
/// Generated inputs per property of a slow check (schemas with CEL, YAML, kubeconfigs).
const SLOW_CASES: u32 = 256;

// ---------------------------------------------------------------------------------------------
// Harness: seeds, replay, properties
// ---------------------------------------------------------------------------------------------

/// One input as the check sees it; printed as a byte string, so a failure shows its text.
#[derive(Clone)]
struct Input(Vec<u8>);

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// The committed seeds of a target, by file name; a missing or empty directory fails the test.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} cannot be read: {e}", dir.display()));
    let mut seeds = Vec::new();
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("the corpus {} cannot be listed: {e}", dir.display()))
            .path();
        if path.is_file() {
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            seeds.push((name, data));
        }
    }
    seeds.sort();
    assert!(
        !seeds.is_empty(),
        "the corpus {} holds no input",
        dir.display()
    );
    seeds
}

/// The stack of a fuzz target's thread: libFuzzer runs the target on the main thread, which
/// has the usual `ulimit -s` of 8 MiB. A test thread has 2 MiB, which an unoptimized build
/// overflows in the CEL parser (about 170 KiB a nesting level; `schema::structural` allows 32),
/// so the checks run on a thread of their own with the fuzz target's stack.
const FUZZ_TARGET_STACK: usize = 8 << 20;

/// Runs `f` on a thread with the fuzz target's stack, named after the test; its panic is the
/// test's.
fn on_fuzz_target_stack(f: impl FnOnce() + Send) {
    let name = std::thread::current().name().unwrap_or("check").to_string();
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(name)
            .stack_size(FUZZ_TARGET_STACK)
            .spawn_scoped(scope, f)
            .unwrap_or_else(|e| panic!("no thread for the check: {e}"));
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

/// The three properties every target has, as a module of tests named after the target:
/// `<target>_inputs::every_committed_input_is_checked_without_a_panic` (the corpus replayed),
/// `…::arbitrary_bytes_pass_the_check` and `…::mutations_of_the_committed_inputs_pass_the_check`
/// (with their numbers of cases).
macro_rules! common_properties {
    ($module:ident: $target:ident, bytes $bytes:expr, mutations $mutations:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn every_committed_input_is_checked_without_a_panic() {
                replay(stringify!($target), $target::check);
            }

            #[test]
            fn arbitrary_bytes_pass_the_check() {
                holds($bytes, bytes, $target::check);
            }

            #[test]
            fn mutations_of_the_committed_inputs_pass_the_check() {
                holds(
                    $mutations,
                    || mutated_seeds(stringify!($target)),
                    $target::check,
                );
            }
        }
    };
}

/// Runs every committed seed of `target` through its check; names the seeds that panic.
fn replay(target: &str, check: fn(&[u8])) {
    let seeds = seeds(target);
    let mut failed: Vec<&str> = Vec::new();
    on_fuzz_target_stack(|| {
        failed = seeds
            .iter()
            .filter(|(_, data)| catch_unwind(|| check(data)).is_err())
            .map(|(name, _)| name.as_str())
            .collect();
    });
    assert!(
        failed.is_empty(),
        "the {target} check panicked on {failed:?} of the {} committed inputs",
        seeds.len()
    );
}

/// Feeds `cases` inputs (`PROPTEST_CASES` when it is set) of the strategy `inputs` makes
/// through `check`; a panic fails with the smallest input found.
fn holds<S>(cases: u32, inputs: impl FnOnce() -> S + Send, check: fn(&[u8]))
where
    S: Strategy,
    S::Value: Into<Vec<u8>>,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    on_fuzz_target_stack(|| {
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let inputs = inputs().prop_map(|v| Input(v.into()));
        if let Err(e) = runner.run(&inputs, |input| {
            check(&input.0);
            Ok(())
        }) {
            panic!("{e}");
        }
    });
}

/// Any bytes, up to a few hundred.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..512)
}

/// A byte-level edit of a seed; positions and lengths wrap around the seed's length.
#[derive(Debug, Clone)]
enum ByteEdit {
    Flip {
        at: usize,
        bit: u8,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    /// Inserts a piece of another seed.
    Splice {
        seed: usize,
        from: usize,
        len: usize,
        at: usize,
    },
}

/// Bytes with a meaning in some format (delimiters, quotes, escapes, digits, non-ASCII), or any.
fn interesting_byte() -> impl Strategy<Value = u8> {
    const BYTES: &[u8] = b"\0\t\n\r \"#%&'()*+,-./0123456789:;=?@[\\]{|}~az!\x7f\x80\xc3\xff";
    prop_oneof![any::<u8>(), select(BYTES)]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| ByteEdit::Flip { at, bit }),
        (any::<usize>(), interesting_byte()).prop_map(|(at, byte)| ByteEdit::Insert { at, byte }),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| ByteEdit::Delete { at, len }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| ByteEdit::Duplicate { at, len }),
        (any::<usize>(), any::<usize>(), 1usize..32, any::<usize>()).prop_map(
            |(seed, from, len, at)| ByteEdit::Splice {
                seed,
                from,
                len,
                at
            }
        ),
    ]
}

/// `seed` with `edits` applied in order; `all` are the seeds a splice takes pieces of.
fn edit_bytes(seed: &[u8], edits: &[ByteEdit], all: &[Vec<u8>]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for edit in edits {
        let n = out.len();
        match *edit {
            ByteEdit::Flip { at, bit } => {
                if n > 0 {
                    out[at % n] ^= 1 << bit;
                }
            }
            ByteEdit::Insert { at, byte } => out.insert(at % (n + 1), byte),
            ByteEdit::Delete { at, len } => {
                if n > 0 {
                    let at = at % n;
                    out.drain(at..(at + len).min(n));
                }
            }
            ByteEdit::Duplicate { at, len } => {
                if n > 0 {
                    let at = at % n;
                    let piece = out[at..(at + len).min(n)].to_vec();
                    out.splice(at..at, piece);
                }
            }
            ByteEdit::Splice {
                seed,
                from,
                len,
                at,
            } => {
                let other = &all[seed % all.len()];
                if !other.is_empty() {
                    let from = from % other.len();
                    let piece = &other[from..(from + len).min(other.len())];
                    let at = at % (n + 1);
                    out.splice(at..at, piece.iter().copied());
                }
            }
        }
    }
    out
}

/// The committed seeds of `target`, each with a few byte-level edits.
fn mutated_seeds(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let all: Vec<Vec<u8>> = seeds(target).into_iter().map(|(_, data)| data).collect();
    (0..all.len(), vec(byte_edit(), 1..6))
        .prop_map(move |(i, edits)| edit_bytes(&all[i], &edits, &all))
}

// ---------------------------------------------------------------------------------------------
// Structured inputs: JSON/YAML documents edited with a format's words
// ---------------------------------------------------------------------------------------------

/// The words of a document format: keys and typical string values.
struct Vocabulary {
    keys: &'static [&'static str],
    words: &'static [&'static str],
}

/// A string of the format (one of its words or keys), or any short text.
fn word(vocab: &'static Vocabulary) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vocab.words).prop_map(String::from),
        1 => select(vocab.keys).prop_map(String::from),
        1 => "\\PC{0,10}",
    ]
}

/// A key of the format, or any short key.
fn key(vocab: &'static Vocabulary) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vocab.keys).prop_map(String::from),
        1 => "[a-zA-Z0-9.$/_~-]{0,12}",
    ]
}

/// A JSON number: small, huge, negative, fractional or an edge of the integer types.
fn number() -> impl Strategy<Value = Value> {
    const EDGES: &[f64] = &[0.5, -0.0, 1e300, -1e-300, 2.0, 1.5e10];
    prop_oneof![
        (-3i64..300).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(EDGES).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
    ]
}

/// A JSON value made of the format's words, a few levels deep.
fn json_value(vocab: &'static Vocabulary) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => number(),
        5 => word(vocab).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((key(vocab), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An edit of a JSON document at one of its nodes (numbered in document order, wrapping).
#[derive(Debug, Clone)]
enum JsonEdit {
    Replace(usize, Value),
    Remove(usize),
    /// Adds a member to an object, an element to an array, or replaces a scalar.
    Insert(usize, String, Value),
}

fn json_edit(vocab: &'static Vocabulary) -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        (any::<usize>(), json_value(vocab)).prop_map(|(at, v)| JsonEdit::Replace(at, v)),
        any::<usize>().prop_map(JsonEdit::Remove),
        (any::<usize>(), key(vocab), json_value(vocab))
            .prop_map(|(at, k, v)| JsonEdit::Insert(at, k, v)),
    ]
}

/// The JSON pointers of every node of `v`, in document order (the root first).
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(child, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn edit_json(doc: &mut Value, edit: &JsonEdit) {
    let mut all = Vec::new();
    pointers(doc, "", &mut all);
    let (JsonEdit::Replace(at, _) | JsonEdit::Remove(at) | JsonEdit::Insert(at, _, _)) = edit;
    let at = &all[at % all.len()];
    match edit {
        JsonEdit::Replace(_, new) => {
            if let Some(node) = doc.pointer_mut(at) {
                *node = new.clone();
            }
        }
        JsonEdit::Remove(_) => {
            let Some((parent, last)) = at.rsplit_once('/') else {
                *doc = Value::Null;
                return;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&last);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>()
                        && i < a.len()
                    {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        }
        JsonEdit::Insert(_, k, new) => match doc.pointer_mut(at) {
            Some(Value::Object(m)) => {
                m.insert(k.clone(), new.clone());
            }
            Some(Value::Array(a)) => a.push(new.clone()),
            Some(node) => *node = new.clone(),
            None => {}
        },
    }
}

/// One of `docs`, with a few edits made of the format's words.
fn edited(docs: Vec<Value>, vocab: &'static Vocabulary) -> impl Strategy<Value = Value> {
    assert!(!docs.is_empty(), "no document to edit");
    (0..docs.len(), vec(json_edit(vocab), 0..4)).prop_map(move |(i, edits)| {
        let mut doc = docs[i].clone();
        for edit in &edits {
            edit_json(&mut doc, edit);
        }
        doc
    })
}

/// The JSON or YAML documents of a target's seeds: the seed's bytes after `skip`, split at NUL
/// bytes, each part read as JSON or else as multi-document YAML. The documents of first parts
/// and of later parts come apart (a schema and an object, a target and a patch).
fn documents(target: &str, skip: usize) -> (Vec<Value>, Vec<Value>) {
    let mut first = Vec::new();
    let mut later = Vec::new();
    for (_, data) in seeds(target) {
        let data = data.get(skip..).unwrap_or_default();
        for (i, part) in data.split(|&b| b == 0).enumerate() {
            let docs = match serde_json::from_slice::<Value>(part) {
                Ok(doc) => vec![doc],
                Err(_) => std::str::from_utf8(part)
                    .ok()
                    .and_then(|text| serde_saphyr::from_multiple::<Value>(text).ok())
                    .unwrap_or_default(),
            };
            let docs = docs.into_iter().filter(|d| !d.is_null());
            if i == 0 {
                first.extend(docs);
            } else {
                later.extend(docs);
            }
        }
    }
    (first, later)
}

/// A document as text: compact JSON, indented JSON or YAML (JSON when YAML fails).
fn render(doc: &Value, style: u8) -> Vec<u8> {
    let json = || serde_json::to_vec(doc).unwrap_or_default();
    match style % 3 {
        0 => json(),
        1 => serde_json::to_vec_pretty(doc).unwrap_or_default(),
        _ => serde_saphyr::to_string(doc).map_or_else(|_| json(), String::into_bytes),
    }
}

// ---------------------------------------------------------------------------------------------
// vw_url
// ---------------------------------------------------------------------------------------------

/// URL segments: the URL's own words, logical cluster names, wildcards, escapes.
fn url_segment() -> impl Strategy<Value = String> {
    const SEGMENTS: &[&str] = &[
        "services",
        "replication",
        "clusters",
        "*",
        "%2A",
        "%2a",
        "root",
        "root:org",
        "system:admin",
        "1yc1h6lz9w2gftz3",
        "..",
        ".",
        "",
        "api",
        "apis",
        "v1",
        "namespaces",
        "default",
        "%2F",
        "%25",
        "%",
        ":",
        "a:",
        "-a",
    ];
    prop_oneof![
        3 => select(SEGMENTS).prop_map(String::from),
        2 => "[a-z0-9][a-z0-9:.-]{0,20}",
        1 => "[a-z0-9%:*./-]{0,8}",
        1 => "\\PC{0,6}",
    ]
}

/// A logical cluster name (with a `system:` prefix at times), or a segment that may not be one.
fn cluster_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(system:)?[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?",
        1 => url_segment(),
    ]
}

/// Paths shaped like the URL (prefix, cluster, CachedResource, `clusters`, consumer or `*`,
/// Kubernetes path and query, each part at times off), or made of its segments in any order.
fn url_paths() -> impl Strategy<Value = String> {
    let consumer = prop_oneof![
        4 => cluster_segment(),
        1 => Just("*".to_string()),
        1 => Just("%2A".to_string()),
    ];
    let shaped = (
        cluster_segment(),
        prop_oneof![4 => "[a-z0-9][a-z0-9.-]{0,20}", 1 => url_segment()],
        consumer,
        vec(url_segment(), 0..6),
        "(\\?[a-z=&%*/]{0,16})?",
    )
        .prop_map(|(cluster, name, consumer, kube, query)| {
            let mut path = format!("/services/replication/{cluster}/{name}/clusters/{consumer}");
            for s in kube {
                path.push('/');
                path.push_str(&s);
            }
            path + &query
        });
    let loose = (
        any::<bool>(),
        vec(url_segment(), 0..9),
        any::<bool>(),
        "(\\?[a-z=&%*/]{0,16})?",
    )
        .prop_map(|(prefixed, segments, trailing, query)| {
            let mut path = if prefixed {
                "/services/replication".to_string()
            } else {
                String::new()
            };
            for s in segments {
                path.push('/');
                path.push_str(&s);
            }
            if trailing {
                path.push('/');
            }
            path + &query
        });
    prop_oneof![2 => shaped, 1 => loose]
}

common_properties!(vw_url_inputs: vw_url, bytes CASES, mutations CASES);

#[test]
fn paths_made_of_virtual_workspace_url_segments_pass_the_vw_url_check() {
    holds(CASES, url_paths, vw_url::check);
}

// ---------------------------------------------------------------------------------------------
// selectors
// ---------------------------------------------------------------------------------------------

/// Selectors: terms of keys, operators and values (sets, escapes) joined by commas.
fn selector_strings() -> impl Strategy<Value = String> {
    const KEYS: &[&str] = &[
        "app",
        "tier",
        "metadata.name",
        "metadata.namespace",
        "spec.color",
        "status.phase",
        "a.io/x",
        "",
    ];
    const OPS: &[&str] = &[
        "", "=", "==", "!=", " in ", " notin ", ">", "<", "in", " = ", "=!", "!", "=\\",
    ];
    const SEPARATORS: &[&str] = &[",", ", ", " ,", ",,"];
    let key = prop_oneof![
        select(KEYS).prop_map(String::from),
        "[a-z0-9]([a-z0-9._-]{0,8}[a-z0-9])?",
        "[a-z0-9.-]{1,8}/[a-zA-Z0-9._-]{0,8}",
        "\\PC{0,4}",
    ];
    let value = prop_oneof![
        "[a-zA-Z0-9._-]{0,10}",
        "\\(( ?[a-z0-9._-]{0,6} ?,?){0,4}\\)",
        "[a-z\\\\,=!() ]{0,8}",
        "\\PC{0,4}",
    ];
    let term = (any::<bool>(), key, select(OPS), value)
        .prop_map(|(not, k, op, v)| format!("{}{k}{op}{v}", if not { "!" } else { "" }));
    (vec(term, 0..5), select(SEPARATORS)).prop_map(|(terms, sep)| terms.join(sep))
}

common_properties!(selectors_inputs: selectors, bytes CASES, mutations CASES);

#[test]
fn strings_of_selector_terms_pass_the_selectors_check() {
    holds(CASES, selector_strings, selectors::check);
}

// ---------------------------------------------------------------------------------------------
// list_options
// ---------------------------------------------------------------------------------------------

/// `s` escaped as a query value (`+` for a space, `%XX` for what is not plain).
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Query strings of list and watch parameters with numbers, booleans, selectors and tokens.
fn query_strings() -> impl Strategy<Value = String> {
    const KEYS: &[&str] = &[
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "labelSelector",
        "fieldSelector",
        "watch",
        "timeoutSeconds",
        "sendInitialEvents",
        "allowWatchBookmarks",
    ];
    const VALUES: &[&str] = &[
        "0",
        "1",
        "-1",
        "true",
        "false",
        "Exact",
        "NotOlderThan",
        "",
        "18446744073709551616",
        "9223372036854775807",
        "%",
        "%zz",
        "+",
        "1e3",
    ];
    let key = prop_oneof![
        4 => select(KEYS).prop_map(String::from),
        1 => "[a-zA-Z%]{0,10}",
    ];
    let value = prop_oneof![
        3 => select(VALUES).prop_map(String::from),
        2 => "[0-9]{1,22}",
        2 => selector_strings().prop_map(|s| query_escape(&s)),
        1 => selector_strings(),
        2 => continue_tokens(),
        1 => "[a-zA-Z0-9%+=,()!. -]{0,20}",
    ];
    vec((key, option::of(value)), 0..8).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k,
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

common_properties!(list_options_inputs: list_options, bytes CASES, mutations CASES);

#[test]
fn query_strings_of_list_parameters_pass_the_list_options_check() {
    holds(CASES, query_strings, list_options::check);
}

// ---------------------------------------------------------------------------------------------
// continue_token
// ---------------------------------------------------------------------------------------------

/// Tokens as the server writes them (base64 of `{"v", "rv", "start"}`), with any member
/// missing, of another type, or extra, in the URL-safe or standard alphabet, padded or not.
fn continue_tokens() -> impl Strategy<Value = String> {
    let version = prop_oneof![Just("meta.k8s.io/v1".to_string()), "\\PC{0,8}"];
    let rv = prop_oneof![
        6 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::from(1.5)),
        1 => Just(Value::from("7")),
        1 => Just(Value::Null),
    ];
    let start = vec(prop_oneof![3 => "[a-z0-9.-]{0,10}", 1 => "\\PC{0,6}"], 0..5)
        .prop_map(|parts| Value::from(parts.join("\u{0}")));
    (
        option::weighted(0.9, version),
        option::weighted(0.9, rv),
        option::weighted(0.9, start),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(|(v, rv, start, extra, alphabet)| {
            let mut token = Map::new();
            if let Some(v) = v {
                token.insert("v".into(), Value::from(v));
            }
            if let Some(rv) = rv {
                token.insert("rv".into(), rv);
            }
            if let Some(start) = start {
                token.insert("start".into(), start);
            }
            if extra {
                token.insert("x".into(), Value::from(1));
            }
            let json = serde_json::to_vec(&token).unwrap_or_default();
            match alphabet {
                0 => URL_SAFE_NO_PAD.encode(json),
                1 => URL_SAFE.encode(json),
                2 => STANDARD.encode(json),
                _ => URL_SAFE_NO_PAD.encode(json) + "==",
            }
        })
}

common_properties!(continue_token_inputs: continue_token, bytes CASES, mutations CASES);

#[test]
fn tokens_encoding_any_json_members_pass_the_continue_token_check() {
    holds(CASES, continue_tokens, continue_token::check);
}

// ---------------------------------------------------------------------------------------------
// cached_object
// ---------------------------------------------------------------------------------------------

static CACHED_OBJECT: Vocabulary = Vocabulary {
    keys: &[
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "labels",
        "annotations",
        "spec",
        "raw",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "size",
        "color",
        "tags",
        "extra",
        "data",
        "status",
        "managedFields",
        "ownerReferences",
        "finalizers",
        "cache.kcp.io/object-group",
        "cache.kcp.io/object-version",
        "cache.kcp.io/object-resource",
        "kcp.io/cluster",
        "kcp.io/shard",
        "cache.kcp.io/original-resource-UID",
        "cache.kcp.io/original-resource-version",
    ],
    words: &[
        "cache.kcp.io/v1alpha1",
        "CachedObject",
        "g.io",
        "v1",
        "things",
        "g.io/v1",
        "Thing",
        "default",
        "a",
        "red",
        "blue",
        "green",
        "77",
        "2026-03-02T10:00:05Z",
        "__replication_vw_consumer_cluster_placeholder__",
        "_",
        "things.v1.g.io.default.a",
        "consumer-1",
        "",
    ],
};

common_properties!(cached_object_inputs: cached_object, bytes CASES, mutations CASES);

/// The seeds' CachedObjects, edited with the words of CachedObjects and the served schema.
fn cached_objects() -> impl Strategy<Value = Vec<u8>> {
    let (docs, _) = documents("cached_object", 0);
    (edited(docs, &CACHED_OBJECT), any::<bool>())
        .prop_map(|(doc, pretty)| render(&doc, u8::from(pretty)))
}

#[test]
fn edited_cached_objects_pass_the_cached_object_check() {
    holds(CASES, cached_objects, cached_object::check);
}

// ---------------------------------------------------------------------------------------------
// structural_schema
// ---------------------------------------------------------------------------------------------

static SCHEMA: Vocabulary = Vocabulary {
    keys: &[
        "type",
        "properties",
        "items",
        "additionalProperties",
        "required",
        "default",
        "enum",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "pattern",
        "format",
        "nullable",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "multipleOf",
        "uniqueItems",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
        "rule",
        "message",
        "messageExpression",
        "reason",
        "fieldPath",
        "optionalOldSelf",
        "spec",
        "size",
        "tags",
        "metadata",
        "name",
    ],
    words: &[
        "object",
        "array",
        "string",
        "integer",
        "number",
        "boolean",
        "int32",
        "int64",
        "date-time",
        "date",
        "uuid",
        "byte",
        "duration",
        "map",
        "set",
        "atomic",
        "granular",
        "self.size > 1",
        "self == oldSelf",
        "size(self) < 3",
        "self.all(x, x != '')",
        "has(self.spec)",
        "self.metadata.name.startsWith('a')",
        "(((self)))",
        "self.tags.exists(t, t == 'a')",
        "int(self) + 1 > 0",
        "self.matches('^a')",
        "'a' + 1",
        "self.size / 0 == 1",
        "^[a-z]+$",
        "[",
        "FieldValueInvalid",
        ".spec.size",
        "a",
    ],
};

common_properties!(structural_schema_inputs: structural_schema, bytes SLOW_CASES, mutations SLOW_CASES);

/// The seeds' schemas, edited with schema keywords and CEL rules, and at times one of their
/// objects after a NUL byte.
fn schemas_and_objects() -> impl Strategy<Value = Vec<u8>> {
    let (schemas, objects) = documents("structural_schema", 0);
    (
        edited(schemas, &SCHEMA),
        option::of(edited(objects, &SCHEMA)),
    )
        .prop_map(|(schema, object)| {
            let mut out = render(&schema, 0);
            if let Some(object) = object {
                out.push(0);
                out.extend(render(&object, 0));
            }
            out
        })
}

#[test]
fn edited_schemas_and_objects_pass_the_structural_schema_check() {
    holds(SLOW_CASES, schemas_and_objects, structural_schema::check);
}

// ---------------------------------------------------------------------------------------------
// patches
// ---------------------------------------------------------------------------------------------

static PATCH: Vocabulary = Vocabulary {
    keys: &[
        "op",
        "path",
        "from",
        "value",
        "metadata",
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "uid",
        "name",
        "data",
        "rules",
        "verbs",
        "k",
        "$patch",
        "$retainKeys",
        "$setElementOrder/finalizers",
        "$deleteFromPrimitiveList/finalizers",
        "$setElementOrder/ownerReferences",
        "$setElementOrder/rules",
    ],
    words: &[
        "add",
        "remove",
        "replace",
        "move",
        "copy",
        "test",
        "delete",
        "merge",
        "retainKeys",
        "/metadata/labels/app",
        "/metadata/finalizers/0",
        "/metadata/finalizers/-",
        "/metadata/ownerReferences/1",
        "/data/k",
        "/rules/0/verbs/-",
        "/a~1b~0c",
        "/~2",
        "/",
        "",
        "/-",
        "/data/01",
        "/data/list",
        "/metadata/labels",
        "/metadata/ownerReferences/0/uid",
        "/metadata/finalizers/2",
        "/rules/0",
        "/kind",
        "a.io/x",
        "b.io/y",
        "u1",
        "u2",
        "web",
        "ConfigMap",
    ],
};

/// JSON patches: operations of every kind (and none) on the paths of the default target.
fn json_patch_ops() -> impl Strategy<Value = Value> {
    const OPS: &[&str] = &["add", "remove", "replace", "move", "copy", "test", "delete"];
    let op = (
        select(OPS),
        word(&PATCH),
        option::weighted(0.3, word(&PATCH)),
        option::weighted(0.7, json_value(&PATCH)),
    )
        .prop_map(|(op, path, from, value)| {
            let mut m = Map::new();
            m.insert("op".into(), Value::from(op));
            m.insert("path".into(), Value::from(path));
            if let Some(from) = from {
                m.insert("from".into(), Value::from(from));
            }
            if let Some(value) = value {
                m.insert("value".into(), value);
            }
            Value::Object(m)
        });
    vec(op, 0..5).prop_map(Value::Array)
}

common_properties!(patches_inputs: patches, bytes CASES, mutations CASES);

/// A patch type, at times a target (a seed's document, edited), and a body: a seed's document
/// edited, JSON patch operations, or any value of the patches' words. The seeds' bodies and
/// targets alike serve as either.
fn typed_patches() -> impl Strategy<Value = Vec<u8>> {
    let (mut docs, targets) = documents("patches", 1);
    docs.extend(targets);
    let body = prop_oneof![
        2 => edited(docs.clone(), &PATCH),
        2 => json_patch_ops(),
        1 => json_value(&PATCH),
    ];
    (any::<u8>(), option::of(edited(docs, &PATCH)), body).prop_map(|(kind, target, body)| {
        let mut out = vec![kind];
        if let Some(target) = target {
            out.extend(render(&target, 0));
            out.push(0);
        }
        out.extend(render(&body, kind / 3));
        out
    })
}

#[test]
fn patches_of_every_type_on_edited_targets_pass_the_patches_check() {
    holds(CASES, typed_patches, patches::check);
}

// ---------------------------------------------------------------------------------------------
// protobuf_body
// ---------------------------------------------------------------------------------------------

/// A protobuf field (or stray bytes) of a generated message.
#[derive(Debug, Clone)]
enum Proto {
    Varint(u32, u64),
    Fixed64(u32, u64),
    Bytes(u32, Vec<u8>),
    Message(u32, Vec<Proto>),
    Fixed32(u32, u32),
    Garbage(Vec<u8>),
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn encode_proto(fields: &[Proto], out: &mut Vec<u8>) {
    let key = |n: u32, wire: u64, out: &mut Vec<u8>| varint((u64::from(n) << 3) | wire, out);
    for field in fields {
        match field {
            Proto::Varint(n, v) => {
                key(*n, 0, out);
                varint(*v, out);
            }
            Proto::Fixed64(n, v) => {
                key(*n, 1, out);
                out.extend(v.to_le_bytes());
            }
            Proto::Bytes(n, b) => {
                key(*n, 2, out);
                varint(b.len() as u64, out);
                out.extend(b);
            }
            Proto::Message(n, fields) => {
                let mut inner = Vec::new();
                encode_proto(fields, &mut inner);
                key(*n, 2, out);
                varint(inner.len() as u64, out);
                out.extend(inner);
            }
            Proto::Fixed32(n, v) => {
                key(*n, 5, out);
                out.extend(v.to_le_bytes());
            }
            Proto::Garbage(b) => out.extend(b),
        }
    }
}

/// A field number: mostly the low ones Kubernetes messages use, sometimes any.
fn field_number() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 1u32..17, 1 => any::<u32>()]
}

/// Messages of fields of every wire type, nested a few levels, with Kubernetes-like strings.
fn proto_fields() -> impl Strategy<Value = Vec<Proto>> {
    const WORDS: &[&str] = &[
        "name",
        "default",
        "kube-system",
        "app",
        "web",
        "get",
        "pods",
        "",
        "rbac.authorization.k8s.io",
        "User",
        "Opaque",
        "2026-03-02T10:00:05Z",
    ];
    let leaf = prop_oneof![
        (field_number(), prop_oneof![0u64..300, any::<u64>()])
            .prop_map(|(n, v)| Proto::Varint(n, v)),
        (field_number(), any::<u64>()).prop_map(|(n, v)| Proto::Fixed64(n, v)),
        (
            field_number(),
            prop_oneof![
                select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
                vec(any::<u8>(), 0..12),
            ]
        )
            .prop_map(|(n, b)| Proto::Bytes(n, b)),
        (field_number(), any::<u32>()).prop_map(|(n, v)| Proto::Fixed32(n, v)),
        vec(any::<u8>(), 1..4).prop_map(Proto::Garbage),
    ];
    let field = leaf.prop_recursive(4, 48, 6, |inner| {
        (field_number(), vec(inner, 0..6)).prop_map(|(n, fields)| Proto::Message(n, fields))
    });
    vec(field, 0..8)
}

/// `k8s\0` and a `runtime.Unknown` naming a kind (mostly one the decoder knows) around a
/// generated object message.
fn protobuf_bodies() -> impl Strategy<Value = Vec<u8>> {
    const TYPES: &[(&str, &str)] = &[
        ("v1", "Namespace"),
        ("v1", "Secret"),
        ("v1", "ConfigMap"),
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("v1", "Pod"),
        ("", "Secret"),
        ("v1", ""),
    ];
    (
        select(TYPES),
        proto_fields(),
        option::weighted(0.1, "\\PC{0,6}"),
        proto_fields(),
        any::<bool>(),
    )
        .prop_map(|((api_version, kind), object, encoding, extra, magic)| {
            let type_meta = vec![
                Proto::Bytes(1, api_version.as_bytes().to_vec()),
                Proto::Bytes(2, kind.as_bytes().to_vec()),
            ];
            let mut unknown = vec![Proto::Message(1, type_meta), Proto::Message(2, object)];
            if let Some(encoding) = encoding {
                unknown.push(Proto::Bytes(3, encoding.into_bytes()));
            }
            unknown.push(Proto::Bytes(
                4,
                b"application/vnd.kubernetes.protobuf".to_vec(),
            ));
            unknown.extend(extra.into_iter().take(1));
            let mut out = if magic { b"k8s\0".to_vec() } else { Vec::new() };
            encode_proto(&unknown, &mut out);
            out
        })
}

common_properties!(protobuf_body_inputs: protobuf_body, bytes CASES, mutations CASES);

#[test]
fn envelopes_of_generated_protobuf_messages_pass_the_protobuf_body_check() {
    holds(CASES, protobuf_bodies, protobuf_body::check);
}

// ---------------------------------------------------------------------------------------------
// seed_yaml
// ---------------------------------------------------------------------------------------------

static MANIFEST: Vocabulary = Vocabulary {
    keys: &[
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "annotations",
        "labels",
        "data",
        "spec",
        "kcp.io/cluster",
        "kcp.io/path",
        "type",
        "stringData",
        "rules",
    ],
    words: &[
        "v1",
        "Namespace",
        "ConfigMap",
        "Secret",
        "tenancy.kcp.io/v1alpha1",
        "Workspace",
        "LogicalCluster",
        "team",
        "settings",
        "root:org:team",
        "2wbjmfkh1g3fx5ho",
        "c1",
        "root",
        "system:admin",
        "",
        "dg==",
        "Opaque",
        "Root",
        "a-",
    ],
};

/// Edited manifests as a multi-document YAML file, with empty documents and comments between.
fn seed_files() -> impl Strategy<Value = Vec<u8>> {
    let (mut docs, later) = documents("seed_yaml", 0);
    docs.extend(later);
    let document = prop_oneof![
        6 => (edited(docs, &MANIFEST), 0u8..3).prop_map(|(doc, style)| render(&doc, style)),
        1 => Just(b"# an empty document\n".to_vec()),
        1 => Just(Vec::new()),
    ];
    (vec(document, 1..4), any::<bool>()).prop_map(|(documents, leading)| {
        let mut out = Vec::new();
        for (i, doc) in documents.into_iter().enumerate() {
            if i > 0 || leading {
                out.extend(b"---\n");
            }
            out.extend(doc);
            if out.last() != Some(&b'\n') {
                out.push(b'\n');
            }
        }
        out
    })
}

common_properties!(seed_yaml_inputs: seed_yaml, bytes SLOW_CASES, mutations SLOW_CASES);

#[test]
fn yaml_files_of_edited_manifests_pass_the_seed_yaml_check() {
    holds(SLOW_CASES, seed_files, seed_yaml::check);
}

// ---------------------------------------------------------------------------------------------
// token_file
// ---------------------------------------------------------------------------------------------

/// CSV lines of tokens, users, uids and quoted group lists, blank lines and stray quotes.
fn token_files() -> impl Strategy<Value = String> {
    const EOLS: &[&str] = &["\n", "\r\n", "\r"];
    let field = prop_oneof![
        4 => "[a-z0-9-]{0,10}",
        2 => "\"[a-z0-9:, ]{0,12}\"",
        1 => "\"([a-z:]{0,6}|\"\"|,){0,4}\"",
        1 => " [a-z]{1,4} ",
        1 => "\\PC{0,4}",
    ];
    let line = prop_oneof![
        6 => vec(field, 1..6).prop_map(|fields| fields.join(",")),
        1 => Just(String::new()),
        1 => "#\\PC{0,10}",
        1 => "[ \t]{1,3}",
    ];
    (vec(line, 0..6), select(EOLS), any::<bool>()).prop_map(|(lines, eol, last)| {
        let mut text = lines.join(eol);
        if last {
            text.push_str(eol);
        }
        text
    })
}

common_properties!(token_file_inputs: token_file, bytes CASES, mutations CASES);

#[test]
fn csv_lines_of_tokens_and_groups_pass_the_token_file_check() {
    holds(CASES, token_files, token_file::check);
}

// ---------------------------------------------------------------------------------------------
// encryption_config
// ---------------------------------------------------------------------------------------------

static ENCRYPTION: Vocabulary = Vocabulary {
    keys: &[
        "apiVersion",
        "kind",
        "resources",
        "providers",
        "aesgcm",
        "aescbc",
        "secretbox",
        "identity",
        "kms",
        "keys",
        "name",
        "secret",
        "endpoint",
        "cachesize",
        "timeout",
    ],
    words: &[
        "apiserver.config.k8s.io/v1",
        "EncryptionConfiguration",
        "secrets",
        "*.*",
        "*.apps",
        "*.",
        "pandas.awesome.bears.example",
        "deployments.apps",
        "configmaps",
        "key1",
        "key2",
        // 16, 24 and 32 bytes, and not base64.
        "MDEyMzQ1Njc4OWFiY2RlZg==",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "not base64",
        "",
        "v2",
        "unix:///tmp/kms.sock",
        "3s",
    ],
};

/// A stored value: an encryption prefix (a provider and key the fixed configuration has, or
/// not) and any bytes.
fn stored_values() -> impl Strategy<Value = Vec<u8>> {
    const PREFIXES: &[&str] = &[
        "k8s:enc:aesgcm:v1:key1:",
        "k8s:enc:aesgcm:v1:key2:",
        "k8s:enc:aescbc:v1:key1:",
        "k8s:enc:secretbox:v1:key1:",
        "k8s:enc:aesgcm:v1:old:",
        "k8s:enc:kms:v2:x:",
        "k8s:enc:aesgcm:v1:",
        "k8s:enc:",
        "",
    ];
    (select(PREFIXES), vec(any::<u8>(), 0..96)).prop_map(|(prefix, rest)| {
        let mut out = prefix.as_bytes().to_vec();
        out.extend(rest);
        out
    })
}

common_properties!(encryption_config_inputs: encryption_config, bytes CASES, mutations SLOW_CASES);

/// The seeds' configurations edited with the configuration's words, in JSON or YAML, or a
/// stored value.
fn configurations_and_stored_values() -> impl Strategy<Value = Vec<u8>> {
    let (docs, _) = documents("encryption_config", 0);
    prop_oneof![
        (edited(docs, &ENCRYPTION), 0u8..3).prop_map(|(doc, style)| render(&doc, style)),
        stored_values(),
    ]
}

#[test]
fn edited_configurations_and_stored_values_pass_the_encryption_config_check() {
    holds(
        SLOW_CASES,
        configurations_and_stored_values,
        encryption_config::check,
    );
}

// ---------------------------------------------------------------------------------------------
// kubeconfig
// ---------------------------------------------------------------------------------------------

static KUBECONFIG: Vocabulary = Vocabulary {
    keys: &[
        "apiVersion",
        "kind",
        "clusters",
        "users",
        "contexts",
        "current-context",
        "name",
        "cluster",
        "user",
        "context",
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "client-certificate",
        "client-certificate-data",
        "client-key",
        "client-key-data",
        "token",
        "tokenFile",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "namespace",
        "exec",
        "username",
        "password",
    ],
    words: &[
        "v1",
        "Config",
        "c",
        "k",
        "admin",
        "cache",
        "shard",
        "root:cloudco",
        "https://h",
        "https://127.0.0.1:6443",
        "https://cache.example.com:6443/ignored/path",
        "https://[::1]:6443",
        "https://h:0",
        "https://",
        "https://user@h",
        "https://h?x=1",
        "https://h#f",
        "https:///p",
        "http://h",
        "h:6443",
        "ca.crt",
        "missing.crt",
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=",
        "shard-token",
        "",
    ],
};

common_properties!(kubeconfig_inputs: kubeconfig, bytes SLOW_CASES, mutations SLOW_CASES);

/// The seeds' kubeconfigs edited with the kubeconfig's words, in JSON or YAML.
fn kubeconfigs() -> impl Strategy<Value = Vec<u8>> {
    let (docs, _) = documents("kubeconfig", 0);
    (edited(docs, &KUBECONFIG), 0u8..3).prop_map(|(doc, style)| render(&doc, style))
}

#[test]
fn edited_kubeconfigs_in_yaml_or_json_pass_the_kubeconfig_check() {
    holds(SLOW_CASES, kubeconfigs, kubeconfig::check);
}

// ---------------------------------------------------------------------------------------------
// duration_flag
// ---------------------------------------------------------------------------------------------

/// Go durations: signed sequences of decimal numbers with units, and their edges.
fn durations() -> impl Strategy<Value = String> {
    const EDGES: &[&str] = &[
        "",
        ".",
        "-",
        "+",
        "0",
        "1e3s",
        "inf",
        "NaN",
        ".s",
        "1.h",
        "9223372036854775807ns",
        "18446744073709551615s",
        "1000000000000000000000h",
        "-0",
    ];
    prop_oneof![
        4 => "[-+]?([0-9]{1,6}(\\.[0-9]{0,4})?(ns|us|µs|μs|ms|s|m|h)){1,4}",
        2 => "[-+]?([0-9]{0,20}(\\.[0-9]{0,12})?(ns|us|µs|μs|ms|s|m|h|d|x)?){0,5}",
        1 => select(EDGES).prop_map(String::from),
    ]
}

common_properties!(duration_flag_inputs: duration_flag, bytes CASES, mutations CASES);

#[test]
fn go_duration_strings_pass_the_duration_flag_check() {
    holds(CASES, durations, duration_flag::check);
}
