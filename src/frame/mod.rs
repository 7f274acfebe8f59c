//! Frame stage: cuts a byte stream into lines, reading straight into the batch buffer, so a
//! well-formed line is never copied. Newlines are found 4 KiB at a time, one SIMD compare per
//! 64 bytes (AVX-512BW or AVX2, as the parse stage runs), then a bit scan per line. Tracks
//! line numbers and byte offsets, skips blank lines, strips a trailing `\r` and a leading
//! UTF-8 BOM, and dead-letters lines longer than the limit while memory stays bounded.
//!
//! Cost per event: a compare per 64 of its bytes, a bit scan and one 40-byte metadata push.
//! Per batch: a copy of the partial line left over at its end (at most one read chunk).

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

    /// Lines per batch and bytes per batch, at most.
    pub(crate) fn bounds(&self) -> (usize, usize) {
        (self.max_events, self.max_bytes)
    }

    /// The number the next line framed will have (1-based; the lines framed so far, plus one,
    /// for a framer that started at line 1).
    pub(crate) fn next_line(&self) -> u64 {
        self.line
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

    /// Frames what the batch holds: [`Framer::frame_with`] with the newline search of the
    /// best instruction set this process runs ([`crate::parse::fast::level`]).
    fn frame(&mut self, batch: &mut Batch) -> Need {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::parse::fast::{Level, level};
            match level() {
                // SAFETY: `level()` found AVX-512F and AVX-512BW on this CPU.
                Level::Avx512 | Level::Avx512Vbmi2 => return unsafe { self.frame_avx512(batch) },
                // SAFETY: `level()` found AVX2 on this CPU.
                Level::Avx2 => return unsafe { self.frame_avx2(batch) },
                Level::None => {}
            }
        }
        self.frame_with(batch, &newlines_portable)
    }

    /// [`Framer::frame_with`] with one AVX-512BW compare per 64 bytes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn frame_avx512(&mut self, batch: &mut Batch) -> Need {
        self.frame_with(batch, &|block: &[u8; 64]| newlines_avx512(block))
    }

    /// [`Framer::frame_with`] with two AVX2 compares per 64 bytes.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn frame_avx2(&mut self, batch: &mut Batch) -> Need {
        self.frame_with(batch, &|block: &[u8; 64]| newlines_avx2(block))
    }

    /// The framing loop, finding newlines with [`Newlines`] over `newlines` (the `\n` bits of
    /// 64 bytes): 64 blocks compared in one loop, then a bit scan per line, where a `memchr`
    /// call per line cost more than the copy of the bytes into the batch.
    #[inline(always)]
    fn frame_with<M: Fn(&[u8; 64]) -> u64>(&mut self, batch: &mut Batch, newlines: &M) -> Need {
        let mut blocks = Newlines::new();
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
            let (end, consumed) = match blocks.find(&batch.data, from, newlines) {
                Some(i) => (i, i + 1 - line_start),
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

/// The `\n` bits of one 64-byte block, with AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn newlines_avx512(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::*;
    // SAFETY: `block` is 64 readable bytes; AVX-512F is enabled.
    let v = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
    _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'\n' as i8))
}

/// The `\n` bits of one 64-byte block, with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn newlines_avx2(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::*;
    let nl = _mm256_set1_epi8(b'\n' as i8);
    // SAFETY: `block` is 64 readable bytes; AVX is enabled.
    let (a, b) = unsafe {
        (
            _mm256_loadu_si256(block.as_ptr().cast()),
            _mm256_loadu_si256(block.as_ptr().add(32).cast()),
        )
    };
    let lo = _mm256_movemask_epi8(_mm256_cmpeq_epi8(a, nl)) as u32;
    let hi = _mm256_movemask_epi8(_mm256_cmpeq_epi8(b, nl)) as u32;
    u64::from(lo) | u64::from(hi) << 32
}

/// The `\n` bits of one 64-byte block, without SIMD instructions (where the process runs no
/// SIMD stage 1): eight bytes at a time, a byte equal to `\n` found exactly by the carry-free
/// zero-byte test, its flag gathered by a multiply.
fn newlines_portable(block: &[u8; 64]) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let (words, _) = block.as_chunks::<8>();
    words.iter().enumerate().fold(0, |bits, (k, w)| {
        let v = u64::from_le_bytes(*w) ^ 0x0a0a_0a0a_0a0a_0a0a;
        // Bit 7 of each byte: set when the byte is not zero (no carry crosses a byte).
        let nonzero = ((v & LOW7) + LOW7) | v;
        let zero = !nonzero & !LOW7;
        // Byte i's flag (bit 8i after the shift) lands on bit 56 + i, and no two products
        // share a bit, so nothing carries.
        let packed = (zero >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        bits | packed << (8 * k)
    })
}

/// How many 64-byte blocks [`Newlines`] compares at once (4 KiB).
const NEWLINE_BLOCKS: usize = 64;

/// The newline bits of the next 4 KiB of the batch, compared in one tight loop (its loads
/// independent, so they overlap), so that each line costs a bit scan or two, not a search.
/// Lives for one framing call: the batch's bytes do not change while it lives.
///
/// Cost: 528 bytes of stack; one compare per 64 bytes framed.
struct Newlines {
    /// The first byte the bits describe, in the batch.
    base: usize,
    /// Blocks of `bits` that hold bits.
    blocks: usize,
    /// Bit `i` of `bits[k]`: byte `base + 64 * k + i` is a `\n`.
    bits: [u64; NEWLINE_BLOCKS],
}

impl Newlines {
    fn new() -> Self {
        Newlines {
            base: 0,
            blocks: 0,
            bits: [0; NEWLINE_BLOCKS],
        }
    }

    /// The position of the first `\n` of `data` at or after `from`, if any.
    #[inline(always)]
    fn find<M: Fn(&[u8; 64]) -> u64>(
        &mut self,
        data: &[u8],
        mut from: usize,
        newlines: &M,
    ) -> Option<usize> {
        loop {
            let into = from.wrapping_sub(self.base);
            if into < self.blocks * 64 {
                let k = into / 64;
                let first = self.bits[k] >> (into % 64);
                if first != 0 {
                    return Some(from + first.trailing_zeros() as usize);
                }
                for j in k + 1..self.blocks {
                    if self.bits[j] != 0 {
                        return Some(self.base + 64 * j + self.bits[j].trailing_zeros() as usize);
                    }
                }
                from = self.base + self.blocks * 64;
            }
            let rest = data.get(from..)?;
            let (blocks, _) = rest.as_chunks::<64>();
            if blocks.is_empty() {
                // Fewer than 64 bytes left.
                return memchr::memchr(b'\n', rest).map(|i| from + i);
            }
            let n = blocks.len().min(NEWLINE_BLOCKS);
            for (bits, block) in self.bits[..n].iter_mut().zip(blocks) {
                *bits = newlines(block);
            }
            self.base = from;
            self.blocks = n;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every search the framer makes, from every position in turn, with one `Newlines` kept
    /// across them as the framing loop keeps it, answers as `memchr` does.
    fn agrees_with_memchr(data: &[u8], newlines: &dyn Fn(&[u8; 64]) -> u64) {
        for step in [1, 7, 64, 333] {
            let mut blocks = Newlines::new();
            let mut from = 0;
            while from <= data.len() {
                let want = memchr::memchr(b'\n', &data[from..]).map(|i| from + i);
                assert_eq!(
                    blocks.find(data, from, &newlines),
                    want,
                    "from {from} of {}",
                    data.len()
                );
                // Next: past the newline found (as a framed line), or `step` on.
                from = want.map_or(from + step, |i| i + 1);
            }
        }
    }

    #[test]
    fn the_newline_search_finds_what_memchr_finds() {
        type Search = Box<dyn Fn(&[u8; 64]) -> u64>;
        let mut searches: Vec<(&str, Search)> = vec![("portable", Box::new(newlines_portable))];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                searches.push(("avx2", Box::new(|b| unsafe { newlines_avx2(b) })));
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                // SAFETY: the CPU has AVX-512F and AVX-512BW.
                searches.push(("avx512", Box::new(|b| unsafe { newlines_avx512(b) })));
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\n".to_vec(),
            vec![b'\n'; 200],
            vec![b'x'; 10_000],
        ];
        // Newlines at the edges of blocks and of the 4 KiB window, then random bytes with
        // newlines from dense to a few per 10 KB (bytes 0x0a +- 1 and 0x8a too).
        for at in [0, 62, 63, 64, 65, 127, 128, 4095, 4096, 4097, 8191, 8192] {
            let mut v = vec![b'a'; 8300];
            v[at] = b'\n';
            inputs.push(v);
        }
        for density in [2, 30, 400, 5000] {
            for len in [1, 63, 64, 65, 300, 4160, 9000] {
                let v = (0..len)
                    .map(|_| match next() % density {
                        0 => b'\n',
                        1 => 0x8a,
                        2 => 0x0b,
                        3 => 0x09,
                        r => b' ' + (r % 90) as u8,
                    })
                    .collect();
                inputs.push(v);
            }
        }
        for (name, search) in &searches {
            for data in &inputs {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    agrees_with_memchr(data, search.as_ref())
                }));
                assert!(r.is_ok(), "{name}, input of {} bytes", data.len());
            }
        }
    }
}
