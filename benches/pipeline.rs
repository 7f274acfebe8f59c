//! Criterion benches of the real paths: framing + parsing (passthrough), parsing baselines
//! with and without buffer reuse, field indexing (projected vs full) through the wasm call,
//! the wasm batch call swept over batch sizes, sink writing, and end to end.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluicebox::wasm::WasmModule;
use sluicebox::{DropWhere, NullSink, Pipeline, PipelineConfig, WasmConfig, WriterSink};

const DROP_DEBUG: &str = include_str!("../examples/wat/drop_debug.wat");
const NOOP: &str = include_str!("../examples/wat/noop.wat");

fn corpus() -> Vec<u8> {
    sluicebox::loggen::corpus(20_000, 42)
}

fn lines(c: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut start = 0;
    for nl in memchr_positions(c) {
        v.push((start, nl - start));
        start = nl + 1;
    }
    v
}

fn memchr_positions(c: &[u8]) -> impl Iterator<Item = usize> + '_ {
    c.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
}

fn wasm(name: &str, wat: &str) -> sluicebox::WasmFilter {
    let m = WasmModule::from_bytes(name, wat.as_bytes(), None).unwrap();
    WasmConfig::default().build(&m).unwrap()
}

fn parsing(c: &mut Criterion) {
    let data = corpus();
    let ls = lines(&data);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(data.len() as u64));
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
            criterion::BatchSize::LargeInput,
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

fn pipeline(c: &mut Criterion) {
    let data = corpus();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    let mut passthrough = Pipeline::new(PipelineConfig::default()).unwrap();
    g.bench_function("frame_parse_null_sink", |b| {
        b.iter(|| passthrough.run(&data[..], NullSink).unwrap())
    });
    g.bench_function("frame_parse_writer_sink", |b| {
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
    let mut projected = Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(wasm("drop_debug", DROP_DEBUG));
    g.bench_function("wasm_drop_debug_projected_index", |b| {
        b.iter(|| projected.run(&data[..], NullSink).unwrap())
    });
    // The same noop guest without `sluicebox_fields`: the host builds the full index.
    let full_wat = NOOP.replace(
        "(func (export \"sluicebox_fields\") (result i32) (i32.const 32))",
        "",
    );
    let mut full = Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(wasm("noop_full", &full_wat));
    g.bench_function("wasm_noop_full_index", |b| {
        b.iter(|| full.run(&data[..], NullSink).unwrap())
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
        let mut p = Pipeline::new(config)
            .unwrap()
            .with_filter(wasm("noop", NOOP));
        g.bench_with_input(BenchmarkId::new("noop", size), &size, |b, _| {
            b.iter(|| p.run(&data[..], NullSink).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = parsing, pipeline, batch_size
}
criterion_main!(benches);
