//! Frame stage: cuts a byte stream into lines with `memchr`, reading straight into the batch
//! buffer, so a well-formed line is never copied. Tracks line numbers and byte offsets,
//! skips blank lines, strips a trailing `\r` and a leading UTF-8 BOM, and dead-letters lines
//! longer than the limit while memory stays bounded.
//!
//! Cost per event: a `memchr` over its bytes and one 40-byte metadata push. Per batch: a copy
//! of the partial line left over at its end (at most one read chunk).

pub mod container;
mod cri;
mod decoder;
mod docker;

pub use container::{ContainerDecoder, ContainerFormat, ContainerSettings, ExtraFields};
#[cfg(feature = "kafka")]
pub(crate) use decoder::escape_text;
pub use decoder::{Codec, Decoder, NdjsonDecoder, TextDecoder};

use crate::batch::{Batch, DeadLetter, EventMeta, PADDING};

/// Bytes asked of the reader per `read` call.
pub const READ_CHUNK: usize = 64 << 10;

/// Line framer state carried across batches. One per input stream.
///
/// Cost: holds the partial line between batches (at most `max_line_bytes` + one chunk).
pub struct Framer {
    carry: Vec<u8>,
    /// Line number of the first line in `carry` (1-based).
    line: u64,
    /// Input offset of the first byte in `carry`.
    offset: u64,
    eof: bool,
    at_start: bool,
    /// Skipping the rest of an oversized line.
    discarding: bool,
    /// The dead letter of the oversized line being skipped while every byte of it seen so
    /// far is blank: a whitespace-only line is skipped, not an event, however long.
    blank_pending: Option<DeadLetter>,
    /// First unframed byte of the current batch.
    cursor: usize,
    /// How many bytes from `cursor` on are known to hold no `\n`, so that a line longer than
    /// one read is searched once, not once per read.
    scanned: usize,
    max_events: usize,
    max_bytes: usize,
    max_line: usize,
    raw_max: usize,
    flush_when_idle: bool,
    /// The last bytes committed came in a short read (or a chunk its decoder called idle):
    /// the input had nothing more right then.
    read_idle: bool,
}

/// What the caller must do next for [`Framer`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Read more bytes into `Batch::data[from..]` and call [`Framer::commit`].
    Read,
    /// The batch is complete (full, or input ended): process it.
    Done,
}

impl Framer {
    /// A framer with the given batch bounds and line limit; a short read completes a batch
    /// that holds lines (see [`Framer::flush_when_idle`]).
    pub fn new(max_events: usize, max_bytes: usize, max_line: usize, raw_max: usize) -> Self {
        Self {
            carry: Vec::new(),
            line: 1,
            offset: 0,
            eof: false,
            at_start: true,
            discarding: false,
            blank_pending: None,
            cursor: 0,
            scanned: 0,
            max_events,
            max_bytes,
            max_line,
            raw_max,
            flush_when_idle: true,
            read_idle: false,
        }
    }

    /// Whether a short read completes a batch that already holds lines (default true).
    /// False waits for a full batch or the end of input.
    pub fn flush_when_idle(mut self, yes: bool) -> Self {
        self.flush_when_idle = yes;
        self
    }

    /// A framer whose stream starts at byte position `offset` (a restored checkpoint): event
    /// offsets count from there, and no byte order mark is looked for unless `offset` is 0.
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.offset = offset;
        self.at_start = offset == 0;
        self
    }

    /// The stream position just past the last byte framed so far: once a batch is complete,
    /// the end of its last line (and of any blank or oversized bytes skipped after it). This
    /// is the position a source acknowledges when the batch is delivered.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Whether the input has ended and everything was framed.
    pub fn finished(&self) -> bool {
        self.eof && self.carry.is_empty()
    }

    /// Reads from `input` into `batch` (cleared first) until the batch is full, the input
    /// ends, or a short read finds the input idle; frames every complete line. Returns
    /// false once the input has ended and nothing was left to frame (the batch is then
    /// empty). This is the frame stage on its own; [`crate::Pipeline`] drives it for you.
    ///
    /// # Errors
    /// [`crate::Kind::Input`] when reading fails.
    pub fn fill<R: std::io::Read + ?Sized>(
        &mut self,
        input: &mut R,
        batch: &mut Batch,
    ) -> crate::Result<bool> {
        if self.finished() {
            batch.clear();
            return Ok(false);
        }
        self.begin(batch);
        let mut need = self.step(batch);
        if need == Need::Read && self.read_idle {
            // Lines carried over from the last batch (it filled up) that came in a short
            // read: they go now, not after a read that may wait until more input comes.
            need = self.idle(batch);
        }
        while need == Need::Read {
            let start = Framer::spare(batch);
            let n = loop {
                match input.read(&mut batch.data[start..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(crate::Error::input(e)),
                }
            };
            need = self.commit(batch, start, n);
        }
        Ok(true)
    }

    /// Starts a new batch: clears it and moves the carried partial line into it. Then call
    /// [`Framer::step`].
    pub(crate) fn begin(&mut self, batch: &mut Batch) {
        batch.clear();
        batch.data.extend_from_slice(&self.carry);
        self.carry.clear();
        self.cursor = 0;
    }

    /// The input has nothing more for now (not its end): with `flush_when_idle`, a batch
    /// holding framed lines (carried over from the last batch) is complete; a partial line
    /// stays for later.
    pub(crate) fn idle(&mut self, batch: &mut Batch) -> Need {
        let framed = !batch.events.is_empty() || !batch.dead.is_empty();
        if self.flush_when_idle && framed {
            self.finish(batch)
        } else {
            Need::Read
        }
    }

    /// Frames what the batch holds and says whether to read more or process the batch.
    pub(crate) fn step(&mut self, batch: &mut Batch) -> Need {
        self.frame(batch)
    }

    /// Spare room to read into: grows the buffer by one chunk and returns where the read
    /// goes. The caller reads into `batch.data[start..]`, then calls [`Framer::commit`] with
    /// the count. Bytes that were initialised before in the same allocation are not zeroed
    /// again (zeroing 64 KiB per read showed up as 7% of a passthrough run).
    pub(crate) fn spare(batch: &mut Batch) -> usize {
        let start = batch.data.len();
        let want = start + READ_CHUNK;
        if want <= batch.init_len && batch.data.capacity() == batch.init_cap {
            // SAFETY: `init_len <= capacity` bytes of this allocation (same capacity, so no
            // reallocation happened since) were initialised by an earlier `resize`, and
            // truncating a `Vec<u8>` leaves the bytes past `len` in place. `u8` has no
            // invalid bit patterns and no drop glue.
            unsafe { batch.data.set_len(want) };
        } else {
            batch.data.resize(want, 0);
            batch.init_len = batch.data.len();
            batch.init_cap = batch.data.capacity();
        }
        start
    }

    /// Accounts for `n` bytes read at `start` (0 means end of input), frames every complete
    /// line, and says whether the batch is complete.
    ///
    /// A short read (fewer bytes than [`READ_CHUNK`]) means the source has nothing more
    /// right now: with `flush_when_idle`, a batch that already holds framed lines is then
    /// complete, so a slow producer's events are not held back waiting for a full batch.
    pub(crate) fn commit(&mut self, batch: &mut Batch, start: usize, n: usize) -> Need {
        self.commit_with(batch, start, n, n < READ_CHUNK)
    }

    /// [`Framer::commit`], with the caller saying whether the source is idle after these
    /// bytes (a short read, or the end of a chunk handed to a [`Decoder`]).
    pub(crate) fn commit_with(
        &mut self,
        batch: &mut Batch,
        start: usize,
        n: usize,
        idle: bool,
    ) -> Need {
        batch.data.truncate(start + n);
        batch.stats.bytes_in += n as u64;
        if n == 0 {
            self.eof = true;
        } else {
            self.read_idle = idle;
        }
        let need = self.frame(batch);
        if need == Need::Read && n > 0 && idle {
            return self.idle(batch);
        }
        need
    }

    fn frame(&mut self, batch: &mut Batch) -> Need {
        // `self.cursor` is the first byte not yet assigned to a line. Bytes before it belong
        // to framed events or to skipped separators, blank lines and discarded bytes; they
        // stay in place (they pad the events before them for simd-json).
        if self.at_start {
            let avail = batch.data.len() - self.cursor;
            if avail >= 3 || self.eof {
                self.at_start = false;
                if batch.data[self.cursor..].starts_with(&[0xEF, 0xBB, 0xBF]) {
                    self.cursor += 3;
                    self.offset += 3;
                }
            } else {
                return Need::Read;
            }
        }
        loop {
            let line_start = self.cursor;
            if self.discarding {
                let newline = memchr::memchr(b'\n', &batch.data[line_start..]);
                let seen =
                    &batch.data[line_start..newline.map_or(batch.data.len(), |i| line_start + i)];
                if self.blank_pending.is_some()
                    && !is_blank(seen)
                    && let Some(dead) = self.blank_pending.take()
                {
                    reject(batch, dead);
                }
                let ended = match newline {
                    Some(i) => {
                        self.cursor += i + 1;
                        self.offset += (i + 1) as u64;
                        self.line += 1;
                        true
                    }
                    None => {
                        self.offset += (batch.data.len() - line_start) as u64;
                        batch.data.truncate(line_start);
                        self.eof
                    }
                };
                if !ended {
                    return Need::Read;
                }
                self.discarding = false;
                if self.blank_pending.take().is_some() {
                    batch.stats.skipped += 1;
                }
                if newline.is_none() {
                    return self.finish(batch);
                }
                continue;
            }
            if batch.events.len() >= self.max_events || line_start >= self.max_bytes {
                return self.finish(batch);
            }
            let from = line_start + self.scanned;
            let (end, consumed) = match memchr::memchr(b'\n', &batch.data[from..]) {
                Some(i) => (from + i, from + i + 1 - line_start),
                None if self.eof && line_start < batch.data.len() => {
                    (batch.data.len(), batch.data.len() - line_start)
                }
                None => {
                    self.scanned = batch.data.len() - line_start;
                    // A final `\r` is not content if a `\n` follows it in the next read.
                    let pending = &batch.data[line_start..];
                    let content = pending.len() - usize::from(pending.last() == Some(&b'\r'));
                    if content > self.max_line {
                        self.oversized(batch, line_start);
                        continue;
                    }
                    if self.eof {
                        return self.finish(batch);
                    }
                    return Need::Read;
                }
            };
            let mut content_end = end;
            if content_end > line_start && batch.data[content_end - 1] == b'\r' {
                content_end -= 1;
            }
            let len = content_end - line_start;
            if len > self.max_line {
                self.oversized(batch, line_start);
                continue;
            }
            if is_blank(&batch.data[line_start..content_end]) {
                batch.stats.skipped += 1;
            } else {
                batch.events.push(EventMeta {
                    start: line_start as u32,
                    len: len as u32,
                    s_start: 0,
                    s_len: 0,
                    line: self.line,
                    offset: self.offset,
                    route: 0,
                    changed: false,
                    plain: false,
                    slot_start: crate::batch::NO_SLOTS,
                });
                batch.stats.received += 1;
            }
            self.cursor += consumed;
            self.scanned = 0;
            self.line += 1;
            self.offset += consumed as u64;
        }
    }

    /// Dead-letters the line starting at `line_start` as oversized and skips to its end. The
    /// dead letter keeps the line's first `min(raw_max, max_line)` bytes: never bytes of the
    /// next lines, and the same whatever sizes the input was read in (at least `max_line + 1`
    /// bytes of the line are always here when it is found oversized). While the line is
    /// blank so far, the dead letter waits: a line that turns out whitespace only is skipped.
    fn oversized(&mut self, batch: &mut Batch, line_start: usize) {
        let avail = &batch.data[line_start..];
        let line = memchr::memchr(b'\n', avail).map_or(avail, |i| &avail[..i]);
        let reason = format!(
            "oversized: line is longer than the maximum of {} bytes",
            self.max_line
        );
        // The line has more than `max_line` bytes here, so the kept prefix is always cut.
        let keep = self.raw_max.min(self.max_line);
        let dead = DeadLetter::new(reason, self.line, self.offset, None, line, keep);
        if is_blank(line) {
            self.blank_pending = Some(dead);
        } else {
            reject(batch, dead);
        }
        self.discarding = true;
        self.scanned = 0;
    }

    /// Moves unframed bytes to the carry and pads the batch for the parser.
    fn finish(&mut self, batch: &mut Batch) -> Need {
        let line_start = self.cursor;
        self.carry.extend_from_slice(&batch.data[line_start..]);
        batch.data.truncate(line_start);
        batch.data.resize(line_start + PADDING, 0);
        self.cursor = 0;
        Need::Done
    }
}

/// Whether a line is blank: only spaces, tabs and carriage returns (or nothing).
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// Counts an oversized line as received and dead-lettered.
fn reject(batch: &mut Batch, dead: DeadLetter) {
    batch.dead.push(dead);
    batch.stats.received += 1;
    batch.stats.dead_lettered += 1;
}
