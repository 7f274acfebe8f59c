//! Run filters natively, in `cargo test`, on JSON text (not on wasm32).
//!
//! [`TestEvent`] indexes one event the way the host does, for calling a filter function
//! directly. [`Harness`] goes further: it lays a whole batch out as the host would (header,
//! event table, node table, data), runs it through the same code as the module's
//! `sluicebox_filter` export, checks the output against the ABI's rules, and decodes it into an
//! [`Outcome`] per event.
//!
//! The index builder here is small and strict, not fast: it is for tests.
//!
//! # Examples
//!
//! ```
//! use sluicebox_guest::prelude::*;
//! use sluicebox_guest::testing::{Harness, Record, TestEvent};
//!
//! fn tag(event: &Event, edits: &mut Edits) -> Result<(), String> {
//!     if event.str("level").as_deref() == Some("ERROR") {
//!         edits.set_str("alert", "yes");
//!     }
//!     Ok(())
//! }
//!
//! let out = Harness::projected(&["level"]).map(tag, r#"{"level":"ERROR"}"#);
//! assert_eq!(out.verdict, Verdict::Edit);
//! assert_eq!(out.records, [Record::set("alert", r#""yes""#)]);
//!
//! let event = TestEvent::new(r#"{"level":"INFO"}"#);
//! assert_eq!(event.event().str("level").as_deref(), Some("INFO"));
//! ```

use alloc::borrow::ToOwned;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use sluicebox_abi::{self as abi, Verdict};

use crate::edits::{Edits, Emitter};
use crate::event::{Event, NODE_LEN};
use crate::params::Params;
use crate::rt::{self, FilterOutput, InitOutput, MapOutput, Memory, Output, Spec};

/// A full index of one JSON object: its nodes (as [`abi::Node`] bytes) over `text`.
struct Index {
    nodes: Vec<abi::Node>,
}

/// Builds the full-mode index of the JSON object `text`, offsets relative to `base`.
fn index_object(text: &[u8], base: u32) -> Result<Index, String> {
    let mut p = IndexParser {
        s: text,
        at: 0,
        base,
        nodes: Vec::new(),
    };
    p.ws();
    if p.peek() != Some(b'{') {
        return Err("an event must be a JSON object".to_owned());
    }
    p.at += 1;
    p.members(0)?;
    p.ws();
    if p.at != text.len() {
        return Err(p.error("text after the object"));
    }
    Ok(Index { nodes: p.nodes })
}

struct IndexParser<'s> {
    s: &'s [u8],
    at: usize,
    base: u32,
    nodes: Vec<abi::Node>,
}

impl IndexParser<'_> {
    fn error(&self, what: &str) -> String {
        let mut m = String::from(what);
        m.push_str(" at byte ");
        m.push_str(&self.at.to_string());
        m
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            let mut m = String::from("expected `");
            m.push(char::from(b));
            m.push('`');
            Err(self.error(&m))
        }
    }

    fn offset(&self, at: usize) -> u32 {
        self.base + at as u32
    }

    /// A string whose opening quote is at the cursor: (start, len, escaped) of its body.
    fn string(&mut self) -> Result<(usize, usize, bool), String> {
        self.at += 1;
        let start = self.at;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.at += 2;
                }
                Some(0..=0x1f) => return Err(self.error("control character in a string")),
                Some(_) => self.at += 1,
            }
        }
        let body = &self.s[start..self.at];
        if escaped && crate::json::unescape(body).is_none() {
            return Err(self.error("invalid escape"));
        }
        self.at += 1;
        Ok((start, self.at - 1 - start, escaped))
    }

    /// The members of an object whose `{` was consumed, at `depth`.
    fn members(&mut self, depth: u16) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let (key_start, key_len, key_escaped) = self.string()?;
            self.expect(b':')?;
            let flags = if key_escaped {
                abi::FLAG_KEY_ESCAPED
            } else {
                0
            };
            self.value(depth, self.offset(key_start), key_len as u32, flags)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// The elements of an array whose `[` was consumed, at `depth`.
    fn elements(&mut self, depth: u16) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.value(depth, 0, 0, abi::FLAG_NO_KEY)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// One value and its descendants, as nodes.
    fn value(&mut self, depth: u16, key_start: u32, key_len: u32, flags: u8) -> Result<(), String> {
        self.ws();
        let me = self.nodes.len();
        self.nodes.push(abi::Node {
            key_start,
            key_len,
            flags,
            depth,
            ..abi::Node::default()
        });
        let start = self.at;
        let (kind, value_start, value_len, extra) = match self.peek() {
            Some(b'"') => {
                let (s, len, escaped) = self.string()?;
                let f = if escaped { abi::FLAG_VALUE_ESCAPED } else { 0 };
                (abi::KIND_STRING, s, len, f)
            }
            Some(open @ (b'{' | b'[')) => {
                self.at += 1;
                let child = depth.checked_add(1).ok_or("too deep")?;
                if open == b'{' {
                    self.members(child)?;
                } else {
                    self.elements(child)?;
                }
                let kind = if open == b'{' {
                    abi::KIND_OBJECT
                } else {
                    abi::KIND_ARRAY
                };
                (kind, start, self.at - start, 0)
            }
            _ => {
                let literals: [(&[u8], u8); 3] = [
                    (b"null", abi::KIND_NULL),
                    (b"true", abi::KIND_TRUE),
                    (b"false", abi::KIND_FALSE),
                ];
                if let Some(&(text, kind)) = literals
                    .iter()
                    .find(|(t, _)| self.s[start..].starts_with(t))
                {
                    self.at += text.len();
                    (kind, start, text.len(), 0)
                } else {
                    while matches!(
                        self.peek(),
                        Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                    ) {
                        self.at += 1;
                    }
                    let text = core::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
                    if text.is_empty() || text.parse::<f64>().is_err() {
                        return Err(self.error("expected a value"));
                    }
                    (abi::KIND_NUMBER, start, text.len(), 0)
                }
            }
        };
        let end = self.nodes.len() as u32;
        let node = &mut self.nodes[me];
        node.kind = kind;
        node.flags |= extra;
        node.value_start = self.base + value_start as u32;
        node.value_len = value_len as u32;
        node.end = end;
        Ok(())
    }
}

fn node_bytes(n: &abi::Node, out: &mut Vec<u8>) {
    for word in [n.key_start, n.key_len, n.value_start, n.value_len] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&[n.kind, n.flags]);
    out.extend_from_slice(&n.depth.to_le_bytes());
    out.extend_from_slice(&n.end.to_le_bytes());
}

/// One event, indexed as the host would, for calling a filter function directly.
///
/// # Examples
///
/// ```
/// use sluicebox_guest::testing::TestEvent;
///
/// let event = TestEvent::new(r#"{"http":{"status":404},"tags":["a","b"]}"#);
/// assert_eq!(event.event().get_i64("http.status"), Some(404));
/// ```
#[derive(Debug, Clone)]
pub struct TestEvent {
    text: Vec<u8>,
    nodes: Vec<u8>,
    declared: Option<Vec<&'static str>>,
    raw: bool,
}

impl TestEvent {
    /// The event `json`, fully indexed, with its raw bytes: what a module without `fields`
    /// sees.
    ///
    /// # Panics
    ///
    /// When `json` is not a JSON object.
    pub fn new(json: &str) -> Self {
        let index = index_object(json.as_bytes(), 0).unwrap_or_else(|e| panic!("{e}: {json}"));
        let mut nodes = Vec::with_capacity(index.nodes.len() * NODE_LEN);
        index.nodes.iter().for_each(|n| node_bytes(n, &mut nodes));
        Self {
            text: json.as_bytes().to_vec(),
            nodes,
            declared: None,
            raw: true,
        }
    }

    /// The event `json` with a projected index of `fields` and no raw bytes: what a module
    /// with `#[filter(fields = [...])]` sees. (The paths are leaked: this is for tests.)
    ///
    /// # Panics
    ///
    /// When `json` is not a JSON object.
    pub fn projected(json: &str, fields: &[&str]) -> Self {
        let full = Self::new(json);
        let mut nodes = Vec::with_capacity(fields.len() * NODE_LEN);
        for n in project(&full.event(), fields) {
            node_bytes(&n, &mut nodes);
        }
        let declared = fields
            .iter()
            .map(|f| &*String::leak((*f).to_owned()))
            .collect();
        Self {
            text: full.text,
            nodes,
            declared: Some(declared),
            raw: false,
        }
    }

    /// The same, with (`true`) or without raw bytes.
    pub fn with_raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// The event view.
    pub fn event(&self) -> Event<'_> {
        let raw = self.raw.then_some(&self.text[..]);
        Event::new(0, &self.nodes, &self.text, raw, self.declared.as_deref())
    }
}

/// The projected nodes of `fields` in a fully indexed `event`, as the host builds them.
fn project(event: &Event<'_>, fields: &[&str]) -> Vec<abi::Node> {
    fields
        .iter()
        .map(|path| match event.get(path) {
            None => abi::Node::default(),
            Some(v) => {
                let (start, len) = offsets(event, v.raw());
                let kind = match v.kind() {
                    crate::Kind::Null => abi::KIND_NULL,
                    crate::Kind::Bool if v.as_bool() == Some(true) => abi::KIND_TRUE,
                    crate::Kind::Bool => abi::KIND_FALSE,
                    crate::Kind::Number => abi::KIND_NUMBER,
                    crate::Kind::String => abi::KIND_STRING,
                    crate::Kind::Object => abi::KIND_OBJECT,
                    crate::Kind::Array => abi::KIND_ARRAY,
                };
                abi::Node {
                    value_start: start,
                    value_len: len,
                    kind,
                    flags: if v.is_escaped() {
                        abi::FLAG_VALUE_ESCAPED
                    } else {
                        0
                    },
                    ..abi::Node::default()
                }
            }
        })
        .collect()
}

/// The offset and length of `part`, a sub-slice of the event's raw bytes.
fn offsets(event: &Event<'_>, part: &[u8]) -> (u32, u32) {
    let raw = event
        .raw()
        .expect("a fully indexed test event has raw bytes");
    let start = part.as_ptr() as usize - raw.as_ptr() as usize;
    (start as u32, part.len() as u32)
}

/// One record of an [`Outcome`], decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `SET path = value` (JSON text).
    Set {
        /// The path.
        path: String,
        /// The JSON value, as text.
        value: String,
    },
    /// `REMOVE path`.
    Remove {
        /// The path.
        path: String,
    },
    /// `RENAME from -> to`.
    Rename {
        /// The source path.
        from: String,
        /// The destination path.
        to: String,
    },
    /// `EMIT object` (JSON text).
    Emit(String),
    /// `FAIL reason`.
    Fail(String),
    /// `ROUTE output`.
    Route(String),
}

impl Record {
    /// `Record::Set` from `&str`s.
    pub fn set(path: &str, value: &str) -> Self {
        Self::Set {
            path: path.to_owned(),
            value: value.to_owned(),
        }
    }

    /// `Record::Remove` from a `&str`.
    pub fn remove(path: &str) -> Self {
        Self::Remove {
            path: path.to_owned(),
        }
    }

    /// `Record::Rename` from `&str`s.
    pub fn rename(from: &str, to: &str) -> Self {
        Self::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    /// `Record::Emit` from a `&str`.
    pub fn emit(json: &str) -> Self {
        Self::Emit(json.to_owned())
    }

    /// `Record::Fail` from a `&str`.
    pub fn fail(reason: &str) -> Self {
        Self::Fail(reason.to_owned())
    }

    /// `Record::Route` from a `&str`.
    pub fn route(name: &str) -> Self {
        Self::Route(name.to_owned())
    }
}

/// What a filter made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The event's verdict.
    pub verdict: Verdict,
    /// The records that name the event, in order.
    pub records: Vec<Record>,
}

impl Outcome {
    /// Whether the event goes on (kept, edited or replaced by at least one event).
    pub fn passes(&self) -> bool {
        match self.verdict {
            Verdict::Keep | Verdict::Edit => true,
            Verdict::Replace => self.records.iter().any(|r| matches!(r, Record::Emit(_))),
            Verdict::Drop | Verdict::Fail => false,
        }
    }

    /// The emitted events' JSON texts.
    pub fn emitted(&self) -> Vec<&str> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Emit(json) => Some(json.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Decodes a record stream, checking its framing: `(event, record)` pairs.
///
/// # Panics
///
/// When the stream breaks the ABI's framing (a truncated record, a bad op, missing padding,
/// events out of order, operands that are not UTF-8).
pub fn decode_records(stream: &[u8]) -> Vec<(u32, Record)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut last_event = 0;
    while at < stream.len() {
        assert_eq!(at % 4, 0, "record at {at} is not 4-aligned");
        let h = stream
            .get(at..at + abi::RECORD_HEADER_LEN)
            .expect("truncated record header");
        let word = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
        let (event, op, a_len, b_len) = (word(0), h[4], word(8) as usize, word(12) as usize);
        assert_eq!(&h[5..8], &[0, 0, 0], "reserved record bytes must be zero");
        assert!(
            event >= last_event,
            "records must name events in non-decreasing order"
        );
        last_event = event;
        let a_start = at + abi::RECORD_HEADER_LEN;
        let a = stream
            .get(a_start..a_start + a_len)
            .expect("truncated operand A");
        let b = stream
            .get(a_start + a_len..a_start + a_len + b_len)
            .expect("truncated operand B");
        let text = |x: &[u8]| String::from_utf8(x.to_vec()).expect("operand is not UTF-8");
        let (a, b) = (text(a), text(b));
        let record = match op {
            abi::OP_SET => Record::Set { path: a, value: b },
            abi::OP_REMOVE => Record::Remove { path: a },
            abi::OP_RENAME => Record::Rename { from: a, to: b },
            abi::OP_EMIT => Record::Emit(b),
            abi::OP_FAIL => Record::Fail(b),
            abi::OP_ROUTE => Record::Route(a),
            op => panic!("unknown record op {op}"),
        };
        let no_a = matches!(record, Record::Emit(_) | Record::Fail(_));
        let no_b = matches!(record, Record::Remove { .. } | Record::Route(_));
        assert!(
            !(no_a && a_len != 0),
            "{record:?} must have an empty operand A"
        );
        assert!(
            !(no_b && b_len != 0),
            "{record:?} must have an empty operand B"
        );
        out.push((event, record));
        let end = a_start + a_len + b_len;
        let padded = abi::pad4(end);
        assert!(
            stream
                .get(end..padded)
                .is_some_and(|pad| pad.iter().all(|&b| b == 0)),
            "record padding missing or not zero"
        );
        at = padded;
    }
    out
}

/// Checks that `records` may accompany `verdict` (the ABI's rules on [`Verdict`]).
fn check_verdict(verdict: Verdict, records: &[Record]) {
    for r in records {
        let allowed = match verdict {
            Verdict::Keep => matches!(r, Record::Route(_)),
            Verdict::Drop => false,
            Verdict::Edit => !matches!(r, Record::Emit(_) | Record::Fail(_)),
            Verdict::Replace => matches!(r, Record::Emit(_) | Record::Route(_)),
            Verdict::Fail => matches!(r, Record::Fail(_)),
        };
        assert!(
            allowed,
            "{r:?} may not name an event whose verdict is {verdict:?}"
        );
    }
}

/// A test batch laid out in one buffer, addresses being offsets into it.
pub(crate) struct Buffer(pub(crate) Vec<u8>);

impl Memory for Buffer {
    fn slice(&self, ptr: u32, len: usize) -> Option<&[u8]> {
        if len == 0 {
            return Some(&[]);
        }
        let start = ptr as usize;
        if start == 0 {
            return None;
        }
        self.0.get(start..start.checked_add(len)?)
    }
}

/// Runs filter functions over test batches, through the same code as the wasm export.
///
/// Build it like the macro's arguments: [`Harness::full`] for a module without `fields`,
/// [`Harness::projected`] for `fields = [...]`, plus [`Harness::raw`] for `raw = true`.
#[derive(Debug, Clone)]
pub struct Harness {
    fields: Option<Vec<String>>,
    raw: bool,
}

impl Harness {
    /// A module without `fields`: every event fully indexed, with raw bytes.
    pub fn full() -> Self {
        Self {
            fields: None,
            raw: true,
        }
    }

    /// A module with `fields = [...]`: one projected node per path, no raw bytes.
    pub fn projected(fields: &[&str]) -> Self {
        Self {
            fields: Some(fields.iter().map(|f| (*f).to_owned()).collect()),
            raw: false,
        }
    }

    /// Whether the batch carries raw bytes (`raw = true` with `fields`).
    pub fn raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// Lays out the batch: (memory, header address).
    pub(crate) fn layout(&self, events: &[&str]) -> (Buffer, u32) {
        let fields: Option<Vec<&str>> = self
            .fields
            .as_ref()
            .map(|f| f.iter().map(String::as_str).collect());
        // Address 0 is never valid, as in wasm; start the buffer with padding.
        let header_at = 8usize;
        let entries_at = header_at + core::mem::size_of::<abi::BatchHeader>();
        let nodes_at = entries_at + events.len() * core::mem::size_of::<abi::EventEntry>();

        let mut data = Vec::new();
        let mut nodes = Vec::new();
        let mut entries = Vec::new();
        let mut node_total = 0u32;
        for json in events {
            let base = data.len() as u32;
            data.extend_from_slice(json.as_bytes());
            let index =
                index_object(json.as_bytes(), base).unwrap_or_else(|e| panic!("{e}: {json}"));
            let event_nodes = match &fields {
                None => index.nodes,
                Some(f) => {
                    let mut flat = Vec::new();
                    index.nodes.iter().for_each(|n| node_bytes(n, &mut flat));
                    let raw = &data[base as usize..];
                    let view = Event::new(0, &flat, &data, Some(raw), None);
                    project(&view, f)
                        .into_iter()
                        .map(|mut n| {
                            if n.kind != abi::KIND_MISSING {
                                n.value_start += base;
                            }
                            n
                        })
                        .collect()
                }
            };
            let count = event_nodes.len() as u32;
            event_nodes.iter().for_each(|n| node_bytes(n, &mut nodes));
            let (raw_start, raw_len) = if self.raw {
                (base, json.len() as u32)
            } else {
                (0, 0)
            };
            for word in [raw_start, raw_len, node_total, count] {
                entries.extend_from_slice(&word.to_le_bytes());
            }
            node_total += count;
        }
        let data_at = nodes_at + nodes.len();
        let flags = (if fields.is_some() {
            abi::BATCH_PROJECTED
        } else {
            0
        }) | (if self.raw { abi::BATCH_RAW } else { 0 });
        let header = [
            abi::ABI_VERSION,
            events.len() as u32,
            entries_at as u32,
            nodes_at as u32,
            node_total,
            data_at as u32,
            data.len() as u32,
            flags,
            fields.as_ref().map_or(0, |f| f.len() as u32),
        ];
        let mut mem = vec![0u8; header_at];
        header
            .iter()
            .for_each(|w| mem.extend_from_slice(&w.to_le_bytes()));
        mem.resize(entries_at, 0);
        mem.extend_from_slice(&entries);
        mem.extend_from_slice(&nodes);
        mem.extend_from_slice(&data);
        (Buffer(mem), header_at as u32)
    }

    fn run(
        &self,
        events: &[&str],
        replace: bool,
        handle: impl FnMut(&Event<'_>, &mut Emitter),
    ) -> Vec<Outcome> {
        let (mem, header) = self.layout(events);
        let fields: Option<Vec<&str>> = self
            .fields
            .as_ref()
            .map(|f| f.iter().map(String::as_str).collect());
        let joined = fields.as_ref().map(|f| f.join("\n")).unwrap_or_default();
        let spec = Spec {
            fields: fields.as_deref(),
            joined: &joined,
            raw: self.raw,
        };
        let mut out = Output::new();
        if let Err(code) = rt::process(&mem, header, &spec, &mut out, replace, handle) {
            panic!("the batch failed: {code:?}: {}", out.message);
        }
        assert_eq!(out.verdicts.len(), events.len());
        let mut records = decode_records(out.emitter.records()).into_iter().peekable();
        let outcomes: Vec<Outcome> = out
            .verdicts
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let verdict = Verdict::from_u8(v).expect("a valid verdict byte");
                let mut mine = Vec::new();
                while let Some((_, r)) = records.next_if(|(e, _)| *e as usize == i) {
                    mine.push(r);
                }
                check_verdict(verdict, &mine);
                Outcome {
                    verdict,
                    records: mine,
                }
            })
            .collect();
        assert!(
            records.next().is_none(),
            "a record names an event past the batch"
        );
        outcomes
    }

    /// Runs a `#[filter]` function over a batch of JSON objects.
    ///
    /// # Panics
    ///
    /// When an event is not a JSON object, or the output breaks the ABI.
    pub fn filter_batch<R: FilterOutput>(
        &self,
        f: impl Fn(&Event<'_>) -> R,
        events: &[&str],
    ) -> Vec<Outcome> {
        self.run(events, false, |event, out| {
            let edits = out.edits_mut();
            if !f(event).apply(edits) {
                edits.discard();
            }
        })
    }

    /// Runs a `#[map]` function over a batch of JSON objects.
    ///
    /// # Panics
    ///
    /// As [`Harness::filter_batch`].
    pub fn map_batch<R: MapOutput>(
        &self,
        f: impl Fn(&Event<'_>, &mut Edits) -> R,
        events: &[&str],
    ) -> Vec<Outcome> {
        self.run(events, false, |event, out| {
            let edits = out.edits_mut();
            f(event, edits).apply(edits);
        })
    }

    /// Runs a `#[flat_map]` function over a batch of JSON objects.
    ///
    /// # Panics
    ///
    /// As [`Harness::filter_batch`].
    pub fn flat_map_batch<R: MapOutput>(
        &self,
        f: impl Fn(&Event<'_>, &mut Emitter) -> R,
        events: &[&str],
    ) -> Vec<Outcome> {
        self.run(events, true, |event, out| {
            f(event, out).apply(out.edits_mut());
        })
    }

    /// [`Harness::filter_batch`] on one event.
    pub fn filter<R: FilterOutput>(&self, f: impl Fn(&Event<'_>) -> R, event: &str) -> Outcome {
        self.filter_batch(f, &[event]).remove(0)
    }

    /// [`Harness::map_batch`] on one event.
    pub fn map<R: MapOutput>(
        &self,
        f: impl Fn(&Event<'_>, &mut Edits) -> R,
        event: &str,
    ) -> Outcome {
        self.map_batch(f, &[event]).remove(0)
    }

    /// [`Harness::flat_map_batch`] on one event.
    pub fn flat_map<R: MapOutput>(
        &self,
        f: impl Fn(&Event<'_>, &mut Emitter) -> R,
        event: &str,
    ) -> Outcome {
        self.flat_map_batch(f, &[event]).remove(0)
    }
}

/// Runs an `#[init]` function on parameters given as JSON text, through the same code as the
/// module's `sluicebox_init` export.
///
/// # Errors
///
/// When the parameters are malformed or `f` rejects them: the message the host would get.
///
/// # Examples
///
/// ```
/// use sluicebox_guest::{Params, testing::run_init};
///
/// fn init(params: &Params) -> Result<(), String> {
///     params.require::<u32>("n")?;
///     Ok(())
/// }
///
/// assert_eq!(run_init(init, r#"{"n":"3"}"#), Ok(()));
/// assert_eq!(run_init(init, "{}").unwrap_err(), "parameter `n` is required");
/// ```
pub fn run_init<R: InitOutput>(f: impl FnOnce(&Params) -> R, params: &str) -> Result<(), String> {
    let block_at = 8u32;
    let params_at = block_at + core::mem::size_of::<abi::InitBlock>() as u32;
    let mut mem = vec![0u8; block_at as usize];
    for word in [abi::ABI_VERSION, params_at, params.len() as u32, 0, 0] {
        mem.extend_from_slice(&word.to_le_bytes());
    }
    mem.extend_from_slice(params.as_bytes());
    let mut message = String::new();
    match rt::process_init(&Buffer(mem), block_at, &mut message, f) {
        Ok(()) => Ok(()),
        Err(_) => Err(message),
    }
}
