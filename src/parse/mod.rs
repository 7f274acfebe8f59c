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

use crate::batch::{Batch, DeadLetter, PADDING};

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
}

impl Parser {
    /// A parser that accepts nesting up to `max_depth` and keeps at most `raw_max` bytes of a
    /// rejected line in its dead letter.
    pub fn new(max_depth: usize, raw_max: usize) -> Self {
        Self {
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
        let line = &data[start..start + len];
        let simd_ok = if memchr::memchr(b'\\', line).is_none() {
            // No escapes: simd-json leaves the bytes untouched, so parse in place. The bytes
            // after the event (later events, then PADDING) serve as its padding.
            debug_assert!(data.len() >= start + len + PADDING);
            self.run_simd(&mut data[start..], len)
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
