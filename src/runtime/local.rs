//! The runtime with borrowed ends: the engine of [`crate::Pipeline::run`].
//!
//! The same source context (framing, in-flight budget, acknowledgements), workers, router
//! and plan as `sluicebox run`, with two ends the caller lends instead of owning: a source
//! that hands its context to a reader thread scoped to the call (so the input need not be
//! `'static`), and a sink driven on the calling thread (so it need not be `Send`). Its dead
//! letters are written in the chain's own format (`reason`, `line`, `offset`, `filter`,
//! `raw`), or kept in the report when no dead-letter sink is given.
//!
//! Cost per run: the runtime's start (a two-thread tokio runtime, one thread per worker, the
//! router) and one fork of each filter per worker; per batch, the runtime's.

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::output::{SinkMsg, panic_text};
use super::worker::{DeadFormat, Select};
use super::{RuntimeSettings, SourceSpec, Topology, TransformSpec};
use crate::batch::{DeadLetter, EventMeta};
use crate::error::{Error, Kind, Result};
use crate::filter::Filter;
use crate::pipeline::{PipelineConfig, REPORT_DEAD_LETTERS, Report, Stats};
use crate::sink::{Flow, Output, Sink};
use crate::source::{BoxFuture, OverflowPolicy, Shutdown, Source, SourceContext};

/// The source's name (and its one stream's); dead letters and errors name it.
const INPUT: &str = "input";
/// The caller's sink's name.
const OUTPUT: &str = "output";
/// Batches of `max_batch_bytes` a run keeps in flight per worker (read ahead, being
/// filtered, waiting for the sink): what the single-input pipeline always held, so its
/// memory stays where it was (measured: 1.51x -> 1.69x on 2 cores against one per worker).
const BATCHES_PER_WORKER: u64 = 4;

/// A source that lends its context to the caller's reader thread and ends at once; the
/// run goes on until that thread drops the context.
struct Lend(crossbeam_channel::Sender<SourceContext>);

impl Source for Lend {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            // The caller waits for it; if it has gone, dropping the context ends the run.
            let _ = self.0.send(cx);
            Ok(())
        })
    }
}

/// Runs `input` through `filters` (forked: the caller keeps its own) into `sink`, on the
/// runtime. The first error ends the run: the sink's, then a filter's (its breaker
/// tripped), then the input's.
pub(crate) fn run(
    config: &PipelineConfig,
    filters: &[Box<dyn Filter>],
    input: impl Read + Send,
    sink: &mut dyn Sink,
    dead: Option<&mut dyn Sink>,
) -> Result<Report> {
    let started = Instant::now();
    let settings = RuntimeSettings {
        pipeline: config.clone(),
        ..RuntimeSettings::default()
    };
    let flush_interval = settings.flush_interval;
    // A batch's buffer is counted by its capacity, at least 64 KiB.
    let in_flight = (BATCHES_PER_WORKER * config.workers.max(1) as u64 + 1)
        * (config.max_batch_bytes as u64).max(64 << 10);
    let (lend_tx, lend_rx) = crossbeam_channel::bounded(1);
    let mut topology = Topology::new(settings).source(
        SourceSpec::new(INPUT, "reader", Box::new(Lend(lend_tx)))
            .in_flight(in_flight, OverflowPolicy::Block),
    );
    let mut upstream = INPUT.to_string();
    for (i, f) in filters.iter().enumerate() {
        let name = format!("filter{i}");
        topology = topology.transform(TransformSpec::new(
            name.clone(),
            "filter",
            vec![upstream],
            f.fork()?,
        ));
        upstream = name;
    }
    topology.local = Some((OUTPUT.into(), vec![upstream]));
    topology.dead_format = DeadFormat::Chain;
    let mut running = topology.start()?;
    let queue = running
        .local
        .take()
        .ok_or_else(|| Error::new(Kind::Config, "the runtime made no queue for the sink"))?;
    let cx = lend_rx
        .recv()
        .map_err(|_| Error::new(Kind::Input, "the input source did not start"))?;
    let shutdown = running.shutdown_handle();
    let mut driver = Driver {
        sink,
        dead,
        stats: Stats::default(),
        first_dead: Vec::new(),
        order: Vec::new(),
        error: None,
        stopped: false,
    };
    let read = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("sluicebox-input".into())
            .spawn_scoped(scope, move || {
                let mut input = input;
                crate::source::reader::read_stream(INPUT, &mut input, &cx)
            });
        match reader {
            Ok(reader) => {
                driver.drive(&queue, &shutdown, flush_interval);
                match reader.join() {
                    Ok(r) => r,
                    Err(p) => Err(Error::new(
                        Kind::Input,
                        format!("reading the input panicked: {}", panic_text(p)),
                    )),
                }
            }
            Err(e) => Err(Error::new(
                Kind::Input,
                format!("cannot start the input thread: {e}"),
            )),
        }
    });
    // The reader has dropped its context: the workers and the router end, and with them the
    // sink's queue (already drained by `drive`).
    drop(queue);
    let (_, broken) = running.finish()?;
    if let Some(e) = driver.error.take() {
        return Err(e);
    }
    if let Some((_, e)) = broken.into_iter().next() {
        return Err(e);
    }
    read?;
    driver.finish(started)
}

/// The calling thread's side: the caller's sink and dead-letter sink, and the run's
/// counters (summed from the batches the sink was handed, as a single chain counts them).
struct Driver<'a, 'b> {
    sink: &'a mut dyn Sink,
    dead: Option<&'b mut dyn Sink>,
    stats: Stats,
    first_dead: Vec<DeadLetter>,
    /// A batch's dead letters in line order (the framer's, the parser's and each filter's
    /// come in turn).
    order: Vec<EventMeta>,
    error: Option<Error>,
    /// The sink asked to stop: later batches are not written (nor counted).
    stopped: bool,
}

impl Driver<'_, '_> {
    /// Writes what the router sends until its queue closes. After the sink fails or asks to
    /// stop, it stops the input and takes the rest without writing it (failing their
    /// acknowledgements), so that the reader is never left waiting on the budget.
    fn drive(
        &mut self,
        queue: &Receiver<SinkMsg>,
        shutdown: &Shutdown,
        flush_interval: std::time::Duration,
    ) {
        let mut dirty = false;
        loop {
            let msg = match queue.recv_timeout(flush_interval) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    if dirty && !self.done() {
                        dirty = false;
                        let r = catch_unwind(AssertUnwindSafe(|| self.sink.flush()));
                        self.check(r, shutdown);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if self.done() {
                let token = match &msg {
                    SinkMsg::Deliver(d) => d.shared.batch.token.clone(),
                    SinkMsg::Dead(db) => db.token.clone(),
                };
                if let Some(t) = token {
                    t.fail();
                }
                continue;
            }
            let r = match msg {
                SinkMsg::Deliver(d) => {
                    dirty = true;
                    let b = &d.shared.batch;
                    debug_assert!(matches!(d.select, Select::All));
                    let mut s = b.stats;
                    s.batches = 1;
                    s.emitted = b.events.len() as u64;
                    for m in &b.events {
                        s.unchanged += u64::from(!m.changed);
                        s.bytes_out += u64::from(m.len) + 1;
                    }
                    self.stats.add(&s);
                    if b.events.is_empty() {
                        continue;
                    }
                    let out = Output {
                        data: &b.data,
                        events: &b.events,
                        routes: &b.routes,
                        token: b.token.as_ref(),
                        structurals: &b.structurals,
                        tally: None,
                    };
                    let sink = &mut *self.sink;
                    catch_unwind(AssertUnwindSafe(|| sink.write(&out)))
                }
                SinkMsg::Dead(db) => self.dead_letters(&db.text, &db.metas, db.first),
            };
            match r {
                Ok(Ok(Flow::Stop)) => {
                    self.stopped = true;
                    shutdown.trigger();
                }
                r => self.check(r.map(|r| r.map(|_| ())), shutdown),
            }
        }
    }

    fn done(&self) -> bool {
        self.stopped || self.error.is_some()
    }

    /// Keeps a sink call's error (a panic becomes one) and stops the input.
    fn check(&mut self, r: std::thread::Result<Result<()>>, shutdown: &Shutdown) {
        let e = match r {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(p) => Error::new(Kind::Sink, format!("the sink panicked: {}", panic_text(p))),
        };
        self.error.get_or_insert(e);
        shutdown.trigger();
    }

    /// Writes a batch's dead letters in line order, or keeps the first few for the report.
    fn dead_letters(
        &mut self,
        text: &[u8],
        metas: &[EventMeta],
        mut first: Vec<DeadLetter>,
    ) -> std::thread::Result<Result<Flow>> {
        let Some(dead) = self.dead.as_deref_mut() else {
            first.sort_by_key(|d| d.line);
            let room = REPORT_DEAD_LETTERS.saturating_sub(self.first_dead.len());
            self.first_dead.extend(first.into_iter().take(room));
            return Ok(Ok(Flow::Continue));
        };
        self.order.clear();
        self.order.extend_from_slice(metas);
        self.order.sort_by_key(|m| m.line);
        let out = Output {
            data: text,
            events: &self.order,
            routes: &[],
            token: None,
            structurals: &[],
            tally: None,
        };
        // A dead-letter sink's Stop ends nothing: only the output's does.
        catch_unwind(AssertUnwindSafe(|| {
            dead.write(&out).map(|_| Flow::Continue)
        }))
    }

    /// Finishes both sinks with the run's counters.
    fn finish(mut self, started: Instant) -> Result<Report> {
        let stats = self.stats;
        let sink = &mut *self.sink;
        let r = catch_unwind(AssertUnwindSafe(|| sink.finish(&stats)));
        finished(r)?;
        if let Some(d) = self.dead.as_deref_mut() {
            finished(catch_unwind(AssertUnwindSafe(|| d.finish(&stats))))?;
        }
        debug_assert!(stats.is_balanced(), "conservation law violated: {stats:?}");
        Ok(Report {
            stats,
            elapsed: started.elapsed(),
            first_dead_letters: self.first_dead,
        })
    }
}

fn finished(r: std::thread::Result<Result<()>>) -> Result<()> {
    match r {
        Ok(r) => r,
        Err(p) => Err(Error::new(
            Kind::Sink,
            format!("the sink panicked: {}", panic_text(p)),
        )),
    }
}
