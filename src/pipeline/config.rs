//! Pipeline settings with their defaults. Plain data: validated by [`PipelineConfig::validate`]
//! and turned into a running pipeline by [`crate::Pipeline::new`].

use crate::error::{Error, Result};
use crate::parse::JsonEngine;

/// Bounds on batches and lines. Every field has a documented default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Most events in one batch. Default 1,024: large enough that one wasm call per batch
    /// costs about a nanosecond per event, small enough to stay in L2.
    pub max_batch_events: usize,
    /// Most bytes of events in one batch (a single longer line still forms its own batch).
    /// Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Longest line accepted. A longer line is dead-lettered as oversized, with only its first
    /// `min(max_line_bytes, dead_letter_raw_max)` bytes kept (whatever sizes the input is
    /// read in); memory stays bounded and the lines after it still flow. A whitespace-only
    /// line longer than this is dead-lettered too. Default 1 MiB.
    pub max_line_bytes: usize,
    /// Deepest JSON nesting accepted. Default 1,024 (simdjson's default).
    pub max_depth: usize,
    /// Most bytes of a rejected line copied into its dead letter's `raw`. Default 64 KiB.
    pub dead_letter_raw_max: usize,
    /// Worker threads that parse and filter, 1 to 255. Default 1: everything runs on the
    /// calling thread. With N > 1 the workers take turns reading and framing a batch, each
    /// processes its own batches, a channel carries them to the calling thread, and the
    /// output keeps input order (with [`PipelineConfig::input_never_blocks`], the calling
    /// thread is one of the N). Each wasm module then holds N + 1 instances, out of 256 per
    /// process.
    pub workers: usize,
    /// When a read returns less than asked (a pipe or socket with nothing more to give right
    /// now), process the lines already read instead of waiting for a full batch. Default
    /// true: a slow producer's events go out at once; files still fill whole batches.
    pub flush_when_idle: bool,
    /// The input's reads never wait for more to come (a regular file, bytes in memory).
    /// With several workers the calling thread then reads and works batches as the worker
    /// threads do, besides writing them in order (measured 8-28% faster on 2 cores than
    /// a calling thread that only writes). Default false, and it must stay false for a pipe
    /// or socket: a batch another worker finished would wait for the calling thread's read,
    /// that is, for the next input. `sluicebox filter` sets it for a regular file.
    pub input_never_blocks: bool,
    /// Which JSON validator the parse stage runs. Default [`JsonEngine::Sluice`]; both
    /// accept and reject exactly the same lines.
    pub json_engine: JsonEngine,
    /// Consecutive failed filter calls (with no success between them) that trip the breaker
    /// and stop the run with [`crate::Kind::FilterBroken`]. Default 64.
    pub breaker_threshold: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 1024,
            max_batch_bytes: 1 << 20,
            max_line_bytes: 1 << 20,
            max_depth: simd_json::DEFAULT_MAX_DEPTH,
            dead_letter_raw_max: 64 << 10,
            workers: 1,
            flush_when_idle: true,
            input_never_blocks: false,
            json_engine: JsonEngine::Sluice,
            breaker_threshold: 64,
        }
    }
}

impl PipelineConfig {
    /// Checks that every value is in range.
    ///
    /// # Errors
    /// [`crate::Kind::Config`] naming the field and its allowed range.
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::config(what.to_string()))
            }
        };
        check(
            (1..=1 << 20).contains(&self.max_batch_events),
            "max_batch_events must be 1..=1048576",
        )?;
        check(
            (1..=1 << 30).contains(&self.max_batch_bytes),
            "max_batch_bytes must be 1..=1 GiB",
        )?;
        check(
            (1..=1 << 30).contains(&self.max_line_bytes),
            "max_line_bytes must be 1..=1 GiB",
        )?;
        check(
            (1..=65_535).contains(&self.max_depth),
            "max_depth must be 1..=65535",
        )?;
        check((1..=255).contains(&self.workers), "workers must be 1..=255")?;
        check(
            self.breaker_threshold >= 1,
            "breaker_threshold must be at least 1",
        )?;
        Ok(())
    }
}
