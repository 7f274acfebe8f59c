//! Property: any sequence of SET / REMOVE / RENAME edits (paths over a small key alphabet with dots, backslashes, quotes and escaped spellings; values from a small JSON set) applied by the pipeline's editor to a generated object yields valid JSON equal, member order and duplicates included, to the same edits applied to an ordered reference model.
#![no_main]

use std::fmt;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sluicebox::fuzzing::{Edit, apply_edits};
use sluicebox::parse::scalar;

/// Decoded key names. `x\y` and `x\\y` differ only in escaping; `q"` and `é` need escapes or
/// multi-byte UTF-8.
const KEYS: &[&str] = &[
    "a", "b", "c", "a.b", "x\\y", "x\\\\y", "q\"", "", "é", "\u{1}",
];
const VALUES: &[&str] = &[
    "1",
    "\"s\"",
    "null",
    "true",
    "{}",
    "[1,{\"a\":2}]",
    "{\"a\":1}",
    "{\"b\":{\"c\":false}}",
    "{\"a\":{\"b\":true},\"a\":2}",
    " {\"b\":1} ",
    "\"\\u00e9\\\\\"",
];

/// The reference model: member order and duplicates kept; arrays and scalars as canonical text.
#[derive(Clone, Debug, PartialEq)]
enum J {
    Scalar(String),
    Obj(Vec<(String, J)>),
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<J, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, J>()? {
                    out.push((k, v));
                }
                Ok(J::Obj(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<J, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<serde_json::Value>()? {
                    out.push(v);
                }
                Ok(J::Scalar(serde_json::Value::Array(out).to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<J, E> {
                Ok(J::Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<J, E> {
                Ok(J::Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<J, E> {
                Ok(J::Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<J, E> {
                Ok(J::Scalar(serde_json::Value::from(v).to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<J, E> {
                Ok(J::Scalar(serde_json::Value::from(v).to_string()))
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Scalar("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

fn parse(text: &[u8]) -> J {
    serde_json::from_slice(text).expect("model parse")
}

type Obj = Vec<(String, J)>;

fn last(o: &Obj, k: &str) -> Option<usize> {
    o.iter().rposition(|(key, _)| key == k)
}

fn build_nested(comps: &[&str], v: J) -> J {
    comps
        .iter()
        .rev()
        .fold(v, |acc, c| J::Obj(vec![(c.to_string(), acc)]))
}

fn set(o: &mut Obj, comps: &[&str], v: J) {
    let (first, rest) = comps.split_first().unwrap();
    let i = last(o, first);
    let new = if rest.is_empty() {
        v
    } else {
        match i.map(|i| &mut o[i].1) {
            Some(J::Obj(inner)) => {
                set(inner, rest, v);
                return;
            }
            _ => build_nested(rest, v),
        }
    };
    match i {
        Some(i) => o[i].1 = new,
        None => o.push((first.to_string(), new)),
    }
}

fn remove(o: &mut Obj, comps: &[&str]) {
    let (first, rest) = comps.split_first().unwrap();
    if rest.is_empty() {
        o.retain(|(k, _)| k != first);
    } else if let Some(i) = last(o, first)
        && let J::Obj(inner) = &mut o[i].1
    {
        remove(inner, rest);
    }
}

fn get(o: &Obj, comps: &[&str]) -> Option<J> {
    let (first, rest) = comps.split_first()?;
    let v = &o[last(o, first)?].1;
    match (rest.is_empty(), v) {
        (true, v) => Some(v.clone()),
        (false, J::Obj(inner)) => get(inner, rest),
        _ => None,
    }
}

fn rename(o: &mut Obj, from: &[&str], to: &[&str]) {
    if let Some(v) = get(o, from) {
        remove(o, from);
        set(o, to, v);
    }
}

#[derive(Arbitrary, Debug)]
enum Val {
    Scalar(u8),
    Obj(Vec<(u8, bool, Val)>),
}

#[derive(Arbitrary, Debug)]
struct Path(Vec<u8>);

impl Path {
    fn comps(&self) -> Vec<&'static str> {
        let mut c: Vec<&str> = self
            .0
            .iter()
            .take(3)
            .map(|&i| KEYS[usize::from(i) % KEYS.len()])
            .collect();
        if c.is_empty() {
            c.push("a");
        }
        c
    }
}

fn path_text(comps: &[&str]) -> String {
    let mut s = String::new();
    for (n, c) in comps.iter().enumerate() {
        if n > 0 {
            s.push('.');
        }
        for ch in c.chars() {
            if ch == '.' || ch == '\\' {
                s.push('\\');
            }
            s.push(ch);
        }
    }
    s
}

#[derive(Arbitrary, Debug)]
enum EditIn {
    Set(Path, u8),
    Remove(Path),
    Rename(Path, Path),
}

#[derive(Arbitrary, Debug)]
struct Input {
    members: Vec<(u8, bool, Val)>,
    edits: Vec<EditIn>,
}

fn write_key(k: &str, escape_all: bool, out: &mut String) {
    if escape_all {
        out.push('"');
        for u in k.encode_utf16() {
            out.push_str(&format!("\\u{u:04x}"));
        }
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(k).unwrap());
    }
}

fn write_obj(members: &[(u8, bool, Val)], depth: usize, out: &mut String) {
    out.push('{');
    for (n, (k, esc, v)) in members.iter().take(6).enumerate() {
        if n > 0 {
            out.push(',');
        }
        write_key(KEYS[usize::from(*k) % KEYS.len()], *esc, out);
        out.push(':');
        match v {
            Val::Obj(m) if depth < 3 => write_obj(m, depth + 1, out),
            Val::Obj(_) => out.push_str("{}"),
            Val::Scalar(i) => out.push_str(VALUES[usize::from(*i) % VALUES.len()]),
        }
    }
    out.push('}');
}

fuzz_target!(|input: Input| {
    let mut text = String::new();
    write_obj(&input.members, 0, &mut text);
    let J::Obj(mut model) = parse(text.as_bytes()) else {
        unreachable!()
    };
    let mut paths: Vec<(String, Option<String>, Option<&str>)> = Vec::new();
    for e in input.edits.iter().take(8) {
        match e {
            EditIn::Set(p, v) => {
                let value = VALUES[usize::from(*v) % VALUES.len()];
                set(&mut model, &p.comps(), parse(value.as_bytes()));
                paths.push((path_text(&p.comps()), None, Some(value)));
            }
            EditIn::Remove(p) => {
                remove(&mut model, &p.comps());
                paths.push((path_text(&p.comps()), None, None));
            }
            EditIn::Rename(f, t) => {
                rename(&mut model, &f.comps(), &t.comps());
                paths.push((path_text(&f.comps()), Some(path_text(&t.comps())), None));
            }
        }
    }
    let edits: Vec<Edit<'_>> = paths
        .iter()
        .map(|(p, to, v)| match (to, v) {
            (Some(t), _) => Edit::Rename(p, t),
            (None, Some(v)) => Edit::Set(p, v),
            (None, None) => Edit::Remove(p),
        })
        .collect();
    let out = apply_edits(text.as_bytes(), &edits, 1024)
        .unwrap_or_else(|e| panic!("edit refused: {e}\ntext {text}\nedits {edits:?}"));
    scalar::validate(&out, usize::MAX, &mut Vec::new()).unwrap_or_else(|e| {
        panic!(
            "edited event is not JSON ({e}): {}",
            String::from_utf8_lossy(&out)
        )
    });
    let got = parse(&out);
    assert_eq!(
        got,
        J::Obj(model),
        "\ntext   {text}\nedits  {edits:?}\nresult {}",
        String::from_utf8_lossy(&out)
    );
});
