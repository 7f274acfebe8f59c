//! The pipeline wires the stages: source → frame → parse → batch → filter → sink. It owns
//! no logic of its own beyond ordering, failure isolation and counting.

mod config;
mod stage;
mod stats;

pub use config::PipelineConfig;
pub use stats::Stats;

use std::io::Read;
use std::time::{Duration, Instant};

use crate::batch::{Batch, DeadLetter, EventMeta};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::frame::{Framer, Need};
use crate::sink::{Flow, Output, Sink};
use crate::source::reader::{AtReader, ReadAt};
pub(crate) use stage::Stage;

/// How many dead letters a [`Report`] keeps when the run has no dead-letter sink.
pub const REPORT_DEAD_LETTERS: usize = 5;

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct Report {
    /// The run's counters; [`Stats::is_balanced`] holds.
    pub stats: Stats,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The first few dead letters, when the run had no dead-letter sink.
    pub first_dead_letters: Vec<DeadLetter>,
}

/// A configured chain of filters, ready to run over any number of inputs in turn.
///
/// Cost: building is cheap; each run reuses its batches. `Send`; one run at a time.
///
/// # Examples
/// ```
/// use sluicebox::{CollectSink, DropWhere, Pipeline, PipelineConfig};
///
/// let input = b"{\"level\":\"INFO\",\"msg\":\"up\"}\n{\"level\":\"DEBUG\"}\nnot json\n";
/// let mut sink = CollectSink::new();
/// let mut pipeline = Pipeline::new(PipelineConfig::default())?.with_filter(DropWhere::drop_debug());
/// let report = pipeline.run(&input[..], &mut sink)?;
/// assert_eq!((report.stats.emitted, report.stats.filtered, report.stats.dead_lettered), (1, 1, 1));
/// assert!(report.stats.is_balanced());
/// # Ok::<(), sluicebox::Error>(())
/// ```
pub struct Pipeline {
    config: PipelineConfig,
    filters: Vec<Box<dyn Filter>>,
    /// The runtime's counters, kept from run to run: building a fresh registry for every
    /// run was over half of a short run's fixed cost (25 µs for ten lines).
    metrics: crate::metrics::Metrics,
}

// A pipeline moves between threads (a service builds it on one and runs it on another).
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Pipeline>();
};

impl Pipeline {
    /// A pipeline with no filters (it validates and passes events through).
    ///
    /// # Errors
    /// [`crate::Kind::Config`] when the configuration is out of range.
    pub fn new(config: PipelineConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            filters: Vec::new(),
            metrics: crate::metrics::Metrics::new(),
        })
    }

    /// Appends a filter to the chain; filters run in the order added.
    pub fn with_filter(mut self, filter: impl Filter + 'static) -> Self {
        self.filters.push(Box::new(filter));
        self
    }

    /// Appends a boxed filter to the chain.
    pub fn push_filter(&mut self, filter: Box<dyn Filter>) {
        self.filters.push(filter);
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Runs `input` through the chain into `sink`; rejected events are counted and the
    /// first few kept in the [`Report`].
    ///
    /// A facade over the runtime ([`crate::runtime`]): the input is one source with the
    /// runtime's in-flight budget and acknowledgements, the chain one transform per filter,
    /// the sink driven on the calling thread (so it need not be `Send`). With one worker the
    /// whole run happens on the calling thread, on this pipeline's own filter instances
    /// (their state carries over to the next run); with more, each worker thread reads,
    /// parses and filters its own batches with forks of them, and the sink still sees the
    /// input's order. At most `4 × workers + 1` batches are read and not yet handed to the
    /// sink; a sink may hold its [`crate::Ack`]s as long as it likes (until its `finish`,
    /// even) without stalling the read.
    ///
    /// # Errors
    /// [`crate::Kind::Input`] if reading fails, [`crate::Kind::Sink`] if the sink fails or
    /// panics (the run stops there), [`crate::Kind::FilterBroken`] if a filter's breaker
    /// trips. Bad events are never errors. A sink's [`Flow::Stop`] ends the run without an
    /// error: the report counts what the sink was handed.
    pub fn run<R: Read + Send, S: Sink>(&mut self, input: R, mut sink: S) -> Result<Report> {
        self.run_local(input, None, &mut sink, None)
    }

    /// Like [`Pipeline::run`], with rejected events rendered as NDJSON dead letters
    /// (`reason`, `line`, `offset`, `filter`, `raw`) into `dead_letter`.
    ///
    /// # Errors
    /// As [`Pipeline::run`].
    pub fn run_with_dead_letter<R: Read + Send, S: Sink, D: Sink>(
        &mut self,
        input: R,
        mut sink: S,
        mut dead_letter: D,
    ) -> Result<Report> {
        self.run_local(input, None, &mut sink, Some(&mut dead_letter))
    }

    /// [`Pipeline::run`] over an input read by position (bytes in memory, a regular file):
    /// with several workers each reads and frames its own byte range, instead of taking
    /// turns at one stream (`sluicebox bench --workers 2`: see README, "Performance").
    /// The output, its order, line numbers and dead letters are the same as `run`'s.
    ///
    /// # Errors
    /// As [`Pipeline::run`].
    pub fn run_at<S: Sink>(&mut self, input: &dyn ReadAt, mut sink: S) -> Result<Report> {
        self.run_local(AtReader::new(input), Some(input), &mut sink, None)
    }

    /// [`Pipeline::run_at`] with dead letters, as [`Pipeline::run_with_dead_letter`].
    ///
    /// # Errors
    /// As [`Pipeline::run`].
    pub fn run_at_with_dead_letter<S: Sink, D: Sink>(
        &mut self,
        input: &dyn ReadAt,
        mut sink: S,
        mut dead_letter: D,
    ) -> Result<Report> {
        self.run_local(
            AtReader::new(input),
            Some(input),
            &mut sink,
            Some(&mut dead_letter),
        )
    }

    /// The runs: the runtime with borrowed ends, on this pipeline's filters and metrics.
    fn run_local(
        &mut self,
        input: impl Read + Send,
        at: Option<&dyn ReadAt>,
        sink: &mut dyn Sink,
        dead_letter: Option<&mut dyn Sink>,
    ) -> Result<Report> {
        crate::runtime::local::run(
            &self.config,
            &mut self.filters,
            &self.metrics,
            input,
            at,
            sink,
            dead_letter,
        )
    }

    /// Runs an async reader through the chain on the calling task. Parsing and filtering
    /// are CPU work done inline between reads, so drive this from a task that may block
    /// (e.g. `spawn_blocking` or a dedicated runtime) when latency elsewhere matters.
    /// Always single-worker.
    ///
    /// # Errors
    /// As [`Pipeline::run`].
    pub async fn run_async<R, S>(
        &mut self,
        mut input: R,
        mut sink: S,
        mut dead_letter: Option<&mut dyn Sink>,
    ) -> Result<Report>
    where
        R: tokio::io::AsyncRead + Unpin,
        S: Sink,
    {
        use tokio::io::AsyncReadExt;
        let started = Instant::now();
        let mut out = Outlet::new(&mut sink, dead_letter.take());
        let mut stage = Stage::new(&self.config, std::mem::take(&mut self.filters));
        let mut framer = self.framer();
        let mut batch = Batch::new();
        let result: Result<()> = async {
            loop {
                framer.begin(&mut batch);
                let mut need = framer.step(&mut batch);
                while need == Need::Read {
                    let start = Framer::spare(&mut batch);
                    let n = input
                        .read(&mut batch.data[start..])
                        .await
                        .map_err(Error::input)?;
                    need = framer.commit(&mut batch, start, n);
                }
                stage.process(&mut batch)?;
                if out.deliver(&mut batch)? == Flow::Stop || framer.finished() {
                    return Ok(());
                }
            }
        }
        .await;
        self.filters = stage.into_filters();
        result?;
        out.finish(started)
    }

    fn framer(&self) -> Framer {
        let c = &self.config;
        Framer::new(
            c.max_batch_events,
            c.max_batch_bytes,
            c.max_line_bytes,
            c.dead_letter_raw_max,
        )
        .flush_when_idle(c.flush_when_idle)
    }
}

/// The output side of a run: the sink, the dead letter, and the run's counters.
struct Outlet<'a, 'b> {
    sink: &'a mut dyn Sink,
    dead: Option<&'b mut dyn Sink>,
    stats: Stats,
    first_dead: Vec<DeadLetter>,
    dead_text: Vec<u8>,
    dead_meta: Vec<EventMeta>,
}

impl<'a, 'b> Outlet<'a, 'b> {
    fn new(sink: &'a mut dyn Sink, dead: Option<&'b mut dyn Sink>) -> Self {
        Self {
            sink,
            dead,
            stats: Stats::default(),
            first_dead: Vec::new(),
            dead_text: Vec::new(),
            dead_meta: Vec::new(),
        }
    }

    /// Sends a processed batch's events and dead letters on, and counts them.
    fn deliver(&mut self, batch: &mut Batch) -> Result<Flow> {
        self.stats.add(&batch.delivered_stats());
        if !batch.dead.is_empty() {
            // The framer, the parser and each filter add their dead letters in turn: put
            // them back in input order (stable, so a line's own letters keep theirs).
            if batch.dead.len() > 1 {
                batch.dead.sort_by_key(|d| d.line);
            }
            if let Some(dead) = self.dead.as_deref_mut() {
                self.dead_text.clear();
                self.dead_meta.clear();
                for d in &batch.dead {
                    let start = self.dead_text.len();
                    d.to_json(&mut self.dead_text);
                    let len = self.dead_text.len() - start;
                    self.dead_meta.push(EventMeta {
                        start: start as u32,
                        len: len as u32,
                        line: d.line,
                        offset: d.offset,
                        changed: true,
                        ..Default::default()
                    });
                }
                dead.write(&Output {
                    data: &self.dead_text,
                    events: &self.dead_meta,
                    routes: &[],
                    token: None,
                    structurals: &[],
                    tally: None,
                })?;
            } else {
                let room = REPORT_DEAD_LETTERS.saturating_sub(self.first_dead.len());
                self.first_dead
                    .extend(batch.dead.iter().take(room).cloned());
            }
        }
        if batch.events.is_empty() {
            return Ok(Flow::Continue);
        }
        self.sink.write(&Output {
            data: &batch.data,
            events: &batch.events,
            routes: &batch.routes,
            token: batch.token.as_ref(),
            structurals: &batch.structurals,
            tally: None,
        })
    }

    fn finish(mut self, started: Instant) -> Result<Report> {
        self.sink.finish(&self.stats)?;
        if let Some(d) = self.dead.as_deref_mut() {
            d.finish(&self.stats)?;
        }
        debug_assert!(
            self.stats.is_balanced(),
            "conservation law violated: {:?}",
            self.stats
        );
        Ok(Report {
            stats: self.stats,
            elapsed: started.elapsed(),
            first_dead_letters: self.first_dead,
        })
    }
}
