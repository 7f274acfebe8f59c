//! The built-in sinks: NDJSON to any writer, nothing, and a collector for tests.

use std::io::Write;

use super::{Flow, Output, Sink};
use crate::error::{Error, Result};
use crate::pipeline::Stats;

/// Writes each event as one NDJSON line to `W` (stdout, a file, a socket).
///
/// Cost: one reusable block buffer; each batch is one `write_all` of the whole block.
pub struct WriterSink<W: Write> {
    inner: W,
    block: Vec<u8>,
    what: &'static str,
}

impl<W: Write> WriterSink<W> {
    /// A sink writing to `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, block: Vec::with_capacity(1 << 20), what: "writing output" }
    }

    /// Names the sink in error messages ("writing dead letters: …").
    pub fn described_as(mut self, what: &'static str) -> Self {
        self.what = what;
        self
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Sink for WriterSink<W> {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        self.block.clear();
        for e in out.iter() {
            self.block.extend_from_slice(e.bytes);
            self.block.push(b'\n');
        }
        self.inner.write_all(&self.block).map_err(|e| Error::sink(self.what, e))?;
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _stats: &Stats) -> Result<()> {
        self.inner.flush().map_err(|e| Error::sink(self.what, e))
    }
}

/// Discards everything. Cost: nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn write(&mut self, _out: &Output<'_>) -> Result<Flow> {
        Ok(Flow::Continue)
    }
}

/// Keeps every event (bytes and input line) in memory; for tests and small jobs.
///
/// Cost: one allocation per event.
#[derive(Clone, Debug, Default)]
pub struct CollectSink {
    /// `(event bytes, input line, route)` in output order.
    pub events: Vec<(Vec<u8>, u64, Option<String>)>,
    /// Whether `finish` was called.
    pub finished: bool,
}

impl CollectSink {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The collected events joined as NDJSON.
    pub fn ndjson(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (e, _, _) in &self.events {
            v.extend_from_slice(e);
            v.push(b'\n');
        }
        v
    }
}

impl Sink for CollectSink {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        for e in out.iter() {
            self.events.push((e.bytes.to_vec(), e.line, e.route.map(str::to_string)));
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _stats: &Stats) -> Result<()> {
        self.finished = true;
        Ok(())
    }
}
