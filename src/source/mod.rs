//! Source stage: where events come from. A [`Source`] reads its input (a file, a socket, a
//! queue), frames it into batches with a [`crate::frame::Decoder`], and sends each batch
//! with the stream position it ends at. The runtime tells it, through its [`Stream`]s, which
//! positions were delivered end to end (see [`crate::ack`]).
//!
//! Writing a source takes a few dozen lines: see `examples/custom_source.rs`.

mod budget;
pub mod elasticsearch;
pub mod file;
pub mod generator;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod kubernetes;
pub mod reader;
mod serve;
pub mod tcp;

pub use budget::{Budget, OverflowPolicy};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ack::Stream;
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::frame::{Codec, Decoder, Framer};
use crate::pipeline::PipelineConfig;

/// A boxed, sendable future: what [`Source::run`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A producer of batches.
///
/// Contract:
/// - [`Source::run`] sends batches through its [`SourceContext`] until its input is
///   exhausted (a read-once file, a finished generator) or the context's shutdown fires
///   ([`SourceContext::shutdown`]), then returns. A source that follows its input forever
///   returns only on shutdown.
/// - Each batch is sent with its stream and the stream position it ends at, in position
///   order per stream ([`SourceContext::send`]). The stream's acknowledged position then
///   moves only over contiguous delivered batches; a source persists it (a checkpoint, a
///   Kafka commit) to resume after a restart.
/// - An `Err` return is reported with the source's name; the other sources go on.
///
/// Sources run as tasks on the runtime's tokio runtime. A source that blocks (reads a file
/// with `std::io`) does so inside `tokio::task::spawn_blocking` and uses
/// [`SourceContext::blocking_send`].
pub trait Source: Send + 'static {
    /// Runs the source to its end or to shutdown.
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>>;
}

/// A batch ready for the workers: its events, which source sent it, and its place in the
/// source's queue (given back when a worker takes the batch).
pub(crate) struct Work {
    pub(crate) source: usize,
    pub(crate) batch: Batch,
    pub(crate) queued: Option<QueueTicket>,
}

/// A batch's place among those a source has queued for the workers and no worker has taken
/// yet; dropping it frees the place. Costs one mutex and a notification.
pub(crate) struct QueueTicket(Arc<Budget>);

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.0.release(1);
    }
}

/// How many batches per worker a source may queue ahead of the workers (under the
/// `block` policy; within its in-flight budget). A source that ran further ahead, up to its
/// whole budget (64 MiB by default), only made the workers read its batches cold from
/// memory: `runtime.wasm_drop_debug` ran 0.73 of the single-input pipeline with an
/// unbounded queue, 0.83-0.90 with this bound (README, "Performance", has the figures).
pub(crate) const QUEUED_BATCHES_PER_WORKER: u64 = 2;

/// Framing settings a source's decoders use.
#[derive(Clone, Debug)]
pub struct FrameSettings {
    /// The codec.
    pub codec: Codec,
    /// Batch and line bounds (`max_batch_events`, `max_batch_bytes`, `max_line_bytes`,
    /// `dead_letter_raw_max`, `flush_when_idle`).
    pub pipeline: PipelineConfig,
}

impl FrameSettings {
    /// A framer with these bounds whose stream starts at `offset`.
    pub fn framer(&self, offset: u64) -> Framer {
        let c = &self.pipeline;
        Framer::new(
            c.max_batch_events,
            c.max_batch_bytes,
            c.max_line_bytes,
            c.dead_letter_raw_max,
        )
        .flush_when_idle(c.flush_when_idle)
        .starting_at(offset)
    }

    /// A decoder of the configured codec whose stream starts at `offset`.
    pub fn decoder(&self, offset: u64) -> Box<dyn Decoder> {
        self.codec.decoder(self.framer(offset))
    }

    /// [`FrameSettings::decoder`] for an input named `origin` (a file's path), which
    /// container log decoders name in their dead letters.
    pub fn decoder_named(&self, offset: u64, origin: &str) -> Box<dyn Decoder> {
        self.codec.decoder_named(self.framer(offset), origin)
    }
}

/// Signals shutdown to sources and waits for it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A shutdown that has not fired.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Fires the shutdown: every source stops reading and returns.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the shutdown has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until the shutdown fires.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

/// What a running source uses: its name, framing settings, streams, the in-flight budget,
/// the channel to the workers, and the shutdown signal. Cheap to clone.
#[derive(Clone)]
pub struct SourceContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    name: Arc<str>,
    index: usize,
    frame: FrameSettings,
    budget: Arc<Budget>,
    /// Batches queued for the workers and not taken yet (`QUEUED_BATCHES_PER_WORKER`).
    queue: Arc<Budget>,
    shutdown: Shutdown,
    tx: crossbeam_channel::Sender<Work>,
    /// Held while numbering and queueing a batch, so the workers' output can be put back
    /// in the order batches were sent.
    order: Mutex<u64>,
    pool: crossbeam_channel::Receiver<Batch>,
    data_dir: Option<std::path::PathBuf>,
    dropped: AtomicU64,
    dropped_events: AtomicU64,
    metrics: crate::metrics::ComponentMetrics,
    /// The runtime's drain timeout.
    drain: std::time::Duration,
}

impl std::fmt::Debug for SourceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceContext")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl SourceContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: Arc<str>,
        index: usize,
        frame: FrameSettings,
        budget: Arc<Budget>,
        queue_batches: u64,
        shutdown: Shutdown,
        tx: crossbeam_channel::Sender<Work>,
        pool: crossbeam_channel::Receiver<Batch>,
        data_dir: Option<std::path::PathBuf>,
        metrics: crate::metrics::ComponentMetrics,
        drain: std::time::Duration,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                name,
                index,
                frame,
                budget,
                queue: Arc::new(Budget::new(queue_batches.max(1), OverflowPolicy::Block)),
                shutdown,
                tx,
                order: Mutex::new(0),
                pool,
                data_dir,
                dropped: AtomicU64::new(0),
                dropped_events: AtomicU64::new(0),
                metrics,
                drain,
            }),
        }
    }

    /// The source's name (its key in the configuration).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The framing settings (codec and bounds).
    pub fn frame(&self) -> &FrameSettings {
        &self.inner.frame
    }

    /// A decoder of the source's codec for a stream starting at `offset`.
    pub fn decoder(&self, offset: u64) -> Box<dyn Decoder> {
        self.inner.frame.decoder(offset)
    }

    /// A line framer with this source's bounds whose stream starts at `offset`.
    pub(crate) fn framer(&self, offset: u64) -> Framer {
        self.inner.frame.framer(offset)
    }

    /// A directory for this source's state (checkpoints), under the run's `data_dir`,
    /// created on first use. `None` when the run has no `data_dir`.
    ///
    /// # Errors
    /// [`crate::Kind::Config`] when the directory cannot be created.
    pub fn state_dir(&self) -> Result<Option<std::path::PathBuf>> {
        let Some(d) = &self.inner.data_dir else {
            return Ok(None);
        };
        // Component names are config keys; keep only what is safe in a file name.
        let safe: String = self
            .name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = d.join(format!("source-{safe}"));
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::config(format!("data_dir: cannot create {}: {e}", dir.display()))
        })?;
        Ok(Some(dir))
    }

    /// A new stream named `key` whose acknowledged position starts at `start` (a restored
    /// checkpoint).
    pub fn stream(&self, key: impl Into<Arc<str>>, start: Option<u64>) -> Stream {
        Stream::new(key, start)
    }

    /// An empty batch, recycled when one is free.
    pub fn batch(&self) -> Batch {
        self.inner.pool.try_recv().unwrap_or_default()
    }

    /// The source's metric handles (for counters of its own, such as identity resets).
    pub fn metrics(&self) -> &crate::metrics::ComponentMetrics {
        &self.inner.metrics
    }

    /// The in-flight budget.
    pub fn budget(&self) -> &Budget {
        &self.inner.budget
    }

    /// The in-flight budget, shared.
    pub(crate) fn budget_handle(&self) -> Arc<Budget> {
        self.inner.budget.clone()
    }

    /// The shutdown signal: stop reading when it fires.
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// How long after the shutdown a source may still wait for its batches' acknowledgements
    /// before it gives up on them (a push source then answers its senders "retry"): half
    /// the runtime's drain timeout, leaving the other half to the sinks.
    pub fn ack_grace(&self) -> std::time::Duration {
        self.inner.drain / 2
    }

    /// Batches and events dropped so far under [`OverflowPolicy::DropNewest`].
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.inner.dropped.load(Ordering::Relaxed),
            self.inner.dropped_events.load(Ordering::Relaxed),
        )
    }

    /// Sends `batch` of `stream`, ending at stream position `end`, waiting while the
    /// source's in-flight budget is used up. Returns `false` (and sends nothing; the batch's
    /// positions stay unacknowledged) when shutdown fired while waiting, or when the
    /// runtime has stopped.
    pub async fn send(&self, stream: &Stream, batch: Batch, end: u64) -> bool {
        let bytes = batch.data.capacity() as u64;
        match self.inner.budget.policy() {
            OverflowPolicy::Block => {
                if !self.inner.budget.take(bytes, &self.inner.shutdown).await {
                    return false;
                }
                if !self.inner.queue.take(1, &self.inner.shutdown).await {
                    // Shutting down: the queue's bound is for speed, not memory, so a
                    // source's last batches (a connection's end) still go, within the
                    // byte budget.
                    self.inner.queue.take_anyway(1);
                }
            }
            OverflowPolicy::DropNewest => {
                if !self.inner.budget.try_take(bytes) {
                    self.drop_batch(stream, batch, end);
                    return true;
                }
            }
        }
        self.queue(stream, batch, end, bytes)
    }

    /// [`SourceContext::send`] for a source running on a blocking thread.
    pub fn blocking_send(&self, stream: &Stream, batch: Batch, end: u64) -> bool {
        let bytes = batch.data.capacity() as u64;
        match self.inner.budget.policy() {
            OverflowPolicy::Block => {
                if !self.inner.budget.take_blocking(bytes, &self.inner.shutdown) {
                    return false;
                }
                if !self.inner.queue.take_blocking(1, &self.inner.shutdown) {
                    // As in `send`: shutting down, the queue's bound gives way.
                    self.inner.queue.take_anyway(1);
                }
            }
            OverflowPolicy::DropNewest => {
                if !self.inner.budget.try_take(bytes) {
                    self.drop_batch(stream, batch, end);
                    return true;
                }
            }
        }
        self.queue(stream, batch, end, bytes)
    }

    /// Under the drop policy, a batch that does not fit is dropped and counted; its
    /// positions are acknowledged, as the user chose.
    fn drop_batch(&self, stream: &Stream, batch: Batch, end: u64) {
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        self.inner
            .dropped_events
            .fetch_add(batch.stats.received, Ordering::Relaxed);
        let m = &self.inner.metrics;
        m.received_events.inc_by(batch.stats.received);
        m.received_bytes.inc_by(batch.stats.bytes_in);
        m.discarded_unintentional.inc_by(batch.stats.received);
        drop(stream.token(end));
    }

    /// [`SourceContext::blocking_send`] for a reader that works its own batches (the
    /// runtime with borrowed ends, [`crate::Pipeline::run`]): waits for the budget, gives the
    /// batch its token and its place in the source's order, and hands it back with the bytes
    /// it took instead of queueing it for the workers. Those bytes are not given back by the
    /// acknowledgement: the caller gives them back once the sink has been handed the batch,
    /// so the budget bounds what is read and not yet written, and a sink that holds its
    /// acknowledgements (until its `finish`, even) never stalls the read. `None` once the run
    /// is shutting down.
    pub(crate) fn blocking_take(
        &self,
        stream: &Stream,
        batch: Batch,
        end: u64,
    ) -> Option<(Work, u64)> {
        let bytes = batch.data.capacity() as u64;
        if !self.inner.budget.take_blocking(bytes, &self.inner.shutdown) {
            return None;
        }
        Some((self.work(stream, batch, end, None), bytes))
    }

    /// [`SourceContext::blocking_take`] without the wait: the batch's bytes are taken
    /// whether they fit or not. For a reader that also writes what the others read (the
    /// calling thread of [`crate::Pipeline::run`] with several workers, and the workers
    /// beside it): waiting there for room only it can make would never end. Each reader
    /// checks for a batch's room (`max_batch_bytes`, 64 KiB at least) before it reads, so
    /// the budget is passed only by batches larger than that (a long line), one per reader
    /// at most; or, for a positional input split by byte ranges, by the batches of one range
    /// beyond the first (a range holds about one batch of lines, sized from the last range's
    /// line length, so more only where short lines follow long ones).
    pub(crate) fn take_now(&self, stream: &Stream, batch: Batch, end: u64) -> (Work, u64) {
        let bytes = batch.data.capacity() as u64;
        self.inner.budget.take_anyway(bytes);
        (self.work(stream, batch, end, None), bytes)
    }

    fn queue(&self, stream: &Stream, batch: Batch, end: u64, bytes: u64) -> bool {
        let work = self.work(stream, batch, end, Some(bytes));
        // A closed channel means the runtime stopped: the batch's token drops unsent
        // events as errored (see `Batch::abandon`).
        match self.inner.tx.send(work) {
            Ok(()) => true,
            Err(e) => {
                let mut w = e.into_inner();
                w.batch.abandon();
                false
            }
        }
    }

    /// The batch with its token and its sequence number; `queued`: the budget bytes its
    /// token gives back when it completes, and it holds a place in the workers' queue.
    fn work(&self, stream: &Stream, mut batch: Batch, end: u64, queued: Option<u64>) -> Work {
        let token = stream.token(end);
        if let Some(bytes) = queued {
            let budget = self.inner.budget.clone();
            token.on_complete(Box::new(move || budget.release(bytes)));
        }
        batch.token = Some(token);
        let mut seq = self.inner.order.lock().unwrap_or_else(|p| p.into_inner());
        batch.seq = *seq;
        *seq += 1;
        // Under the drop policy a source never waits for the workers: its budget alone
        // bounds it.
        let queued = (queued.is_some() && self.inner.budget.policy() == OverflowPolicy::Block)
            .then(|| QueueTicket(self.inner.queue.clone()));
        Work {
            source: self.inner.index,
            batch,
            queued,
        }
    }
}
