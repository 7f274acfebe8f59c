//! Criterion benches of the real paths, one group per stage and then end to end:
//!
//! - `frame`: the framer alone, reading a generated corpus into reused batches;
//! - `parse`: the parse stage alone (sluicebox's validator and simd-json's, on the same framed
//!   batches), next to simd-json's bare tape with reused buffers and to-value without reuse;
//! - `index`: finding a declared field at parse time (projected) versus walking the
//!   structurals on each lookup, and the wasm full index versus a projected one;
//! - `sink`: `WriterSink` writing parsed batches, whole or with every third event dropped;
//! - `wasm_call_batch_size`: the wasm noop call swept over batch sizes 1, 64, 1,024 and 8,192,
//!   next to passthrough at the same size (the difference is the call's cost per event);
//! - `pipeline`: end to end, passthrough and drop_debug native and wasm.
//!
//! Run with `cargo bench`; `cargo bench --no-run` (part of CI) only builds them.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluicebox::frame::Framer;
use sluicebox::parse::{JsonEngine, Parser, Projection};
use sluicebox::wasm::WasmModule;
use sluicebox::{
    Batch, DropWhere, NullSink, Pipeline, PipelineConfig, Sink, WasmConfig, WriterSink,
};

const DROP_DEBUG: &str = include_str!("../examples/wat/drop_debug.wat");
const NOOP: &str = include_str!("../examples/wat/noop.wat");

fn corpus() -> Vec<u8> {
    sluicebox::loggen::corpus(20_000, 42)
}

fn lines(c: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut start = 0;
    for (i, _) in c.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        v.push((start, i - start));
        start = i + 1;
    }
    v
}

fn wasm(name: &str, wat: &str) -> sluicebox::WasmFilter {
    let m = WasmModule::from_bytes(name, wat.as_bytes(), None).unwrap();
    WasmConfig::default().build(&m).unwrap()
}

fn framer() -> Framer {
    let c = PipelineConfig::default();
    Framer::new(
        c.max_batch_events,
        c.max_batch_bytes,
        c.max_line_bytes,
        c.dead_letter_raw_max,
    )
}

/// The corpus framed into batches (unparsed), ready to be cloned into a parse bench.
fn framed(data: &[u8]) -> Vec<Batch> {
    let mut f = framer();
    let mut input = data;
    let mut out = Vec::new();
    loop {
        let mut b = Batch::new();
        if !f.fill(&mut input, &mut b).unwrap() {
            return out;
        }
        out.push(b);
    }
}

fn parsed(data: &[u8], projection: &[&str]) -> Vec<Batch> {
    let mut p = Parser::with_projection(
        1024,
        1024,
        Arc::new(Projection::new(projection)),
        JsonEngine::Sluice,
    );
    let mut batches = framed(data);
    for b in &mut batches {
        p.parse(b);
    }
    batches
}

fn frame(c: &mut Criterion) {
    let data = corpus();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(data.len() as u64));
    let mut batch = Batch::new();
    g.bench_function("framer_fill", |b| {
        b.iter(|| {
            let mut f = framer();
            let mut input = &data[..];
            while f.fill(&mut input, &mut batch).unwrap() {
                black_box(batch.len());
            }
        })
    });
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let data = corpus();
    let ls = lines(&data);
    let batches = framed(&data);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (name, engine) in [
        ("sluicebox_stage", JsonEngine::Sluice),
        ("simd_json_stage", JsonEngine::SimdJson),
    ] {
        let mut p = Parser::with_projection(1024, 1024, Arc::default(), engine);
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || batches.clone(),
                |bs| {
                    for batch in bs.iter_mut() {
                        p.parse(batch);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("simd_json_tape_reused_buffers", |b| {
        let mut buffers = simd_json::Buffers::new(4096);
        b.iter_batched_ref(
            || {
                let mut w = data.clone();
                w.resize(data.len() + simd_json::INPUT_PADDING, 0);
                w
            },
            |w| {
                let mut tape = simd_json::Tape::null();
                for &(s, l) in &ls {
                    black_box(
                        simd_json::fill_tape_padded(&mut w[s..], l, &mut buffers, &mut tape)
                            .is_ok(),
                    );
                    tape = tape.reset();
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("simd_json_value_fresh_buffers", |b| {
        b.iter(|| {
            for &(s, l) in &ls {
                let mut line = data[s..s + l].to_vec();
                black_box(simd_json::to_borrowed_value(&mut line).is_ok());
            }
        })
    });
    g.finish();
}

fn indexing(c: &mut Criterion) {
    let data = corpus();
    let events = lines(&data).len() as u64;
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(events));
    // `http.method` declared: found while parsing, so a lookup is a slot read.
    let projected = parsed(&data, &["http.method"]);
    let walked = parsed(&data, &[]);
    for (name, batches) in [("projected_lookup", &projected), ("walked_lookup", &walked)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for batch in batches {
                    for e in batch.events().iter() {
                        black_box(e.field("http.method"));
                    }
                }
            })
        });
    }
    // The index a wasm module gets: one node per declared path, or every value.
    let mut projected = Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(wasm("noop", NOOP));
    let full_wat = NOOP.replace(
        "(func (export \"sluicebox_fields\") (result i32) (i32.const 32))",
        "",
    );
    let mut full = Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(wasm("noop_full", &full_wat));
    g.bench_function("wasm_projected_index", |b| {
        b.iter(|| projected.run(&data[..], NullSink).unwrap())
    });
    g.bench_function("wasm_full_index", |b| {
        b.iter(|| full.run(&data[..], NullSink).unwrap())
    });
    g.finish();
}

fn sink(c: &mut Criterion) {
    let data = corpus();
    let batches = parsed(&data, &[]);
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Bytes(data.len() as u64));
    // Into memory, so the bytes are really copied (as to a file or a socket buffer).
    let mut written = Vec::with_capacity(data.len() + (1 << 20));
    g.bench_function("writer_sink_whole_batches", |b| {
        b.iter(|| {
            written.clear();
            let mut out = WriterSink::new(&mut written);
            for batch in &batches {
                out.write(&batch.output()).unwrap();
            }
        })
    });
    // Every third event dropped: runs are broken, and copied into the output block.
    let mut gappy = Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(DropWhere::new("level", "INFO"));
    g.bench_function("writer_sink_after_drops_end_to_end", |b| {
        b.iter(|| {
            gappy
                .run(&data[..], WriterSink::new(std::io::sink()))
                .unwrap()
        })
    });
    g.finish();
}

fn batch_size(c: &mut Criterion) {
    let data = sluicebox::loggen::corpus(8192, 7);
    let mut g = c.benchmark_group("wasm_call_batch_size");
    g.throughput(Throughput::Elements(8192));
    for size in [1usize, 64, 1024, 8192] {
        let config = PipelineConfig {
            max_batch_events: size,
            max_batch_bytes: 64 << 20,
            ..Default::default()
        };
        let mut noop = Pipeline::new(config.clone())
            .unwrap()
            .with_filter(wasm("noop", NOOP));
        g.bench_with_input(BenchmarkId::new("noop", size), &size, |b, _| {
            b.iter(|| noop.run(&data[..], NullSink).unwrap())
        });
        let mut bare = Pipeline::new(config).unwrap();
        g.bench_with_input(BenchmarkId::new("passthrough", size), &size, |b, _| {
            b.iter(|| bare.run(&data[..], NullSink).unwrap())
        });
    }
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let data = corpus();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    let mut passthrough = Pipeline::new(PipelineConfig::default()).unwrap();
    g.bench_function("passthrough_writer_sink", |b| {
        b.iter(|| {
            passthrough
                .run(&data[..], WriterSink::new(std::io::sink()))
                .unwrap()
        })
    });
    let mut native = Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(DropWhere::drop_debug());
    g.bench_function("native_drop_debug", |b| {
        b.iter(|| {
            native
                .run(&data[..], WriterSink::new(std::io::sink()))
                .unwrap()
        })
    });
    let mut wasm_drop = Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(wasm("drop_debug", DROP_DEBUG));
    g.bench_function("wasm_drop_debug_wat", |b| {
        b.iter(|| {
            wasm_drop
                .run(&data[..], WriterSink::new(std::io::sink()))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = frame, parsing, indexing, sink, batch_size, pipeline
}
criterion_main!(benches);
