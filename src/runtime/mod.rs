//! The runtime: a graph of sources, transforms (filters) and sinks, run with end-to-end
//! acknowledgements and a bounded amount of data in flight.
//!
//! ```text
//!  sources (tokio tasks) ──batches──▶ workers (threads: parse once, run each source's plan)
//!        ▲                                    │ deliveries, dead letters
//!        │ acked positions                    ▼
//!   Stream watermarks ◀── AckTokens ── router (per-source order) ──▶ one thread per sink
//! ```
//!
//! - Each source sends batches with the stream position they end at; its in-flight bytes
//!   are capped ([`crate::source::Budget`]), so a slow sink holds back only the sources that
//!   feed it.
//! - Workers run a batch down its source's plan: each transform on its own copy where the
//!   graph forks, sinks sharing the result. Routes (`NAME.ROUTE`) pick the events a filter
//!   routed there; events no component reads are dead-lettered, never dropped silently.
//! - The router puts each source's batches back in the order they were sent, so sinks see
//!   a source's events in order whatever the number of workers.
//! - A batch's [`crate::ack::AckToken`] is held by every copy of its events; the source's
//!   stream advances when the last one completes (see [`crate::ack`]).
//!
//! Cost per batch: a few channel sends and an `Arc`; nothing per event beyond the stages'
//! own work.

pub(crate) mod graph;
pub(crate) mod local;
mod output;
mod split;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Kind, Result};
use crate::filter::Filter;
use crate::frame::Codec;
use crate::metrics::{ComponentMetrics, Metrics};
use crate::pipeline::PipelineConfig;
use crate::sink::Sink;
use crate::source::{Budget, FrameSettings, OverflowPolicy, Shutdown, Source, SourceContext};

pub use output::ComponentReport;
use output::SinkMsg;

/// Where a sink sends the events its peer refused for good (an HTTP 4xx): the run's dead
/// letter. Built empty with the config; [`Topology::start`] connects it. Events sent before
/// that, or in a run without a dead-letter sink, are refused (`false`), so the sink keeps
/// them unacknowledged instead of losing them.
///
/// Cost: a mutex section and one NDJSON rendering per call. Cheap to clone (an `Arc`).
#[derive(Clone, Default)]
pub struct DeadLetterOutlet {
    inner: Arc<std::sync::Mutex<Option<DeadLetterTarget>>>,
}

/// The dead-letter sink's queue and its metrics.
type DeadLetterTarget = (crossbeam_channel::Sender<SinkMsg>, ComponentMetrics);

impl std::fmt::Debug for DeadLetterOutlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterOutlet").finish_non_exhaustive()
    }
}

impl DeadLetterOutlet {
    fn connect(&self, tx: crossbeam_channel::Sender<SinkMsg>, m: ComponentMetrics) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some((tx, m));
    }

    /// Sends `events` (`(bytes, line, offset)`) to the dead letter as objects naming
    /// `component`, the `stream` they came from, and `reason`. `token` is held until the
    /// dead letter has written them. Returns false when there is no dead letter to take
    /// them (the caller keeps them unacknowledged).
    pub fn send<'a>(
        &self,
        component: &str,
        reason: &str,
        events: impl Iterator<Item = (&'a [u8], u64, u64)>,
        token: Option<&crate::ack::AckToken>,
    ) -> bool {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some((tx, m)) = guard.as_ref() else {
            return false;
        };
        let mut db = worker::DeadBatch {
            text: Vec::new(),
            metas: Vec::new(),
            token: token.cloned(),
            count: 0,
            first: Vec::new(),
        };
        let stream = token.map(|t| t.stream().key().to_string());
        for (raw, line, offset) in events {
            let start = db.text.len();
            db.text.extend_from_slice(b"{\"component\":");
            let _ = serde_json::to_writer(&mut db.text, component);
            if let Some(s) = &stream {
                db.text.extend_from_slice(b",\"stream\":");
                let _ = serde_json::to_writer(&mut db.text, s);
            }
            db.text.push(b',');
            let at = db.text.len();
            crate::batch::DeadLetter::new(reason.to_string(), line, offset, None, raw, raw.len())
                .to_json(&mut db.text);
            db.text.remove(at);
            db.metas.push(crate::batch::EventMeta {
                start: start as u32,
                len: (db.text.len() - start) as u32,
                line,
                offset,
                changed: true,
                ..Default::default()
            });
            db.count += 1;
        }
        if db.count == 0 {
            return true;
        }
        m.buffer_events.inc();
        if tx.send(SinkMsg::Dead(db)).is_err() {
            m.buffer_events.dec();
            return false;
        }
        true
    }
}
use worker::{Shape, SourceRunner, TransformProto};

/// Settings of a whole run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeSettings {
    /// Batch and line bounds, worker threads, JSON engine (see [`PipelineConfig`]).
    pub pipeline: PipelineConfig,
    /// Where sources keep checkpoints and state. Default: none (nothing persisted).
    pub data_dir: Option<PathBuf>,
    /// How long a shutdown waits for in-flight batches to be delivered before giving up
    /// (what is not delivered stays unacknowledged and replays). Default 25 s, under
    /// Kubernetes' default grace period of 30 s.
    pub drain_timeout: Duration,
    /// A sink's queue idle this long has its [`Sink::flush`] called. Default 100 ms.
    pub flush_interval: Duration,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            pipeline: PipelineConfig::default(),
            data_dir: None,
            drain_timeout: Duration::from_secs(25),
            flush_interval: Duration::from_millis(100),
        }
    }
}

/// A source and how the runtime treats it.
#[non_exhaustive]
pub struct SourceSpec {
    /// The source's name.
    pub name: String,
    /// Its type, for metrics (`file`, `kafka`, …).
    pub kind: String,
    /// The source.
    pub source: Box<dyn Source>,
    /// How its bytes are framed into events.
    pub codec: Codec,
    /// Most bytes in flight (sent, not yet acknowledged). Default 64 MiB.
    pub in_flight_bytes: u64,
    /// What happens when the cap is reached. Default [`OverflowPolicy::Block`].
    pub overflow: OverflowPolicy,
}

/// Default in-flight cap per source: 64 MiB.
pub const DEFAULT_IN_FLIGHT_BYTES: u64 = 64 << 20;

impl SourceSpec {
    /// A source with the default codec (NDJSON) and in-flight cap.
    pub fn new(name: impl Into<String>, kind: impl Into<String>, source: Box<dyn Source>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            source,
            codec: Codec::Ndjson,
            in_flight_bytes: DEFAULT_IN_FLIGHT_BYTES,
            overflow: OverflowPolicy::Block,
        }
    }

    /// Sets the codec.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets the in-flight cap and overflow policy.
    pub fn in_flight(mut self, bytes: u64, overflow: OverflowPolicy) -> Self {
        self.in_flight_bytes = bytes;
        self.overflow = overflow;
        self
    }
}

/// A transform: a filter and its inputs.
#[non_exhaustive]
pub struct TransformSpec {
    /// The transform's name.
    pub name: String,
    /// Its type, for metrics (`wasm`, `native`).
    pub kind: String,
    /// `source`, `transform` or `transform.route` names.
    pub inputs: Vec<String>,
    /// The filter (forked for each worker and each place the graph uses it).
    pub filter: Box<dyn Filter>,
    /// The routes the filter sends events to, if declared: inputs naming another route of
    /// this transform are refused.
    pub routes: Option<Vec<String>>,
}

impl TransformSpec {
    /// A transform reading `inputs`.
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        inputs: Vec<String>,
        filter: Box<dyn Filter>,
    ) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            inputs,
            filter,
            routes: None,
        }
    }
}

/// A sink and its inputs.
#[non_exhaustive]
pub struct SinkSpec {
    /// The sink's name.
    pub name: String,
    /// Its type, for metrics.
    pub kind: String,
    /// `source`, `transform` or `transform.route` names.
    pub inputs: Vec<String>,
    /// The sink; it runs on a thread of its own.
    pub sink: Box<dyn Sink + Send>,
}

impl SinkSpec {
    /// A sink reading `inputs`.
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        inputs: Vec<String>,
        sink: Box<dyn Sink + Send>,
    ) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            inputs,
            sink,
        }
    }
}

/// A graph of components, ready to start.
///
/// # Examples
/// ```
/// use sluicebox::runtime::{SinkSpec, SourceSpec, Topology, TransformSpec};
/// use sluicebox::source::reader::ReaderSource;
/// use sluicebox::{CollectSink, DropWhere};
///
/// let input = b"{\"level\":\"INFO\"}\n{\"level\":\"DEBUG\"}\n".to_vec();
/// let report = Topology::new(Default::default())
///     .source(SourceSpec::new("in", "reader", Box::new(ReaderSource::new("mem", std::io::Cursor::new(input)))))
///     .transform(TransformSpec::new("f", "native", vec!["in".into()], Box::new(DropWhere::drop_debug())))
///     .sink(SinkSpec::new("out", "collect", vec!["f".into()], Box::new(CollectSink::new())))
///     .start()?
///     .wait()?;
/// assert!(report.is_balanced());
/// assert_eq!(report.component("f").unwrap().discarded, 1);
/// # Ok::<(), sluicebox::Error>(())
/// ```
#[derive(Default)]
pub struct Topology {
    settings: RuntimeSettings,
    sources: Vec<SourceSpec>,
    transforms: Vec<TransformSpec>,
    sinks: Vec<SinkSpec>,
    dead_letter: Option<SinkSpec>,
    metrics: Option<Metrics>,
    shutdown: Option<Shutdown>,
    outlet: Option<DeadLetterOutlet>,
    /// A sink the caller drives (name, inputs), in the mode of [`local`]: no worker threads
    /// and no router; the caller's threads work the batches with the runners
    /// [`Running`] hands out, and take the results from its `done` queue.
    local: Option<(String, Vec<String>)>,
    /// A graph's plan or a single chain's (see [`Shape`]).
    shape: Shape,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field(
                "sources",
                &self.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field(
                "transforms",
                &self.transforms.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field(
                "sinks",
                &self.sinks.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Topology {
    /// An empty graph with these settings.
    pub fn new(settings: RuntimeSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// Adds a source.
    pub fn source(mut self, spec: SourceSpec) -> Self {
        self.sources.push(spec);
        self
    }

    /// Adds a transform.
    pub fn transform(mut self, spec: TransformSpec) -> Self {
        self.transforms.push(spec);
        self
    }

    /// Adds a sink.
    pub fn sink(mut self, spec: SinkSpec) -> Self {
        self.sinks.push(spec);
        self
    }

    /// Sets the dead-letter sink: every rejected event of every component goes there, as an
    /// NDJSON object with `component`, `source`, `stream`, `reason`, `line`, `offset`,
    /// `filter` and `raw`. Without one, dead letters are counted and the first few logged,
    /// and count as delivered.
    pub fn dead_letter(mut self, sink: Box<dyn Sink + Send>) -> Self {
        self.dead_letter = Some(SinkSpec::new("dead_letter", "dead_letter", vec![], sink));
        self
    }

    /// Uses `shutdown` as the run's shutdown signal (components built before the run hold
    /// it too).
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Connects `outlet` (held by sinks built before the run) to the dead-letter sink when
    /// the run starts.
    pub fn with_dead_letter_outlet(mut self, outlet: DeadLetterOutlet) -> Self {
        self.outlet = Some(outlet);
        self
    }

    /// Uses `metrics` instead of a fresh set (to serve them before the run starts).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks the graph and lists every problem (empty when it can start).
    pub fn check(&self) -> Vec<String> {
        let (_, problems) = self.graph_spec().check();
        problems
            .into_iter()
            .map(|p| format!("{}: {}: {}", p.component, p.key, p.message))
            .collect()
    }

    fn graph_spec(&self) -> graph::GraphSpec {
        graph::GraphSpec {
            sources: self.sources.iter().map(|s| s.name.clone()).collect(),
            transforms: self
                .transforms
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.inputs.clone(),
                        t.routes.clone().or_else(|| t.filter.routes()),
                    )
                })
                .collect(),
            sinks: self
                .sinks
                .iter()
                .map(|s| (s.name.clone(), s.inputs.clone()))
                .chain(self.local.clone())
                .collect(),
        }
    }

    /// Starts every component.
    ///
    /// # Errors
    /// [`Kind::Config`] listing every problem of the graph, or when a filter cannot be
    /// forked for a worker or the tokio runtime cannot start.
    pub fn start(self) -> Result<Running> {
        self.settings.pipeline.validate()?;
        let (g, problems) = self.graph_spec().check();
        if !problems.is_empty() {
            let lines: Vec<String> = problems
                .into_iter()
                .map(|p| format!("{}: {}: {}", p.component, p.key, p.message))
                .collect();
            return Err(Error::config(lines.join("\n")));
        }
        let started = Instant::now();
        let metrics = self.metrics.clone().unwrap_or_default();
        let shutdown = self.shutdown.clone().unwrap_or_default();
        // The caller-driven mode runs no source task: no tokio runtime (and no thread of it
        // waking on the caller's cores).
        let rt = if self.local.is_some() {
            None
        } else {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("sluicebox-io")
                .enable_all()
                .build()
                .map_err(|e| Error::new(Kind::Config, format!("cannot start the runtime: {e}")))?;
            Some(rt)
        };
        // Spare batches kept for reuse (their buffers stay allocated and warm).
        let (pool_tx, pool_rx) = crossbeam_channel::bounded(64);
        let (work_tx, work_rx) = crossbeam_channel::unbounded::<crate::source::Work>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();

        // Sinks (and the dead-letter sink), each on its own thread.
        let mut sink_threads = Vec::new();
        let flush_interval = self.settings.flush_interval;
        let mut start_sink = |spec: SinkSpec| {
            let m = metrics.component(&spec.name, "sink", &spec.kind);
            let (tx, rx) = crossbeam_channel::unbounded::<SinkMsg>();
            let thread = output::spawn_sink(
                spec.name.clone(),
                spec.sink,
                rx,
                m.clone(),
                shutdown.clone(),
                flush_interval,
            );
            sink_threads.push((spec.name, thread));
            (tx, m)
        };
        let sink_txs: Vec<_> = self.sinks.into_iter().map(&mut start_sink).collect();
        let dead_tx = self.dead_letter.map(&mut start_sink);
        if let (Some(o), Some((tx, m))) = (&self.outlet, &dead_tx) {
            o.connect(tx.clone(), m.clone());
        }

        // Transforms (prototypes) and per-source plans.
        let mut protos: Vec<TransformProto> = self
            .transforms
            .into_iter()
            .map(|t| TransformProto {
                metrics: metrics.component(&t.name, "transform", &t.kind),
                name: t.name.into(),
                filter: Some(t.filter),
            })
            .collect();
        let source_names: Vec<Arc<str>> = self
            .sources
            .iter()
            .map(|s| Arc::from(s.name.as_str()))
            .collect();
        let source_metrics: Vec<ComponentMetrics> = self
            .sources
            .iter()
            .map(|s| metrics.component(&s.name, "source", &s.kind))
            .collect();
        let plans: Vec<Arc<graph::SourcePlan>> = (0..self.sources.len())
            .map(|i| Arc::new(g.plan(i)))
            .collect();

        // Workers.
        let workers = self.settings.pipeline.workers.max(1);
        let mut worker_threads = Vec::new();
        let mut swap_txs = Vec::with_capacity(workers);
        let mut inline = Vec::new();
        // The caller-driven mode with one worker runs the caller's own filter instances (no
        // fork: their state and their warm memory stay the caller's).
        let lend = self.local.is_some() && workers == 1 && self.sources.len() == 1;
        for w in 0..workers {
            let (swap_tx, swap_rx) = crossbeam_channel::unbounded::<Vec<worker::Swap>>();
            swap_txs.push(swap_tx);
            let mut runners = Vec::with_capacity(plans.len());
            for (i, plan) in plans.iter().enumerate() {
                runners.push(SourceRunner::new(
                    &self.settings.pipeline,
                    plan.clone(),
                    &mut protos,
                    (source_names[i].clone(), source_metrics[i].clone()),
                    pool_tx.clone(),
                    self.shape,
                    lend,
                )?);
            }
            if self.local.is_some() {
                inline.push(Inline {
                    runners,
                    done: done_tx.clone(),
                });
                continue;
            }
            let (work_rx, done_tx) = (work_rx.clone(), done_tx.clone());
            let t = output::Tracked::spawn(format!("sluicebox-worker-{w}"), move || {
                for work in work_rx.iter() {
                    // New filters (a reload) take effect between two batches.
                    while let Ok(swaps) = swap_rx.try_recv() {
                        let mut per_runner: Vec<Vec<(usize, Box<dyn crate::Filter>)>> =
                            runners.iter().map(|_| Vec::new()).collect();
                        for s in swaps {
                            if let Some(v) = per_runner.get_mut(s.runner) {
                                v.push((s.node, s.filter));
                            }
                        }
                        for (runner, list) in runners.iter_mut().zip(per_runner) {
                            if !list.is_empty() {
                                runner.swap(list);
                            }
                        }
                    }
                    // Taken: the source may queue another batch while this one runs.
                    drop(work.queued);
                    let p = runners[work.source].process(work.source, work.batch);
                    if done_tx.send(p).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::new(Kind::Config, format!("cannot start a worker: {e}")))?;
            worker_threads.push(t);
        }
        drop((work_rx, done_tx));

        // The router.
        let errors = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
        let (router, done) = if self.local.is_some() {
            (None, Some(done_rx))
        } else {
            let router = output::spawn_router(
                done_rx,
                sink_txs,
                dead_tx,
                self.sources.len(),
                shutdown.clone(),
                errors.clone(),
            );
            (Some(router), None)
        };

        // Sources.
        let mut source_tasks = Vec::new();
        let mut lent = Vec::new();
        let mut budgets = Vec::new();
        for (i, spec) in self.sources.into_iter().enumerate() {
            let budget = Arc::new(Budget::new(spec.in_flight_bytes.max(1), spec.overflow));
            budgets.push((spec.name.clone(), budget.clone(), source_metrics[i].clone()));
            let cx = SourceContext::new(
                source_names[i].clone(),
                i,
                FrameSettings {
                    codec: spec.codec,
                    pipeline: self.settings.pipeline.clone(),
                },
                budget,
                crate::source::QUEUED_BATCHES_PER_WORKER * workers as u64,
                shutdown.clone(),
                work_tx.clone(),
                pool_rx.clone(),
                self.settings.data_dir.clone(),
                source_metrics[i].clone(),
                self.settings.drain_timeout,
            );
            source_metrics[i].up.set(1);
            let name = spec.name.clone();
            match &rt {
                Some(rt) => source_tasks.push((name, rt.spawn(spec.source.run(cx)))),
                None => lent.push(cx),
            }
        }
        drop(work_tx);
        // Gauges sampled once a second.
        let sampler_stop = shutdown.clone();
        let sampler = async move {
            loop {
                for (_, b, m) in &budgets {
                    m.buffer_bytes.set(b.used() as i64);
                }
                // After the shutdown, `wait` returns at once: sample once a second still (a
                // budget a sender's request holds can take the drain to go).
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = sampler_stop.wait(), if !sampler_stop.is_triggered() => {}
                }
                if budgets.iter().all(|(_, b, _)| b.used() == 0) && sampler_stop.is_triggered() {
                    for (_, _, m) in &budgets {
                        m.buffer_bytes.set(0);
                    }
                    return;
                }
            }
        };
        if let Some(rt) = &rt {
            rt.spawn(sampler);
        }
        let swapper = Swapper {
            inner: Arc::new(SwapperInner {
                transforms: protos.iter().map(|t| t.name.to_string()).collect(),
                plans: plans.clone(),
                workers: swap_txs,
            }),
        };
        Ok(Running {
            rt,
            lent,
            shutdown,
            metrics,
            swapper,
            source_tasks,
            source_metrics,
            worker_threads,
            router,
            sink_threads,
            errors,
            started,
            drain_timeout: self.settings.drain_timeout,
            done,
            inline,
        })
    }
}

/// Replaces transforms' filters in a running topology (a reload): every instance is built
/// first, so a module that fails to instantiate changes nothing; then each worker puts them
/// in place between two batches. Batches a worker already started finish on the old
/// instances; every batch it takes after that runs on the new. Cheap to clone; a swap costs
/// one fork per worker and plan node running the transform, and a new parse stage per
/// affected source on each worker.
#[derive(Clone)]
pub struct Swapper {
    inner: Arc<SwapperInner>,
}

struct SwapperInner {
    /// Transform names by index.
    transforms: Vec<String>,
    plans: Vec<Arc<graph::SourcePlan>>,
    /// One channel per worker thread.
    workers: Vec<crossbeam_channel::Sender<Vec<worker::Swap>>>,
}

impl std::fmt::Debug for Swapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swapper")
            .field("transforms", &self.inner.transforms)
            .field("workers", &self.inner.workers.len())
            .finish()
    }
}

impl Swapper {
    /// The transforms that can be swapped, by name.
    pub fn transforms(&self) -> &[String] {
        &self.inner.transforms
    }

    /// Puts each `(name, filter)` in place of transform `name`'s filter, all in one step per
    /// worker.
    ///
    /// # Errors
    /// [`Kind::Config`] naming a transform the topology does not have; the error of a fork
    /// that fails (the new module does not instantiate, or its init refuses). Either way
    /// nothing was changed.
    pub fn swap(&self, changes: Vec<(String, Box<dyn crate::Filter>)>) -> Result<()> {
        let mut by_index = Vec::with_capacity(changes.len());
        for (name, filter) in changes {
            let Some(i) = self.inner.transforms.iter().position(|t| *t == name) else {
                return Err(Error::new(
                    Kind::Config,
                    format!("transforms.{name}: not in the running topology"),
                ));
            };
            by_index.push((i, filter));
        }
        let mut per_worker = Vec::with_capacity(self.inner.workers.len());
        for _ in &self.inner.workers {
            let mut swaps = Vec::new();
            for (r, plan) in self.inner.plans.iter().enumerate() {
                for (node, n) in plan.nodes.iter().enumerate() {
                    for (i, filter) in &by_index {
                        if n.transform == *i {
                            swaps.push(worker::Swap {
                                runner: r,
                                node,
                                filter: filter.fork()?,
                            });
                        }
                    }
                }
            }
            per_worker.push(swaps);
        }
        for (tx, swaps) in self.inner.workers.iter().zip(per_worker) {
            // A worker that has ended (the run is stopping) has nothing left to filter.
            let _ = tx.send(swaps);
        }
        Ok(())
    }
}

/// A started topology. Dropping it without [`Running::wait`] signals the shutdown and does
/// not wait: its threads finish on their own.
pub struct Running {
    /// The tokio runtime of the sources; `None` while dropping, and in the caller-driven
    /// mode ([`local`]), whose sources do not run as tasks...
    rt: Option<tokio::runtime::Runtime>,
    /// ...but lend their contexts to the caller, until taken.
    lent: Vec<SourceContext>,
    shutdown: Shutdown,
    metrics: Metrics,
    swapper: Swapper,
    source_tasks: Vec<(String, tokio::task::JoinHandle<Result<()>>)>,
    source_metrics: Vec<ComponentMetrics>,
    worker_threads: Vec<output::Tracked<()>>,
    router: Option<output::Tracked<()>>,
    /// Each sink's name and thread.
    sink_threads: Vec<(String, output::Tracked<ComponentReport>)>,
    errors: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    started: Instant,
    drain_timeout: Duration,
    /// In the caller-driven mode ([`local`]): the workers' results, until taken...
    done: Option<crossbeam_channel::Receiver<worker::Processed>>,
    /// ...and one worker's runners per worker.
    inline: Vec<Inline>,
}

/// What a caller's thread needs to work batches itself: a runner per source, and the
/// queue of results the caller takes in order.
pub(crate) struct Inline {
    pub(crate) runners: Vec<SourceRunner>,
    pub(crate) done: crossbeam_channel::Sender<worker::Processed>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("sources", &self.source_tasks.len())
            .field("workers", &self.worker_threads.len())
            .field("sinks", &self.sink_threads.len())
            .finish()
    }
}

/// What a finished run reports: per component counts, and the errors components stopped
/// on.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RunReport {
    /// Every component's counts.
    pub components: Vec<ComponentReport>,
    /// `(component, message)` of every component that failed.
    pub errors: Vec<(String, String)>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether the drain deadline passed before every sink finished.
    pub timed_out: bool,
}

impl RunReport {
    /// The report of component `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentReport> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Whether every component's counts balance (see [`ComponentReport::is_balanced`]).
    pub fn is_balanced(&self) -> bool {
        self.components.iter().all(ComponentReport::is_balanced)
    }
}

impl Running {
    /// A handle that swaps transforms' filters while the topology runs (a reload).
    pub fn swapper(&self) -> Swapper {
        self.swapper.clone()
    }

    /// The shutdown signal (fire it to stop the sources; [`Running::wait`] then drains).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The run's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A handle to the tokio runtime the sources run on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("a started topology has its runtime until it is dropped"),
        }
    }

    /// Stops the sources and drains (see [`Running::wait`]).
    ///
    /// # Errors
    /// As [`Running::wait`].
    pub fn stop(self) -> Result<RunReport> {
        self.shutdown.trigger();
        self.wait()
    }

    /// Waits until every source is done (read-once inputs exhausted, or shutdown fired),
    /// then until everything in flight is delivered, at most the drain timeout after the
    /// shutdown. Events not delivered by then stay unacknowledged.
    ///
    /// # Errors
    /// Never for a component's failure: those are in [`RunReport::errors`]. Only when the
    /// runtime itself breaks (a thread panicked).
    pub fn wait(mut self) -> Result<RunReport> {
        let tasks = std::mem::take(&mut self.source_tasks);
        let shutdown = self.shutdown.clone();
        let drain = self.drain_timeout;
        let mut errors = Vec::new();
        for (i, (name, task)) in tasks.into_iter().enumerate() {
            // Not `block_on`: the caller may be on a thread that drives async tasks (a
            // `Pipeline::run` inside a tokio runtime); the task runs on the run's threads.
            let r = wait_for(task);
            self.source_metrics[i].up.set(0);
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.source_metrics[i].error("source_failed", "receiving");
                    errors.push((name, e.to_string()));
                }
                Err(e) => errors.push((name, format!("the source task failed: {e}"))),
            }
        }
        let _ = shutdown;
        // Sources are done: the work channel closes once their contexts are gone. Wait for
        // the workers, the router and the sinks, within the drain deadline.
        let deadline = Instant::now() + drain;
        let mut timed_out = false;
        // Each thread says when its work has ended (no polling: a poll every 5 ms used to add
        // up to 5 ms per thread to the end of every run).
        let join_by = |h: output::Tracked<()>, timed_out: &mut bool| {
            if h.join_by(deadline).is_none() {
                *timed_out = true;
            }
        };
        for h in std::mem::take(&mut self.worker_threads) {
            join_by(h, &mut timed_out);
        }
        if let Some(r) = self.router.take() {
            join_by(r, &mut timed_out);
        }
        let mut components = Vec::new();
        let mut unfinished = Vec::new();
        for (name, h) in std::mem::take(&mut self.sink_threads) {
            match h.join_by(deadline) {
                Some(Ok(rep)) => {
                    if let Some(e) = &rep.error {
                        errors.push((rep.name.clone(), e.clone()));
                    }
                    components.push(rep);
                }
                // Outside the sink's own calls (those are caught): its drop, say.
                Some(Err(p)) => {
                    errors.push((
                        name,
                        format!("the sink's thread panicked: {}", output::panic_text(p)),
                    ));
                }
                None => {
                    timed_out = true;
                    unfinished.push(name);
                }
            }
        }
        errors.extend(
            self.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..),
        );
        self.shutdown.trigger();
        let mut all = output::component_reports(&self.metrics, &components, &unfinished);
        all.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.name.cmp(&b.name)));
        Ok(RunReport {
            components: all,
            errors,
            elapsed: self.started.elapsed(),
            timed_out,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        // Dropping a runtime blocks until its tasks stop, which tokio refuses on a thread
        // that drives async tasks: there, let it stop in the background.
        if let Some(rt) = self.rt.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            rt.shutdown_background();
        }
    }
}

/// Waits on this thread for `fut`, whose work runs elsewhere (a task of the run's runtime),
/// without entering a tokio runtime: so it may be called on any thread.
fn wait_for<F: std::future::Future>(fut: F) -> F::Output {
    match wait_until(fut, None) {
        Some(v) => v,
        None => unreachable!("wait_until gives up only at a deadline, and there is none"),
    }
}

/// Waits on this thread for `fut` until `deadline` (`None`: no deadline), woken by the
/// future's own waker (no polling). `None` when the deadline came first. Any thread may
/// call it, a blocking source's included.
pub(crate) fn wait_until<F: std::future::Future>(
    fut: F,
    deadline: Option<Instant>,
) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                std::thread::park_timeout(d - now);
            }
        }
    }
}
