//! A sink of your own that keeps requests in flight: it takes a hold on each batch's
//! acknowledgement ([`sluicebox::Output::ack`]), "sends" the events from another thread, and
//! resolves the hold only when that send is done. The source's acknowledged position moves
//! only then. Here every third batch fails once, to show that a failed batch is never
//! acknowledged: the source stops at the last contiguous delivered position.
//!
//! Run with `cargo run --release --example custom_sink`.

use std::sync::mpsc;

use sluicebox::runtime::{RuntimeSettings, SinkSpec, SourceSpec, Topology};
use sluicebox::source::generator::GeneratorSource;
use sluicebox::{Ack, Flow, Output, Sink};

/// Hands each batch to a background "network" thread with its acknowledgement.
struct AsyncSink {
    requests: Option<mpsc::SyncSender<(Vec<u8>, Ack)>>,
    worker: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl AsyncSink {
    fn new() -> Self {
        // At most 4 requests in flight: `write` blocks beyond that (backpressure).
        let (tx, rx) = mpsc::sync_channel::<(Vec<u8>, Ack)>(4);
        let worker = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            for (i, (body, ack)) in rx.into_iter().enumerate() {
                // A real sink would send `body` and wait for the reply here.
                if i % 3 == 2 {
                    failed += 1;
                    ack.failed();
                } else {
                    ok += body.iter().filter(|&&b| b == b'\n').count() as u64;
                    ack.delivered();
                }
            }
            (ok, failed)
        });
        Self {
            requests: Some(tx),
            worker: Some(worker),
        }
    }
}

impl Sink for AsyncSink {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let mut body = Vec::new();
        for e in out.iter() {
            body.extend_from_slice(e.bytes);
            body.push(b'\n');
        }
        let ack = out.ack();
        if let Some(tx) = &self.requests {
            // A send error means the worker is gone: the dropped Ack marks the batch failed.
            let _ = tx.send((body, ack));
        }
        Ok(Flow::Continue)
    }

    fn finish(&mut self, _stats: &sluicebox::Stats) -> sluicebox::Result<()> {
        self.requests = None;
        if let Some(w) = self.worker.take() {
            let (ok, failed) = w.join().expect("sink worker");
            println!("sink: {ok} events delivered, {failed} requests failed");
        }
        Ok(())
    }
}

fn main() -> Result<(), sluicebox::Error> {
    let generator = GeneratorSource {
        events: Some(10_000),
        ..Default::default()
    };
    let report = Topology::new(RuntimeSettings::default())
        .source(SourceSpec::new("gen", "generator", Box::new(generator)))
        .sink(SinkSpec::new(
            "async",
            "custom",
            vec!["gen".into()],
            Box::new(AsyncSink::new()),
        ))
        .start()?
        .wait()?;
    println!("errors: {:?}", report.errors);
    assert!(report.is_balanced());
    Ok(())
}
