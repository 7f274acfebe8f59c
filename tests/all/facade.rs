//! `Pipeline::run` as a facade over the runtime: what a caller of the single-chain API sees
//! (the sink's errors and panics, a sink asking to stop, filters kept between runs, the run
//! inside an async task), whatever the number of workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluicebox::{
    Decisions, Events, Filter, Flow, Kind, Output, Pipeline, PipelineConfig, Sink, Stats,
};

fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{{\"i\":{i}}}\n").into_bytes())
        .collect()
}

/// Worker counts, and whether the input is said never to block (several workers: the
/// calling thread then works batches too).
const MODES: [(usize, bool); 5] = [(1, false), (2, false), (3, false), (2, true), (3, true)];

fn config((workers, input_never_blocks): (usize, bool)) -> PipelineConfig {
    PipelineConfig {
        workers,
        input_never_blocks,
        max_batch_events: 100,
        ..PipelineConfig::default()
    }
}

/// Runs `f` on a thread of its own and returns what it returned; fails the test, naming
/// `what`, when that takes more than a minute (a run that stalled).
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what}: the run did not end"))
}

/// A sink that fails (or panics) at its `at`-th batch, or asks to stop there.
struct Breaks {
    at: usize,
    how: &'static str,
    batches: usize,
    events: u64,
}

impl Sink for Breaks {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        self.batches += 1;
        if self.batches == self.at {
            match self.how {
                "panic" => panic!("the sink broke on purpose"),
                "error" => {
                    return Err(sluicebox::Error::new(Kind::Sink, "the disk is full"));
                }
                _ => {
                    self.events += out.len() as u64;
                    return Ok(Flow::Stop);
                }
            }
        }
        self.events += out.len() as u64;
        Ok(Flow::Continue)
    }
    fn finish(&mut self, _: &Stats) -> sluicebox::Result<()> {
        Ok(())
    }
}

#[test]
fn a_sink_error_or_panic_ends_the_run_as_an_error_of_the_sink() {
    for workers in MODES {
        for how in ["error", "panic"] {
            let mut p = Pipeline::new(config(workers)).unwrap();
            let mut sink = Breaks {
                at: 3,
                how,
                batches: 0,
                events: 0,
            };
            let e = p.run(&lines(10_000)[..], &mut sink).unwrap_err();
            assert_eq!(e.kind(), Kind::Sink, "{workers:?} {how}: {e}");
            let want = if how == "panic" {
                "broke on purpose"
            } else {
                "disk is full"
            };
            assert!(e.to_string().contains(want), "{workers:?} {how}: {e}");
            // Nothing was written after the failure.
            assert_eq!(sink.batches, 3, "{workers:?} {how}");
            assert_eq!(sink.events, 200, "{workers:?} {how}");
        }
    }
}

#[test]
fn a_sink_stopping_or_failing_while_the_budget_is_spent_ends_the_run() {
    // Small batches: the readers run into the in-flight budget (a few batches) long before
    // the sink stops, so they are waiting for room when it does.
    for workers in MODES {
        for how in ["stop", "error"] {
            let (r, batches) = within_a_minute(&format!("{workers:?} {how}"), move || {
                let mut p = Pipeline::new(PipelineConfig {
                    max_batch_bytes: 4096,
                    ..config(workers)
                })
                .unwrap();
                let mut sink = Breaks {
                    at: 3,
                    how,
                    batches: 0,
                    events: 0,
                };
                let r = p.run(&lines(50_000)[..], &mut sink).map(|r| r.stats);
                (r.map_err(|e| e.kind()), sink.batches)
            });
            assert_eq!(batches, 3, "{workers:?} {how}");
            match how {
                "stop" => assert!(r.unwrap().is_balanced(), "{workers:?}"),
                _ => assert_eq!(r.unwrap_err(), Kind::Sink, "{workers:?}"),
            }
        }
    }
}

#[test]
fn a_sink_asking_to_stop_ends_the_run_with_what_it_took() {
    for workers in MODES {
        let mut p = Pipeline::new(config(workers)).unwrap();
        let mut sink = Breaks {
            at: 2,
            how: "stop",
            batches: 0,
            events: 0,
        };
        let r = p.run(&lines(10_000)[..], &mut sink).unwrap();
        assert_eq!(sink.batches, 2, "{workers:?}");
        assert_eq!(r.stats.emitted, 200, "{workers:?}");
        assert_eq!(r.stats.received, 200, "{workers:?}");
        assert!(r.stats.is_balanced(), "{workers:?}: {:?}", r.stats);
    }
}

/// Counts the events it has seen, in a counter its forks share, and in its own field.
#[derive(Clone)]
struct Counts {
    all: Arc<AtomicU64>,
    mine: u64,
}

impl Filter for Counts {
    fn name(&self) -> &str {
        "counts"
    }
    fn process(&mut self, events: &Events<'_>, d: &mut Decisions) -> sluicebox::Result<()> {
        self.mine += events.len() as u64;
        self.all.fetch_add(events.len() as u64, Ordering::Relaxed);
        // Keep every second event that this instance has seen, counted across runs.
        for i in 0..events.len() {
            if (self.mine - events.len() as u64 + i as u64) % 2 == 1 {
                d.drop(i);
            }
        }
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn Filter>> {
        Ok(Box::new(Counts {
            all: self.all.clone(),
            mine: 0,
        }))
    }
}

#[test]
fn with_one_worker_the_pipeline_keeps_its_own_filter_and_its_state_between_runs() {
    let all = Arc::new(AtomicU64::new(0));
    let mut p = Pipeline::new(config((1, false)))
        .unwrap()
        .with_filter(Counts {
            all: all.clone(),
            mine: 0,
        });
    let mut out = sluicebox::CollectSink::new();
    // 3 events: the instance keeps the 1st and the 3rd (its counts 0 and 2)...
    let r = p.run(&lines(3)[..], &mut out).unwrap();
    assert_eq!((r.stats.emitted, r.stats.filtered), (2, 1));
    // ...and, being the same instance, goes on from 3: keeps the 2nd of these (count 4).
    let r = p.run(&lines(3)[..], &mut out).unwrap();
    assert_eq!((r.stats.emitted, r.stats.filtered), (1, 2));
    assert_eq!(all.load(Ordering::Relaxed), 6);
}

#[test]
fn a_run_inside_an_async_task_returns() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for workers in MODES {
        let report = rt.block_on(async move {
            tokio::spawn(async move {
                let mut p = Pipeline::new(config(workers)).unwrap();
                let mut out = sluicebox::CollectSink::new();
                p.run(&lines(5_000)[..], &mut out).map(|r| r.stats)
            })
            .await
            .unwrap()
        });
        let stats = report.unwrap();
        assert_eq!(stats.emitted, 5_000, "{workers:?}");
    }
}

/// Holds every acknowledgement until `finish`, as a sink that batches its own requests may.
struct HoldsAcks {
    acks: Vec<sluicebox::Ack>,
    events: u64,
}

impl Sink for HoldsAcks {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        self.acks.push(out.ack());
        self.events += out.len() as u64;
        Ok(Flow::Continue)
    }
    fn finish(&mut self, _: &Stats) -> sluicebox::Result<()> {
        for a in self.acks.drain(..) {
            a.delivered();
        }
        Ok(())
    }
}

#[test]
fn a_sink_holding_its_acknowledgements_until_finish_does_not_stall_the_run() {
    for workers in MODES {
        let (r, events) = within_a_minute(&format!("{workers:?}"), move || {
            // Small batches: the 20,000 events take about 200 of them, far past the
            // in-flight budget of (4 x workers + 1) batches.
            let mut p = Pipeline::new(PipelineConfig {
                max_batch_bytes: 4096,
                ..config(workers)
            })
            .unwrap();
            let mut sink = HoldsAcks {
                acks: Vec::new(),
                events: 0,
            };
            let r = p
                .run(&lines(20_000)[..], &mut sink)
                .map(|r| r.stats.emitted);
            (r, sink.events)
        });
        assert_eq!(r.unwrap(), 20_000, "{workers:?}");
        assert_eq!(events, 20_000, "{workers:?}");
    }
}

/// Routes the events whose `i` is even to `even`.
#[derive(Clone)]
struct RoutesEven;

impl Filter for RoutesEven {
    fn name(&self) -> &str {
        "routes_even"
    }
    fn process(&mut self, events: &Events<'_>, d: &mut Decisions) -> sluicebox::Result<()> {
        for (i, e) in events.iter().enumerate() {
            let n = e.field("i").and_then(|f| f.as_i64()).unwrap_or(1);
            if n % 2 == 0 {
                d.route(i, "even");
            }
        }
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn Filter>> {
        Ok(Box::new(self.clone()))
    }
}

/// Keeps each event's route.
struct Routes(Vec<Option<String>>);

impl Sink for Routes {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        self.0
            .extend(out.iter().map(|e| e.route.map(str::to_string)));
        Ok(Flow::Continue)
    }
    fn finish(&mut self, _: &Stats) -> sluicebox::Result<()> {
        Ok(())
    }
}

#[test]
fn a_route_an_earlier_filter_set_reaches_the_sink_through_a_later_filter() {
    for workers in MODES {
        let mut p = Pipeline::new(config(workers))
            .unwrap()
            .with_filter(RoutesEven)
            .with_filter(sluicebox::DropWhere::drop_debug());
        let mut sink = Routes(Vec::new());
        p.run(&lines(1_000)[..], &mut sink).unwrap();
        assert_eq!(sink.0.len(), 1_000, "{workers:?}");
        for (i, r) in sink.0.iter().enumerate() {
            let want = (i % 2 == 0).then(|| "even".to_string());
            assert_eq!(r, &want, "{workers:?}: event {i}");
        }
    }
}

/// Dead-letters the first event it is shown, once.
#[derive(Clone)]
struct FailsFirst(bool);

impl Filter for FailsFirst {
    fn name(&self) -> &str {
        "fails_first"
    }
    fn process(&mut self, events: &Events<'_>, d: &mut Decisions) -> sluicebox::Result<()> {
        if !self.0 && !events.is_empty() {
            self.0 = true;
            d.fail(0, "the first one");
        }
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn Filter>> {
        Ok(Box::new(self.clone()))
    }
}

#[test]
fn the_report_keeps_the_first_dead_letters_in_line_order_across_stages() {
    // Line 1 is valid and the filter rejects it; lines 2-7 are not JSON.
    let mut input = b"{\"i\":0}\n".to_vec();
    for _ in 0..6 {
        input.extend_from_slice(b"not json\n");
    }
    input.extend_from_slice(&lines(10));
    let mut p = Pipeline::new(config((1, false)))
        .unwrap()
        .with_filter(FailsFirst(false));
    let r = p.run(&input[..], sluicebox::CollectSink::new()).unwrap();
    let got: Vec<u64> = r.first_dead_letters.iter().map(|d| d.line).collect();
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    assert_eq!(r.stats.dead_lettered, 7);
}
