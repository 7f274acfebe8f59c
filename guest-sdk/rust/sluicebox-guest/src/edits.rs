//! What a filter says about an event: [`Edits`] (map filters) and [`Emitter`] (flat-map
//! filters) write the ABI's record stream straight into one buffer that lives as long as the
//! instance, so the steady state allocates nothing.

use alloc::vec::Vec;

use sluicebox_abi::{self as abi, Verdict};

use crate::event::{Member, Value};
use crate::json;

/// The changes a `#[map]` filter makes to one event.
///
/// Every call appends one record to the batch's record stream. The event's verdict follows from
/// the calls: no change keeps it as it is, a `set`/`remove`/`rename` edits it, [`Edits::discard`]
/// drops it and [`Edits::fail`] (or returning `Err`) dead-letters it; after one of these last
/// two, every other call is ignored, and the records already made for the event are withdrawn.
/// [`Edits::route`] sends the event to a named output, with any verdict but drop and fail.
///
/// The host applies the edits in order. Paths use [`sluicebox_abi::path_syntax`].
///
/// # Examples
///
/// ```
/// use sluicebox_guest::{Edits, Verdict};
///
/// let mut edits = Edits::new();
/// edits.set_str("env", "prod").rename("msg", "message");
/// assert_eq!(edits.verdict(), Verdict::Edit);
/// ```
#[derive(Debug)]
pub struct Edits {
    /// The record stream of the whole batch.
    buf: Vec<u8>,
    /// The event the next records name.
    event: u32,
    /// Where the current event's records start in `buf`.
    start: usize,
    verdict: Verdict,
}

impl Default for Edits {
    fn default() -> Self {
        Self::new()
    }
}

impl Edits {
    /// An empty record stream, at event 0. Useful in tests; inside a module the SDK passes its
    /// own.
    pub const fn new() -> Self {
        Self {
            buf: Vec::new(),
            event: 0,
            start: 0,
            verdict: Verdict::Keep,
        }
    }

    /// Empties the stream for a new batch, keeping its capacity.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.event = 0;
        self.start = 0;
        self.verdict = Verdict::Keep;
    }

    /// Starts the records of event `event` with the verdict it gets if the filter says nothing.
    pub(crate) fn begin(&mut self, event: u32, verdict: Verdict) {
        self.event = event;
        self.start = self.buf.len();
        self.verdict = verdict;
    }

    /// The record stream written so far.
    pub fn records(&self) -> &[u8] {
        &self.buf
    }

    /// The verdict the calls so far give the current event.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Whether calls still count: not after `discard` or `fail`.
    fn live(&self) -> bool {
        !matches!(self.verdict, Verdict::Drop | Verdict::Fail)
    }

    fn mark_edited(&mut self) {
        if self.verdict == Verdict::Keep {
            self.verdict = Verdict::Edit;
        }
    }

    /// Appends a record whose operand B is written by `write_b` (so it can be encoded in place).
    /// The 16-byte head goes in one piece: four small appends cost a call each in wasm.
    #[inline]
    fn push_with(&mut self, op: u8, a: &[u8], write_b: impl FnOnce(&mut Vec<u8>)) {
        let header = self.buf.len();
        let mut head = [0u8; 16];
        head[..4].copy_from_slice(&self.event.to_le_bytes());
        head[4] = op;
        head[8..12].copy_from_slice(&len32(a.len()).to_le_bytes());
        self.buf.extend_from_slice(&head);
        self.buf.extend_from_slice(a);
        let b_start = self.buf.len();
        write_b(&mut self.buf);
        let b_len = len32(self.buf.len() - b_start).to_le_bytes();
        self.buf[header + 12..header + 16].copy_from_slice(&b_len);
        self.pad();
    }

    #[inline]
    fn push(&mut self, op: u8, a: &[u8], b: &[u8]) {
        self.push_with(op, a, |buf| buf.extend_from_slice(b));
    }

    /// Pads the stream to a multiple of 4 bytes, as the next record must start there.
    fn pad(&mut self) {
        let padded = abi::pad4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    /// Sets `path` to `json`, a JSON value as text (`"\"x\""`, `42`, `{"a":1}`), creating missing
    /// parent objects. The host rejects text that is not one JSON value.
    pub fn set(&mut self, path: &str, json: impl AsRef<[u8]>) -> &mut Self {
        if self.live() {
            self.push(abi::OP_SET, path.as_bytes(), json.as_ref());
            self.mark_edited();
        }
        self
    }

    /// Sets `path` to the string `value` (escaped here).
    #[inline]
    pub fn set_str(&mut self, path: &str, value: &str) -> &mut Self {
        if self.live() {
            self.push_with(abi::OP_SET, path.as_bytes(), |buf| {
                json::write_string(value.as_bytes(), buf)
            });
            self.mark_edited();
        }
        self
    }

    /// Sets `path` to the integer `value`.
    pub fn set_i64(&mut self, path: &str, value: i64) -> &mut Self {
        if self.live() {
            self.push_with(abi::OP_SET, path.as_bytes(), |buf| {
                json::write_i64(value, buf)
            });
            self.mark_edited();
        }
        self
    }

    /// Sets `path` to `true` or `false`.
    pub fn set_bool(&mut self, path: &str, value: bool) -> &mut Self {
        self.set(path, if value { "true" } else { "false" })
    }

    /// Sets `path` to a copy of `value` (of this or another event of the batch).
    pub fn set_value(&mut self, path: &str, value: &Value<'_>) -> &mut Self {
        if self.live() {
            self.push_with(abi::OP_SET, path.as_bytes(), |buf| value.write_json(buf));
            self.mark_edited();
        }
        self
    }

    /// Removes `path`; removing an absent path is not an error.
    pub fn remove(&mut self, path: &str) -> &mut Self {
        if self.live() {
            self.push(abi::OP_REMOVE, path.as_bytes(), b"");
            self.mark_edited();
        }
        self
    }

    /// Moves the value at `from` to `to`; a missing `from` is not an error.
    #[inline]
    pub fn rename(&mut self, from: &str, to: &str) -> &mut Self {
        if self.live() {
            self.push(abi::OP_RENAME, from.as_bytes(), to.as_bytes());
            self.mark_edited();
        }
        self
    }

    /// Sends the event to the output named `name` (without changing it).
    pub fn route(&mut self, name: &str) -> &mut Self {
        if self.live() {
            self.push(abi::OP_ROUTE, name.as_bytes(), b"");
        }
        self
    }

    /// Drops the event on purpose; withdraws its records and ignores later calls.
    pub fn discard(&mut self) {
        if self.live() {
            self.buf.truncate(self.start);
            self.verdict = Verdict::Drop;
        }
    }

    /// Dead-letters the event with `reason`; withdraws its other records and ignores later
    /// calls. Returning `Err(reason)` from the filter does the same.
    pub fn fail(&mut self, reason: &str) {
        if self.verdict != Verdict::Fail {
            self.buf.truncate(self.start);
            self.push(abi::OP_FAIL, b"", reason.as_bytes());
            self.verdict = Verdict::Fail;
        }
    }
}

/// A record operand length. On wasm32 every length fits; elsewhere (tests) a record over 4 GiB
/// would be a bug, and it saturates rather than wrap.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The events a `#[flat_map]` filter makes of one event, which they replace.
///
/// Emitting nothing filters the event out; emitting one replaces it; emitting more splits it.
/// Returning `Err(reason)` (or calling [`Emitter::fail`]) dead-letters the input event and
/// withdraws what it emitted.
///
/// # Examples
///
/// ```
/// use sluicebox_guest::{Emitter, Verdict};
///
/// let mut out = Emitter::new();
/// out.emit(r#"{"n":1}"#);
/// out.object().str("s", "a \"quoted\" word").i64("n", 2);
/// assert_eq!(out.count(), 2);
/// ```
#[derive(Debug)]
pub struct Emitter {
    edits: Edits,
    count: u32,
}

impl Default for Emitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Emitter {
    /// An empty record stream, at event 0. Useful in tests; inside a module the SDK passes its
    /// own.
    pub const fn new() -> Self {
        Self {
            edits: Edits {
                buf: Vec::new(),
                event: 0,
                start: 0,
                verdict: Verdict::Replace,
            },
            count: 0,
        }
    }

    pub(crate) fn edits_mut(&mut self) -> &mut Edits {
        &mut self.edits
    }

    pub(crate) fn begin(&mut self, event: u32) {
        self.edits.begin(event, Verdict::Replace);
        self.count = 0;
    }

    /// The record stream written so far.
    pub fn records(&self) -> &[u8] {
        self.edits.records()
    }

    /// The verdict the calls so far give the current event: `Replace`, or `Fail`.
    pub fn verdict(&self) -> Verdict {
        self.edits.verdict()
    }

    /// How many events were emitted for the current event.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Emits `json`, the text of one JSON object. The host rejects anything else.
    pub fn emit(&mut self, json: impl AsRef<[u8]>) -> &mut Self {
        if self.edits.live() {
            self.edits.push(abi::OP_EMIT, b"", json.as_ref());
            self.count += 1;
        }
        self
    }

    /// Emits an object built member by member, encoded in place: see [`ObjectWriter`].
    pub fn object(&mut self) -> ObjectWriter<'_> {
        ObjectWriter::new(self)
    }

    /// Sends the emitted events to the output named `name`.
    pub fn route(&mut self, name: &str) -> &mut Self {
        self.edits.route(name);
        self
    }

    /// Dead-letters the input event with `reason` and withdraws what it emitted.
    pub fn fail(&mut self, reason: &str) {
        self.edits.fail(reason);
    }
}

/// Writes one emitted JSON object member by member; the object is complete when the writer is
/// dropped (or [`ObjectWriter::finish`]ed). Keys are given decoded and escaped here.
#[derive(Debug)]
pub struct ObjectWriter<'e> {
    /// `None` when the emitter no longer counts calls (after a failure).
    out: Option<&'e mut Emitter>,
    header: usize,
    b_start: usize,
    first: bool,
}

impl<'e> ObjectWriter<'e> {
    fn new(emitter: &'e mut Emitter) -> Self {
        if !emitter.edits.live() {
            return Self {
                out: None,
                header: 0,
                b_start: 0,
                first: true,
            };
        }
        let header = emitter.edits.buf.len();
        // Operand B is written in place; its length is filled in by `close`.
        // (Records start 4-aligned, so an empty one needs no padding.)
        emitter.edits.push_with(abi::OP_EMIT, b"", |_| {});
        let b_start = emitter.edits.buf.len();
        debug_assert_eq!(b_start, header + abi::RECORD_HEADER_LEN);
        emitter.edits.buf.push(b'{');
        emitter.count += 1;
        Self {
            out: Some(emitter),
            header,
            b_start,
            first: true,
        }
    }

    /// The buffer, after the separator for one more member and its key.
    fn key(&mut self, key: &[u8], escape: bool) -> Option<&mut Vec<u8>> {
        let buf = &mut self.out.as_mut()?.edits.buf;
        if !self.first {
            buf.push(b',');
        }
        self.first = false;
        buf.push(b'"');
        if escape {
            json::escape_into(key, buf);
        } else {
            buf.extend_from_slice(key);
        }
        buf.extend_from_slice(b"\":");
        Some(buf)
    }

    /// Adds `key` with a JSON value given as text.
    pub fn raw(&mut self, key: &str, json: impl AsRef<[u8]>) -> &mut Self {
        if let Some(buf) = self.key(key.as_bytes(), true) {
            buf.extend_from_slice(json.as_ref());
        }
        self
    }

    /// Adds `key` with a string value.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        if let Some(buf) = self.key(key.as_bytes(), true) {
            json::write_string(value.as_bytes(), buf);
        }
        self
    }

    /// Adds `key` with an integer value.
    pub fn i64(&mut self, key: &str, value: i64) -> &mut Self {
        if let Some(buf) = self.key(key.as_bytes(), true) {
            json::write_i64(value, buf);
        }
        self
    }

    /// Adds `key` with a copy of `value`.
    pub fn value(&mut self, key: &str, value: &Value<'_>) -> &mut Self {
        if let Some(buf) = self.key(key.as_bytes(), true) {
            value.write_json(buf);
        }
        self
    }

    /// Adds a copy of `member`, its key as written.
    pub fn member(&mut self, member: &Member<'_>) -> &mut Self {
        if let Some(buf) = self.key(member.raw_key(), false) {
            member.value().write_json(buf);
        }
        self
    }

    /// Completes the object (dropping the writer does the same); later calls are ignored.
    pub fn finish(&mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(out) = self.out.take() {
            let buf = &mut out.edits.buf;
            buf.push(b'}');
            let b_len = len32(buf.len() - self.b_start).to_le_bytes();
            buf[self.header + 12..self.header + 16].copy_from_slice(&b_len);
            out.edits.pad();
        }
    }
}

impl Drop for ObjectWriter<'_> {
    fn drop(&mut self) {
        self.close();
    }
}
