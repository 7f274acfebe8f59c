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
//! Cost per range: a lock for the claim, a positioned read of 512 bytes (then 4 KiB at a
//! time) to find the first line that starts in it (none at the input's start), the reads
//! and framing themselves,
//! and a lock for the turn (a wake-up only when a worker waits for the one before it).

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::output::panic_text;
use crate::ack::Stream;
use crate::batch::Batch;
use crate::error::{Error, Kind, Result};
use crate::source::reader::{ReadAt, read_at_checked};
use crate::source::{SourceContext, Work};

/// The first ranges' size, before any line was seen: at most 128 bytes per line of a batch.
const FIRST_RANGE: u64 = 64 << 10;

/// A positional input shared by the workers.
pub(crate) struct Split<'a> {
    src: &'a dyn ReadAt,
    /// Lines per batch, and the batch's byte bound: a range is sized to give one batch.
    max_events: u64,
    max_bytes: u64,
    claims: Mutex<Claims>,
    chain: Mutex<Chain>,
    turned: Condvar,
    /// A read found the input's end (a real 0): no range after it is claimed, and no range
    /// after the one that found it delivers (as a stream read stops at its first 0).
    ended: AtomicBool,
}

/// The next range to claim.
struct Claims {
    pos: u64,
    index: u64,
    /// The input's size when last asked (asked again once `pos` reaches it).
    size: u64,
    done: bool,
}

/// The turns taken so far, in the input's order.
struct Chain {
    /// The claim whose turn is next.
    turn: u64,
    /// Lines framed by the claims before `turn` (blank and oversized ones included).
    lines: u64,
    /// Bytes and lines of the last turn that framed lines, to size the next ranges.
    last: Option<(u64, u64)>,
    stream: Stream,
    /// Threads waiting for their turn.
    waiting: usize,
    /// A claim failed, its worker stopped, or a read found the input's end: no later
    /// claim's batches go out.
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
                size: 0,
                done: false,
            }),
            chain: Mutex::new(Chain {
                turn: 0,
                lines: 0,
                last: None,
                stream: cx.stream(name.to_string(), None),
                waiting: 0,
                stopped: false,
                error: None,
            }),
            turned: Condvar::new(),
            ended: AtomicBool::new(false),
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

    /// The next range, sized to hold about 15/16 of a batch's lines at the line length the
    /// last turn saw (so that a range seldom spills into a second, small batch, and a range
    /// after long lines holds few batches of short ones), at most `max_bytes`; `None` once
    /// the input has ended or failed. The input ends at a read of 0 bytes, not at its size:
    /// past the size it last gave, one byte is read to see whether there is more (a file
    /// that grew, or one whose size says 0, as under /proc).
    pub(crate) fn claim(&self) -> Option<Claim> {
        let (last, stopped) = {
            let c = self.chain();
            (c.last, c.stopped)
        };
        let mut s = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if s.done || stopped || self.ended.load(Ordering::Acquire) {
            s.done = true;
            return None;
        }
        let pos = s.pos;
        let mut bounded = pos < s.size;
        if !bounded {
            let asked = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<(u64, bool)> {
                let size = self.src.size()?;
                if pos < size {
                    return Ok((size, true));
                }
                let mut probe = [0u8; 1];
                Ok((size, read_at_checked(self.src, &mut probe, pos)? > 0))
            }));
            match asked {
                Ok(Ok((size, more))) => {
                    s.size = size;
                    bounded = pos < size;
                    if !more {
                        s.done = true;
                        return None;
                    }
                }
                Ok(Err(e)) => {
                    s.done = true;
                    drop(s);
                    self.fail(Error::input(e));
                    return None;
                }
                Err(p) => {
                    s.done = true;
                    drop(s);
                    self.fail(Error::new(
                        Kind::Input,
                        format!("reading the input's size panicked: {}", panic_text(p)),
                    ));
                    return None;
                }
            }
        }
        let want = match last {
            Some((bytes, lines)) => {
                (bytes / lines.max(1))
                    .max(1)
                    .saturating_mul(self.max_events)
                    / 16
                    * 15
            }
            None => FIRST_RANGE.min(self.max_events.saturating_mul(128)),
        };
        let len = want.clamp(1, self.max_bytes.max(1));
        let end = pos.saturating_add(len);
        let claim = Claim {
            index: s.index,
            start: pos,
            end: if bounded { end.min(s.size) } else { end },
        };
        s.index += 1;
        s.pos = claim.end;
        Some(claim)
    }

    /// Keeps the first error and stops every later claim.
    pub(crate) fn fail(&self, e: Error) {
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
        let (lines, saw_end, failed) = match framed {
            Ok(Ok((lines, saw_end))) => (lines, saw_end, None),
            Ok(Err(e)) => (0, false, Some(e)),
            Err(p) => (
                0,
                false,
                Some(Error::new(
                    Kind::Input,
                    format!("reading the input panicked: {}", panic_text(p)),
                )),
            ),
        };
        let mut c = self.wait_turn(cx, claim.index)?;
        let base = c.lines;
        let mut jobs = Vec::with_capacity(batches.len());
        let mut bytes = 0;
        for (mut batch, end) in batches {
            for m in &mut batch.events {
                m.line += base;
            }
            for d in &mut batch.dead {
                d.line += base;
            }
            bytes += batch.stats.bytes_in;
            let stream = c.stream.clone();
            jobs.push(cx.take_now(&stream, batch, end));
        }
        c.lines += lines;
        if lines > 0 {
            c.last = Some((bytes, lines));
        }
        c.turn += 1;
        if let Some(e) = failed {
            c.error.get_or_insert(e);
            c.stopped = true;
        }
        // The input ended in this range: the ranges after it deliver nothing, as a stream
        // read stops at its first 0 (if the input grows meanwhile, theirs are later bytes).
        if saw_end {
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
        if cx.shutdown().is_triggered() {
            return None;
        }
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
    /// position just past it), line numbers counted from 1: the number of lines framed, and
    /// whether a read found the input's end.
    fn read_lines(
        &self,
        cx: &SourceContext,
        claim: &Claim,
        batches: &mut Vec<(Batch, u64)>,
    ) -> Result<(u64, bool)> {
        let first = match self.first_line(claim)? {
            First::At(p) => p,
            First::Nothing => return Ok((0, false)),
            First::End => return Ok((0, self.saw_end())),
        };
        let mut framer = cx.framer(first).flush_when_idle(false);
        let mut span = Span {
            src: self.src,
            pos: first,
            end: claim.end,
            last: b'\n',
            past: 0,
            done: false,
            saw_end: false,
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
        // (A last line without a newline that is dead-lettered as oversized is not counted
        // by the framer; it is the input's last line, so no range after it needs the count.)
        let saw_end = span.saw_end && self.saw_end();
        Ok((framer.next_line() - 1, saw_end))
    }

    /// Notes that a read found the input's end: no more ranges are claimed. True.
    fn saw_end(&self) -> bool {
        self.ended.store(true, Ordering::Release);
        true
    }

    /// Where the first line that starts in the claim's range starts: the range's start at
    /// the input's start or after a newline, else just past the next newline.
    fn first_line(&self, claim: &Claim) -> Result<First> {
        if claim.start == 0 {
            return Ok(First::At(0));
        }
        let mut buf = [0u8; 4096];
        let mut pos = claim.start - 1;
        // A line's worth first (most end within it), then 4 KiB at a time.
        let mut want = 512;
        while pos < claim.end {
            let want = std::mem::replace(&mut want, buf.len()).min((claim.end - pos) as usize);
            let n = read_at_checked(self.src, &mut buf[..want], pos).map_err(Error::input)?;
            if n == 0 {
                return Ok(First::End);
            }
            if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                let start = pos + i as u64 + 1;
                return Ok(if start < claim.end {
                    First::At(start)
                } else {
                    First::Nothing
                });
            }
            pos += n as u64;
        }
        Ok(First::Nothing)
    }
}

/// Where a range's first line starts.
enum First {
    At(u64),
    /// No line starts in the range (a long line crosses it).
    Nothing,
    /// The input ended before the range's first line.
    End,
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
    /// A read returned 0: the input's end.
    saw_end: bool,
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
            let n = read_at_checked(self.src, &mut buf[..want], self.pos)?;
            self.saw_end = n == 0;
            n
        } else if self.last == b'\n' {
            0
        } else {
            // The rest of a line: a little at a time (1 KiB, doubling to 64 KiB), as the
            // bytes read past its newline are read again by the next range.
            let want = buf.len().min(1024 << self.past.min(6));
            self.past = self.past.saturating_add(1);
            let n = read_at_checked(self.src, &mut buf[..want], self.pos)?;
            self.saw_end = n == 0;
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
