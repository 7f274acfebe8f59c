//! Batches: many events in one contiguous buffer plus per-event offsets, the unit every stage
//! works on. Filters see a batch through [`Events`] and answer with [`Decisions`].

mod decisions;
mod edit;
mod splice;

pub use decisions::Decisions;
pub(crate) use decisions::{DecisionError, Record, check_decisions, records};
pub(crate) use edit::{
    EDIT_WORK_PER_BATCH, EDIT_WORK_PER_EVENT, ObjEditor, Op, TopEditor, apply_edits,
};

use crate::parse::index::{self, FieldRef};
use crate::parse::{Projection, Slot};

/// Bytes of padding kept after the last event, so simd-json may read past the end.
pub const PADDING: usize = simd_json::INPUT_PADDING;

/// Sentinel for [`EventMeta::s_len`]: the event's structural positions are not computed yet
/// (it was edited and no later stage has needed them).
pub(crate) const STALE: u32 = u32::MAX;

/// Where one event's bytes and structural positions live inside its [`Batch`]. 40 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EventMeta {
    /// Offset of the event's bytes in `Batch::data`.
    pub start: u32,
    /// Length of the event's bytes (no newline, no trailing `\r`).
    pub len: u32,
    /// Offset of its structural positions in `Batch::structurals`.
    pub s_start: u32,
    /// Number of its structural positions, or [`STALE`].
    pub s_len: u32,
    /// 1-based input line number.
    pub line: u64,
    /// Byte offset of the line's start in the input.
    pub offset: u64,
    /// Index + 1 into `Batch::routes`, or 0 for the default output.
    pub route: u32,
    /// Whether a filter changed the event (it is then no longer the input's bytes).
    pub changed: bool,
    /// Whether the event is known to hold no backslash (so no key or string has an escape).
    /// False when unknown.
    pub plain: bool,
    /// Index of the event's first projection slot in `Batch::slots`, or [`NO_SLOTS`].
    pub slot_start: u32,
}

/// Sentinel for [`EventMeta::slot_start`]: no slots computed for this event.
pub(crate) const NO_SLOTS: u32 = u32::MAX;

/// One rejected event: why, where it came from, and its bytes.
///
/// Cost: owns a copy of the raw bytes (at most `dead_letter_raw_max`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Human-readable reason.
    pub reason: String,
    /// 1-based input line number.
    pub line: u64,
    /// Byte offset of the line's start in the input.
    pub offset: u64,
    /// The filter that rejected it, if a filter did.
    pub filter: Option<String>,
    /// The original line (possibly truncated, see `truncated`).
    pub raw: Vec<u8>,
    /// Whether `raw` holds only a prefix of the line.
    pub truncated: bool,
}

impl DeadLetter {
    /// The dead letter of the line at `line` / `offset` whose bytes are `raw`, keeping at
    /// most `raw_max` of them. Cost: one copy of the kept bytes.
    pub(crate) fn new(
        reason: String,
        line: u64,
        offset: u64,
        filter: Option<&str>,
        raw: &[u8],
        raw_max: usize,
    ) -> Self {
        let cut = raw.len().min(raw_max);
        DeadLetter {
            reason,
            line,
            offset,
            filter: filter.map(str::to_string),
            raw: raw[..cut].to_vec(),
            truncated: cut < raw.len(),
        }
    }

    /// Renders the dead letter as one JSON object (no newline): `reason`, `line`, `offset`,
    /// `filter` (when set), `raw` (invalid UTF-8 replaced by U+FFFD) and `raw_truncated`
    /// (when true).
    pub fn to_json(&self, out: &mut Vec<u8>) {
        use serde_json::Value;
        out.extend_from_slice(b"{\"reason\":");
        let s = |v: &str, out: &mut Vec<u8>| {
            // Writing a string Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &Value::String(v.to_string()));
        };
        s(&self.reason, out);
        out.extend_from_slice(
            format!(",\"line\":{},\"offset\":{}", self.line, self.offset).as_bytes(),
        );
        if let Some(f) = &self.filter {
            out.extend_from_slice(b",\"filter\":");
            s(f, out);
        }
        out.extend_from_slice(b",\"raw\":");
        s(&String::from_utf8_lossy(&self.raw), out);
        if self.truncated {
            out.extend_from_slice(b",\"raw_truncated\":true");
        }
        out.push(b'}');
    }
}

/// A batch of events: one contiguous byte buffer, per-event offsets, and the structural
/// positions found by the parse.
///
/// Cost: owns its buffers; a pipeline recycles batches, so in the steady state nothing is
/// allocated per batch or per event. `Send`, not shared.
#[derive(Default)]
pub struct Batch {
    /// Event bytes back to back (separators and `\r` excluded from event ranges), then
    /// [`PADDING`] bytes. Edited and emitted events are appended after, each followed by a
    /// `\n` outside its range (as an input line is), so that a run of them is one slice of
    /// output for a writer sink.
    pub(crate) data: Vec<u8>,
    pub(crate) events: Vec<EventMeta>,
    pub(crate) structurals: Vec<u32>,
    pub(crate) dead: Vec<DeadLetter>,
    pub(crate) routes: Vec<String>,
    /// Per-batch counters, summed by the pipeline.
    pub(crate) stats: crate::Stats,
    /// Position of the batch in the stream, for ordered output with several workers.
    pub(crate) seq: u64,
    /// Scratch for the stage that rebuilds `events`.
    pub(crate) next_events: Vec<EventMeta>,
    /// The paths indexed at parse time, and one slot per path per event.
    pub(crate) projection: std::sync::Arc<Projection>,
    pub(crate) slots: Vec<Slot>,
    /// How many bytes of `data`'s current allocation are known initialised, and the
    /// capacity that knowledge belongs to (see `Framer::spare`).
    pub(crate) init_len: usize,
    pub(crate) init_cap: usize,
    /// The batch's acknowledgement, when its source tracks delivery: every copy of its
    /// events holds a clone (see [`crate::ack`]).
    pub(crate) token: Option<crate::ack::AckToken>,
}

impl Clone for Batch {
    /// A copy of the batch (for benchmarks and tests). Only the bytes up to `data.len()` of
    /// the copy are known initialised, whatever the original knew of its own allocation.
    fn clone(&self) -> Self {
        let data = self.data.clone();
        Self {
            init_len: data.len(),
            init_cap: data.capacity(),
            data,
            events: self.events.clone(),
            structurals: self.structurals.clone(),
            dead: self.dead.clone(),
            routes: self.routes.clone(),
            stats: self.stats,
            seq: self.seq,
            next_events: Vec::new(),
            projection: self.projection.clone(),
            slots: self.slots.clone(),
            token: self.token.clone(),
        }
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live events (not yet dropped or dead-lettered).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are no live events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The batch's counts as a single-chain run reports them once its sink is handed the
    /// batch: its own, plus one batch, its live events as emitted, the unchanged ones, and
    /// the bytes out (each event's newline included). Cost: one pass over the events.
    pub(crate) fn delivered_stats(&self) -> crate::Stats {
        let mut s = self.stats;
        s.batches = 1;
        s.emitted = self.events.len() as u64;
        for m in &self.events {
            s.unchanged += u64::from(!m.changed);
            s.bytes_out += u64::from(m.len) + 1;
        }
        s
    }

    /// Clears the batch for reuse, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.events.clear();
        self.structurals.clear();
        self.dead.clear();
        self.routes.clear();
        self.stats = crate::Stats::default();
        self.next_events.clear();
        self.slots.clear();
        self.token = None;
    }

    /// Gives the batch up undelivered: its acknowledgement (if any) is marked failed, so
    /// its positions are replayed after a restart.
    pub(crate) fn abandon(&mut self) {
        if let Some(t) = self.token.take() {
            t.fail();
        }
    }

    /// The batch's acknowledgement, if its source tracks delivery.
    pub fn ack_token(&self) -> Option<&crate::ack::AckToken> {
        self.token.as_ref()
    }

    /// A view of all live events.
    pub fn events(&self) -> Events<'_> {
        Events {
            batch: self,
            range: 0..self.events.len(),
        }
    }

    pub(crate) fn events_range(&self, range: std::ops::Range<usize>) -> Events<'_> {
        Events { batch: self, range }
    }

    /// The live events as a sink sees them.
    pub fn output(&self) -> crate::Output<'_> {
        crate::Output {
            data: &self.data,
            events: &self.events,
            routes: &self.routes,
            token: self.token.as_ref(),
            structurals: &self.structurals,
            tally: None,
        }
    }

    /// The dead letters this batch collected so far.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead
    }

    /// Bytes of a live event.
    pub(crate) fn bytes(&self, m: &EventMeta) -> &[u8] {
        &self.data[m.start as usize..(m.start + m.len) as usize]
    }

    /// Makes sure every live event's structural positions are computed (edited events'
    /// are computed lazily, only when a later stage needs them).
    pub(crate) fn refresh_structurals(&mut self, max_depth: usize, filter: &str, raw_max: usize) {
        let mut scratch = Vec::new();
        let mut events = std::mem::take(&mut self.events);
        events.retain_mut(|m| {
            if m.s_len != STALE {
                return true;
            }
            let bytes = &self.data[m.start as usize..(m.start + m.len) as usize];
            // Edited events were produced from checked parts; validate anyway, so that a
            // defect can only ever dead-letter an event, never pass on a broken one.
            match crate::parse::scalar::validate(bytes, max_depth, &mut scratch) {
                Ok(()) => {
                    m.s_start = self.structurals.len() as u32;
                    m.s_len = scratch.len() as u32;
                    self.structurals.extend_from_slice(&scratch);
                    m.slot_start = self.slots.len() as u32;
                    self.projection.walk_slots(bytes, &scratch, &mut self.slots);
                    true
                }
                Err(e) => {
                    let reason = format!("the event {filter} produced is not valid: {e}");
                    let dead =
                        DeadLetter::new(reason, m.line, m.offset, Some(filter), bytes, raw_max);
                    self.dead.push(dead);
                    self.stats.dead_lettered += 1;
                    false
                }
            }
        });
        self.events = events;
    }
}

/// A read-only view of some live events of a batch, handed to [`crate::Filter::process`].
///
/// Cost: two words; indexing is O(1), field lookup walks the event's structural positions.
#[derive(Clone)]
pub struct Events<'a> {
    pub(crate) batch: &'a Batch,
    pub(crate) range: std::ops::Range<usize>,
}

impl<'a> Events<'a> {
    /// Number of events in the view.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// The `i`th event of the view.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> EventRef<'a> {
        assert!(
            i < self.len(),
            "event index {i} out of range {}",
            self.len()
        );
        let meta = &self.batch.events[self.range.start + i];
        EventRef {
            batch: self.batch,
            meta,
        }
    }

    /// The paths the parse stage indexed for these events.
    pub(crate) fn projection(&self) -> &'a Projection {
        &self.batch.projection
    }

    /// Iterates the events of the view in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventRef<'a>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// One event: its bytes, its origin, and field lookup by path.
#[derive(Clone, Copy)]
pub struct EventRef<'a> {
    batch: &'a Batch,
    meta: &'a EventMeta,
}

impl<'a> EventRef<'a> {
    /// The event's JSON text, exactly as it arrived unless a filter changed it.
    pub fn bytes(&self) -> &'a [u8] {
        self.batch.bytes(self.meta)
    }

    /// 1-based input line number.
    pub fn line(&self) -> u64 {
        self.meta.line
    }

    /// Byte offset of the input line's start.
    pub fn offset(&self) -> u64 {
        self.meta.offset
    }

    pub(crate) fn structurals(&self) -> &'a [u32] {
        let m = self.meta;
        if m.s_len == STALE {
            return &[];
        }
        &self.batch.structurals[m.s_start as usize..(m.s_start + m.s_len) as usize]
    }

    /// Looks up a field by path (see `sluicebox_abi::path_syntax`), e.g. `"http.method"`.
    /// Returns `None` when the path is absent. A path some filter declared (see
    /// [`crate::Filter::fields`]) was indexed at parse time and costs a slot read.
    pub fn field(&self, path: &str) -> Option<FieldRef<'a>> {
        if let Some(k) = self.batch.projection.position(path.as_bytes()) {
            return self.slot(k);
        }
        index::lookup(self.bytes(), self.structurals(), path.as_bytes())
    }

    /// The parse-time slot `k` of the projection, as a field.
    pub(crate) fn slot(&self, k: usize) -> Option<FieldRef<'a>> {
        let m = self.meta;
        if m.slot_start == NO_SLOTS {
            let path = &self.batch.projection.paths[k];
            return index::lookup(self.bytes(), self.structurals(), path);
        }
        let slot = self.batch.slots.get(m.slot_start as usize + k)?;
        // KIND_MISSING: the event has no such field.
        let kind = index::FieldKind::from_abi(slot.kind)?;
        let bytes = self.bytes();
        let (a, b) = (slot.start as usize, (slot.start + slot.len) as usize);
        Some(FieldRef {
            kind,
            raw: bytes.get(a..b)?,
            start: slot.start,
            escaped: slot.escaped,
        })
    }
}
