//! Property tests: chunking invariance of the reader, conservation (each line emitted,
//! dead-lettered with the right reason, or skipped) on random mixes of valid and invalid
//! lines, and the host's SET / REMOVE / RENAME against a reference written here from the
//! semantics of docs/abi.md sections 10 and 11.

use std::io::Read;

use proptest::prelude::*;
use serde::Deserialize;
use sluicebox::fuzzing::Edit;
use sluicebox::{CollectSink, JsonEngine, Pipeline, PipelineConfig};

/// A reader that returns the input in chunks of the given sizes (cycling).
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    k: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self.sizes[self.k % self.sizes.len()].max(1);
        self.k += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"{\"level\":\"INFO\",\"msg\":\"ok \\\"q\\\"\"}".to_vec()),
        1 => Just(b"{\"n\":1e400}".to_vec()),
        1 => Just(b"".to_vec()),
        1 => Just(b"  \t".to_vec()),
        1 => Just(b"{\"a\":1}\r".to_vec()),
        1 => Just(b"[1]".to_vec()),
        1 => Just(b"{broken".to_vec()),
        // Longer than the 64-byte limit: dead-lettered as oversized, maybe across reads.
        1 => (50usize..300).prop_map(|k| format!("{{\"pad\":\"{}\"}}", "x".repeat(k)).into_bytes()),
        1 => prop::sample::select(BAD_UTF8).prop_map(|bad| [&b"{\"a\":\""[..], bad, b"\"}"].concat()),
        1 => Just(b"{\"a\":\"x\x00y\"}".to_vec()),
        1 => Just(b"\xef\xbb\xbf{\"bom\":1}".to_vec()),
        // Up to 2 levels past the limit of 16.
        1 => (2usize..19).prop_map(nested),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40),
    ]
}

/// Runs `data` read in chunks of `sizes`; returns the stats, the output, and the dead
/// letters, where the `raw` of an oversized line is replaced by a marker after checking
/// that it is a prefix of the input at the line's offset (see
/// `oversized_dead_letter_raw_is_the_start_of_the_line` for why it is not compared).
fn run(
    data: &[u8],
    sizes: Vec<usize>,
    config: PipelineConfig,
) -> (sluicebox::Stats, Vec<u8>, Vec<serde_json::Value>) {
    let mut out = CollectSink::new();
    let mut dead = CollectSink::new();
    let r = Pipeline::new(config)
        .unwrap()
        .run_with_dead_letter(Chunked { data, sizes, k: 0 }, &mut out, &mut dead)
        .unwrap();
    let dead = dead
        .events
        .iter()
        .map(|(b, _, _)| {
            let mut d: serde_json::Value = serde_json::from_slice(b).unwrap();
            if d["reason"].as_str().unwrap().starts_with("oversized") {
                let at = d["offset"].as_u64().unwrap() as usize;
                // (A cut inside a UTF-8 sequence shows as U+FFFD at the end.)
                let raw = d["raw"].as_str().unwrap().trim_end_matches('\u{fffd}');
                let rest = String::from_utf8_lossy(&data[at..]);
                assert!(
                    rest.starts_with(raw),
                    "raw {raw:?} is not the input at {at}"
                );
                d["raw"] = "(oversized)".into();
            }
            d
        })
        .collect();
    (r.stats, out.ndjson(), dead)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn chunking_does_not_change_the_output(lines in proptest::collection::vec(line(), 0..60),
                                           sizes in proptest::collection::vec(1usize..300, 1..8),
                                           batch in 1usize..20, final_newline in any::<bool>(),
                                           workers in 1usize..=2, simd in any::<bool>()) {
        let mut data = lines.join(&b"\n"[..]);
        if final_newline { data.push(b'\n'); }
        let config = || PipelineConfig { max_batch_events: batch, max_line_bytes: 64, max_depth: MAX_DEPTH, ..Default::default() };
        let (s1, o1, d1) = run(&data, vec![1 << 20], config());
        // Read in random pieces, maybe on worker threads, with either engine.
        let json_engine = if simd { JsonEngine::SimdJson } else { JsonEngine::Sluice };
        let (s2, o2, d2) = run(&data, sizes, PipelineConfig { workers, json_engine, ..config() });
        prop_assert_eq!(&o1, &o2);
        prop_assert_eq!(&d1, &d2);
        prop_assert_eq!(s1.received, s2.received);
        prop_assert!(s1.is_balanced() && s2.is_balanced());
        // Every non-blank line is one event.
        let nonblank = data.split(|&b| b == b'\n').enumerate()
            .filter(|(i, l)| !(l.is_empty() && *i == data.split(|&b| b == b'\n').count() - 1))
            .filter(|(_, l)| !l.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))).count() as u64;
        prop_assert_eq!(s1.received, nonblank);
    }
}

// ---------------------------------------------------------------------------------------
// JSON values that keep member order and duplicate keys, for generating events and for
// reading the host's edited events back.

/// A JSON value with its object members in order, duplicates kept.
#[derive(Clone, Debug, PartialEq)]
enum J {
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
    Leaf(serde_json::Value),
}

/// How to write a `J` as text.
#[derive(Clone, Copy, Debug)]
struct Style {
    /// Spaces around every `:` and `,` and inside the brackets.
    spaces: bool,
    /// Every key character written as a `\uXXXX` escape (the host must match keys decoded).
    escape_keys: bool,
}

impl J {
    fn write(&self, style: Style, out: &mut Vec<u8>) {
        let sp = |out: &mut Vec<u8>| {
            if style.spaces {
                out.push(b' ');
            }
        };
        match self {
            J::Leaf(v) => serde_json::to_writer(&mut *out, v).unwrap(),
            J::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    sp(out);
                    item.write(style, out);
                    sp(out);
                }
                out.push(b']');
            }
            J::Obj(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    sp(out);
                    if style.escape_keys {
                        out.push(b'"');
                        for unit in k.encode_utf16() {
                            out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
                        }
                        out.push(b'"');
                    } else {
                        serde_json::to_writer(&mut *out, k).unwrap();
                    }
                    sp(out);
                    out.push(b':');
                    sp(out);
                    v.write(style, out);
                    sp(out);
                }
                out.push(b'}');
            }
        }
    }

    fn text(&self, style: Style) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(style, &mut out);
        out
    }

    /// The `serde_json::Value` a parser that keeps the last duplicate would build.
    fn value(&self) -> serde_json::Value {
        match self {
            J::Leaf(v) => v.clone(),
            J::Arr(items) => items.iter().map(J::value).collect(),
            J::Obj(members) => {
                let mut m = serde_json::Map::new();
                for (k, v) in members {
                    m.insert(k.clone(), v.value());
                }
                serde_json::Value::Object(m)
            }
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Leaf(b.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::Leaf(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(J::Leaf(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<J, E> {
                Ok(J::Leaf(n.into()))
            }
            fn visit_str<E>(self, s: &str) -> Result<J, E> {
                Ok(J::Leaf(s.into()))
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Leaf(serde_json::Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(J::Arr(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = a.next_entry()? {
                    members.push(member);
                }
                Ok(J::Obj(members))
            }
        }
        d.deserialize_any(V)
    }
}

/// Keys from a small pool, so that edits often hit existing (and duplicate) keys; several
/// need path escapes (`.`, `\`), one is empty, some need JSON escapes.
const KEYS: &[&str] = &[
    "a", "b", "c", "a.b", "", ".", "..", "k.", "\\", "a\\", "x\\y", "\\.", "é", "q\"", "\u{1}",
    "😀",
];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(String::from)
}

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        (-1000i64..1000).prop_map(serde_json::Value::from),
        prop::sample::select(&[1.5f64, -0.25, 1e10, 3.0e-7][..]).prop_map(serde_json::Value::from),
        prop::sample::select(
            &[
                "",
                "x",
                "é",
                "q\"uote",
                "back\\slash",
                "line\nbreak",
                "\u{1f600}",
                "{\"not\":1}"
            ][..]
        )
        .prop_map(serde_json::Value::from),
    ]
    .prop_map(J::Leaf)
}

fn json() -> impl Strategy<Value = J> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::vec((key(), inner), 0..5).prop_map(J::Obj),
        ]
    })
}

fn object() -> impl Strategy<Value = J> {
    prop::collection::vec((key(), json()), 0..6).prop_map(J::Obj)
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), prop::bool::weighted(0.2)).prop_map(|(spaces, escape_keys)| Style {
        spaces,
        escape_keys,
    })
}

// ---------------------------------------------------------------------------------------
// Conservation on random mixes of lines whose fate is known.

/// What must happen to one line.
#[derive(Clone, Debug)]
enum Want {
    /// Emitted with exactly these bytes.
    Emit(Vec<u8>),
    /// Dead-lettered with a reason that contains this.
    Dead(&'static str),
    /// Blank: skipped, not an event.
    Skip,
    /// Random bytes: emitted unchanged or dead-lettered, but exactly one of them.
    Either,
}

const MAX_LINE: usize = 200;
const MAX_DEPTH: usize = 16;

/// `levels` (at least 2) levels of nesting: an object holding arrays.
fn nested(levels: usize) -> Vec<u8> {
    format!(
        "{{\"a\":{}{}}}",
        "[".repeat(levels - 1),
        "]".repeat(levels - 1)
    )
    .into_bytes()
}

/// Invalid UTF-8: a lone byte 0xFF, an overlong NUL, an encoded surrogate, a lone
/// continuation byte, a code point above U+10FFFF, a truncated sequence.
const BAD_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
];
const BLANKS: &[&[u8]] = &[b"", b" ", b"\t", b" \t ", b"\r", b" \r"];

fn classified_line() -> impl Strategy<Value = (Vec<u8>, Want)> {
    let fixed = |text: &[u8], want: Want| Just((text.to_vec(), want));
    let ok = |t: &[u8]| Want::Emit(t.to_vec());
    prop_oneof![
        2 => fixed(b"{\"level\":\"INFO\",\"msg\":\"ok \\\"q\\\"\"}", ok(b"{\"level\":\"INFO\",\"msg\":\"ok \\\"q\\\"\"}")),
        1 => fixed(b"{\"n\":1e400}", ok(b"{\"n\":1e400}")),
        1 => fixed(b"  {\"a\" : [1, 2]}\t", ok(b"  {\"a\" : [1, 2]}\t")),
        1 => fixed(b"{\"crlf\":1}\r", ok(b"{\"crlf\":1}")),
        3 => (object(), style()).prop_map(|(o, st)| {
            let t = o.text(st);
            let want = if t.len() > MAX_LINE { Want::Dead("oversized") } else { Want::Emit(t.clone()) };
            (t, want)
        }),
        2 => (2..MAX_DEPTH + 4).prop_map(|d| {
            let want = if d <= MAX_DEPTH { Want::Emit(nested(d)) } else { Want::Dead("deeper than the maximum of 16 levels") };
            (nested(d), want)
        }),
        1 => fixed(b"[1]", Want::Dead("not an object")),
        1 => fixed(b"\"just a string\"", Want::Dead("not an object")),
        1 => fixed(b"{broken", Want::Dead("invalid JSON")),
        1 => fixed(b"{\"oops\": tru}", Want::Dead("invalid literal")),
        1 => fixed(b"{\"a\":1,}", Want::Dead("trailing comma")),
        2 => prop::sample::select(BAD_UTF8)
            .prop_map(|bad| ([&b"{\"a\":\""[..], bad, b"\"}"].concat(), Want::Dead("UTF-8"))),
        1 => fixed(b"{\"a\":\"x\x00y\"}", Want::Dead("control character")),
        1 => fixed(b"{\"a\":1}\x00", Want::Dead("invalid JSON")),
        1 => fixed(b"\x00", Want::Dead("invalid JSON")),
        1 => fixed(b"\xef\xbb\xbf{\"bom\":1}", Want::Dead("byte order mark")),
        2 => (MAX_LINE - 9..3 * MAX_LINE).prop_map(|k| {
            let t = format!("{{\"pad\":\"{}\"}}", "x".repeat(k)).into_bytes();
            let want = if t.len() > MAX_LINE { Want::Dead("oversized") } else { Want::Emit(t.clone()) };
            (t, want)
        }),
        2 => prop::sample::select(BLANKS).prop_map(|b| (b.to_vec(), Want::Skip)),
        2 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40).prop_map(|b| {
            let blank = b.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r'));
            (b, if blank { Want::Skip } else { Want::Either })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_line_is_emitted_dead_lettered_or_skipped(
        lines in proptest::collection::vec(classified_line(), 0..80),
        sizes in proptest::collection::vec(1usize..400, 1..8),
        batch in 1usize..20,
        batch_bytes in 64usize..4096,
        workers in 1usize..=2,
        simd in any::<bool>(),
        final_newline in any::<bool>(),
    ) {
        // A fixed first line, so a byte order mark is never at the start of the input.
        let mut all = vec![(b"{\"first\":1}".to_vec(), Want::Emit(b"{\"first\":1}".to_vec()))];
        all.extend(lines);
        let mut data = Vec::new();
        for (text, _) in &all {
            data.extend_from_slice(text);
            data.push(b'\n');
        }
        if !final_newline && !all.last().unwrap().0.is_empty() {
            data.pop();
        }
        let config = PipelineConfig {
            max_batch_events: batch,
            max_batch_bytes: batch_bytes,
            max_line_bytes: MAX_LINE,
            max_depth: MAX_DEPTH,
            workers,
            json_engine: if simd { JsonEngine::SimdJson } else { JsonEngine::Sluice },
            ..Default::default()
        };
        let mut out = CollectSink::new();
        let mut dead = CollectSink::new();
        let r = Pipeline::new(config)
            .unwrap()
            .run_with_dead_letter(Chunked { data: &data, sizes, k: 0 }, &mut out, &mut dead)
            .unwrap();
        let s = r.stats;
        prop_assert!(s.is_balanced(), "{:?}", s);
        let count = |f: fn(&Want) -> bool| all.iter().filter(|(_, w)| f(w)).count() as u64;
        prop_assert_eq!(s.skipped, count(|w| matches!(w, Want::Skip)));
        prop_assert_eq!(s.received, all.len() as u64 - s.skipped);
        prop_assert_eq!(s.emitted, out.events.len() as u64);
        prop_assert_eq!(s.dead_lettered, dead.events.len() as u64);
        prop_assert_eq!(s.filtered, 0);
        prop_assert_eq!(s.bytes_in, data.len() as u64);
        // Emitted events keep input order.
        let out_lines: Vec<u64> = out.events.iter().map(|e| e.1).collect();
        prop_assert!(out_lines.windows(2).all(|w| w[0] < w[1]), "{:?}", out_lines);
        let dead: Vec<serde_json::Value> = dead.events.iter()
            .map(|(b, _, _)| serde_json::from_slice(b).expect("dead letter is JSON")).collect();
        let dead_lines: Vec<u64> = dead.iter().map(|d| d["line"].as_u64().unwrap()).collect();
        // Dead letters are not in line order across stages: within a batch the framer's
        // (oversized) come before the parser's. Each line is dead-lettered at most once.
        let mut sorted = dead_lines.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), dead_lines.len(), "{:?}", dead_lines);
        let mut offset = 0u64;
        for (i, (text, want)) in all.iter().enumerate() {
            let line = i as u64 + 1;
            let emitted = out.events.iter().find(|e| e.1 == line);
            let letter = dead.iter().find(|d| d["line"] == line);
            let show = String::from_utf8_lossy(text);
            match want {
                Want::Emit(bytes) => {
                    prop_assert!(letter.is_none(), "line {} {:?} dead-lettered: {:?}", line, show, letter);
                    prop_assert_eq!(emitted.map(|e| &e.0), Some(bytes), "line {} {:?}", line, show);
                }
                Want::Dead(why) => {
                    prop_assert!(emitted.is_none(), "line {} {:?} emitted", line, show);
                    let d = letter.ok_or_else(|| TestCaseError::fail(format!("line {line} {show:?} not dead-lettered")))?;
                    let reason = d["reason"].as_str().unwrap();
                    prop_assert!(reason.contains(why), "line {} {:?}: reason {:?} should mention {:?}", line, show, reason, why);
                    prop_assert_eq!(d["offset"].as_u64(), Some(offset));
                }
                Want::Skip => prop_assert!(emitted.is_none() && letter.is_none(), "line {} {:?} not skipped", line, show),
                Want::Either => {
                    prop_assert!(emitted.is_some() != letter.is_some(), "line {} {:?}: emitted {:?}, dead letter {:?}", line, show, emitted, letter);
                    if let Some(e) = emitted {
                        prop_assert_eq!(&e.0[..], text.strip_suffix(b"\r").unwrap_or(text));
                    }
                }
            }
            offset += text.len() as u64 + 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Edits in the host equal edits on a reference written from docs/abi.md sections 10 and 11.

#[derive(Clone, Debug)]
enum E {
    Set(Vec<String>, J),
    Remove(Vec<String>),
    Rename(Vec<String>, Vec<String>),
}

/// A path of 1 to 3 components; not the empty path (a lone empty component), which
/// records refuse.
fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key(), 1..4).prop_filter("the empty path is refused", |c| {
        !(c.len() == 1 && c[0].is_empty())
    })
}

fn edit() -> impl Strategy<Value = E> {
    prop_oneof![
        3 => (path(), json()).prop_map(|(p, v)| E::Set(p, v)),
        2 => path().prop_map(E::Remove),
        2 => (path(), path()).prop_map(|(f, t)| E::Rename(f, t)),
    ]
}

/// Section 10: `.` separates components; `\` makes the next byte literal.
fn escape_path(comps: &[String]) -> String {
    comps
        .iter()
        .map(|c| c.replace('\\', "\\\\").replace('.', "\\."))
        .collect::<Vec<_>>()
        .join(".")
}

/// The last member named `k` (the last duplicate wins).
fn last(m: &[(String, J)], k: &str) -> Option<usize> {
    m.iter().rposition(|(key, _)| key == k)
}

/// `{"c1":{"c2":…value…}}` for the components after the first.
fn build_nested(comps: &[String], v: J) -> J {
    comps
        .iter()
        .rev()
        .fold(v, |inner, c| J::Obj(vec![(c.clone(), inner)]))
}

fn ref_set(m: &mut Vec<(String, J)>, comps: &[String], v: J) {
    let (first, rest) = comps.split_first().unwrap();
    match last(m, first) {
        // One component: the last occurrence's value is replaced in place.
        Some(i) if rest.is_empty() => m[i].1 = v,
        // Several: into the last occurrence if it holds an object, else a new nested object.
        Some(i) => match &mut m[i].1 {
            J::Obj(inner) => ref_set(inner, rest, v),
            other => *other = build_nested(rest, v),
        },
        // Absent: appended.
        None => m.push((first.clone(), build_nested(rest, v))),
    }
}

fn ref_remove(m: &mut Vec<(String, J)>, comps: &[String]) {
    let (first, rest) = comps.split_first().unwrap();
    if rest.is_empty() {
        // Every duplicate goes.
        m.retain(|(k, _)| k != first);
    } else if let Some(i) = last(m, first)
        && let J::Obj(inner) = &mut m[i].1
    {
        ref_remove(inner, rest);
    }
}

fn ref_get(m: &[(String, J)], comps: &[String]) -> Option<J> {
    let (first, rest) = comps.split_first().unwrap();
    let v = &m[last(m, first)?].1;
    match (rest.is_empty(), v) {
        (true, v) => Some(v.clone()),
        (false, J::Obj(inner)) => ref_get(inner, rest),
        // A path that runs into an array or a scalar names nothing.
        (false, _) => None,
    }
}

fn ref_apply(event: &J, edits: &[E]) -> J {
    let J::Obj(members) = event else {
        unreachable!("events are objects")
    };
    let mut m = members.clone();
    for e in edits {
        match e {
            E::Set(p, v) => ref_set(&mut m, p, v.clone()),
            E::Remove(p) => ref_remove(&mut m, p),
            // RENAME: take the value, REMOVE from, SET to; nothing when from is absent.
            E::Rename(f, t) => {
                if let Some(v) = ref_get(&m, f) {
                    ref_remove(&mut m, f);
                    ref_set(&mut m, t, v);
                }
            }
        }
    }
    J::Obj(m)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn host_edits_equal_reference_edits(event in object(), st in style(),
                                        edits in prop::collection::vec(edit(), 1..6)) {
        let text = event.text(st);
        // The input as serde_json reads it is the generated value.
        let parsed: J = serde_json::from_slice(&text).unwrap();
        prop_assert_eq!(&parsed, &event);
        // Paths and SET values as text, kept alive for the borrowed `Edit`s.
        let owned: Vec<(String, String, Vec<u8>)> = edits.iter().map(|e| match e {
            E::Set(p, v) => (escape_path(p), String::new(), v.text(st)),
            E::Remove(p) => (escape_path(p), String::new(), Vec::new()),
            E::Rename(f, t) => (escape_path(f), escape_path(t), Vec::new()),
        }).collect();
        let host_edits: Vec<Edit<'_>> = edits.iter().zip(&owned).map(|(e, (a, b, v))| match e {
            E::Set(..) => Edit::Set(a, std::str::from_utf8(v).unwrap()),
            E::Remove(_) => Edit::Remove(a),
            E::Rename(..) => Edit::Rename(a, b),
        }).collect();
        let out = sluicebox::fuzzing::apply_edits(&text, &host_edits, 1024)
            .map_err(|e| TestCaseError::fail(format!("the host refused the edits: {e}")))?;
        let shown = String::from_utf8_lossy(&out).into_owned();
        // Valid JSON, an object the pipeline's parse stage accepts, on one line.
        prop_assert!(!out.contains(&b'\n'));
        let host_value: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| TestCaseError::fail(format!("host output is not JSON ({e}): {shown}")))?;
        prop_assert!(sluicebox::fuzzing::parse_event(&out, 1024).is_ok(), "{}", shown);
        let want = ref_apply(&event, &edits);
        prop_assert_eq!(&host_value, &want.value(), "host output {}", shown);
        // Member order and duplicates too (section 11: replaced in place, appended at the
        // end, every duplicate removed).
        let host: J = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&host, &want, "host output {}", shown);
    }
}

/// An oversized line's dead letter keeps the line's first `min(max_line_bytes,
/// dead_letter_raw_max)` bytes: never bytes of the following lines, and the same whatever
/// sizes the input was read in.
#[test]
fn oversized_dead_letter_raw_is_the_start_of_the_line() {
    let line = format!("{{\"pad\":\"{}\"}}", "x".repeat(100));
    let data = format!("{line}\n{{\"next\":1}}\n{{\"next\":2}}\n").into_bytes();
    let config = || PipelineConfig {
        max_line_bytes: 64,
        ..Default::default()
    };
    for sizes in [vec![1 << 20], vec![1], vec![7], vec![70]] {
        let (s, out, dead) = {
            let mut out = CollectSink::new();
            let mut dead = CollectSink::new();
            let r = Pipeline::new(config())
                .unwrap()
                .run_with_dead_letter(
                    Chunked {
                        data: &data,
                        sizes: sizes.clone(),
                        k: 0,
                    },
                    &mut out,
                    &mut dead,
                )
                .unwrap();
            (r.stats, out.ndjson(), dead.events)
        };
        assert_eq!((s.received, s.dead_lettered), (3, 1));
        assert_eq!(out, b"{\"next\":1}\n{\"next\":2}\n");
        let d: serde_json::Value = serde_json::from_slice(&dead[0].0).unwrap();
        assert_eq!(d["raw"], &line[..64], "reads of {sizes:?}");
        assert_eq!(d["line"], 1);
    }
}
