//! A source of generated log events ([`crate::loggen`]), for demos, benchmarks and load
//! tests: a fixed number of events, or endless, optionally at a fixed rate.

use std::time::{Duration, Instant};

use super::{BoxFuture, Source, SourceContext};
use crate::error::Result;

/// Generates realistic log lines.
///
/// Cost: about the generator's few hundred nanoseconds per event, on a tokio task.
#[derive(Clone, Debug)]
pub struct GeneratorSource {
    /// Events to generate; `None` runs until shutdown.
    pub events: Option<u64>,
    /// Events per second; `None` runs as fast as the pipeline takes them.
    pub rate: Option<f64>,
    /// The generator's seed.
    pub seed: u64,
}

impl Default for GeneratorSource {
    fn default() -> Self {
        Self {
            events: Some(100_000),
            rate: None,
            seed: 42,
        }
    }
}

/// Events generated per chunk handed to the decoder.
const CHUNK_EVENTS: u64 = 1024;

impl Source for GeneratorSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let stream = cx.stream("generator", None);
            let mut decoder = cx.decoder(0);
            let mut rng = crate::loggen::Rng::new(self.seed);
            let mut chunk = String::with_capacity(512 << 10);
            let mut batch = cx.batch();
            let started = Instant::now();
            let mut made = 0u64;
            let mut line = 0u64;
            loop {
                if cx.shutdown().is_triggered() {
                    return Ok(());
                }
                let want = match self.events {
                    Some(total) if made >= total => break,
                    Some(total) => CHUNK_EVENTS.min(total - made),
                    None => CHUNK_EVENTS,
                };
                if let Some(rate) = self.rate.filter(|r| *r > 0.0) {
                    let due = started + Duration::from_secs_f64(made as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        tokio::select! {
                            _ = tokio::time::sleep(due - now) => {}
                            _ = cx.shutdown().wait() => return Ok(()),
                        }
                    }
                }
                let want = match self.rate {
                    Some(rate) if rate > 0.0 => want.min((rate / 10.0).ceil().max(1.0) as u64),
                    _ => want,
                };
                chunk.clear();
                for _ in 0..want {
                    line += 1;
                    crate::loggen::event(&mut rng, line, &mut chunk);
                    chunk.push('\n');
                }
                made += want;
                let mut input = chunk.as_bytes();
                while decoder.decode(&mut input, &mut batch) {
                    let full = std::mem::replace(&mut batch, cx.batch());
                    if !cx.send(&stream, full, decoder.position()).await {
                        return Ok(());
                    }
                }
            }
            if decoder.decode_eof(&mut batch) && !cx.send(&stream, batch, decoder.position()).await
            {
                return Ok(());
            }
            Ok(())
        })
    }
}
