//! Property: for any text serde_json parses as an object, the host's field index agrees with serde_json: the parse stage accepts it; a lookup by path finds, for every key path serde_json sees (nested objects, duplicate keys with the last winning, keys with `.`, `\` and escapes), the same value, and nothing for a key's escaped spelling unless such a key exists; the full-mode node table a guest reads has exactly serde_json's members in order (duplicates included) with the same keys, kinds, values, depths, flags and subtree ends; and the parse-time slots of declared paths, under both JSON engines, equal the lookups.
#![no_main]

use std::fmt;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sluicebox::fuzzing::{full_index, parse_event};
use sluicebox::parse::index::lookup;
use sluicebox::{CollectSink, Decisions, Events, Filter, JsonEngine, Pipeline, PipelineConfig};
use sluicebox_abi::{self as abi, Node};

/// Escapes one key as a path component (`.` and `\` get a backslash).
fn component(key: &str, path: &mut String) {
    for c in key.chars() {
        if c == '.' || c == '\\' {
            path.push('\\');
        }
        path.push(c);
    }
}

/// A field as a serde_json value: strings decoded from their raw text, the rest parsed.
fn value_of(kind: u8, raw: &[u8], what: &str) -> Value {
    if kind == abi::KIND_STRING {
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        return serde_json::from_slice(&quoted).unwrap_or_else(|e| {
            panic!(
                "string at {what} does not decode ({e}): {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    }
    serde_json::from_slice(raw).unwrap_or_else(|e| {
        panic!(
            "value at {what} is not JSON ({e}): {:?}",
            String::from_utf8_lossy(raw)
        )
    })
}

/// What our lookup returns for `path`, as a serde_json value.
fn ours(text: &[u8], s: &[u32], path: &str) -> Option<Value> {
    let f = lookup(text, s, path.as_bytes())?;
    let v = value_of(f.kind.abi(), f.raw, path);
    if let Some(decoded) = f.as_str() {
        assert_eq!(Some(&*decoded), v.as_str(), "FieldRef::as_str at {path:?}");
    }
    Some(v)
}

fn walk(
    text: &[u8],
    s: &[u32],
    obj: &Map<String, Value>,
    prefix: Option<&str>,
    depth: usize,
    paths: &mut Vec<String>,
) {
    if depth > 64 {
        return;
    }
    for (k, v) in obj {
        // The top-level key "" is the path "", its member "" the path ".".
        let mut path = prefix.map_or_else(String::new, |p| format!("{p}."));
        component(k, &mut path);
        let got = ours(text, s, &path);
        assert_eq!(got.as_ref(), Some(v), "path {path:?}");
        paths.push(path.clone());
        // The key's JSON-escaped spelling, taken as a key name, must only match a key that
        // really has that name.
        let escaped = serde_json::to_string(k).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        if escaped != k {
            let mut p2 = prefix.map_or_else(String::new, |p| format!("{p}."));
            component(escaped, &mut p2);
            assert_eq!(
                ours(text, s, &p2).as_ref(),
                obj.get(escaped),
                "path {p2:?} (the escaped spelling of key {k:?})"
            );
            paths.push(p2);
        }
        if let Value::Object(inner) = v {
            walk(text, s, inner, Some(&path), depth + 1, paths);
        }
    }
}

/// serde_json's view with member order and duplicate keys kept.
#[derive(Debug, PartialEq)]
enum Tree {
    Obj(Vec<(String, Tree)>),
    Arr(Vec<Tree>),
    Leaf(Value),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Tree, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Tree>()? {
                    out.push((k, v));
                }
                Ok(Tree::Obj(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Tree, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<Tree>()? {
                    out.push(v);
                }
                Ok(Tree::Arr(out))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
                Ok(Tree::Leaf(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
                Ok(Tree::Leaf(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
                Ok(Tree::Leaf(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
                Ok(Tree::Leaf(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
                Ok(Tree::Leaf(v.into()))
            }
            fn visit_string<E>(self, v: String) -> Result<Tree, E> {
                Ok(Tree::Leaf(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf(Value::Null))
            }
        }
        d.deserialize_any(V)
    }
}

fn kind_of(t: &Tree) -> u8 {
    match t {
        Tree::Obj(_) => abi::KIND_OBJECT,
        Tree::Arr(_) => abi::KIND_ARRAY,
        Tree::Leaf(Value::Null) => abi::KIND_NULL,
        Tree::Leaf(Value::Bool(false)) => abi::KIND_FALSE,
        Tree::Leaf(Value::Bool(true)) => abi::KIND_TRUE,
        Tree::Leaf(Value::Number(_)) => abi::KIND_NUMBER,
        Tree::Leaf(Value::String(_)) => abi::KIND_STRING,
        Tree::Leaf(_) => unreachable!(),
    }
}

/// Rebuilds the members of one container from the node table (nodes `range`, all at
/// `depth`), checking each node against the text.
fn rebuild(
    text: &[u8],
    nodes: &[Node],
    range: std::ops::Range<usize>,
    depth: u16,
    in_object: bool,
) -> Tree {
    let mut members = Vec::new();
    let mut items = Vec::new();
    let mut i = range.start;
    while i < range.end {
        let n = nodes[i];
        let at = format!("node {i} {n:?}");
        assert_eq!(n.depth, depth, "{at}: depth");
        let end = n.end as usize;
        assert!(
            end > i && end <= range.end,
            "{at}: end out of its container"
        );
        let slice = |start: u32, len: u32| -> &[u8] {
            text.get(start as usize..(start as usize).saturating_add(len as usize))
                .unwrap_or_else(|| panic!("{at}: range outside the event"))
        };
        let raw = slice(n.value_start, n.value_len);
        let value = match n.kind {
            abi::KIND_OBJECT | abi::KIND_ARRAY => {
                let t = rebuild(
                    text,
                    nodes,
                    i + 1..end,
                    depth + 1,
                    n.kind == abi::KIND_OBJECT,
                );
                let whole: Tree = serde_json::from_slice(raw).unwrap_or_else(|e| {
                    panic!(
                        "{at}: container text is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(raw)
                    )
                });
                assert_eq!(whole, t, "{at}: container text vs its nodes");
                t
            }
            kind => {
                assert_eq!(end, i + 1, "{at}: a scalar has no subtree");
                let escaped = n.flags & abi::FLAG_VALUE_ESCAPED != 0;
                assert_eq!(
                    escaped,
                    kind == abi::KIND_STRING && raw.contains(&b'\\'),
                    "{at}: value escape flag"
                );
                Tree::Leaf(value_of(kind, raw, &at))
            }
        };
        assert_eq!(n.kind, kind_of(&value), "{at}: kind");
        if in_object {
            assert_eq!(
                n.flags & abi::FLAG_NO_KEY,
                0,
                "{at}: object member without a key"
            );
            let raw_key = slice(n.key_start, n.key_len);
            assert_eq!(
                n.flags & abi::FLAG_KEY_ESCAPED != 0,
                raw_key.contains(&b'\\'),
                "{at}: key escape flag"
            );
            let Value::String(key) = value_of(abi::KIND_STRING, raw_key, &at) else {
                unreachable!()
            };
            members.push((key, value));
        } else {
            assert_ne!(n.flags & abi::FLAG_NO_KEY, 0, "{at}: array item with a key");
            items.push(value);
        }
        i = end;
    }
    if in_object {
        Tree::Obj(members)
    } else {
        Tree::Arr(items)
    }
}

/// (kind, start, len, escaped) of a field, relative to its event.
type Found = Option<(u8, u32, usize, bool)>;

/// Declares `paths` and records what `EventRef::field` (a parse-time slot read) returns for
/// them on the first event.
#[derive(Clone)]
struct Probe {
    paths: Vec<String>,
    seen: Arc<Mutex<Vec<Found>>>,
}

impl Filter for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn fields(&self) -> Option<Vec<String>> {
        Some(self.paths.clone())
    }
    fn process(&mut self, events: &Events<'_>, _: &mut Decisions) -> sluicebox::Result<()> {
        let e = events.get(0);
        let mut seen = self.seen.lock().unwrap();
        seen.clear();
        for p in &self.paths {
            seen.push(
                e.field(p)
                    .map(|f| (f.kind.abi(), f.start, f.raw.len(), f.escaped)),
            );
        }
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn Filter>> {
        Ok(Box::new(self.clone()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let s = parse_event(data, 1024).unwrap_or_else(|why| {
        panic!("serde_json accepts this object, the parse stage refuses it: {why}")
    });
    let mut paths = Vec::new();
    walk(data, &s, &obj, None, 0, &mut paths);

    let nodes = full_index(data, 1024).expect("accepted above");
    let reference: Tree = serde_json::from_slice(data).expect("parsed above");
    let rebuilt = rebuild(data, &nodes, 0..nodes.len(), 0, true);
    assert_eq!(rebuilt, reference, "full index vs serde_json");

    // Parse-time slots: one line through the pipeline with the paths declared.
    if data.contains(&b'\n') || data.last() == Some(&b'\r') {
        return;
    }
    paths.truncate(16);
    paths.extend(["nope", "a.nope", ""].map(String::from));
    let expect: Vec<Found> = paths
        .iter()
        .map(|p| {
            lookup(data, &s, p.as_bytes()).map(|f| (f.kind.abi(), f.start, f.raw.len(), f.escaped))
        })
        .collect();
    for engine in [JsonEngine::Sluice, JsonEngine::SimdJson] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let probe = Probe {
            paths: paths.clone(),
            seen: seen.clone(),
        };
        let config = PipelineConfig {
            json_engine: engine,
            ..Default::default()
        };
        let mut out = CollectSink::new();
        let report = Pipeline::new(config)
            .unwrap()
            .with_filter(probe)
            .run(data, &mut out)
            .unwrap();
        assert_eq!(report.stats.emitted, 1, "{engine:?}: the line is emitted");
        assert_eq!(out.events[0].0, data, "{engine:?}: byte for byte");
        let seen = seen.lock().unwrap();
        for ((p, want), got) in paths.iter().zip(&expect).zip(seen.iter()) {
            assert_eq!(got, want, "{engine:?}: slot of {p:?} vs lookup");
        }
    }
});
