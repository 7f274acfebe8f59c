//! The runtime: sources with streams, acknowledgements through filters and fan-out, routes,
//! dead letters, failing sinks, bounded memory.

use std::sync::{Arc, Mutex};

use sluicebox::ack::Stream;
use sluicebox::runtime::{RuntimeSettings, SinkSpec, SourceSpec, Topology, TransformSpec};
use sluicebox::source::reader::ReaderSource;
use sluicebox::source::{BoxFuture, Source, SourceContext};
use sluicebox::{Decisions, DropWhere, Events, Filter, Flow, Output, Sink};

/// A sink that keeps what it received in shared memory, and can fail on chosen batches.
#[derive(Clone, Default)]
struct Shared {
    lines: Arc<Mutex<Vec<String>>>,
    fail_batches: Arc<Mutex<Vec<usize>>>,
    batches: Arc<Mutex<usize>>,
}

impl Sink for Shared {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let mut n = self.batches.lock().unwrap();
        let i = *n;
        *n += 1;
        if self.fail_batches.lock().unwrap().contains(&i) {
            return Err(sluicebox::Error::new(
                sluicebox::Kind::Sink,
                "refused by the test",
            ));
        }
        let mut lines = self.lines.lock().unwrap();
        for e in out.iter() {
            lines.push(String::from_utf8(e.bytes.to_vec()).unwrap());
        }
        Ok(Flow::Continue)
    }
}

/// A source that sends the given batches (each a list of lines) on one stream, position =
/// index of the batch + 1, then waits until its stream is idle and reports it.
struct Batches {
    batches: Vec<Vec<String>>,
    report: Arc<Mutex<Option<Stream>>>,
}

impl Source for Batches {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, sluicebox::Result<()>> {
        Box::pin(async move {
            let stream = cx.stream("batches", None);
            *self.report.lock().unwrap() = Some(stream.clone());
            for (i, lines) in self.batches.iter().enumerate() {
                let mut d = cx.decoder(0);
                let mut b = cx.batch();
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                let mut input = text.as_bytes();
                // Each batch of the test is one chunk: complete once its input is taken.
                if !d.decode(&mut input, &mut b) {
                    d.decode_eof(&mut b);
                }
                assert!(cx.send(&stream, b, i as u64 + 1).await);
            }
            for _ in 0..2000 {
                if stream.is_idle() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Ok(())
        })
    }
}

fn settings(workers: usize) -> RuntimeSettings {
    let mut s = RuntimeSettings::default();
    s.pipeline.workers = workers;
    s
}

fn line(level: &str, n: usize) -> String {
    format!("{{\"level\":\"{level}\",\"n\":{n}}}")
}

#[test]
fn a_reader_through_a_filter_keeps_order_and_counts_with_several_workers() {
    let corpus = sluicebox::loggen::corpus(20_000, 3);
    let expected: Vec<String> = corpus
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.windows(15).any(|w| w == b"\"level\":\"DEBUG\""))
        .map(|l| String::from_utf8(l.to_vec()).unwrap())
        .collect();
    for workers in [1, 2, 3] {
        let sink = Shared::default();
        let report = Topology::new(settings(workers))
            .source(SourceSpec::new(
                "in",
                "reader",
                Box::new(ReaderSource::new(
                    "corpus",
                    std::io::Cursor::new(corpus.clone()),
                )),
            ))
            .transform(TransformSpec::new(
                "drop_debug",
                "native",
                vec!["in".into()],
                Box::new(DropWhere::drop_debug()),
            ))
            .sink(SinkSpec::new(
                "out",
                "test",
                vec!["drop_debug".into()],
                Box::new(sink.clone()),
            ))
            .start()
            .unwrap()
            .wait()
            .unwrap();
        assert!(report.is_balanced(), "{report:?}");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(*sink.lines.lock().unwrap(), expected, "workers={workers}");
        let f = report.component("drop_debug").unwrap();
        assert_eq!(f.received, 20_000);
        assert_eq!(f.sent + f.discarded, 20_000);
    }
}

#[test]
fn a_failed_batch_stops_the_watermark_at_the_contiguous_delivered_prefix() {
    let batches: Vec<Vec<String>> = (0..6).map(|i| vec![line("INFO", i)]).collect();
    let sink = Shared::default();
    // The sink's second write fails: batches 0 is delivered, 1 fails, the sink then takes
    // nothing more.
    sink.fail_batches.lock().unwrap().push(1);
    let report_stream = Arc::new(Mutex::new(None));
    let report = Topology::new(settings(2))
        .source(SourceSpec::new(
            "src",
            "test",
            Box::new(Batches {
                batches,
                report: report_stream.clone(),
            }),
        ))
        .sink(SinkSpec::new(
            "out",
            "test",
            vec!["src".into()],
            Box::new(sink.clone()),
        ))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    let stream = report_stream.lock().unwrap().clone().unwrap();
    assert_eq!(stream.acked(), Some(1), "only batch 0 was delivered");
    assert!(stream.watermark().is_blocked());
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let out = report.component("out").unwrap();
    assert_eq!((out.received, out.sent, out.failed), (6, 1, 5));
    assert!(report.is_balanced(), "{report:?}");
}

/// Takes an [`Ack`] per batch (twice for even ones) and resolves them after `write`
/// returned: batch 3 failed, the last batch held until the sink is dropped, the rest delivered.
struct Deferred {
    held: Vec<(usize, sluicebox::sink::Ack)>,
    n: usize,
    last: usize,
}

impl Sink for Deferred {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let i = self.n;
        self.n += 1;
        self.held.push((i, out.ack()));
        if i.is_multiple_of(2) {
            self.held.push((i, out.ack()));
        }
        // Resolve what the earlier writes left.
        for (j, ack) in std::mem::take(&mut self.held) {
            if j == i || j == self.last {
                self.held.push((j, ack));
            } else if j == 3 {
                ack.failed();
            } else {
                ack.delivered();
            }
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _stats: &sluicebox::Stats) -> sluicebox::Result<()> {
        for (j, ack) in std::mem::take(&mut self.held) {
            if j != self.last {
                ack.delivered();
            } else {
                self.held.push((j, ack));
            }
        }
        Ok(())
    }
}

#[test]
fn a_sink_counts_what_its_acks_resolve_to_not_what_it_accepted() {
    let batches: Vec<Vec<String>> = (0..6)
        .map(|i| (0..=i).map(|k| line("INFO", 10 * i + k)).collect())
        .collect();
    let report = Topology::new(settings(1))
        .source(SourceSpec::new(
            "src",
            "test",
            Box::new(Batches {
                batches,
                report: Arc::new(Mutex::new(None)),
            }),
        ))
        .sink(SinkSpec::new(
            "out",
            "test",
            vec!["src".into()],
            Box::new(Deferred {
                held: Vec::new(),
                n: 0,
                last: 5,
            }),
        ))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    let out = report.component("out").unwrap();
    // Batch i holds i + 1 events: 21 in all; batch 3 (4 events) failed, batch 5 (6 events)
    // was never resolved (dropped with the sink: failed).
    assert_eq!(
        (out.received, out.sent, out.failed),
        (21, 11, 10),
        "{out:?}"
    );
    assert!(report.is_balanced(), "{report:?}");
}

/// Routes each event to its level in lower case.
#[derive(Clone)]
struct RouteByLevel;

impl Filter for RouteByLevel {
    fn name(&self) -> &str {
        "route_by_level"
    }
    fn routes(&self) -> Option<Vec<String>> {
        Some(vec!["info".into(), "error".into(), "debug".into()])
    }
    fn process(&mut self, events: &Events<'_>, d: &mut Decisions) -> sluicebox::Result<()> {
        for (i, e) in events.iter().enumerate() {
            let route = match e.field("level").map(|f| f.raw) {
                Some(b"ERROR") => "error",
                Some(b"DEBUG") => "debug",
                Some(b"INFO") => "info",
                _ => "other",
            };
            d.route(i, route);
        }
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn Filter>> {
        Ok(Box::new(self.clone()))
    }
}

#[test]
fn fan_out_and_routes_deliver_every_event_once_per_reader_and_ack_after_all() {
    let mut lines = Vec::new();
    for i in 0..300 {
        let level = ["INFO", "ERROR", "DEBUG", "WARN"][i % 4];
        lines.push(line(level, i));
    }
    let batches: Vec<Vec<String>> = lines.chunks(7).map(|c| c.to_vec()).collect();
    let n_batches = batches.len() as u64;
    let (all, errors, infos, dead) = (
        Shared::default(),
        Shared::default(),
        Shared::default(),
        Shared::default(),
    );
    // The error sink fails once: nothing after that batch may be acknowledged.
    let report_stream = Arc::new(Mutex::new(None));
    let report = Topology::new(settings(2))
        .source(SourceSpec::new(
            "src",
            "test",
            Box::new(Batches {
                batches,
                report: report_stream.clone(),
            }),
        ))
        .transform(TransformSpec::new(
            "by_level",
            "native",
            vec!["src".into()],
            Box::new(RouteByLevel),
        ))
        .sink(SinkSpec::new(
            "all",
            "test",
            vec!["src".into()],
            Box::new(all.clone()),
        ))
        .sink(SinkSpec::new(
            "errors",
            "test",
            vec!["by_level.error".into()],
            Box::new(errors.clone()),
        ))
        .sink(SinkSpec::new(
            "infos",
            "test",
            vec!["by_level.info".into(), "by_level.debug".into()],
            Box::new(infos.clone()),
        ))
        .dead_letter(Box::new(dead.clone()))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(all.lines.lock().unwrap().len(), 300);
    assert_eq!(errors.lines.lock().unwrap().len(), 75);
    assert_eq!(infos.lines.lock().unwrap().len(), 150);
    // WARN events were routed to "other", which nothing reads: dead-lettered, not lost.
    let dead = dead.lines.lock().unwrap();
    assert_eq!(dead.len(), 75);
    let v: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(v["component"], "by_level");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("routed to by_level.other"),
        "{v}"
    );
    let stream = report_stream.lock().unwrap().clone().unwrap();
    assert_eq!(stream.acked(), Some(n_batches));
}

#[test]
fn a_panicking_sink_is_an_error_of_that_sink_and_nothing_is_acknowledged() {
    struct Panics;
    impl Sink for Panics {
        fn write(&mut self, _out: &Output<'_>) -> sluicebox::Result<Flow> {
            panic!("boom")
        }
    }
    let report_stream = Arc::new(Mutex::new(None));
    let report = Topology::new(settings(1))
        .source(SourceSpec::new(
            "src",
            "test",
            Box::new(Batches {
                batches: vec![vec![line("INFO", 1)], vec![line("INFO", 2)]],
                report: report_stream.clone(),
            }),
        ))
        .sink(SinkSpec::new(
            "p",
            "test",
            vec!["src".into()],
            Box::new(Panics),
        ))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert!(
        report
            .errors
            .iter()
            .any(|(c, e)| c == "p" && e.contains("boom")),
        "{:?}",
        report.errors
    );
    let stream = report_stream.lock().unwrap().clone().unwrap();
    assert_eq!(stream.acked(), None);
}

#[test]
fn a_bad_graph_is_refused_with_every_problem() {
    let err = Topology::new(settings(1))
        .source(SourceSpec::new(
            "a",
            "reader",
            Box::new(ReaderSource::new("x", std::io::empty())),
        ))
        .sink(SinkSpec::new(
            "s",
            "test",
            vec!["b".into()],
            Box::new(Shared::default()),
        ))
        .start()
        .unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("s: inputs: input \"b\" names no source or transform"),
        "{m}"
    );
    assert!(m.contains("nothing reads source \"a\""), "{m}");
}

#[test]
fn the_examples_run() {
    let dir = crate::common::sluicebox_bin()
        .parent()
        .unwrap()
        .join("examples");
    for ex in ["custom_source", "custom_sink"] {
        let out = std::process::Command::new(dir.join(ex)).output().unwrap();
        assert!(
            out.status.success(),
            "{ex}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A sink that fails (and, as the runtime stops a failed sink, takes nothing more) on the
/// first write holding one of its poison events (`n` values).
#[derive(Clone, Default)]
struct Poisoned {
    ns: Arc<Mutex<Vec<u64>>>,
    poison: Vec<u64>,
}

impl Sink for Poisoned {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let mut got = Vec::new();
        for e in out.iter() {
            let v: serde_json::Value = serde_json::from_slice(e.bytes).unwrap();
            got.push(v["n"].as_u64().unwrap());
        }
        if got.iter().any(|n| self.poison.contains(n)) {
            return Err(sluicebox::Error::new(sluicebox::Kind::Sink, "poison"));
        }
        self.ns.lock().unwrap().extend(got);
        Ok(Flow::Continue)
    }
}

/// A transform of the random topologies, and what it does to (n, level, route) events.
#[derive(Clone, Copy, Debug)]
enum Kind3 {
    DropDebug,
    Route,
    Tag,
}

/// One input of a random component: a producer (0 = the source, i + 1 = transform i) and,
/// for a routing transform, maybe one of its routes.
type Input = (usize, Option<&'static str>);

const LEVELS: [&str; 4] = ["INFO", "ERROR", "DEBUG", "WARN"];
const ROUTES: [&str; 3] = ["info", "error", "debug"];

fn route_of(level: &str) -> &'static str {
    match level {
        "ERROR" => "error",
        "DEBUG" => "debug",
        "INFO" => "info",
        _ => "other",
    }
}

/// Model of the graph: each producer's output as (n, level index, route) triples.
fn model_outputs(
    events: &[(u64, usize)],
    transforms: &[(Kind3, Vec<Input>)],
) -> Vec<Vec<(u64, usize, Option<&'static str>)>> {
    let mut outs: Vec<Vec<(u64, usize, Option<&'static str>)>> =
        vec![events.iter().map(|&(n, l)| (n, l, None)).collect()];
    for (kind, inputs) in transforms {
        let mut input = Vec::new();
        for &(p, route) in inputs {
            input.extend(
                outs[p]
                    .iter()
                    .filter(|e| route.is_none() || e.2 == route)
                    .copied(),
            );
        }
        let out = match kind {
            Kind3::DropDebug => input.into_iter().filter(|e| e.1 != 2).collect(),
            Kind3::Route => input
                .into_iter()
                .map(|(n, l, _)| (n, l, Some(route_of(LEVELS[l]))))
                .collect(),
            Kind3::Tag => input,
        };
        outs.push(out);
    }
    outs
}

/// A random graph: transforms (kind, inputs), sinks (inputs, poison events), workers, events
/// per batch, events.
type Drawn = (
    Vec<(Kind3, Vec<Input>)>,
    Vec<(Vec<Input>, Vec<u64>)>,
    usize,
    usize,
    usize,
);

fn topology_strategy() -> impl proptest::strategy::Strategy<Value = Drawn> {
    use proptest::prelude::*;
    // Transforms: kind + picks of earlier producers (resolved below).
    let t = prop::collection::vec(
        (0..3u8, prop::collection::vec((any::<u16>(), 0..4u8), 1..3)),
        0..5,
    );
    let s = prop::collection::vec(
        (
            prop::collection::vec((any::<u16>(), 0..4u8), 1..3),
            prop::collection::vec(0..400u64, 0..2),
        ),
        1..4,
    );
    (t, s, 1..4usize, 1..40usize, 20..400usize).prop_map(|(t, s, workers, batch, events)| {
        let mut transforms: Vec<(Kind3, Vec<Input>)> = Vec::new();
        let pick = |kinds: &[(Kind3, Vec<Input>)], picks: &[(u16, u8)]| -> Vec<Input> {
            let mut inputs: Vec<Input> = Vec::new();
            for &(p, r) in picks {
                let producer = p as usize % (kinds.len() + 1);
                if inputs.iter().any(|i| i.0 == producer) {
                    continue;
                }
                let route = match producer.checked_sub(1).map(|i| kinds[i].0) {
                    Some(Kind3::Route) if r < 3 => Some(ROUTES[r as usize]),
                    _ => None,
                };
                inputs.push((producer, route));
            }
            inputs
        };
        for (k, picks) in t {
            let kind = [Kind3::DropDebug, Kind3::Route, Kind3::Tag][k as usize];
            let inputs = pick(&transforms, &picks);
            transforms.push((kind, inputs));
        }
        let mut sinks: Vec<(Vec<Input>, Vec<u64>)> = s
            .into_iter()
            .map(|(picks, poison)| (pick(&transforms, &picks), poison))
            .collect();
        // Every producer needs a reader: a sink for those nothing reads.
        for p in 0..=transforms.len() {
            let read = transforms.iter().any(|t| t.1.iter().any(|i| i.0 == p))
                || sinks.iter().any(|s| s.0.iter().any(|i| i.0 == p));
            if !read {
                sinks.push((vec![(p, None)], Vec::new()));
            }
        }
        (transforms, sinks, workers, batch, events)
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Random graphs of drop/route/tag transforms and sinks (some failing on chosen events),
    /// with 1 to 3 workers: each sink holds exactly what the model sends it (up to its
    /// failure), the unread routes' events are dead-lettered, the counts balance, and the
    /// source's acknowledged position is the first batch that reached a failing sink.
    #[test]
    fn acknowledgements_match_a_model_on_random_topologies(
        (transforms, sinks, workers, batch, n_events) in topology_strategy()
    ) {
        let events: Vec<(u64, usize)> =
            (0..n_events as u64).map(|n| (n, (n as usize * 7 + n as usize / 3) % 4)).collect();
        let batches: Vec<Vec<String>> = events
            .chunks(batch)
            .map(|c| c.iter().map(|&(n, l)| line(LEVELS[l], n as usize)).collect())
            .collect();
        let n_batches = batches.len() as u64;
        let name = |p: usize| if p == 0 { "src".to_string() } else { format!("t{}", p - 1) };
        let input_name = |&(p, r): &Input| match r {
            Some(r) => format!("{}.{r}", name(p)),
            None => name(p),
        };
        let report_stream = Arc::new(Mutex::new(None));
        let mut topo = Topology::new(settings(workers)).source(SourceSpec::new(
            "src",
            "test",
            Box::new(Batches { batches, report: report_stream.clone() }),
        ));
        for (i, (kind, inputs)) in transforms.iter().enumerate() {
            let filter: Box<dyn Filter> = match kind {
                Kind3::DropDebug => Box::new(DropWhere::drop_debug()),
                Kind3::Route => Box::new(RouteByLevel),
                Kind3::Tag => Box::new(sluicebox::TagService),
            };
            topo = topo.transform(TransformSpec::new(
                format!("t{i}"),
                "native",
                inputs.iter().map(input_name).collect(),
                filter,
            ));
        }
        let mut sink_state = Vec::new();
        for (i, (inputs, poison)) in sinks.iter().enumerate() {
            let s = Poisoned { ns: Default::default(), poison: poison.clone() };
            sink_state.push(s.clone());
            topo = topo.sink(SinkSpec::new(
                format!("s{i}"),
                "test",
                inputs.iter().map(input_name).collect(),
                Box::new(s),
            ));
        }
        let dead = Shared::default();
        let report = topo.dead_letter(Box::new(dead.clone())).start().unwrap().wait().unwrap();
        proptest::prop_assert!(report.is_balanced(), "{report:?}");

        // The model.
        let outs = model_outputs(&events, &transforms);
        let batch_of = |n: u64| n / batch as u64;
        let mut first_failure = n_batches;
        // Per sink: what it must hold (batches before its failure), and what it may also
        // hold of the batch it fails on (a sink fed along several paths gets one write per
        // path and batch; the writes before the poisoned one succeed).
        let mut wanted = Vec::new();
        for (inputs, poison) in &sinks {
            let mut got: Vec<u64> = Vec::new();
            for &(p, route) in inputs {
                got.extend(outs[p].iter().filter(|e| route.is_none() || e.2 == route).map(|e| e.0));
            }
            let fails_at = got.iter().filter(|n| poison.contains(n)).map(|&n| batch_of(n)).min();
            let mut maybe = Vec::new();
            if let Some(b) = fails_at {
                first_failure = first_failure.min(b);
                maybe = got.iter().copied().filter(|&n| batch_of(n) == b).collect();
                got.retain(|&n| batch_of(n) < b);
            }
            got.sort_unstable();
            wanted.push((got, fails_at, maybe));
        }
        for (i, (s, (want, fails_at, maybe))) in sink_state.iter().zip(&wanted).enumerate() {
            let mut got = s.ns.lock().unwrap().clone();
            got.sort_unstable();
            let mut extra: Vec<u64> = Vec::new();
            if let Some(b) = fails_at {
                extra = got.iter().copied().filter(|&n| batch_of(n) == *b).collect();
                got.retain(|&n| batch_of(n) != *b);
            }
            proptest::prop_assert_eq!(&got, want, "sink s{}", i);
            // Of the failing batch, only a part of what the model sends it.
            let mut left = maybe.clone();
            for n in extra {
                let Some(k) = left.iter().position(|&m| m == n) else {
                    proptest::prop_assert!(false, "sink s{} got {} of its failing batch", i, n);
                    unreachable!();
                };
                left.swap_remove(k);
            }
            if fails_at.is_some() {
                proptest::prop_assert!(!left.is_empty(), "sink s{} took all of its failing batch", i);
            }
        }
        // Unread: events of a routing transform that no reader takes.
        let mut unread = 0usize;
        for (i, _) in transforms.iter().enumerate() {
            let p = i + 1;
            let readers: Vec<Option<&str>> = transforms
                .iter()
                .flat_map(|t| t.1.iter())
                .chain(sinks.iter().flat_map(|s| s.0.iter()))
                .filter(|inp| inp.0 == p)
                .map(|inp| inp.1)
                .collect();
            if readers.iter().any(|r| r.is_none()) {
                continue;
            }
            unread += outs[p]
                .iter()
                .filter(|e| !readers.contains(&e.2))
                .count();
        }
        proptest::prop_assert_eq!(dead.lines.lock().unwrap().len(), unread);
        let stream = report_stream.lock().unwrap().clone().unwrap();
        let want_acked = if first_failure == 0 { None } else { Some(first_failure) };
        proptest::prop_assert_eq!(stream.acked(), want_acked);
    }
}

/// A sink that takes nothing until its gate opens, then counts events.
#[derive(Clone, Default)]
struct Gated {
    open: Arc<(Mutex<bool>, std::sync::Condvar)>,
    events: Arc<Mutex<u64>>,
}

impl Sink for Gated {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        *self.events.lock().unwrap() += out.iter().count() as u64;
        Ok(Flow::Continue)
    }
}

/// A sink that does not move holds its source at the in-flight budget: the source reads no
/// further (its bytes stop growing, below the budget plus one batch), nothing is dropped,
/// and once the sink moves again a shutdown drains every event the source sent into it.
#[test]
fn a_stalled_sink_holds_its_source_at_the_in_flight_budget() {
    use sluicebox::source::OverflowPolicy;
    use sluicebox::source::generator::GeneratorSource;
    let budget: u64 = 512 * 1024;
    let batch_bytes = 64 * 1024;
    let mut s = settings(2);
    s.pipeline.max_batch_bytes = batch_bytes;
    let sink = Gated::default();
    let running = Topology::new(s)
        .source(
            SourceSpec::new(
                "gen",
                "generator",
                Box::new(GeneratorSource {
                    events: None,
                    rate: None,
                    seed: 7,
                }),
            )
            .in_flight(budget, OverflowPolicy::Block),
        )
        .sink(SinkSpec::new(
            "slow",
            "test",
            vec!["gen".into()],
            Box::new(sink.clone()),
        ))
        .start()
        .unwrap();
    let source_bytes = || {
        running
            .metrics()
            .components()
            .into_iter()
            .find(|(id, _, _)| id == "gen")
            .map(|(_, _, m)| m.received_bytes.get())
            .unwrap()
    };
    std::thread::sleep(std::time::Duration::from_millis(800));
    let first = source_bytes();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let second = source_bytes();
    assert!(first > 0, "the source sent nothing");
    assert_eq!(first, second, "the source kept reading past a stalled sink");
    assert!(
        second <= budget + batch_bytes as u64,
        "{second} bytes in flight, budget {budget}"
    );
    // Release the sink, stop, and drain.
    {
        let (lock, cv) = &*sink.open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    running.shutdown_handle().trigger();
    let report = running.wait().unwrap();
    assert!(report.is_balanced(), "{report:?}");
    let src = report.component("gen").unwrap();
    assert_eq!(src.discarded, 0);
    assert_eq!(src.failed, 0);
    assert_eq!(*sink.events.lock().unwrap(), src.sent, "{report:?}");
    assert!(!report.timed_out);
}

/// A source that sends batches of `sizes[i]` events (event `n` is `{"n":n}`, numbered across
/// batches) at position `i + 1` until they run out or the run stops.
struct Numbered {
    sizes: Vec<usize>,
    report: Arc<Mutex<Option<Stream>>>,
}

impl Source for Numbered {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, sluicebox::Result<()>> {
        Box::pin(async move {
            let stream = cx.stream("numbered", None);
            *self.report.lock().unwrap() = Some(stream.clone());
            let mut n = 0usize;
            for (i, &size) in self.sizes.iter().enumerate() {
                if cx.shutdown().is_triggered() {
                    break;
                }
                let text: String = (n..n + size)
                    .map(|k| {
                        let level = if k % 7 == 3 { "DEBUG" } else { "INFO" };
                        format!("{{\"n\":{k},\"level\":\"{level}\"}}\n")
                    })
                    .collect();
                n += size;
                let mut d = cx.decoder(0);
                let mut b = cx.batch();
                let mut input = text.as_bytes();
                if !d.decode(&mut input, &mut b) {
                    d.decode_eof(&mut b);
                }
                if !cx.send(&stream, b, i as u64 + 1).await {
                    break;
                }
                tokio::task::yield_now().await;
            }
            Ok(())
        })
    }
}

/// A sink whose writes become durable later, on another thread, after a delay drawn per
/// batch: only then are the events recorded as delivered and the batch's Ack resolved
/// (delivered, or failed for the batches in `fail`). Resolutions come out of order.
struct Durable {
    tx: Option<std::sync::mpsc::Sender<(usize, Vec<u64>, sluicebox::sink::Ack)>>,
    resolver: Option<std::thread::JoinHandle<()>>,
    batch: usize,
}

impl Durable {
    fn new(delays_us: Vec<u64>, fail: Vec<usize>, durable: Arc<Mutex<Vec<u64>>>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<u64>, sluicebox::sink::Ack)>();
        let resolver = std::thread::spawn(move || {
            // Each write lands after its delay: a small scheduler over pending writes.
            let mut pending: Vec<(std::time::Instant, usize, Vec<u64>, sluicebox::sink::Ack)> =
                Vec::new();
            let mut open = true;
            while open || !pending.is_empty() {
                match rx.recv_timeout(std::time::Duration::from_micros(200)) {
                    Ok((i, ns, ack)) => {
                        let d = delays_us
                            .get(i % delays_us.len().max(1))
                            .copied()
                            .unwrap_or(0);
                        pending.push((
                            std::time::Instant::now() + std::time::Duration::from_micros(d),
                            i,
                            ns,
                            ack,
                        ));
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => open = false,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                }
                let now = std::time::Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = pending
                    .into_iter()
                    .partition(|(at, ..)| *at <= now || !open);
                pending = later;
                for (_, i, ns, ack) in due {
                    if fail.contains(&i) {
                        ack.failed();
                    } else {
                        durable.lock().unwrap().extend(ns);
                        ack.delivered();
                    }
                }
            }
        });
        Durable {
            tx: Some(tx),
            resolver: Some(resolver),
            batch: 0,
        }
    }
}

impl Sink for Durable {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let ns: Vec<u64> = out
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_slice(e.bytes).unwrap();
                v["n"].as_u64().unwrap()
            })
            .collect();
        let i = self.batch;
        self.batch += 1;
        if let Some(tx) = &self.tx {
            let _ = tx.send((i, ns, out.ack()));
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _stats: &sluicebox::Stats) -> sluicebox::Result<()> {
        // Durable writes still pending land now (as a sink flushing at shutdown).
        drop(self.tx.take());
        if let Some(r) = self.resolver.take() {
            let _ = r.join();
        }
        Ok(())
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Shutdown at a random moment while batches are in flight (sent, being filtered,
    /// written but not yet durable, some failing): the source's acknowledged position covers
    /// exactly the contiguous prefix of batches whose events all became durable, so every
    /// acknowledged event was delivered, and every delivered event is acknowledged or lies
    /// past the position (replayed after a restart). Nothing is delivered twice, and every
    /// component balances.
    #[test]
    fn shutdown_in_flight_acknowledges_only_what_was_delivered(
        sizes in proptest::collection::vec(1usize..40, 5..80),
        delays_us in proptest::collection::vec(0u64..3000, 1..8),
        fail in proptest::collection::vec(0usize..80, 0..3),
        stop_after_us in 0u64..20_000,
        workers in 1usize..4,
        filter in proptest::bool::ANY,
    ) {
        let durable = Arc::new(Mutex::new(Vec::new()));
        let report_stream = Arc::new(Mutex::new(None));
        let mut topo = Topology::new(settings(workers)).source(SourceSpec::new(
            "src",
            "test",
            Box::new(Numbered { sizes: sizes.clone(), report: report_stream.clone() }),
        ));
        let input = if filter {
            topo = topo.transform(TransformSpec::new(
                "keep",
                "test",
                vec!["src".into()],
                Box::new(DropWhere::drop_debug()),
            ));
            "keep"
        } else {
            "src"
        };
        let running = topo
            .sink(SinkSpec::new(
                "out",
                "test",
                vec![input.into()],
                Box::new(Durable::new(delays_us, fail.clone(), durable.clone())),
            ))
            .start()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(stop_after_us));
        running.shutdown_handle().trigger();
        let report = running.wait().unwrap();
        proptest::prop_assert!(report.is_balanced(), "{:?}", report);
        let stream = report_stream.lock().unwrap().clone().unwrap();
        let acked = stream.acked().unwrap_or(0) as usize;
        let durable = durable.lock().unwrap().clone();
        let mut seen = std::collections::HashSet::new();
        for n in &durable {
            proptest::prop_assert!(seen.insert(*n), "event {} delivered twice", n);
        }
        // Event numbers of batch i.
        let mut first = vec![0u64];
        for s in &sizes {
            first.push(first.last().unwrap() + *s as u64);
        }
        // Batch i is delivered whole when each of its events the filter keeps is durable
        // (a dropped event counts as delivered).
        let kept = |n: u64| !(filter && n % 7 == 3);
        let complete = |i: usize| (first[i]..first[i + 1]).all(|n| !kept(n) || seen.contains(&n));
        // Acknowledged => delivered.
        for i in 0..acked {
            proptest::prop_assert!(complete(i), "batch {} acknowledged, not all delivered", i);
        }
        // And the position is the whole contiguous delivered prefix: the first batch past it
        // that the source sent was not delivered whole (its write failed, or the shutdown
        // cut it off), so it will be replayed.
        let sent = report.component("src").unwrap().sent;
        let batches_sent = (0..sizes.len()).take_while(|&i| first[i + 1] <= sent).count();
        if acked < batches_sent {
            proptest::prop_assert!(
                !complete(acked),
                "batch {} delivered whole but not acknowledged ({} sent)",
                acked, batches_sent
            );
        }
    }
}

/// A sink that takes a long time over each batch (and then delivers it).
struct Sluggish(std::time::Duration);

impl Sink for Sluggish {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        std::thread::sleep(self.0);
        out.ack().delivered();
        Ok(Flow::Continue)
    }
}

/// Ten INFO lines from a reader source into `sink`, named `name`, and the run's report.
fn ten_lines_into(
    s: RuntimeSettings,
    name: &str,
    sink: Box<dyn Sink + Send>,
) -> sluicebox::runtime::RunReport {
    let events: String = (0..10).map(|n| line("INFO", n) + "\n").collect();
    Topology::new(s)
        .source(SourceSpec::new(
            "in",
            "reader",
            Box::new(ReaderSource::new("x", std::io::Cursor::new(events))),
        ))
        .sink(SinkSpec::new(name, "test", vec!["in".into()], sink))
        .start()
        .unwrap()
        .wait()
        .unwrap()
}

/// Delivers everything, then panics when dropped.
struct PanicsWhenDropped;

impl Sink for PanicsWhenDropped {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        out.ack().delivered();
        Ok(Flow::Continue)
    }
}

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("a sink that panics when dropped");
    }
}

/// A sink whose drop panics (outside its own calls, which are caught one by one) is still in
/// the report, with its counts and the panic as its error, and among the run's errors. It
/// used to vanish from the report without an error: its thread's report was lost with the
/// unwinding.
#[test]
fn a_sink_that_panics_when_dropped_is_reported_with_its_counts_and_the_panic() {
    let report = ten_lines_into(settings(1), "p", Box::new(PanicsWhenDropped));
    let p = report.component("p").expect("the sink is reported");
    assert_eq!((p.received, p.sent), (10, 10), "{p:?}");
    assert!(
        p.error
            .as_deref()
            .unwrap_or("")
            .contains("panicked when dropped"),
        "{p:?}"
    );
    assert!(
        report
            .errors
            .iter()
            .any(|(c, e)| c == "p" && e.contains("a sink that panics when dropped")),
        "{report:?}"
    );
    assert!(report.is_balanced(), "{report:?}");
}

/// A sink still writing when the drain deadline passes is in the report all the same, with
/// what it had not resolved counted as failed (unacknowledged) and an error saying so, so
/// the counts still balance. Before, it was left out of the report.
#[test]
fn a_sink_still_busy_at_the_drain_deadline_is_reported_with_its_open_events_failed() {
    let mut s = settings(1);
    s.drain_timeout = std::time::Duration::from_millis(300);
    let report = ten_lines_into(
        s,
        "slow",
        Box::new(Sluggish(std::time::Duration::from_secs(3))),
    );
    assert!(report.timed_out, "{report:?}");
    let slow = report.component("slow").expect("the busy sink is reported");
    assert_eq!(
        (slow.received, slow.sent, slow.failed),
        (10, 0, 10),
        "{slow:?}"
    );
    assert!(
        slow.error
            .as_deref()
            .unwrap_or("")
            .contains("drain deadline"),
        "{slow:?}"
    );
    assert!(report.is_balanced(), "{report:?}");
}

/// `Running::wait` waits for its source tasks without entering a tokio runtime, and its
/// runtime stops in the background when dropped on a thread that drives async tasks: a
/// service may start and wait on a topology from async code (tokio refused both before).
#[test]
fn a_topology_waited_on_inside_an_async_task_returns() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let input = b"{\"level\":\"INFO\"}\n{\"level\":\"DEBUG\"}\n".to_vec();
        Topology::new(RuntimeSettings::default())
            .source(SourceSpec::new(
                "in",
                "reader",
                Box::new(ReaderSource::new("mem", std::io::Cursor::new(input))),
            ))
            .sink(SinkSpec::new(
                "out",
                "collect",
                vec!["in".into()],
                Box::new(sluicebox::CollectSink::new()),
            ))
            .start()
            .unwrap()
            .wait()
            .unwrap()
    });
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.component("out").unwrap().sent, 2);
}
