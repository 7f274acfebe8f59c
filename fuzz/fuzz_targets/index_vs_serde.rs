//! Property: for any text serde_json parses as an object, the parse stage accepts it and a field lookup by path finds, for every key path serde_json sees (nested objects, duplicate keys with the last winning, keys with `.`, `\` and escapes), the same value, and finds nothing for a key written in its escaped form when no such key exists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sluicebox::fuzzing::parse_event;
use sluicebox::parse::index::lookup;

/// Escapes one key as a path component (`.` and `\` get a backslash).
fn component(key: &str, path: &mut String) {
    for c in key.chars() {
        if c == '.' || c == '\\' {
            path.push('\\');
        }
        path.push(c);
    }
}

/// What our lookup returns for `path`, as a serde_json value.
fn ours(text: &[u8], s: &[u32], path: &str) -> Option<Value> {
    let f = lookup(text, s, path.as_bytes())?;
    if let Some(decoded) = f.as_str() {
        let mut quoted = Vec::with_capacity(f.raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(f.raw);
        quoted.push(b'"');
        let v: Value = serde_json::from_slice(&quoted).expect("string value decodes");
        assert_eq!(Some(&*decoded), v.as_str(), "FieldRef::as_str at {path:?}");
        return Some(v);
    }
    Some(serde_json::from_slice(f.raw).unwrap_or_else(|e| {
        panic!("value at {path:?} is not JSON ({e}): {:?}", String::from_utf8_lossy(f.raw))
    }))
}

fn walk(text: &[u8], s: &[u32], obj: &Map<String, Value>, prefix: &str, depth: usize) {
    if depth > 64 {
        return;
    }
    for (k, v) in obj {
        let mut path = prefix.to_string();
        if !prefix.is_empty() {
            path.push('.');
        }
        component(k, &mut path);
        let got = ours(text, s, &path);
        assert_eq!(got.as_ref(), Some(v), "path {path:?}");
        // The key's JSON-escaped spelling, taken as a key name, must only match a key that
        // really has that name.
        let escaped = serde_json::to_string(k).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        if escaped != k {
            let mut p2 = prefix.to_string();
            if !prefix.is_empty() {
                p2.push('.');
            }
            component(escaped, &mut p2);
            assert_eq!(
                ours(text, s, &p2).as_ref(),
                obj.get(escaped),
                "path {p2:?} (the escaped spelling of key {k:?})"
            );
        }
        if let Value::Object(inner) = v {
            walk(text, s, inner, &path, depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let s = parse_event(data, 1024).unwrap_or_else(|why| {
        panic!("serde_json accepts this object, the parse stage refuses it: {why}")
    });
    walk(data, &s, &obj, "", 0);
});
