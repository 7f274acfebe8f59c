//! The output side: the router that puts each source's processed batches back in order and
//! hands them to the sinks' queues, and the thread that drives each sink.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::batch::EventMeta;
use crate::metrics::{ComponentMetrics, Metrics};
use crate::sink::{Flow, Output, Sink};
use crate::source::Shutdown;

use super::worker::{DeadBatch, Delivery, Processed, Select};

/// What a sink's thread receives.
pub(crate) enum SinkMsg {
    Deliver(Delivery),
    Dead(DeadBatch),
}

/// Counts of one component at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComponentReport {
    /// The component's name.
    pub name: String,
    /// `source`, `transform` or `sink`.
    pub kind: String,
    /// Events it received (sources: events framed from their input).
    pub received: u64,
    /// Extra events a flat-map filter made.
    pub created: u64,
    /// Events it sent on (sinks: delivered — when the sink's acknowledgements resolved, for
    /// sinks that hold them).
    pub sent: u64,
    /// Events a filter dropped on purpose.
    pub discarded: u64,
    /// Events not delivered (a failed sink, a source's drop policy): their positions stay
    /// unacknowledged, unless the user chose to drop them.
    pub failed: u64,
    /// Events it sent to the dead letter.
    pub dead_lettered: u64,
    /// The error the component stopped on, if any.
    pub error: Option<String>,
}

impl ComponentReport {
    /// `received + created == sent + discarded + failed + dead_lettered`.
    pub fn is_balanced(&self) -> bool {
        self.received + self.created
            == self.sent + self.discarded + self.failed + self.dead_lettered
    }

    fn from_metrics(name: &str, kind: &str, m: &ComponentMetrics) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            received: m.received_events.get(),
            created: m.created.get(),
            sent: m.sent_events.get(),
            discarded: m.discarded_intentional.get(),
            failed: m.discarded_unintentional.get(),
            dead_lettered: m.dead_letters.get(),
            error: None,
        }
    }
}

/// Reports of every component registered in `metrics`: the sinks' own (with their errors),
/// the sinks named in `unfinished` (still delivering when the drain deadline passed) from
/// their counters, what they had not resolved counted as failed (it stays unacknowledged),
/// and sources and transforms from their counters.
pub(crate) fn component_reports(
    metrics: &Metrics,
    sinks: &[ComponentReport],
    unfinished: &[String],
) -> Vec<ComponentReport> {
    let mut out: Vec<ComponentReport> = sinks.to_vec();
    for (name, kind, m) in metrics.components() {
        if kind == "sink" {
            if unfinished.contains(&name) {
                let mut r = ComponentReport::from_metrics(&name, &kind, &m);
                let open = (r.received + r.created)
                    .saturating_sub(r.sent + r.discarded + r.failed + r.dead_lettered);
                r.failed += open;
                r.error = Some(format!(
                    "still delivering when the drain deadline passed: {open} events stay \
                     unacknowledged"
                ));
                out.push(r);
            }
            continue;
        }
        out.push(ComponentReport::from_metrics(&name, &kind, &m));
    }
    out
}

/// Starts the router: per source, processed batches are released in the order the source
/// sent them.
pub(crate) fn spawn_router(
    done: Receiver<Processed>,
    sinks: Vec<(Sender<SinkMsg>, ComponentMetrics)>,
    dead: Option<(Sender<SinkMsg>, ComponentMetrics)>,
    sources: usize,
    shutdown: Shutdown,
    errors: Arc<Mutex<Vec<(String, String)>>>,
) -> Tracked<()> {
    Tracked::spawn("sluicebox-router".into(), move || {
        let mut next = vec![0u64; sources];
        let mut pending: Vec<BTreeMap<u64, Processed>> =
            (0..sources).map(|_| BTreeMap::new()).collect();
        let mut logged = 0usize;
        for p in done.iter() {
            let s = p.source;
            pending[s].insert(p.seq, p);
            while let Some(p) = pending[s].remove(&next[s]) {
                next[s] += 1;
                route(p, &sinks, &dead, &shutdown, &errors, &mut logged);
            }
        }
        // Whatever is left waited for a batch that never came (the runtime stopped
        // while a source was sending): deliver it anyway, in order.
        for map in pending {
            for (_, p) in map {
                route(p, &sinks, &dead, &shutdown, &errors, &mut logged);
            }
        }
    })
    .expect("spawning the router thread")
}

/// How many dead letters are logged when the run has no dead-letter sink.
const LOGGED_DEAD_LETTERS: usize = 5;

fn route(
    p: Processed,
    sinks: &[(Sender<SinkMsg>, ComponentMetrics)],
    dead: &Option<(Sender<SinkMsg>, ComponentMetrics)>,
    shutdown: &Shutdown,
    errors: &Mutex<Vec<(String, String)>>,
    logged: &mut usize,
) {
    if let Some((component, e)) = p.error {
        errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((component, e.to_string()));
        // A broken filter stops the run: its events stay unacknowledged and replay once
        // the filter is fixed.
        shutdown.trigger();
    }
    for d in p.deliveries {
        let (tx, m) = &sinks[d.sink];
        m.buffer_events.inc();
        if let Err(e) = tx.send(SinkMsg::Deliver(d)) {
            // The sink's thread is gone: its events are not delivered.
            if let SinkMsg::Deliver(d) = e.into_inner()
                && let Some(t) = &d.shared.batch.token
            {
                t.fail();
            }
            m.buffer_events.dec();
        }
    }
    if let Some(db) = p.dead {
        match dead {
            Some((tx, m)) => {
                m.buffer_events.inc();
                if let Err(e) = tx.send(SinkMsg::Dead(db)) {
                    if let SinkMsg::Dead(db) = e.into_inner()
                        && let Some(t) = &db.token
                    {
                        t.fail();
                    }
                    m.buffer_events.dec();
                }
            }
            None => {
                // No dead-letter sink: the user chose to keep only counts; log a few.
                for m in &db.metas {
                    if *logged >= LOGGED_DEAD_LETTERS {
                        break;
                    }
                    *logged += 1;
                    let text = &db.text[m.start as usize..(m.start + m.len) as usize];
                    tracing::warn!(
                        "dead letter (no dead_letter sink configured): {}",
                        String::from_utf8_lossy(text)
                    );
                }
            }
        }
    }
}

/// Starts the thread that drives one sink.
pub(crate) fn spawn_sink(
    name: String,
    sink: Box<dyn Sink + Send>,
    rx: Receiver<SinkMsg>,
    metrics: ComponentMetrics,
    shutdown: Shutdown,
    flush_interval: Duration,
) -> Tracked<ComponentReport> {
    Tracked::spawn(format!("sluicebox-sink-{name}"), move || {
        drive_sink(name, sink, rx, metrics, shutdown, flush_interval)
    })
    .expect("spawning a sink thread")
}

/// A thread whose end can be waited for with a deadline, without polling: `ended`
/// disconnects when the thread's closure has returned or unwound (its sender is dropped
/// then). Costs one channel per thread.
pub(crate) struct Tracked<T> {
    handle: std::thread::JoinHandle<T>,
    ended: Receiver<()>,
}

impl<T: Send + 'static> Tracked<T> {
    /// Starts `f` on a thread named `name`.
    pub(crate) fn spawn(
        name: String,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, ended) = crossbeam_channel::bounded::<()>(0);
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            // Dropped after `f` returns (or while it unwinds): that is the signal.
            let _ended = tx;
            f()
        })?;
        Ok(Self { handle, ended })
    }

    /// The thread's result once its work has ended, or `None` at `deadline` (the thread is
    /// then left to finish on its own).
    pub(crate) fn join_by(self, deadline: std::time::Instant) -> Option<std::thread::Result<T>> {
        match self.ended.recv_deadline(deadline) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            // Never sent on: only the disconnection comes.
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                Some(self.handle.join())
            }
        }
    }
}

pub(crate) fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

fn drive_sink(
    name: String,
    mut sink: Box<dyn Sink + Send>,
    rx: Receiver<SinkMsg>,
    m: ComponentMetrics,
    shutdown: Shutdown,
    flush_interval: Duration,
) -> ComponentReport {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    m.up.set(1);
    let shared = std::sync::Arc::new(m.clone());
    let mut error: Option<String> = None;
    let mut dirty = false;
    let mut view: Vec<EventMeta> = Vec::new();
    let fail = |error: &mut Option<String>, what: String| {
        m.error("sink_failed", "sending");
        m.up.set(0);
        tracing::error!("sink {name}: {what}");
        *error = Some(what);
    };
    loop {
        let msg = match rx.recv_timeout(flush_interval) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => {
                if dirty && error.is_none() {
                    dirty = false;
                    match catch_unwind(AssertUnwindSafe(|| sink.flush())) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => fail(&mut error, e.to_string()),
                        Err(p) => fail(&mut error, format!("panicked: {}", panic_text(p))),
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        m.buffer_events.dec();
        // Build the view of this message's events.
        let (data, events, routes, token, n, structurals) = match &msg {
            SinkMsg::Deliver(d) => {
                let b = &d.shared.batch;
                let events: &[EventMeta] = match d.select {
                    Select::All => &b.events,
                    Select::Route(id) => {
                        view.clear();
                        view.extend(b.events.iter().filter(|e| e.route == id));
                        &view
                    }
                };
                let n = events.len() as u64;
                (
                    &b.data[..],
                    events,
                    &b.routes[..],
                    b.token.as_ref(),
                    n,
                    &b.structurals[..],
                )
            }
            SinkMsg::Dead(db) => (
                &db.text[..],
                &db.metas[..],
                &[][..],
                db.token.as_ref(),
                db.count,
                &[][..],
            ),
        };
        if n == 0 {
            continue;
        }
        m.received_events.inc_by(n);
        let bytes: u64 = events.iter().map(|e| u64::from(e.len)).sum();
        m.received_event_bytes.inc_by(bytes);
        if error.is_some() {
            // A failed sink takes nothing more: these events stay unacknowledged.
            if let Some(t) = token {
                t.fail();
            }
            m.discarded_unintentional.inc_by(n);
            continue;
        }
        let slot = crate::sink::TallySlot {
            cell: std::sync::OnceLock::new(),
            events: n,
            bytes,
            metrics: shared.clone(),
        };
        let out = Output {
            data,
            events,
            routes,
            token,
            structurals,
            tally: Some(&slot),
        };
        match catch_unwind(AssertUnwindSafe(|| sink.write(&out))) {
            Ok(Ok(flow)) => {
                dirty = true;
                // A sink that took an Ack is counted when its Acks are resolved; one that
                // did not has delivered the batch by returning.
                if slot.cell.get().is_none() {
                    m.sent_events.inc_by(n);
                    m.sent_event_bytes.inc_by(bytes);
                }
                if flow == Flow::Stop {
                    shutdown.trigger();
                }
            }
            Ok(Err(e)) => {
                if let Some(t) = token {
                    t.fail();
                }
                if slot.cell.get().is_none() {
                    m.discarded_unintentional.inc_by(n);
                }
                fail(&mut error, e.to_string());
            }
            Err(p) => {
                if let Some(t) = token {
                    t.fail();
                }
                if slot.cell.get().is_none() {
                    m.discarded_unintentional.inc_by(n);
                }
                fail(&mut error, format!("panicked: {}", panic_text(p)));
            }
        }
    }
    if error.is_none() {
        let stats = crate::Stats::default();
        let r = catch_unwind(AssertUnwindSafe(|| {
            sink.flush().and_then(|()| sink.finish(&stats))
        }));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fail(&mut error, e.to_string()),
            Err(p) => fail(&mut error, format!("panicked: {}", panic_text(p))),
        }
    }
    // Acks the sink still holds are resolved (failed) when it is dropped: count them first.
    // A panic in its drop is the sink's error, and its counts are still reported.
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(sink))) {
        let what = format!("panicked when dropped: {}", panic_text(p));
        match &mut error {
            None => fail(&mut error, what),
            Some(first) => {
                tracing::error!("sink {name}: {what}");
                first.push_str("; then ");
                first.push_str(&what);
            }
        }
    }
    m.up.set(0);
    let mut rep = ComponentReport::from_metrics(m.id(), "sink", &m);
    rep.error = error;
    rep
}
