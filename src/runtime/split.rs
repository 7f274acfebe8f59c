//! Byte-range splitting of a positional input ([`ReadAt`]) for the workers of
//! [`crate::Pipeline::run_at`]: each claims the next range of bytes, reads and frames the
//! lines that start in it on its own core (the last one read on past the range's end, to
//! its newline), then takes its turn in the input's order to number those lines and take
//! each batch's token and place in the order. Only the claim (a few words) and the turn
//! (a pass over the batch's line numbers) are serial; with one shared reader, the read's
//! copy and its framing were, and the workers spent ~5% of their time waiting for them.
//!
//! The batches hold the same lines, line numbers, offsets and dead letters as one framer
//! reading the input from its start; only where batches end may differ.
//!
//! Cost per range: a lock for the claim, a positioned read of up to 4 KiB to find the first
//! line that starts in it (none at the input's start), the reads and framing themselves,
//! and a lock for the turn (a wake-up only when a worker waits for the one before it).

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::output::panic_text;
use crate::ack::Stream;
use crate::batch::Batch;
use crate::error::{Error, Kind, Result};
use crate::source::reader::ReadAt;
use crate::source::{SourceContext, Work};

/// The smallest range a worker claims (the first ones, before any line was seen).
const MIN_RANGE: u64 = 64 << 10;

/// A positional input shared by the workers.
pub(crate) struct Split<'a> {
    src: &'a dyn ReadAt,
    /// Lines per batch, and the batch's byte bound: a range is sized to give one batch.
    max_events: u64,
    max_bytes: u64,
    claims: Mutex<Claims>,
    chain: Mutex<Chain>,
    turned: Condvar,
}

/// The next range to claim.
struct Claims {
    pos: u64,
    index: u64,
    done: bool,
}

/// The turns taken so far, in the input's order.
struct Chain {
    /// The claim whose turn is next.
    turn: u64,
    /// Lines framed by the claims before `turn` (blank and oversized ones included).
    lines: u64,
    /// Bytes and events of those claims, to size the next ranges.
    bytes: u64,
    events: u64,
    stream: Stream,
    /// Threads waiting for their turn.
    waiting: usize,
    /// A claim failed (or its worker stopped): no later claim's batches go out.
    stopped: bool,
    error: Option<Error>,
}

/// A byte range one worker frames: the lines that start in `start..end`.
pub(crate) struct Claim {
    index: u64,
    start: u64,
    end: u64,
}

impl<'a> Split<'a> {
    /// Splits `src` for batches of `max_events` lines and `max_bytes` bytes at most.
    pub(crate) fn new(src: &'a dyn ReadAt, cx: &SourceContext, name: &str) -> Self {
        let (max_events, max_bytes) = cx.framer(0).bounds();
        Self {
            src,
            max_events: max_events as u64,
            max_bytes: max_bytes as u64,
            claims: Mutex::new(Claims {
                pos: 0,
                index: 0,
                done: false,
            }),
            chain: Mutex::new(Chain {
                turn: 0,
                lines: 0,
                bytes: 0,
                events: 0,
                stream: cx.stream(name.to_string(), None),
                waiting: 0,
                stopped: false,
                error: None,
            }),
            turned: Condvar::new(),
        }
    }

    /// The input's error, if reading it failed.
    pub(crate) fn into_error(self) -> Option<Error> {
        self.chain
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .error
    }

    fn chain(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next range, sized to hold about 15/16 of a batch's lines at the average line
    /// length seen so far (so that a range seldom spills into a second, small batch),
    /// between 64 KiB and `max_bytes`; `None` once the input has ended or failed.
    pub(crate) fn claim(&self) -> Option<Claim> {
        let (bytes, events, stopped) = {
            let c = self.chain();
            (c.bytes, c.events, c.stopped)
        };
        let mut s = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if s.done || stopped {
            s.done = true;
            return None;
        }
        let size = match catch_unwind(AssertUnwindSafe(|| self.src.size())) {
            Ok(Ok(n)) => n,
            failed => {
                s.done = true;
                drop(s);
                self.fail(match failed {
                    Ok(Err(e)) => Error::input(e),
                    Err(p) => Error::new(
                        Kind::Input,
                        format!("reading the input's size panicked: {}", panic_text(p)),
                    ),
                    Ok(Ok(_)) => unreachable!("matched above"),
                });
                return None;
            }
        };
        if s.pos >= size {
            s.done = true;
            return None;
        }
        let want = bytes.checked_div(events).map_or(MIN_RANGE, |per_event| {
            per_event.saturating_mul(self.max_events) / 16 * 15
        });
        let len = want.clamp(MIN_RANGE.min(self.max_bytes), self.max_bytes.max(1));
        let claim = Claim {
            index: s.index,
            start: s.pos,
            end: size.min(s.pos.saturating_add(len)),
        };
        s.index += 1;
        s.pos = claim.end;
        Some(claim)
    }

    /// Keeps the first error and stops every later claim.
    fn fail(&self, e: Error) {
        let mut c = self.chain();
        c.error.get_or_insert(e);
        c.stopped = true;
        drop(c);
        self.turned.notify_all();
    }

    /// Reads and frames `claim`'s lines, then, in its turn, numbers them and takes each
    /// batch's token, budget and place in the order. `None` when a claim before it failed
    /// or the run is stopping (nothing of this claim goes out; its bytes stay unread as far
    /// as acknowledgements go).
    pub(crate) fn frame(&self, cx: &SourceContext, claim: Claim) -> Option<Vec<(Work, u64)>> {
        let mut turn = TurnGuard {
            split: self,
            done: false,
        };
        let mut batches: Vec<(Batch, u64)> = Vec::new();
        let framed = catch_unwind(AssertUnwindSafe(|| {
            self.read_lines(cx, &claim, &mut batches)
        }));
        let (lines, failed) = match framed {
            Ok(Ok(lines)) => (lines, None),
            Ok(Err(e)) => (0, Some(e)),
            Err(p) => (
                0,
                Some(Error::new(
                    Kind::Input,
                    format!("reading the input panicked: {}", panic_text(p)),
                )),
            ),
        };
        let mut c = self.wait_turn(cx, claim.index)?;
        let base = c.lines;
        let mut jobs = Vec::with_capacity(batches.len());
        for (mut batch, end) in batches {
            for m in &mut batch.events {
                m.line += base;
            }
            for d in &mut batch.dead {
                d.line += base;
            }
            c.events += batch.stats.received;
            c.bytes += batch.stats.bytes_in;
            let stream = c.stream.clone();
            jobs.push(cx.take_now(&stream, batch, end));
        }
        c.lines += lines;
        c.turn += 1;
        if let Some(e) = failed {
            c.error.get_or_insert(e);
            c.stopped = true;
        }
        let wake = c.waiting > 0;
        drop(c);
        turn.done = true;
        if wake {
            self.turned.notify_all();
        }
        Some(jobs)
    }

    /// Waits until the claims before `index` have had their turns: the chain, held. `None`
    /// when one of them failed or the run is stopping.
    fn wait_turn(&self, cx: &SourceContext, index: u64) -> Option<MutexGuard<'_, Chain>> {
        let mut c = self.chain();
        while c.turn != index && !c.stopped {
            if cx.shutdown().is_triggered() {
                return None;
            }
            c.waiting += 1;
            c = self
                .turned
                .wait_timeout(c, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            c.waiting -= 1;
        }
        (!c.stopped).then_some(c)
    }

    /// Frames the lines that start in the claim's range into `batches` (each with the input
    /// position just past it), line numbers counted from 1; the number of lines framed.
    fn read_lines(
        &self,
        cx: &SourceContext,
        claim: &Claim,
        batches: &mut Vec<(Batch, u64)>,
    ) -> Result<u64> {
        let Some(first) = self.first_line(claim)? else {
            return Ok(0);
        };
        let mut framer = cx.framer(first).flush_when_idle(false);
        let mut span = Span {
            src: self.src,
            pos: first,
            end: claim.end,
            last: b'\n',
            past: 0,
            done: false,
        };
        // A batch is taken only while bytes are left: one taken and dropped unused would
        // leave the pool, and a new one costs its buffer's zeroing.
        while !framer.finished() {
            let mut batch = cx.batch();
            if !framer.fill(&mut span, &mut batch)? {
                break;
            }
            batches.push((batch, framer.position()));
        }
        Ok(framer.next_line() - 1)
    }

    /// Where the first line that starts in the claim's range starts: the range's start at
    /// the input's start or after a newline, else just past the next newline; `None` when
    /// no line starts in the range (a long line crosses it).
    fn first_line(&self, claim: &Claim) -> Result<Option<u64>> {
        if claim.start == 0 {
            return Ok(Some(0));
        }
        let mut buf = [0u8; 4096];
        let mut pos = claim.start - 1;
        // A line's worth first (most end within it), then 4 KiB at a time.
        let mut want = 512;
        while pos < claim.end {
            let want = std::mem::replace(&mut want, buf.len()).min((claim.end - pos) as usize);
            let n = self
                .src
                .read_at(&mut buf[..want], pos)
                .map_err(Error::input)?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                let start = pos + i as u64 + 1;
                return Ok((start < claim.end).then_some(start));
            }
            pos += n as u64;
        }
        Ok(None)
    }
}

/// Stops the later claims when a worker leaves its turn untaken (it panicked, or the run
/// is stopping): they would wait for it forever.
struct TurnGuard<'s, 'a> {
    split: &'s Split<'a>,
    done: bool,
}

impl Drop for TurnGuard<'_, '_> {
    fn drop(&mut self) {
        if !self.done {
            let mut c = self.split.chain();
            c.stopped = true;
            drop(c);
            self.split.turned.notify_all();
        }
    }
}

/// The bytes of the lines that start before `end`: everything up to `end`, then, unless the
/// byte before `end` ends a line, the rest of the last line up to its newline.
struct Span<'a> {
    src: &'a dyn ReadAt,
    pos: u64,
    end: u64,
    /// The last byte given out (a newline before the first).
    last: u8,
    /// Reads past `end` so far.
    past: u32,
    done: bool,
}

impl Read for Span<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = if self.pos < self.end {
            let want = buf
                .len()
                .min(usize::try_from(self.end - self.pos).unwrap_or(usize::MAX));
            self.src.read_at(&mut buf[..want], self.pos)?
        } else if self.last == b'\n' {
            0
        } else {
            // The rest of a line: a little at a time (1 KiB, doubling to 64 KiB), as the
            // bytes read past its newline are read again by the next range.
            let want = buf.len().min(1024 << self.past.min(6));
            self.past += 1;
            let n = self.src.read_at(&mut buf[..want], self.pos)?;
            match memchr::memchr(b'\n', &buf[..n]) {
                Some(i) => {
                    self.done = true;
                    i + 1
                }
                None => n,
            }
        };
        if n == 0 {
            self.done = true;
        } else {
            self.last = buf[n - 1];
            self.pos += n as u64;
        }
        Ok(n)
    }
}
