//! A source of your own: events from an in-process queue, with the positions the runtime
//! acknowledges. Each message of the queue is one "offset"; the source learns which prefix of
//! offsets was delivered end to end, which is what it would persist (a commit, a checkpoint).
//!
//! Run with `cargo run --release --example custom_source`.

use std::sync::{Arc, Mutex};

use sluicebox::runtime::{RuntimeSettings, SinkSpec, SourceSpec, Topology, TransformSpec};
use sluicebox::source::{BoxFuture, Source, SourceContext};
use sluicebox::{DropWhere, NullSink};

/// Messages from another part of the service; each one is one NDJSON line.
struct QueueSource {
    messages: std::sync::mpsc::Receiver<String>,
    /// Where the source reports the acknowledged offset (a real one would persist it).
    committed: Arc<Mutex<Option<u64>>>,
}

impl Source for QueueSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, sluicebox::Result<()>> {
        Box::pin(async move {
            // One stream: positions are message offsets, starting at 0.
            let stream = cx.stream("queue", None);
            let mut decoder = cx.decoder(0);
            let mut batch = cx.batch();
            let mut next_offset = 0u64;
            while let Ok(msg) = self.messages.recv() {
                let mut line = msg.into_bytes();
                line.push(b'\n');
                let mut input = &line[..];
                next_offset += 1;
                // The batch is complete when the decoder says so (full, or input idle); it
                // then holds every message up to this one.
                while decoder.decode(&mut input, &mut batch) {
                    let full = std::mem::replace(&mut batch, cx.batch());
                    // Position = offset after this message.
                    if !cx.send(&stream, full, next_offset).await {
                        return Ok(());
                    }
                }
            }
            if decoder.decode_eof(&mut batch) {
                cx.send(&stream, batch, next_offset).await;
            }
            // Wait until everything sent is acknowledged, then record the commit point.
            while !stream.is_idle() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            *self.committed.lock().unwrap() = stream.acked();
            Ok(())
        })
    }
}

fn main() -> Result<(), sluicebox::Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..100 {
        let level = if i % 3 == 0 { "DEBUG" } else { "INFO" };
        tx.send(format!("{{\"level\":\"{level}\",\"n\":{i}}}"))
            .unwrap();
    }
    drop(tx);
    let committed = Arc::new(Mutex::new(None));
    let source = QueueSource {
        messages: rx,
        committed: committed.clone(),
    };
    let report = Topology::new(RuntimeSettings::default())
        .source(SourceSpec::new("queue", "queue", Box::new(source)))
        .transform(TransformSpec::new(
            "drop_debug",
            "native",
            vec!["queue".into()],
            Box::new(DropWhere::drop_debug()),
        ))
        .sink(SinkSpec::new(
            "out",
            "null",
            vec!["drop_debug".into()],
            Box::new(NullSink),
        ))
        .start()?
        .wait()?;
    for c in &report.components {
        println!(
            "{:<10} {:<9} received={} sent={} discarded={} dead_lettered={}",
            c.name, c.kind, c.received, c.sent, c.discarded, c.dead_lettered
        );
    }
    let committed = *committed.lock().unwrap();
    println!("acknowledged offset: {committed:?}");
    assert!(report.is_balanced());
    assert_eq!(committed, Some(100), "every message delivered or filtered");
    Ok(())
}
