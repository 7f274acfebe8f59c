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

fn config(workers: usize) -> PipelineConfig {
    PipelineConfig {
        workers,
        max_batch_events: 100,
        ..PipelineConfig::default()
    }
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
    for workers in [1, 2] {
        for how in ["error", "panic"] {
            let mut p = Pipeline::new(config(workers)).unwrap();
            let mut sink = Breaks {
                at: 3,
                how,
                batches: 0,
                events: 0,
            };
            let e = p.run(&lines(10_000)[..], &mut sink).unwrap_err();
            assert_eq!(e.kind(), Kind::Sink, "{workers} {how}: {e}");
            let want = if how == "panic" {
                "broke on purpose"
            } else {
                "disk is full"
            };
            assert!(e.to_string().contains(want), "{workers} {how}: {e}");
            // Nothing was written after the failure.
            assert_eq!(sink.batches, 3, "{workers} {how}");
            assert_eq!(sink.events, 200, "{workers} {how}");
        }
    }
}

#[test]
fn a_sink_asking_to_stop_ends_the_run_with_what_it_took() {
    for workers in [1, 2] {
        let mut p = Pipeline::new(config(workers)).unwrap();
        let mut sink = Breaks {
            at: 2,
            how: "stop",
            batches: 0,
            events: 0,
        };
        let r = p.run(&lines(10_000)[..], &mut sink).unwrap();
        assert_eq!(sink.batches, 2, "{workers}");
        assert_eq!(r.stats.emitted, 200, "{workers}");
        assert_eq!(r.stats.received, 200, "{workers}");
        assert!(r.stats.is_balanced(), "{workers}: {:?}", r.stats);
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
    let mut p = Pipeline::new(config(1)).unwrap().with_filter(Counts {
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
    for workers in [1, 3] {
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
        assert_eq!(stats.emitted, 5_000, "{workers}");
    }
}
