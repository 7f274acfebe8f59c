//! The runtime with borrowed ends: the engine of [`crate::Pipeline::run`].
//!
//! The same source context (framing, in-flight budget, acknowledgements), per-source plan
//! and runners (parse, filters, dead letters) as `sluicebox run`, driven by the caller's
//! threads instead of the runtime's: the source's context is lent to them, so the input
//! need not be `'static`; each frames a batch under a lock (taking its budget, token and
//! place in the order), then parses and filters it on the core that just read it; the
//! calling thread puts the results back in order and drives the sink, which need not be
//! `Send`. No tokio runtime and no router: their threads waking on a 2-core machine cost
//! 10-20% (measured). With one worker, all of it runs on the calling thread, on the
//! pipeline's own filter instances. Dead letters are written in the chain's own format
//! (`reason`, `line`, `offset`, `filter`, `raw`), or kept in the report without a
//! dead-letter sink.
//!
//! Cost per run: the runtime's start (no thread with one worker; one per worker otherwise,
//! or one fewer when the calling thread works batches too) and, with several workers, one
//! fork of each filter per worker; per batch, a budget take, a token and two channel sends
//! at most.

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Instant;

use std::collections::BTreeMap;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::output::panic_text;
use super::split::Split;
use super::worker::{Processed, Select, Shape, SourceRunner};
use super::{Inline, RuntimeSettings, SourceSpec, Topology, TransformSpec};
use crate::ack::Stream;
use crate::batch::{DeadLetter, EventMeta};
use crate::error::{Error, Kind, Result};
use crate::filter::Filter;
use crate::frame::Decoder;
use crate::metrics::Metrics;
use crate::pipeline::{PipelineConfig, REPORT_DEAD_LETTERS, Report, Stats};
use crate::sink::{Flow, Output, Sink};
use crate::source::reader::ReadAt;
use crate::source::{BoxFuture, Budget, OverflowPolicy, Shutdown, Source, SourceContext, Work};

/// The source's name (and its one stream's); dead letters and errors name it.
const INPUT: &str = "input";
/// The caller's sink's name.
const OUTPUT: &str = "output";
/// Batches of `max_batch_bytes` a run may have read and not yet handed to the sink, per
/// worker (read ahead, being filtered, waiting for their turn): what the single-input
/// pipeline always held, so its memory stays where it was (measured: 1.51x -> 1.69x on 2
/// cores against one per worker). The budget counts these, not unacknowledged batches
/// (see `SourceContext::blocking_take`).
const BATCHES_PER_WORKER: u64 = 4;

/// The source of the caller-driven mode: never run, its context is lent to the caller's
/// threads, who read the input themselves.
struct Lent;

impl Source for Lent {
    fn run(self: Box<Self>, _: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Err(Error::new(Kind::Input, "a lent source does not run")) })
    }
}

/// The input side, shared by the reader threads: one frames the next batch (and takes its
/// budget, token and place in the order) while holding it, then works the batch itself.
struct Input<R> {
    input: R,
    decoder: Box<dyn Decoder>,
    stream: Stream,
    /// The input ended, failed, or the run is stopping.
    done: bool,
    error: Option<Error>,
}

/// Runs `input` through `filters` into `sink`, on the runtime. With one worker the run
/// uses the filters themselves and gives them back; with more, each worker a fork of them.
/// The first error ends the run: the sink's, then a filter's (its breaker tripped), then
/// the input's.
pub(crate) fn run(
    config: &PipelineConfig,
    filters: &mut Vec<Box<dyn Filter>>,
    metrics: &Metrics,
    input: impl Read + Send,
    at: Option<&dyn ReadAt>,
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
    let unit = (config.max_batch_bytes as u64).max(64 << 10);
    let in_flight = (BATCHES_PER_WORKER * config.workers.max(1) as u64 + 1) * unit;
    let mut topology = Topology::new(settings)
        .with_metrics(metrics.clone())
        .source(
            SourceSpec::new(INPUT, "reader", Box::new(Lent))
                .in_flight(in_flight, OverflowPolicy::Block),
        );
    // With one worker the runtime lends the filters to its one runner: the chain is checked
    // first, so that `start` (which, past its checks, cannot fail in this mode) never drops
    // them.
    let lend = config.workers <= 1;
    config.validate()?;
    let mut upstream = INPUT.to_string();
    let chain: Vec<Box<dyn Filter>> = if lend {
        std::mem::take(filters)
    } else {
        filters.iter().map(|f| f.fork()).collect::<Result<_>>()?
    };
    for (i, f) in chain.into_iter().enumerate() {
        let name = format!("filter{i}");
        topology = topology.transform(TransformSpec::new(
            name.clone(),
            "filter",
            vec![upstream],
            f,
        ));
        upstream = name;
    }
    topology.local = Some((OUTPUT.into(), vec![upstream]));
    topology.shape = Shape::Chain;
    debug_assert!(topology.check().is_empty(), "{:?}", topology.check());
    let mut running = topology.start()?;
    let done = running
        .done
        .take()
        .ok_or_else(|| Error::new(Kind::Config, "the runtime made no queue for the results"))?;
    let mut workers = std::mem::take(&mut running.inline);
    let cx = running
        .lent
        .pop()
        .ok_or_else(|| Error::new(Kind::Config, "the runtime lent no source context"))?;
    let shutdown = running.shutdown_handle();
    let shared = Mutex::new(Input {
        input,
        decoder: cx.decoder(0),
        stream: cx.stream(INPUT, None),
        done: false,
        error: None,
    });
    // With several workers, a positional input is split by byte ranges, each worker reading
    // its own; otherwise they take turns at the one stream.
    let split = at
        .filter(|_| workers.len() > 1)
        .map(|src| Split::new(src, &cx, INPUT));
    let mut driver = Driver {
        // Set below when several readers share the input.
        read_spin: std::time::Duration::ZERO,
        sink,
        dead,
        stats: Stats::default(),
        first_dead: Vec::new(),
        order: Vec::new(),
        error: None,
        broken: None,
        stopped: false,
        shutdown: shutdown.clone(),
        dirty: false,
        budget: cx.budget_handle(),
    };
    if workers.len() == 1 {
        // One worker: the calling thread reads, works and writes each batch in turn, with
        // nothing handed between threads.
        let mut worker = workers.remove(0);
        drop(worker.done);
        while let Some((job, held)) = next_job(&shared, &cx) {
            let mut p = worker.runners[job.source].process(job.source, job.batch);
            p.held = held;
            driver.take(p);
        }
        drop(cx);
        if let Some(runner) = worker.runners.pop() {
            // The lent filters go back to the pipeline.
            *filters = runner.into_filters();
        }
    } else {
        // Several: worker threads take turns reading a batch, each works what it read. When
        // reads never wait, the calling thread is one of them (it also writes every batch
        // in the input's order): a writing thread of its own, next to the workers, cost
        // 8-28% more per event on 2 cores (alternating bench runs). Otherwise it only
        // writes, so that a batch never waits for its read of a pipe that has nothing to
        // give.
        let own = if config.input_never_blocks || split.is_some() {
            let Inline { runners, done: tx } = workers.remove(0);
            drop(tx);
            Some(runners)
        } else {
            None
        };
        let beside = own.is_some();
        // Spinning for the input's lock pays only while every reader has a core: with more
        // readers than cores the holder may be the one waiting for a core.
        if beside && cores() >= config.workers {
            driver.read_spin = READ_SPIN;
        }
        let spin = driver.read_spin;
        let first = usize::from(beside);
        let feed: &dyn Feed = match &split {
            Some(s) => s,
            None => &shared,
        };
        std::thread::scope(|scope| {
            let mut threads = Vec::new();
            for (w, worker) in workers.into_iter().enumerate() {
                let (shared, cx) = (&shared, cx.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("sluicebox-worker-{}", w + first))
                    .spawn_scoped(scope, move || {
                        if beside {
                            work_beside(feed, &cx, worker, unit, spin)
                        } else {
                            work(shared, &cx, worker)
                        }
                    });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        let e = Error::new(Kind::Input, format!("cannot start a worker: {e}"));
                        if let Some(split) = &split {
                            split.fail(e);
                        } else {
                            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                            s.error.get_or_insert(e);
                            s.done = true;
                        }
                    }
                }
            }
            match own {
                Some(mut runners) => {
                    let _stop = StopOnPanic(cx.shutdown());
                    driver.work_and_drive(feed, &cx, &mut runners, &done, flush_interval, unit)
                }
                None => driver.drive(&done, flush_interval),
            }
            // Joined one by one: the scope's own wait ends when each thread's closure has
            // returned, before the thread has run its thread-local destructors, so the run
            // could return with those still running (the likely source of a 32-byte
            // `__cxa_thread_atexit_impl` record LeakSanitizer reported once in the fuzz
            // target frame_parse, not reproducible). A worker's panic is passed on.
            for t in threads {
                if let Err(p) = t.join() {
                    std::panic::resume_unwind(p);
                }
            }
        });
        drop(cx);
    }
    drop(done);
    // No thread of the runtime's ran (the caller drove the run): nothing to wait for, and
    // the per-component reports `wait` builds from the metrics would go unread.
    drop(running);
    if let Some(e) = driver.error.take().or(driver.broken.take()) {
        return Err(e);
    }
    let input = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = input.error.or(split.and_then(Split::into_error)) {
        return Err(e);
    }
    driver.finish(started)
}

/// Stops the run when the thread holding it unwinds: the others then stop waiting for the
/// budget (which the panicking thread's batch may never give back) and the run ends, with
/// the panic passed on when the threads are joined.
struct StopOnPanic<'a>(&'a Shutdown);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.trigger();
        }
    }
}

/// Frames the next batch of the shared input and takes its budget, token and place in the
/// order, all under the lock (so the order is the input's); `None` at the end of the input,
/// on an error (kept), or once the run is stopping.
fn next_job<R: Read>(shared: &Mutex<Input<R>>, cx: &SourceContext) -> Option<(Work, u64)> {
    let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
    read_job(&mut guard, cx, true)
}

/// [`next_job`] with the lock held; `wait`: wait for the budget (false: take it anyway, the
/// caller having checked for room).
fn read_job<R: Read>(s: &mut Input<R>, cx: &SourceContext, wait: bool) -> Option<(Work, u64)> {
    if s.done || cx.shutdown().is_triggered() {
        s.done = true;
        return None;
    }
    let mut batch = cx.batch();
    let read = catch_unwind(AssertUnwindSafe(|| {
        s.decoder.fill(&mut s.input, &mut batch)
    }));
    let job = match read {
        Ok(Ok(true)) => {
            let end = s.decoder.position();
            if wait {
                cx.blocking_take(&s.stream, batch, end)
            } else {
                Some(cx.take_now(&s.stream, batch, end))
            }
        }
        Ok(Ok(false)) => None,
        Ok(Err(e)) => {
            s.error.get_or_insert(e);
            None
        }
        Err(p) => {
            s.error.get_or_insert(Error::new(
                Kind::Input,
                format!("reading the input panicked: {}", panic_text(p)),
            ));
            None
        }
    };
    s.done |= job.is_none();
    job
}

/// How long a reader whose reads never block spins for the input before it sleeps: the
/// holder is copying one batch from memory or the page cache (~50 µs for the bench's
/// 1,024 events of ~335 bytes), and a sleep costs a futex wake and the sleeper's wake-up
/// on an idle core, which cost 2 workers ~10% of their speed (`sluicebox bench --workers 2`).
const READ_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// The cores this process may use, asked once per process: the answer reads the cgroup's
/// CPU quota (files under /proc and /sys).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The input's lock, for a reader whose reads never block: spins up to `spin` (at most
/// [`READ_SPIN`]) for it, then waits asleep. Costs the spin's CPU only while another reader
/// is copying.
fn lock_read<T>(shared: &Mutex<T>, spin: std::time::Duration) -> std::sync::MutexGuard<'_, T> {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            match shared.try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        if start.elapsed() >= spin {
            return shared.lock().unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// [`work`] for an input whose reads never block, next to a calling thread that reads too:
/// waits for room in the budget before it takes the lock (and then takes it anyway), so that
/// no reader ever holds the lock while it waits for the calling thread to write.
fn work_beside(
    feed: &dyn Feed,
    cx: &SourceContext,
    mut worker: Inline,
    unit: u64,
    spin: std::time::Duration,
) {
    let _stop = StopOnPanic(cx.shutdown());
    let budget = cx.budget_handle();
    loop {
        if !budget.wait_for_room(unit, cx.shutdown()) {
            return;
        }
        let Next::Jobs(jobs) = feed.next(cx, &budget, unit, spin, false) else {
            return;
        };
        for (job, held) in jobs {
            let mut p = worker.runners[job.source].process(job.source, job.batch);
            p.held = held;
            if worker.done.send(p).is_err() {
                return;
            }
        }
    }
}

/// Where the readers of an input whose reads never block get their batches: one stream
/// behind a lock, or a positional input split by byte ranges ([`Split`]).
trait Feed: Sync {
    /// The next batches (in the input's order among themselves; maybe none), each with the
    /// budget bytes it holds. `room`: check the budget first and read nothing without room
    /// for `unit` bytes; `spin`: how long to spin for a lock before sleeping.
    fn next(
        &self,
        cx: &SourceContext,
        budget: &Budget,
        unit: u64,
        spin: std::time::Duration,
        room: bool,
    ) -> Next;
}

/// A reader's next turn at the input.
enum Next {
    /// Batches to work.
    Jobs(Vec<(Work, u64)>),
    /// The input has ended (or failed, or the run is stopping).
    Ended,
    /// No room in the budget (only when the reader asked for room).
    NoRoom,
}

impl<R: Read + Send> Feed for Mutex<Input<R>> {
    fn next(
        &self,
        cx: &SourceContext,
        budget: &Budget,
        unit: u64,
        spin: std::time::Duration,
        room: bool,
    ) -> Next {
        let mut s = lock_read(self, spin);
        if room && !budget.has_room(unit) {
            return Next::NoRoom;
        }
        match read_job(&mut s, cx, false) {
            Some(job) => Next::Jobs(vec![job]),
            None => Next::Ended,
        }
    }
}

impl Feed for Split<'_> {
    fn next(
        &self,
        cx: &SourceContext,
        budget: &Budget,
        unit: u64,
        _spin: std::time::Duration,
        room: bool,
    ) -> Next {
        if cx.shutdown().is_triggered() {
            return Next::Ended;
        }
        if room && !budget.has_room(unit) {
            return Next::NoRoom;
        }
        match self.claim().and_then(|c| self.frame(cx, c)) {
            Some(jobs) => Next::Jobs(jobs),
            None => Next::Ended,
        }
    }
}

/// One of several worker threads: frames the next batch, then parses and filters it on this
/// core (the bytes it just read are in its cache) and hands the result to the caller's
/// thread.
fn work<R: Read>(shared: &Mutex<Input<R>>, cx: &SourceContext, mut worker: Inline) {
    let _stop = StopOnPanic(cx.shutdown());
    while let Some((job, held)) = next_job(shared, cx) {
        let mut p = worker.runners[job.source].process(job.source, job.batch);
        p.held = held;
        if worker.done.send(p).is_err() {
            return;
        }
    }
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
    /// The sink's error (a panic becomes one).
    error: Option<Error>,
    /// A filter's error (its breaker tripped).
    broken: Option<Error>,
    /// The sink asked to stop: later batches are not written (nor counted).
    stopped: bool,
    shutdown: Shutdown,
    /// Written to since the last flush.
    dirty: bool,
    /// How long this thread spins for the input's lock before it sleeps ([`lock_read`]).
    read_spin: std::time::Duration,
    /// The source's budget, given back batch by batch as the sink is handed them.
    budget: std::sync::Arc<Budget>,
}

/// Gives `.1` bytes back to the budget when dropped (however the batch was handled).
struct Held(std::sync::Arc<Budget>, u64);

impl Drop for Held {
    fn drop(&mut self) {
        if self.1 > 0 {
            self.0.release(self.1);
        }
    }
}

impl Driver<'_, '_> {
    /// The calling thread with several workers, on an input whose reads never block: reads
    /// and works batches as they do while there is room in the budget, and writes every
    /// result in the input's order; otherwise waits for the others' results, flushing the
    /// sink when none came for `flush_interval`. It never waits for the budget (only it
    /// gives the budget back), and waits for the lock only while another reader reads.
    fn work_and_drive(
        &mut self,
        feed: &dyn Feed,
        cx: &SourceContext,
        runners: &mut [SourceRunner],
        done: &Receiver<Processed>,
        flush_interval: std::time::Duration,
        unit: u64,
    ) {
        let mut pending: BTreeMap<u64, Processed> = BTreeMap::new();
        let mut next = 0u64;
        let mut reading = true;
        loop {
            while let Ok(p) = done.try_recv() {
                pending.insert(p.seq, p);
            }
            while let Some(p) = pending.remove(&next) {
                next += 1;
                self.take(p);
            }
            if reading && self.budget.has_room(unit) {
                // No one holds the lock for long: every reader waits for room before it
                // takes the lock, and reads never block in this mode. Room is checked again
                // with the lock held (a split input: right before its claim), as a worker
                // may have taken some since.
                match feed.next(cx, &self.budget, unit, self.read_spin, true) {
                    Next::Jobs(jobs) => {
                        for (job, held) in jobs {
                            let mut p = runners[job.source].process(job.source, job.batch);
                            p.held = held;
                            pending.insert(p.seq, p);
                        }
                        continue;
                    }
                    Next::Ended => {
                        reading = false;
                        continue;
                    }
                    Next::NoRoom => {}
                }
            }
            match done.recv_timeout(flush_interval) {
                Ok(p) => {
                    pending.insert(p.seq, p);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if std::mem::take(&mut self.dirty) && !self.ended() {
                        let sink = &mut *self.sink;
                        let r = catch_unwind(AssertUnwindSafe(|| sink.flush()));
                        self.check(r);
                    }
                }
                // The others have all ended. The input ended, or the budget is held by
                // batches waiting for one no one has (a worker stopped): nothing more will
                // come.
                Err(RecvTimeoutError::Disconnected) if !reading => break,
                Err(RecvTimeoutError::Disconnected) => {
                    if !self.budget.has_room(unit) {
                        break;
                    }
                }
            }
        }
        // What is left waited for a batch that never came (a worker stopped): failed.
        for (_, p) in pending {
            self.stopped = true;
            self.take(p);
        }
    }

    /// Takes the workers' results until they end, in the input's order, flushing the sink
    /// when none came for `flush_interval`.
    fn drive(&mut self, done: &Receiver<Processed>, flush_interval: std::time::Duration) {
        let mut pending: BTreeMap<u64, Processed> = BTreeMap::new();
        let mut next = 0u64;
        loop {
            let p = match done.recv_timeout(flush_interval) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => {
                    if std::mem::take(&mut self.dirty) && !self.ended() {
                        let sink = &mut *self.sink;
                        let r = catch_unwind(AssertUnwindSafe(|| sink.flush()));
                        self.check(r);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            pending.insert(p.seq, p);
            while let Some(p) = pending.remove(&next) {
                next += 1;
                self.take(p);
            }
        }
        // What is left waited for a batch that never came (a worker stopped): failed.
        for (_, p) in pending {
            self.stopped = true;
            self.take(p);
        }
    }

    /// Writes one batch's dead letters and events (after the sink failed or asked to stop,
    /// only fails their acknowledgements).
    fn take(&mut self, mut p: Processed) {
        // Read and not yet written: the input may read that much again once this is handled.
        let _held = Held(self.budget.clone(), std::mem::take(&mut p.held));
        if let Some((_, e)) = p.error.take()
            && !self.ended()
        {
            // Its batch was abandoned: nothing to write. (After the sink asked to stop, the
            // run has ended: a breaker tripping on a batch no one will write changes nothing.)
            self.broken.get_or_insert(e);
            self.shutdown.trigger();
        }
        if self.ended() {
            for d in &p.deliveries {
                if let Some(t) = &d.shared.batch.token {
                    t.fail();
                }
            }
            if let Some(t) = p.dead.as_ref().and_then(|d| d.token.as_ref()) {
                t.fail();
            }
            return;
        }
        if let Some(db) = p.dead {
            let r = self.dead_letters(&db.text, &db.metas, db.first);
            self.check(r);
            if self.ended() {
                return;
            }
        }
        for d in p.deliveries {
            let b = &d.shared.batch;
            debug_assert!(matches!(d.select, Select::All));
            self.stats.add(&b.delivered_stats());
            if b.events.is_empty() {
                continue;
            }
            self.dirty = true;
            let out = Output {
                data: &b.data,
                events: &b.events,
                routes: &b.routes,
                token: b.token.as_ref(),
                structurals: &b.structurals,
                tally: None,
            };
            let sink = &mut *self.sink;
            match catch_unwind(AssertUnwindSafe(|| sink.write(&out))) {
                Ok(Ok(Flow::Stop)) => {
                    self.stopped = true;
                    self.shutdown.trigger();
                }
                r => self.check(r.map(|r| r.map(|_| ()))),
            }
        }
    }

    /// The run ends here: the sink failed or asked to stop, or a filter broke.
    fn ended(&self) -> bool {
        self.stopped || self.error.is_some() || self.broken.is_some()
    }

    /// Keeps a sink call's error (a panic becomes one) and stops the input.
    fn check(&mut self, r: std::thread::Result<Result<()>>) {
        if let Err(e) = sink_outcome(r) {
            self.error.get_or_insert(e);
            self.shutdown.trigger();
        }
    }

    /// Writes a batch's dead letters in line order, or keeps the first few for the report.
    fn dead_letters(
        &mut self,
        text: &[u8],
        metas: &[EventMeta],
        mut first: Vec<DeadLetter>,
    ) -> std::thread::Result<Result<()>> {
        let Some(dead) = self.dead.as_deref_mut() else {
            first.sort_by_key(|d| d.line);
            let room = REPORT_DEAD_LETTERS.saturating_sub(self.first_dead.len());
            self.first_dead.extend(first.into_iter().take(room));
            return Ok(Ok(()));
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
        catch_unwind(AssertUnwindSafe(|| dead.write(&out).map(|_| ())))
    }

    /// Finishes both sinks with the run's counters.
    fn finish(mut self, started: Instant) -> Result<Report> {
        let stats = self.stats;
        let sink = &mut *self.sink;
        sink_outcome(catch_unwind(AssertUnwindSafe(|| sink.finish(&stats))))?;
        if let Some(d) = self.dead.as_deref_mut() {
            sink_outcome(catch_unwind(AssertUnwindSafe(|| d.finish(&stats))))?;
        }
        debug_assert!(stats.is_balanced(), "conservation law violated: {stats:?}");
        Ok(Report {
            stats,
            elapsed: started.elapsed(),
            first_dead_letters: self.first_dead,
        })
    }
}

/// A sink call's outcome: its own error, or a panic as a [`Kind::Sink`] error.
fn sink_outcome(r: std::thread::Result<Result<()>>) -> Result<()> {
    match r {
        Ok(r) => r,
        Err(p) => Err(Error::new(
            Kind::Sink,
            format!("the sink panicked: {}", panic_text(p)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_read_waits_out_a_long_hold_and_takes_a_poisoned_lock() {
        let m = std::sync::Arc::new(Mutex::new(0u32));
        let held = std::sync::Arc::new(std::sync::Barrier::new(2));
        let holder = {
            let (m, held) = (m.clone(), held.clone());
            std::thread::spawn(move || {
                let mut g = m.lock().unwrap();
                held.wait();
                // Held well past the spin: the reader has gone to sleep on the lock.
                std::thread::sleep(READ_SPIN * 20);
                *g = 1;
            })
        };
        held.wait();
        let t0 = Instant::now();
        assert_eq!(
            *lock_read(&m, READ_SPIN),
            1,
            "the reader got the lock before the holder let go"
        );
        assert!(t0.elapsed() >= READ_SPIN * 10);
        holder.join().unwrap();

        let poisoner = {
            let m = m.clone();
            std::thread::spawn(move || {
                let _g = m.lock().unwrap();
                panic!("poison the lock");
            })
        };
        assert!(poisoner.join().is_err());
        assert!(m.is_poisoned());
        *lock_read(&m, READ_SPIN) += 1;
        assert_eq!(*lock_read(&m, std::time::Duration::ZERO), 2);
    }
}
