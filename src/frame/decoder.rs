//! Decoders: the sans-IO form of the frame stage, for sources that receive bytes in chunks
//! (a socket, an HTTP body, a Kafka message) rather than owning a reader. Bytes go in, framed
//! events go into a [`Batch`], and the decoder says when the batch is complete. A source that
//! owns a [`std::io::Read`] calls [`Decoder::fill`] instead, which reads straight into the
//! batch with no copy.
//!
//! - [`NdjsonDecoder`]: one JSON object per line, passed through byte for byte (the
//!   [`Framer`]).
//! - [`TextDecoder`]: each line becomes `{"message":"<line>"}`, for plain-text logs; invalid
//!   UTF-8 is replaced with U+FFFD and counted.

use super::container::{ContainerDecoder, ContainerFormat, ContainerSettings};
use super::{Framer, Need};
use crate::batch::{Batch, PADDING};

/// Frames a byte stream into events. One per stream (a file, a connection, a partition).
///
/// Contract: [`Decoder::decode`] takes bytes from the front of `input` and returns `true`
/// when `batch` is complete: the caller sends it (with [`Decoder::position`] as its end
/// position), then calls `decode` again with a fresh batch and what is left of `input`.
/// `false` means all of `input` was taken and the open batch waits for more bytes (it
/// must be passed again, unchanged, to the next call). [`Decoder::decode_eof`] ends the
/// stream: it frames what is left (a last line without a newline) into the batch.
pub trait Decoder: Send {
    /// Frames the complete events of `input` into `batch`. See the trait's contract.
    fn decode(&mut self, input: &mut &[u8], batch: &mut Batch) -> bool;

    /// [`Decoder::decode`], with the caller saying whether its input is idle after these
    /// bytes. A source that reads in chunks passes `idle = false` after a full read (more
    /// is waiting): an open batch then stays open for the next chunk instead of completing
    /// at every chunk's end, so batches fill up to their bounds. `decode` is
    /// `decode_chunk(input, batch, true)`; the default ignores `idle`.
    fn decode_chunk(&mut self, input: &mut &[u8], batch: &mut Batch, idle: bool) -> bool {
        let _ = idle;
        self.decode(input, batch)
    }

    /// The stream has ended: frames what is left into `batch`. Returns whether the batch
    /// holds anything (events, dead letters or counts) to send.
    fn decode_eof(&mut self, batch: &mut Batch) -> bool;

    /// Reads from `input` into `batch` until the batch is complete or the input ends or
    /// is idle (a short read). Returns false once the input ended with nothing left.
    ///
    /// # Errors
    /// [`crate::Kind::Input`] when reading fails.
    fn fill(&mut self, input: &mut dyn std::io::Read, batch: &mut Batch) -> crate::Result<bool>;

    /// The stream position just past the last byte framed into a completed batch.
    fn position(&self) -> u64;

    /// The input is idle at `now` (no new bytes): a decoder that holds back data waiting for
    /// more (a partial container log line) and has waited past its timeout frames it into
    /// `batch`, which must be the open batch (as [`Decoder::decode`] left it). Returns
    /// whether the batch is then complete, to be sent with [`Decoder::position`]. The
    /// default holds nothing back and returns false.
    fn flush_idle(&mut self, batch: &mut Batch, now: std::time::Instant) -> bool {
        let _ = (batch, now);
        false
    }
}

/// Which [`Decoder`] a source uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// One JSON object per line (default).
    #[default]
    Ndjson,
    /// Plain text: each line becomes `{"message":"<line>"}`.
    Text,
    /// CRI container logs (`<time> <stream> <P|F> <message>`), partial lines merged, with
    /// the default [`ContainerSettings`].
    Cri,
    /// Docker json-file container logs, split records merged, with the default
    /// [`ContainerSettings`].
    Docker,
}

impl Codec {
    /// The codec named `name` (`ndjson`, `text`, `cri` or `docker`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ndjson" | "json" => Some(Codec::Ndjson),
            "text" => Some(Codec::Text),
            "cri" => Some(Codec::Cri),
            "docker" => Some(Codec::Docker),
            _ => None,
        }
    }

    /// A decoder of this codec over `framer`.
    pub fn decoder(self, framer: Framer) -> Box<dyn Decoder> {
        self.decoder_named(framer, "the input")
    }

    /// A decoder of this codec over `framer`, for an input named `origin` (a file's path:
    /// container log decoders name it in their dead letters).
    pub fn decoder_named(self, framer: Framer, origin: &str) -> Box<dyn Decoder> {
        match self {
            Codec::Ndjson => Box::new(NdjsonDecoder::new(framer)),
            Codec::Text => Box::new(TextDecoder::new(framer)),
            Codec::Cri | Codec::Docker => {
                let settings = ContainerSettings {
                    format: if self == Codec::Cri {
                        ContainerFormat::Cri
                    } else {
                        ContainerFormat::Docker
                    },
                    ..ContainerSettings::default()
                };
                Box::new(ContainerDecoder::new(framer, settings, origin))
            }
        }
    }
}

/// NDJSON: the [`Framer`] as a [`Decoder`]. Events are the input's bytes.
///
/// Cost: `decode` copies each chunk once into the batch; `fill` reads in place.
pub struct NdjsonDecoder {
    framer: Framer,
    open: bool,
}

impl NdjsonDecoder {
    /// A decoder over `framer` (its limits and starting position).
    pub fn new(framer: Framer) -> Self {
        Self {
            framer,
            open: false,
        }
    }
}

impl std::fmt::Debug for NdjsonDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NdjsonDecoder")
            .field("position", &self.framer.position())
            .finish()
    }
}

impl Decoder for NdjsonDecoder {
    fn decode(&mut self, input: &mut &[u8], batch: &mut Batch) -> bool {
        self.decode_chunk(input, batch, true)
    }

    fn decode_chunk(&mut self, input: &mut &[u8], batch: &mut Batch, idle: bool) -> bool {
        if !self.open {
            self.framer.begin(batch);
            self.open = true;
            if self.framer.step(batch) == Need::Done {
                self.open = false;
                return true;
            }
        }
        while !input.is_empty() {
            let start = Framer::spare(batch);
            let n = input.len().min(batch.data.len() - start);
            batch.data[start..start + n].copy_from_slice(&input[..n]);
            *input = &input[n..];
            if self
                .framer
                .commit_with(batch, start, n, idle && input.is_empty())
                == Need::Done
            {
                self.open = false;
                return true;
            }
        }
        // The input is used up: lines framed from bytes carried over from the last batch go
        // now, not when more input comes (a file that is not written again).
        if idle && self.framer.idle(batch) == Need::Done {
            self.open = false;
            return true;
        }
        false
    }

    fn decode_eof(&mut self, batch: &mut Batch) -> bool {
        if !self.open {
            if self.framer.finished() {
                return false;
            }
            self.framer.begin(batch);
        }
        self.open = false;
        let mut need = self.framer.step(batch);
        while need == Need::Read {
            let start = Framer::spare(batch);
            need = self.framer.commit(batch, start, 0);
        }
        let s = &batch.stats;
        s.received > 0 || s.skipped > 0 || s.bytes_in > 0 || !batch.dead.is_empty()
    }

    fn fill(&mut self, input: &mut dyn std::io::Read, batch: &mut Batch) -> crate::Result<bool> {
        self.open = false;
        self.framer.fill(input, batch)
    }

    fn position(&self) -> u64 {
        self.framer.position()
    }
}

/// Plain text: each framed line becomes `{"message":"<line>"}`. Invalid UTF-8 is replaced
/// with U+FFFD; [`TextDecoder::replaced`] counts the lines that needed it.
///
/// Cost: one escaped copy of each line, appended to the batch.
pub struct TextDecoder {
    inner: NdjsonDecoder,
    replaced: u64,
}

impl TextDecoder {
    /// A decoder over `framer`.
    pub fn new(framer: Framer) -> Self {
        Self {
            inner: NdjsonDecoder::new(framer),
            replaced: 0,
        }
    }

    /// Lines whose invalid UTF-8 was replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Rewrites every framed line of `batch` as a `{"message": …}` object.
    fn wrap(&mut self, batch: &mut Batch) {
        if batch.events.is_empty() {
            return;
        }
        // The framer left PADDING bytes after the last line: the wrapped events go after
        // them, followed by fresh padding.
        let mut events = std::mem::take(&mut batch.events);
        for m in &mut events {
            let (a, b) = (m.start as usize, (m.start + m.len) as usize);
            let start = batch.data.len();
            batch.data.extend_from_slice(b"{\"message\":\"");
            let line = batch.data[a..b].to_vec();
            if escape_text(&line, &mut batch.data) {
                self.replaced += 1;
            }
            batch.data.extend_from_slice(b"\"}");
            m.start = start as u32;
            m.len = (batch.data.len() - start) as u32;
        }
        batch.data.resize(batch.data.len() + PADDING, 0);
        batch.events = events;
    }
}

impl std::fmt::Debug for TextDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextDecoder")
            .field("position", &self.inner.position())
            .field("replaced", &self.replaced)
            .finish()
    }
}

impl Decoder for TextDecoder {
    fn decode(&mut self, input: &mut &[u8], batch: &mut Batch) -> bool {
        self.decode_chunk(input, batch, true)
    }

    fn decode_chunk(&mut self, input: &mut &[u8], batch: &mut Batch, idle: bool) -> bool {
        let done = self.inner.decode_chunk(input, batch, idle);
        if done {
            self.wrap(batch);
        }
        done
    }

    fn decode_eof(&mut self, batch: &mut Batch) -> bool {
        let any = self.inner.decode_eof(batch);
        self.wrap(batch);
        any
    }

    fn fill(&mut self, input: &mut dyn std::io::Read, batch: &mut Batch) -> crate::Result<bool> {
        let more = self.inner.fill(input, batch)?;
        self.wrap(batch);
        Ok(more)
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }
}

/// Appends `line` as the inside of a JSON string (escaped, invalid UTF-8 replaced with
/// U+FFFD). Returns whether anything was replaced.
pub(crate) fn escape_text(line: &[u8], out: &mut Vec<u8>) -> bool {
    let (text, replaced) = match std::str::from_utf8(line) {
        Ok(s) => (std::borrow::Cow::Borrowed(s), false),
        Err(_) => (String::from_utf8_lossy(line), true),
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Copy the run that needs no escape in one go (most of a log line).
        let run = bytes[i..]
            .iter()
            .position(|&c| c < 0x20 || c == b'"' || c == b'\\' || c == 0x7f)
            .unwrap_or(bytes.len() - i);
        out.extend_from_slice(&bytes[i..i + run]);
        i += run;
        let Some(&c) = bytes.get(i) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
        }
        i += 1;
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer() -> Framer {
        Framer::new(1024, 1 << 20, 1 << 20, 64 << 10)
    }

    fn lines(batch: &Batch) -> Vec<String> {
        batch
            .output()
            .iter()
            .map(|e| String::from_utf8(e.bytes.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn chunks_split_anywhere_frame_the_same_lines_and_positions() {
        let input = b"{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}";
        for cut in 0..input.len() {
            let mut d = NdjsonDecoder::new(framer());
            let mut b = Batch::new();
            let mut got = Vec::new();
            for mut part in [&input[..cut], &input[cut..]] {
                while d.decode(&mut part, &mut b) {
                    got.extend(lines(&b));
                }
            }
            if d.decode_eof(&mut b) {
                got.extend(lines(&b));
            }
            assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"], "cut at {cut}");
            assert_eq!(d.position(), input.len() as u64);
        }
    }

    #[test]
    fn the_position_stops_before_a_partial_line() {
        let mut d = NdjsonDecoder::new(framer().starting_at(100));
        let mut b = Batch::new();
        let mut input: &[u8] = b"{\"a\":1}\n{\"b\":";
        assert!(d.decode(&mut input, &mut b));
        assert_eq!(lines(&b), ["{\"a\":1}"]);
        assert_eq!(b.output().iter().next().unwrap().offset, 100);
        assert_eq!(d.position(), 108);
    }

    #[test]
    fn text_lines_become_message_objects() {
        let mut d = TextDecoder::new(framer());
        let mut b = Batch::new();
        let mut input: &[u8] = b"plain \"quoted\" \\ tab\there\n\xff bad\n";
        assert!(d.decode(&mut input, &mut b));
        assert_eq!(
            lines(&b),
            [
                "{\"message\":\"plain \\\"quoted\\\" \\\\ tab\\there\"}",
                "{\"message\":\"\u{fffd} bad\"}"
            ]
        );
        assert_eq!(d.replaced(), 1);
        for l in lines(&b) {
            serde_json::from_str::<serde_json::Value>(&l).unwrap();
        }
    }
}
