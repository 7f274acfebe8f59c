//! Container log decoders: CRI (`frame/cri.rs`) and Docker json-file (`frame/docker.rs`)
//! lines become events `{"stream":…,"time":…,"message":…}`, with the lines a runtime split
//! (CRI `P` tags, Docker records whose `log` has no final `\n`) merged back into one event.
//!
//! Merging and acknowledgements: an event merged from several physical lines carries the
//! first line's offset and line number (its origin), and [`Decoder::position`] never passes
//! the first line of a group that is still open, so a checkpoint never skips an unfinished
//! group: after a restart it is read again from its first fragment. Nor does it pass the
//! first line of a group that closed while a group of the other stream was open (their
//! lines interleave): a restart between the two would find the first group's last
//! fragments without their start. The position waits at the first group of such a chain
//! until no group is open.
//!
//! Groups are kept per stream (stdout and stderr of one file do not merge into each other),
//! capped at `max_merged_bytes` (the rest of the group is skipped to its end and the event is
//! flagged `"message_truncated":true`), and a group whose last fragment is older than
//! `partial_timeout` is emitted on its own by [`Decoder::flush_idle`] (flagged
//! `"partial_flushed":true`), as is every open group at the end of the input.
//!
//! Malformed lines are dead-lettered with the file (the decoder's origin), the line and the
//! offset; the stream goes on.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decoder::escape_text;
use super::{Decoder, Framer, NdjsonDecoder, READ_CHUNK};
use crate::batch::{Batch, DeadLetter, EventMeta, NO_SLOTS, PADDING};

/// Which line format a container log file has. Plain data, `Copy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerFormat {
    /// CRI (containerd, CRI-O): `<time> <stream> <P|F> <message>`. The default.
    #[default]
    Cri,
    /// Docker json-file: `{"log":…,"stream":…,"time":…}`.
    Docker,
    /// Per line: a line starting with `{` is Docker, any other is CRI.
    Auto,
}

/// Settings of a [`ContainerDecoder`], with documented defaults. Plain data, cheap to clone.
#[derive(Clone, Debug)]
pub struct ContainerSettings {
    /// The line format. Default [`ContainerFormat::Cri`].
    pub format: ContainerFormat,
    /// Most bytes of one merged message; the rest of its group is skipped and the event is
    /// flagged `"message_truncated":true`. Default 1 MiB.
    pub max_merged_bytes: usize,
    /// A partial group whose last fragment is older than this is emitted as it is (flagged
    /// `"partial_flushed":true`) when the input is idle. Default 5 s.
    pub partial_timeout: Duration,
    /// When a message is itself a JSON object, merge its members into the event instead of
    /// keeping it as the `message` string. Default false.
    pub merge_json: bool,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self {
            format: ContainerFormat::Cri,
            max_merged_bytes: 1 << 20,
            partial_timeout: Duration::from_secs(5),
            merge_json: false,
        }
    }
}

/// Members added to every event of a stream (Kubernetes metadata): `"key":value` pairs
/// separated by commas, with no leading or trailing comma, or nothing. Asked once per batch,
/// so it may change while the stream runs (labels from the API). Implementations should
/// return a shared rendering (an `Arc` clone), not render per call.
pub trait ExtraFields: Send + Sync {
    /// The members, rendered.
    fn members(&self) -> Arc<[u8]>;
    /// Top-level keys the members use: a JSON message with one of them is not merged.
    fn keys(&self) -> &[&'static str];
}

/// stdout or stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    fn name(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// One parsed physical line.
pub(crate) struct Line<'a> {
    pub(crate) time: &'a [u8],
    pub(crate) stream: StreamKind,
    pub(crate) partial: bool,
    pub(crate) message: Cow<'a, [u8]>,
}

/// An open group of partial lines of one stream.
struct Group {
    message: Vec<u8>,
    time: Vec<u8>,
    line: u64,
    offset: u64,
    last: Instant,
    truncated: bool,
}

/// Counters a [`ContainerDecoder`] keeps (read them with [`ContainerDecoder::counts`]).
/// Plain data, `Copy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerCounts {
    /// Events merged from more than one physical line.
    pub merged: u64,
    /// Events whose message was cut at `max_merged_bytes`.
    pub truncated: u64,
    /// Open groups emitted by the timeout or at the end of the input.
    pub flushed: u64,
    /// Lines dead-lettered as malformed.
    pub malformed: u64,
    /// JSON messages not merged because a key clashed with the event's own fields.
    pub json_conflicts: u64,
}

/// The CRI / Docker decoder: frames lines with a [`Framer`] into a scratch batch, then
/// writes one event per complete (or merged) message into the caller's batch.
///
/// Cost: one copy of each line into the scratch batch and one escaped copy of each message
/// into the output; a merged group is copied once more while it is open. Memory: the
/// scratch batch, plus at most `max_merged_bytes` per open group (two per file).
pub struct ContainerDecoder {
    inner: NdjsonDecoder,
    scratch: Batch,
    settings: ContainerSettings,
    origin: Arc<str>,
    extra: Option<Arc<dyn ExtraFields>>,
    /// Members for the batch being written (fetched from `extra` when it opens).
    members: Arc<[u8]>,
    groups: [Option<Group>; 2],
    /// The offset of the first group of the current chain of overlapping groups (a group
    /// opened while another was open joins its chain); `None` when no group is open.
    chain: Option<u64>,
    /// The end of the last line handled (the framer's position after a completed scratch
    /// batch).
    done: u64,
    /// Whether the caller's batch holds output of ours not yet handed back.
    out_open: bool,
    raw_max: usize,
    /// Bytes `fill` read that `decode` has not taken yet.
    pending_input: Vec<u8>,
    read_buf: Vec<u8>,
    counts: ContainerCounts,
}

impl std::fmt::Debug for ContainerDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerDecoder")
            .field("origin", &self.origin)
            .field("position", &self.position())
            .field("counts", &self.counts)
            .finish()
    }
}

impl ContainerDecoder {
    /// A decoder over `framer` (its bounds and starting position). `origin` names the input
    /// (the file) in dead letters.
    pub fn new(framer: Framer, settings: ContainerSettings, origin: impl Into<Arc<str>>) -> Self {
        let done = framer.position();
        let raw_max = framer.raw_max;
        Self {
            inner: NdjsonDecoder::new(framer),
            scratch: Batch::new(),
            settings,
            origin: origin.into(),
            extra: None,
            members: Arc::from(&b""[..]),
            groups: [None, None],
            chain: None,
            done,
            out_open: false,
            raw_max,
            pending_input: Vec::new(),
            read_buf: Vec::new(),
            counts: ContainerCounts::default(),
        }
    }

    /// Adds `extra`'s members to every event.
    pub fn with_extra(mut self, extra: Arc<dyn ExtraFields>) -> Self {
        self.extra = Some(extra);
        self
    }

    /// The counters so far.
    pub fn counts(&self) -> ContainerCounts {
        self.counts
    }

    /// Opens the caller's batch for output when it is not open yet.
    fn open(&mut self, out: &mut Batch) {
        if !self.out_open {
            out.clear();
            self.out_open = true;
            if let Some(x) = &self.extra {
                self.members = x.members();
            }
        }
    }

    /// Pads the output batch and hands it back.
    fn close(&mut self, out: &mut Batch) -> bool {
        self.out_open = false;
        out.data.resize(out.data.len() + PADDING, 0);
        let s = &out.stats;
        s.received > 0 || s.skipped > 0 || s.bytes_in > 0 || !out.dead.is_empty()
    }

    /// Turns the lines of the completed scratch batch into output.
    fn absorb(&mut self, out: &mut Batch, now: Instant) {
        self.open(out);
        let mut scratch = std::mem::take(&mut self.scratch);
        out.stats.bytes_in += scratch.stats.bytes_in;
        out.stats.skipped += scratch.stats.skipped;
        for d in scratch.dead.drain(..) {
            // Oversized lines, from the framer.
            out.stats.received += 1;
            out.stats.dead_lettered += 1;
            out.dead.push(d);
        }
        for m in &scratch.events {
            let raw = &scratch.data[m.start as usize..(m.start + m.len) as usize];
            self.line(out, raw, m.line, m.offset, now);
        }
        self.done = self.inner.position();
        self.scratch = scratch;
        // A group of one stream left dangling while the other stream keeps the file busy.
        let timeout = self.settings.partial_timeout;
        self.flush_groups(out, |g| now.saturating_duration_since(g.last) >= timeout);
    }

    /// Handles one physical line.
    fn line(&mut self, out: &mut Batch, raw: &[u8], line: u64, offset: u64, now: Instant) {
        let format = match self.settings.format {
            ContainerFormat::Auto if raw.first() == Some(&b'{') => ContainerFormat::Docker,
            ContainerFormat::Auto => ContainerFormat::Cri,
            f => f,
        };
        let parsed = match format {
            ContainerFormat::Docker => super::docker::parse(raw).map_err(Cow::Owned),
            _ => super::cri::parse(raw).map_err(Cow::Borrowed),
        };
        let l = match parsed {
            Ok(l) => l,
            Err(why) => {
                self.counts.malformed += 1;
                let name = if format == ContainerFormat::Docker {
                    "Docker json-file"
                } else {
                    "CRI"
                };
                let reason = format!(
                    "malformed {name} line in {} at offset {offset}: {why}",
                    self.origin
                );
                out.dead.push(DeadLetter::new(
                    reason,
                    line,
                    offset,
                    None,
                    raw,
                    self.raw_max,
                ));
                out.stats.received += 1;
                out.stats.dead_lettered += 1;
                return;
            }
        };
        let slot = l.stream as usize;
        let max = self.settings.max_merged_bytes;
        match (self.groups[slot].take(), l.partial) {
            (None, false) => {
                let (msg, cut) = cap(&l.message, max);
                self.emit(out, l.stream, l.time, msg, line, offset, cut, false);
            }
            (group, partial) => {
                if group.is_none() {
                    self.chain.get_or_insert(offset);
                }
                let mut g = group.unwrap_or_else(|| Group {
                    message: Vec::new(),
                    time: l.time.to_vec(),
                    line,
                    offset,
                    last: now,
                    truncated: false,
                });
                if !g.truncated {
                    let room = max - g.message.len();
                    let (msg, cut) = cap(&l.message, room);
                    g.message.extend_from_slice(msg);
                    g.truncated = cut;
                }
                g.last = now;
                if partial {
                    self.groups[slot] = Some(g);
                } else {
                    self.counts.merged += 1;
                    self.emit_group(out, l.stream, g, false);
                    self.end_chain_when_closed();
                }
            }
        }
    }

    fn emit_group(&mut self, out: &mut Batch, stream: StreamKind, g: Group, flushed: bool) {
        if flushed {
            self.counts.flushed += 1;
        }
        self.emit(
            out,
            stream,
            &g.time,
            &g.message,
            g.line,
            g.offset,
            g.truncated,
            flushed,
        );
    }

    /// Writes one event and its newline into `out`.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        out: &mut Batch,
        stream: StreamKind,
        time: &[u8],
        message: &[u8],
        line: u64,
        offset: u64,
        truncated: bool,
        flushed: bool,
    ) {
        if truncated {
            self.counts.truncated += 1;
        }
        let start = out.data.len();
        let d = &mut out.data;
        d.extend_from_slice(b"{\"stream\":\"");
        d.extend_from_slice(stream.name().as_bytes());
        d.extend_from_slice(b"\",\"time\":\"");
        escape_text(time, d);
        d.push(b'"');
        let object = if self.settings.merge_json && !truncated && !flushed {
            let keys = self.extra.as_ref().map_or(&[][..], |x| x.keys());
            match json_object(message, keys) {
                JsonObject::Members(inner) => Some(inner),
                JsonObject::Conflict => {
                    self.counts.json_conflicts += 1;
                    None
                }
                JsonObject::Not => None,
            }
        } else {
            None
        };
        match object {
            Some(inner) => {
                if !inner.iter().all(u8::is_ascii_whitespace) {
                    d.push(b',');
                    // Raw line breaks in valid JSON are whitespace: keep the event on one line.
                    d.extend(inner.iter().map(
                        |&c| {
                            if c == b'\n' || c == b'\r' { b' ' } else { c }
                        },
                    ));
                }
            }
            None => {
                d.extend_from_slice(b",\"message\":\"");
                escape_text(message, d);
                d.push(b'"');
            }
        }
        if !self.members.is_empty() {
            d.push(b',');
            d.extend_from_slice(&self.members);
        }
        if truncated {
            d.extend_from_slice(b",\"message_truncated\":true");
        }
        if flushed {
            d.extend_from_slice(b",\"partial_flushed\":true");
        }
        d.push(b'}');
        let len = d.len() - start;
        d.push(b'\n');
        out.events.push(EventMeta {
            start: start as u32,
            len: len as u32,
            s_start: 0,
            s_len: 0,
            line,
            offset,
            route: 0,
            changed: false,
            plain: false,
            slot_start: NO_SLOTS,
        });
        out.stats.received += 1;
    }

    /// Emits the open groups `which` selects, oldest first.
    fn flush_groups(&mut self, out: &mut Batch, which: impl Fn(&Group) -> bool) -> bool {
        let mut order: Vec<usize> = (0..2)
            .filter(|&i| self.groups[i].as_ref().is_some_and(&which))
            .collect();
        order.sort_by_key(|&i| self.groups[i].as_ref().map_or(0, |g| g.offset));
        if order.is_empty() {
            return false;
        }
        self.open(out);
        for i in order {
            if let Some(g) = self.groups[i].take() {
                let stream = if i == 0 {
                    StreamKind::Stdout
                } else {
                    StreamKind::Stderr
                };
                self.emit_group(out, stream, g, true);
            }
        }
        self.end_chain_when_closed();
        true
    }

    /// Ends the chain of overlapping groups once none is open.
    fn end_chain_when_closed(&mut self) {
        if self.groups.iter().all(Option::is_none) {
            self.chain = None;
        }
    }
}

/// At most `max` bytes of `m`, cut back to a UTF-8 character boundary; and whether it was cut.
fn cap(m: &[u8], max: usize) -> (&[u8], bool) {
    if m.len() <= max {
        return (m, false);
    }
    let mut end = max;
    // Back off over continuation bytes (at most 3) so no character is split.
    while end > 0 && max - end < 3 && (m[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    (&m[..end], true)
}

enum JsonObject<'a> {
    /// A JSON object; its bytes between the outer braces.
    Members(&'a [u8]),
    /// A JSON object with a key the event uses itself.
    Conflict,
    /// Not a JSON object.
    Not,
}

/// The keys every event has.
const OWN_KEYS: [&str; 2] = ["stream", "time"];

fn json_object<'a>(m: &'a [u8], extra_keys: &[&str]) -> JsonObject<'a> {
    let t = m.trim_ascii();
    if t.len() < 2 || t[0] != b'{' || t[t.len() - 1] != b'}' {
        return JsonObject::Not;
    }
    let check = KeyCheck {
        extra: extra_keys,
        clash: std::cell::Cell::new(false),
    };
    let mut de = serde_json::Deserializer::from_slice(t);
    if serde::de::DeserializeSeed::deserialize(&check, &mut de).is_err() || de.end().is_err() {
        return JsonObject::Not;
    }
    if check.clash.get() {
        JsonObject::Conflict
    } else {
        JsonObject::Members(&t[1..t.len() - 1])
    }
}

/// Validates a JSON object and notes whether a top-level key is one of the event's own.
/// Allocates nothing for keys without escapes.
struct KeyCheck<'k> {
    extra: &'k [&'k str],
    clash: std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for &KeyCheck<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &KeyCheck<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if OWN_KEYS.contains(&&*key) || self.extra.contains(&&*key) {
                self.clash.set(true);
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

impl Decoder for ContainerDecoder {
    fn decode(&mut self, input: &mut &[u8], batch: &mut Batch) -> bool {
        self.decode_chunk(input, batch, true)
    }

    fn decode_chunk(&mut self, input: &mut &[u8], batch: &mut Batch, idle: bool) -> bool {
        let now = Instant::now();
        // The framer may complete batches even from no new input (lines carried over from
        // a full batch), so it is asked until it takes everything and completes nothing.
        while self.inner.decode_chunk(input, &mut self.scratch, idle) {
            self.absorb(batch, now);
            let s = &batch.stats;
            if s.received > 0 || !batch.dead.is_empty() {
                return self.close(batch);
            }
        }
        false
    }

    fn decode_eof(&mut self, batch: &mut Batch) -> bool {
        let now = Instant::now();
        // Called until it returns false: what the framer has left, batch by batch, then the
        // open groups.
        while self.inner.decode_eof(&mut self.scratch) {
            self.absorb(batch, now);
            let s = &batch.stats;
            if s.received > 0 || !batch.dead.is_empty() {
                return self.close(batch);
            }
        }
        self.flush_groups(batch, |_| true);
        self.done = self.inner.position();
        if !self.out_open {
            return false;
        }
        self.close(batch)
    }

    fn fill(&mut self, input: &mut dyn std::io::Read, batch: &mut Batch) -> crate::Result<bool> {
        loop {
            if !self.pending_input.is_empty() {
                let buf = std::mem::take(&mut self.pending_input);
                let mut rest = &buf[..];
                let done = self.decode(&mut rest, batch);
                self.pending_input = rest.to_vec();
                if done {
                    return Ok(true);
                }
            }
            self.read_buf.resize(READ_CHUNK, 0);
            let n = loop {
                match input.read(&mut self.read_buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(crate::Error::input(e)),
                }
            };
            if n == 0 {
                return Ok(self.decode_eof(batch));
            }
            self.pending_input.extend_from_slice(&self.read_buf[..n]);
        }
    }

    fn flush_idle(&mut self, batch: &mut Batch, now: Instant) -> bool {
        let timeout = self.settings.partial_timeout;
        if !self.flush_groups(batch, |g| now.saturating_duration_since(g.last) >= timeout) {
            return false;
        }
        self.close(batch)
    }

    fn position(&self) -> u64 {
        self.groups
            .iter()
            .flatten()
            .map(|g| g.offset)
            .chain(self.chain)
            .fold(self.done, u64::min)
    }
}

#[cfg(test)]
mod tests;
