//! Parse stage: validates every framed event, keeps its structural positions for later field
//! lookups, finds the fields the filters declared, and dead-letters what is not a JSON
//! object, with a reason.
//!
//! Two validators give the same decisions (the scalar validator is the definition):
//!
//! - [`JsonEngine::Sluice`] (default): the strict RFC 8259 validator of [`scalar`], one
//!   forward pass that writes the structural positions straight into the batch and, while it
//!   reads the top-level keys, notes where the declared fields are. Cost per event: one pass
//!   over its bytes, no copy, no allocation.
//! - [`JsonEngine::SimdJson`]: simd-json's `fill_tape_padded` in place with reused
//!   `Buffers` (events containing a backslash are first copied to a scratch buffer, because
//!   simd-json unescapes in place), plus a copy of its structural positions and a walk for
//!   each declared field. A line simd-json rejects goes to the scalar validator, which
//!   explains the rejection precisely or accepts the valid JSON simd-json refuses (numbers
//!   beyond `f64`, such as `1e400`).

pub(crate) mod fast;
pub mod index;
pub mod scalar;

use std::sync::Arc;

use crate::batch::{Batch, DeadLetter, PADDING};

/// Which validator the parse stage runs. Both accept and reject exactly the same lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JsonEngine {
    /// sluicebox's own one-pass validator (the default): measured faster on log lines,
    /// because it builds no tape and converts no numbers (see `sluicebox bench`).
    #[default]
    Sluice,
    /// simd-json's tape parser, with the scalar validator for the lines it rejects.
    SimdJson,
}

/// The field paths indexed at parse time: the union of what the filters declare.
///
/// Cost: built once per run; `position` is a linear scan over a few paths.
#[derive(Debug, Default)]
pub struct Projection {
    /// The paths as written (see `sluicebox_abi::path_syntax`).
    pub(crate) paths: Vec<Vec<u8>>,
    /// The same paths split into unescaped components.
    comps: Vec<Vec<Vec<u8>>>,
    /// The distinct first components, and for each path the index of its own.
    tops: Vec<Vec<u8>>,
    top_of: Vec<usize>,
    /// Bit `n` (`n < 63`): some key of `tops` is `n` bytes long; bit 63: some is longer.
    top_lens: u64,
}

impl Projection {
    /// A projection of `paths` (duplicates and empty paths removed, order kept).
    pub fn new<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> Self {
        let mut p = Projection::default();
        for path in paths {
            let b = path.as_ref().as_bytes();
            if b.is_empty() || p.position(b).is_some() {
                continue;
            }
            let comps: Vec<Vec<u8>> = index::path_components(b).map(|c| c.into_owned()).collect();
            let top = match p.tops.iter().position(|t| *t == comps[0]) {
                Some(t) => t,
                None => {
                    p.top_lens |= length_bit(comps[0].len());
                    p.tops.push(comps[0].clone());
                    p.tops.len() - 1
                }
            };
            p.top_of.push(top);
            p.comps.push(comps);
            p.paths.push(b.to_vec());
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
        self.paths
            .iter()
            .position(|p| sluicebox_abi::bytes_eq(p, path))
    }

    /// Appends one slot per path for a validated event. `tops[t]` is the structural index
    /// of the value of the top-level key `self.tops[t]` (`u32::MAX` when absent), or `None`
    /// when unknown, in which case every path is found by walking the structural positions.
    ///
    /// `escapes` false promises that the event has no backslash, so no string value needs
    /// scanning for one.
    fn push_slots(
        &self,
        bytes: &[u8],
        s: &[u32],
        tops: Option<&[u32]>,
        escapes: bool,
        out: &mut Vec<Slot>,
    ) {
        for (k, comps) in self.comps.iter().enumerate() {
            let vi = match tops {
                Some(tops) => match tops[self.top_of[k]] {
                    u32::MAX => None,
                    vi if comps.len() == 1 => Some(vi as usize),
                    vi => index::lookup_index(bytes, s, vi as usize, &comps[1..]),
                },
                None => index::lookup_index(bytes, s, 0, comps),
            };
            let slot = match vi.and_then(|vi| index::value_at(bytes, s, vi)) {
                None => Slot::default(),
                Some((kind, vs, ve, _)) if kind == sluicebox_abi::KIND_STRING => {
                    let raw = &bytes[vs + 1..ve - 1];
                    Slot {
                        start: vs as u32 + 1,
                        len: raw.len() as u32,
                        kind,
                        escaped: escapes && index::has_backslash(raw),
                    }
                }
                Some((kind, vs, ve, _)) => Slot {
                    start: vs as u32,
                    len: (ve - vs) as u32,
                    kind,
                    escaped: false,
                },
            };
            out.push(slot);
        }
    }

    /// Appends one slot per path for an event, found by walking its structural positions.
    pub(crate) fn walk_slots(&self, bytes: &[u8], s: &[u32], out: &mut Vec<Slot>) {
        self.push_slots(bytes, s, None, true, out);
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

/// Reusable parser state. One per worker.
///
/// Cost: a few buffers sized to the largest event seen; no allocation in the steady state.
pub struct Parser {
    engine: JsonEngine,
    max_depth: usize,
    raw_max: usize,
    projection: Arc<Projection>,
    /// Per top-level key of the projection: structural index of its value in this event.
    tops: Vec<u32>,
    scalar_scratch: scalar::Scratch,
    /// The SIMD fast path this CPU runs (see `fast::level`).
    fast: fast::Level,
    // simd-json engine only.
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
    scratch: Vec<u8>,
    scalar_structurals: Vec<u32>,
}

/// The SIMD instruction set the parse stage runs on this machine: `"avx512vbmi2"`,
/// `"avx512bw"`, `"avx2"`, or `"scalar"` (no fast path). `SLUICEBOX_SIMD=avx512bw`, `=avx2`
/// or `=scalar` lowers it, to compare instruction sets on one machine. Benchmark figures
/// should be quoted with it.
pub fn simd_level() -> &'static str {
    match fast::level() {
        fast::Level::Avx512Vbmi2 => "avx512vbmi2",
        fast::Level::Avx512 => "avx512bw",
        fast::Level::Avx2 => "avx2",
        fast::Level::None => "scalar",
    }
}

/// [`Projection::top_lens`]' bit for a key of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// The projection's hook into the fast path's walk: notes the value index of each wanted
/// top-level key (the last of duplicates). A key without escapes whose length no wanted key
/// has is passed over with one test, and the hook is inlined into the walk: as a closure
/// called for every key it cost about 5% of a drop filter's run (`perf`, AVX-512).
struct Tops<'a> {
    want: &'a [Vec<u8>],
    lens: u64,
    tops: &'a mut Vec<u32>,
}

impl fast::TopKey for Tops<'_> {
    #[inline(always)]
    fn key(&mut self, key: &[u8], vi: u32, escapes: bool) {
        // A raw key with escapes is at least as long as its decoded text: no length test.
        if !escapes && self.lens & length_bit(key.len()) == 0 {
            return;
        }
        for (t, w) in self.want.iter().enumerate() {
            let hit = if escapes {
                index::key_eq(key, w)
            } else {
                sluicebox_abi::bytes_eq(key, w)
            };
            if hit {
                self.tops[t] = vi;
            }
        }
    }
}

impl Parser {
    /// A parser that accepts nesting up to `max_depth` and keeps at most `raw_max` bytes of a
    /// rejected line in its dead letter.
    pub fn new(max_depth: usize, raw_max: usize) -> Self {
        Self::with_projection(
            max_depth,
            raw_max,
            Arc::new(Projection::default()),
            JsonEngine::default(),
        )
    }

    /// A parser that also indexes the paths of `projection` for every event, with `engine`.
    pub fn with_projection(
        max_depth: usize,
        raw_max: usize,
        projection: Arc<Projection>,
        engine: JsonEngine,
    ) -> Self {
        Self {
            engine,
            max_depth,
            raw_max,
            tops: Vec::with_capacity(projection.tops.len()),
            scalar_scratch: scalar::Scratch::default(),
            fast: fast::level(),
            projection,
            buffers: simd_json::Buffers::with_max_depth(4096, max_depth),
            tape: Some(simd_json::Tape::null()),
            scratch: Vec::new(),
            scalar_structurals: Vec::new(),
        }
    }

    /// The parse stage on its own: validates every event of a batch that [`Framer::fill`]
    /// just framed, keeps their structural positions (and the projection's fields), and
    /// moves rejected events to the batch's dead letters. [`crate::Pipeline`] drives it for
    /// you.
    ///
    /// [`Framer::fill`]: crate::frame::Framer::fill
    pub fn parse(&mut self, batch: &mut Batch) {
        self.parse_batch(batch);
    }

    /// Validates every event of a freshly framed batch in place, recording structural
    /// positions and projection slots, and moving rejected events to the batch's dead letters.
    pub(crate) fn parse_batch(&mut self, batch: &mut Batch) {
        let n = batch.events.len();
        batch.structurals.clear();
        batch.slots.clear();
        if !Arc::ptr_eq(&batch.projection, &self.projection) {
            batch.projection = self.projection.clone();
        }
        let projecting = !self.projection.is_empty();
        let mut kept = 0usize;
        for i in 0..n {
            let mut m = batch.events[i];
            let start = m.start as usize;
            let len = m.len as usize;
            let s_start = batch.structurals.len();
            let verdict = match self.engine {
                JsonEngine::Sluice => self.validate_sluice(batch, start, len),
                JsonEngine::SimdJson => self.validate_simd(batch, start, len).map(|()| true),
            };
            match verdict {
                Ok(escapes) => {
                    m.plain = !escapes;
                    m.s_start = s_start as u32;
                    m.s_len = (batch.structurals.len() - s_start) as u32;
                    if projecting {
                        m.slot_start = batch.slots.len() as u32;
                        let line = &batch.data[start..start + len];
                        let s = &batch.structurals[s_start..];
                        let tops = (self.engine == JsonEngine::Sluice).then_some(&self.tops[..]);
                        self.projection
                            .push_slots(line, s, tops, escapes, &mut batch.slots);
                    }
                    batch.events[kept] = m;
                    kept += 1;
                }
                Err(reason) => {
                    batch.structurals.truncate(s_start);
                    let raw = &batch.data[start..start + len];
                    let dead = DeadLetter::new(reason, m.line, m.offset, None, raw, self.raw_max);
                    batch.dead.push(dead);
                    batch.stats.dead_lettered += 1;
                }
            }
        }
        batch.events.truncate(kept);
    }

    /// The sluicebox validator: appends the positions to `batch.structurals` and notes the
    /// top-level keys of the projection in `self.tops`. `Ok(escapes)`: false when the event
    /// certainly has no backslash.
    fn validate_sluice(
        &mut self,
        batch: &mut Batch,
        start: usize,
        len: usize,
    ) -> Result<bool, String> {
        let line = &batch.data[start..start + len];
        let base = batch.structurals.len();
        let ntops = self.projection.tops.len();
        self.tops.clear();
        self.tops.resize(ntops, u32::MAX);
        let want = &self.projection.tops;
        let tops = &mut self.tops;
        let mut hook = Tops {
            want,
            lens: self.projection.top_lens,
            tops,
        };
        match fast::validate(
            self.fast,
            &batch.data[start..],
            len,
            self.max_depth,
            &mut batch.structurals,
            &mut hook,
        ) {
            fast::Vouched::No => {}
            fast::Vouched::Valid => {
                return check_object(line, &batch.structurals[base..]).map(|()| true);
            }
            fast::Vouched::Plain => {
                return check_object(line, &batch.structurals[base..]).map(|()| false);
            }
        }
        // Not vouched for by the fast path: the scalar validator decides, and explains.
        let tops = hook.tops;
        tops.clear();
        tops.resize(ntops, u32::MAX);
        let result = scalar::validate_append(
            line,
            self.max_depth,
            &mut batch.structurals,
            &mut self.scalar_scratch,
            |key, vi, _| {
                for (t, w) in want.iter().enumerate() {
                    if index::key_eq(key, w) {
                        tops[t] = vi;
                    }
                }
            },
        );
        match result {
            Ok(()) => check_object(line, &batch.structurals[base..]).map(|()| true),
            Err(e) => Err(self.reason(e)),
        }
    }

    /// simd-json, with the scalar validator for what it rejects; appends the positions.
    fn validate_simd(&mut self, batch: &mut Batch, start: usize, len: usize) -> Result<(), String> {
        let data = &mut batch.data;
        let simd_ok = if memchr::memchr(b'\\', &data[start..start + len]).is_none() {
            // No escapes: simd-json leaves the bytes untouched, so parse in place. The bytes
            // after the event (later events, then PADDING) serve as its padding.
            debug_assert!(data.len() >= start + len + PADDING);
            self.run_simd(&mut data[start..], len)
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(&data[start..start + len]);
            self.scratch.resize(len + PADDING, 0);
            let mut scratch = std::mem::take(&mut self.scratch);
            let ok = self.run_simd(&mut scratch, len);
            self.scratch = scratch;
            ok
        };
        let line = &batch.data[start..start + len];
        let s: &[u32] = if simd_ok {
            self.buffers.structural_indexes()
        } else {
            // Rejected by simd-json: explain precisely, or accept what only it refuses.
            match scalar::validate(line, self.max_depth, &mut self.scalar_structurals) {
                Ok(()) => &self.scalar_structurals,
                Err(e) => return Err(self.reason(e)),
            }
        };
        check_object(line, s)?;
        batch.structurals.extend_from_slice(s);
        Ok(())
    }

    fn reason(&self, e: scalar::SyntaxError) -> String {
        if e.kind == scalar::SyntaxErrorKind::TooDeep {
            format!(
                "invalid JSON: nesting deeper than the maximum of {} levels at byte {}",
                self.max_depth, e.offset
            )
        } else {
            e.to_string()
        }
    }

    fn run_simd(&mut self, input: &mut [u8], len: usize) -> bool {
        let tape = self.tape.take().unwrap_or_else(simd_json::Tape::null);
        let mut tape = tape.reset();
        let ok = simd_json::fill_tape_padded(input, len, &mut self.buffers, &mut tape).is_ok();
        self.tape = Some(tape.reset());
        ok
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Framer;

    /// The projection's slots agree with a lookup over the structural positions for every
    /// declared top-level key, whatever its length (the hook passes over keys by length) and
    /// however the event spells it (escapes, non-ASCII text elsewhere in the event).
    #[test]
    fn declared_keys_are_found_whatever_their_length_or_spelling() {
        let long = "k".repeat(70);
        let keys = ["level", "é", "", "a.b", long.as_str(), "levex"];
        let declared: Vec<String> = keys
            .iter()
            .filter(|k| !k.is_empty() && !k.contains('.'))
            .map(|k| k.to_string())
            .collect();
        let events = [
            r#"{"level":"DEBUG","levex":1}"#.to_string(),
            r#"{"lev\u0065l":"WARN","x":"é"}"#.to_string(),
            r#"{"levek":1,"leve":2,"levels":3}"#.to_string(),
            r#"{"\u00e9":1,"é":2}"#.to_string(),
            format!(r#"{{"{long}":true,"{}":false}}"#, "k".repeat(71)),
            format!(r#"{{"{}\u006b":"x"}}"#, "k".repeat(69)),
            r#"{"level":{"nested":1},"level":"last"}"#.to_string(),
            r#"{"levex":"no backslash, non-ASCII é"}"#.to_string(),
        ];
        let text: String = events.iter().map(|e| format!("{e}\n")).collect();
        let mut batch = Batch::new();
        let mut framer = Framer::new(1024, 1 << 20, 1 << 20, 64);
        assert!(framer.fill(&mut text.as_bytes(), &mut batch).unwrap());
        let projection = Arc::new(Projection::new(&declared));
        Parser::with_projection(64, 64, projection, JsonEngine::Sluice).parse_batch(&mut batch);
        assert_eq!(batch.events.len(), events.len(), "{:?}", batch.dead);
        for (i, e) in batch.events().iter().enumerate() {
            for key in &declared {
                let k = batch.projection.position(key.as_bytes()).unwrap();
                let slot = e.slot(k).map(|f| (f.start, f.raw.to_vec()));
                let walk = index::lookup(e.bytes(), e.structurals(), key.as_bytes())
                    .map(|f| (f.start, f.raw.to_vec()));
                assert_eq!(slot, walk, "event {i} {:?}, key {key:?}", events[i]);
            }
        }
        // The cases the length test must not skip, checked outright.
        let level = |i: usize| {
            let e = batch.events().iter().nth(i).unwrap();
            e.field("level")
                .map(|f| String::from_utf8_lossy(f.raw).into_owned())
        };
        assert_eq!(level(0).as_deref(), Some("DEBUG"));
        assert_eq!(level(1).as_deref(), Some("WARN"));
        assert_eq!(level(2), None);
        assert_eq!(level(6).as_deref(), Some("last"));
    }
}
