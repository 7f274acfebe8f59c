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
        Self {
            inner,
            block: Vec::with_capacity(1 << 20),
            what: "writing output",
        }
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

    /// The writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

/// Runs of contiguous output at least this long are written straight from the batch buffer
/// instead of being copied into the block.
const DIRECT_RUN: usize = 64 << 10;

impl<W: Write> Sink for WriterSink<W> {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        let data = out.data;
        self.block.clear();
        // Unchanged events still have their input newline after them, so consecutive ones
        // form one contiguous run of output bytes.
        let mut run: Option<(usize, usize)> = None;
        for m in out.events {
            let (a, b) = (m.start as usize, (m.start + m.len) as usize);
            let nl = data.get(b) == Some(&b'\n');
            if let Some((ra, rb)) = run {
                if nl && rb == a {
                    run = Some((ra, b + 1));
                    continue;
                }
                self.flush_run(&data[ra..rb])?;
                run = None;
            }
            if nl {
                run = Some((a, b + 1));
            } else {
                self.block.extend_from_slice(&data[a..b]);
                self.block.push(b'\n');
            }
        }
        if let Some((ra, rb)) = run {
            self.flush_run(&data[ra..rb])?;
        }
        self.inner
            .write_all(&self.block)
            .map_err(|e| Error::sink(self.what, e))?;
        Ok(Flow::Continue)
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(|e| Error::sink(self.what, e))
    }

    fn finish(&mut self, _stats: &Stats) -> Result<()> {
        self.inner.flush().map_err(|e| Error::sink(self.what, e))
    }
}

impl<W: Write> WriterSink<W> {
    fn flush_run(&mut self, run: &[u8]) -> Result<()> {
        if run.len() < DIRECT_RUN {
            self.block.extend_from_slice(run);
            return Ok(());
        }
        if !self.block.is_empty() {
            self.inner
                .write_all(&self.block)
                .map_err(|e| Error::sink(self.what, e))?;
            self.block.clear();
        }
        self.inner
            .write_all(run)
            .map_err(|e| Error::sink(self.what, e))
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
            self.events
                .push((e.bytes.to_vec(), e.line, e.route.map(str::to_string)));
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _stats: &Stats) -> Result<()> {
        self.finished = true;
        Ok(())
    }
}
