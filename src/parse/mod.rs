//! Parse stage: validates every framed event with simd-json, keeps its structural positions
//! for later field lookups, and dead-letters what is not a JSON object, with a reason.
//!
//! Cost per event: one simd-json stage 1 + stage 2 pass in place over the batch buffer
//! (events containing a backslash are first copied to a scratch buffer, because simd-json
//! unescapes in place), plus a copy of the structural positions. Only rejected lines pay for
//! the scalar validator, which explains the rejection precisely and accepts the valid JSON
//! simd-json refuses (numbers beyond `f64`, such as `1e400`).

pub mod index;
pub mod scalar;

use std::sync::Arc;

use sluicebox_abi as abi;
use simd_json::{Node, StaticNode};

use crate::batch::{Batch, DeadLetter, PADDING};

/// The field paths indexed at parse time: the union of what the filters declare.
///
/// Cost: built once per run; `position` is a linear scan over a few paths.
#[derive(Debug, Default)]
pub struct Projection {
    /// The paths as written (see `sluicebox_abi::path_syntax`).
    pub(crate) paths: Vec<Vec<u8>>,
    /// The same paths split into unescaped components.
    comps: Vec<Vec<Vec<u8>>>,
}

impl Projection {
    /// A projection of `paths` (duplicates removed, order kept).
    pub fn new<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> Self {
        let mut p = Projection::default();
        for path in paths {
            let b = path.as_ref().as_bytes();
            if p.position(b).is_none() {
                p.comps.push(index::path_components(b).map(|c| c.into_owned()).collect());
                p.paths.push(b.to_vec());
            }
        }
        p
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The slot index of `path`, if projected.
    #[inline]
    pub(crate) fn position(&self, path: &[u8]) -> Option<usize> {
        self.paths.iter().position(|p| p == path)
    }

    /// Appends one slot per path for an event, found by walking its structural positions.
    pub(crate) fn walk_slots(&self, bytes: &[u8], s: &[u32], out: &mut Vec<Slot>) {
        for path in &self.paths {
            out.push(index::lookup(bytes, s, path).map_or_else(Slot::default, |f| Slot {
                start: f.start,
                len: f.raw.len() as u32,
                kind: f.kind,
                escaped: f.escaped,
            }));
        }
    }
}

/// Where one projected field of one event is: offset and length inside the event (strings
/// without their quotes), kind (`KIND_MISSING` when absent), and whether a string has escapes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Slot {
    pub start: u32,
    pub len: u32,
    pub kind: u8,
    pub escaped: bool,
}

/// A slot found on the tape, before the line's bytes are readable again.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Missing,
    /// A string value: content offset and length (the line has no escapes, so raw = decoded).
    Str(u32, u32),
    /// A number or literal after the key whose closing quote is at this offset.
    Scalar(u32, u8),
    /// An object or array: found by walking the structural positions.
    Walk,
}

/// Reusable parser state: simd-json buffers, tape and scratch. One per worker.
///
/// Cost: a few buffers sized to the largest event seen; no allocation in the steady state.
pub struct Parser {
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
    scratch: Vec<u8>,
    scalar_structurals: Vec<u32>,
    max_depth: usize,
    raw_max: usize,
    projection: Arc<Projection>,
    pending: Vec<Pending>,
}

impl Parser {
    /// A parser that accepts nesting up to `max_depth` and keeps at most `raw_max` bytes of a
    /// rejected line in its dead letter.
    pub fn new(max_depth: usize, raw_max: usize) -> Self {
        Self::with_projection(max_depth, raw_max, Arc::new(Projection::default()))
    }

    /// A parser that also indexes the paths of `projection` for every event.
    pub fn with_projection(max_depth: usize, raw_max: usize, projection: Arc<Projection>) -> Self {
        Self {
            projection,
            pending: Vec::new(),
            buffers: simd_json::Buffers::with_max_depth(4096, max_depth),
            tape: Some(simd_json::Tape::null()),
            scratch: Vec::new(),
            scalar_structurals: Vec::new(),
            max_depth,
            raw_max,
        }
    }

    /// Validates every event of a freshly framed batch in place, recording structural
    /// positions and moving rejected events to the batch's dead letters.
    pub(crate) fn parse_batch(&mut self, batch: &mut Batch) {
        let n = batch.events.len();
        batch.structurals.clear();
        batch.slots.clear();
        batch.projection = self.projection.clone();
        let f = self.projection.len();
        let mut kept = 0usize;
        for i in 0..n {
            let mut m = batch.events[i];
            let start = m.start as usize;
            let len = m.len as usize;
            let verdict = self.validate(&mut batch.data, start, len);
            match verdict {
                Ok(from_scalar) => {
                    let s: &[u32] = if from_scalar {
                        &self.scalar_structurals
                    } else {
                        self.buffers.structural_indexes()
                    };
                    m.s_start = batch.structurals.len() as u32;
                    m.s_len = s.len() as u32;
                    batch.structurals.extend_from_slice(s);
                    if f > 0 {
                        m.slot_start = batch.slots.len() as u32;
                        let line = &batch.data[start..start + len];
                        let s = &batch.structurals[m.s_start as usize..];
                        if !from_scalar && self.pending.len() == f {
                            finish_slots(&self.projection, &self.pending, line, s, &mut batch.slots);
                        } else {
                            self.projection.walk_slots(line, s, &mut batch.slots);
                        }
                    }
                    batch.events[kept] = m;
                    kept += 1;
                }
                Err(reason) => {
                    let raw = &batch.data[start..start + len];
                    let cut = raw.len().min(self.raw_max);
                    batch.dead.push(DeadLetter {
                        reason,
                        line: m.line,
                        offset: m.offset,
                        filter: None,
                        raw: raw[..cut].to_vec(),
                        truncated: cut < raw.len(),
                    });
                    batch.stats.dead_lettered += 1;
                }
            }
        }
        batch.events.truncate(kept);
    }

    /// Ok(true) when the scalar validator's structurals apply, Ok(false) for simd-json's.
    fn validate(&mut self, data: &mut [u8], start: usize, len: usize) -> Result<bool, String> {
        self.pending.clear();
        let line = &data[start..start + len];
        let simd_ok = if memchr::memchr(b'\\', line).is_none() {
            // No escapes: simd-json leaves the bytes untouched, so parse in place. The bytes
            // after the event (later events, then PADDING) serve as its padding. Its tape
            // then points into the line, so projected fields are found on the tape.
            debug_assert!(data.len() >= start + len + PADDING);
            self.run_simd_projecting(&mut data[start..], len)
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(line);
            self.scratch.resize(len + PADDING, 0);
            let mut scratch = std::mem::take(&mut self.scratch);
            let ok = self.run_simd(&mut scratch, len);
            self.scratch = scratch;
            ok
        };
        let line = &data[start..start + len];
        if simd_ok {
            return check_object(line, self.buffers.structural_indexes()).map(|()| false);
        }
        // Rejected by simd-json: explain precisely, or accept what only it refuses.
        match scalar::validate(line, self.max_depth, &mut self.scalar_structurals) {
            Ok(()) => check_object(line, &self.scalar_structurals).map(|()| true),
            Err(e) if e.kind == scalar::SyntaxErrorKind::TooDeep => Err(format!(
                "invalid JSON: nesting deeper than the maximum of {} levels at byte {}",
                self.max_depth, e.offset
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Like `run_simd`, and while the tape is alive, records where each projected path is.
    fn run_simd_projecting(&mut self, input: &mut [u8], len: usize) -> bool {
        if self.projection.is_empty() {
            return self.run_simd(input, len);
        }
        let base = input.as_ptr() as usize;
        let tape = self.tape.take().unwrap_or_else(simd_json::Tape::null);
        let mut tape = tape.reset();
        let ok = simd_json::fill_tape_padded(input, len, &mut self.buffers, &mut tape).is_ok();
        if ok {
            for comps in &self.projection.comps {
                self.pending.push(tape_find(&tape.0, base, comps));
            }
        }
        self.tape = Some(tape.reset());
        ok
    }

    fn run_simd(&mut self, input: &mut [u8], len: usize) -> bool {
        let tape = self.tape.take().unwrap_or_else(simd_json::Tape::null);
        let mut tape = tape.reset();
        let ok = simd_json::fill_tape_padded(input, len, &mut self.buffers, &mut tape).is_ok();
        self.tape = Some(tape.reset());
        ok
    }
}

/// Number of tape nodes of the value at `i` (itself and its subtree).
#[inline]
fn node_size(n: &Node<'_>) -> usize {
    match n {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// Finds the path `comps` on the tape of an object parsed in place at address `base`. Keys
/// compare decoded; the last duplicate wins.
fn tape_find(tape: &[Node<'_>], base: usize, comps: &[Vec<u8>]) -> Pending {
    let mut i = 0usize;
    let mut key_end = 0u32;
    for comp in comps {
        let Some(Node::Object { len, .. }) = tape.get(i) else { return Pending::Missing };
        let mut j = i + 1;
        let mut hit = None;
        for _ in 0..*len {
            let (Some(Node::String(k)), Some(v)) = (tape.get(j), tape.get(j + 1)) else { return Pending::Walk };
            if k.as_bytes() == comp.as_slice() {
                hit = Some((j + 1, (k.as_ptr() as usize - base + k.len()) as u32));
            }
            j += 1 + node_size(v);
        }
        let Some((vi, ke)) = hit else { return Pending::Missing };
        i = vi;
        key_end = ke;
    }
    match tape.get(i) {
        Some(Node::String(v)) => Pending::Str((v.as_ptr() as usize - base) as u32, v.len() as u32),
        Some(Node::Static(st)) => {
            let kind = match st {
                StaticNode::Null => abi::KIND_NULL,
                StaticNode::Bool(true) => abi::KIND_TRUE,
                StaticNode::Bool(false) => abi::KIND_FALSE,
                _ => abi::KIND_NUMBER,
            };
            Pending::Scalar(key_end, kind)
        }
        _ => Pending::Walk,
    }
}

/// Turns tape findings into slots, reading the line for scalar extents.
fn finish_slots(projection: &Projection, pending: &[Pending], line: &[u8], s: &[u32], out: &mut Vec<Slot>) {
    let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    for (k, p) in pending.iter().enumerate() {
        let slot = match *p {
            Pending::Missing => Slot::default(),
            Pending::Str(start, len) => Slot { start, len, kind: abi::KIND_STRING, escaped: false },
            Pending::Scalar(key_end, kind) => {
                // After the key's closing quote: whitespace, ':', whitespace, then the value
                // up to a delimiter.
                let mut p = key_end as usize + 1;
                while p < line.len() && (ws(line[p]) || line[p] == b':') {
                    p += 1;
                }
                let mut e = p;
                while e < line.len() && !ws(line[e]) && !matches!(line[e], b',' | b'}' | b']') {
                    e += 1;
                }
                Slot { start: p as u32, len: (e - p) as u32, kind, escaped: false }
            }
            Pending::Walk => {
                let mut one = Vec::with_capacity(1);
                Projection { paths: vec![projection.paths[k].clone()], comps: Vec::new() }.walk_slots(line, s, &mut one);
                one[0]
            }
        };
        out.push(slot);
    }
}

fn check_object(line: &[u8], s: &[u32]) -> Result<(), String> {
    match s.first().map(|&p| line[p as usize]) {
        Some(b'{') => Ok(()),
        Some(c) => Err(format!(
            "not an object: the event is a JSON {}, and an event must be a JSON object",
            kind_name(c)
        )),
        None => Err("not an object: empty".into()),
    }
}

fn kind_name(c: u8) -> &'static str {
    match c {
        b'[' => "array",
        b'"' => "string",
        b't' | b'f' => "boolean",
        b'n' => "null",
        _ => "number",
    }
}
