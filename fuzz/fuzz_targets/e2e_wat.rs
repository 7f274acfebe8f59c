//! Property: any NDJSON bytes through the hand-written WAT filter examples/wat/drop_debug.wat give the same output events, dead letters and counts as the native `DropWhere::drop_debug()`, at every batch size; the one documented difference is a `level` written with escapes (`"DEBU\u0047"`), which the WAT compares as raw bytes and so keeps.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use sluicebox::fuzzing::parse_event;
use sluicebox::parse::index::lookup;
use sluicebox::wasm::WasmModule;
use sluicebox::{CollectSink, DropWhere, Pipeline, PipelineConfig, Stats, WasmConfig};

const WAT: &str = include_str!("../../examples/wat/drop_debug.wat");
const BATCH: [usize; 4] = [1, 3, 16, 1024];

/// (wasm pipeline, native pipeline) per batch size, built once: a pipeline runs any number
/// of inputs in turn.
fn pipelines() -> &'static [Mutex<(Pipeline, Pipeline)>] {
    static P: OnceLock<Vec<Mutex<(Pipeline, Pipeline)>>> = OnceLock::new();
    P.get_or_init(|| {
        let module = WasmModule::from_bytes("drop_debug", WAT.as_bytes(), None).unwrap();
        BATCH
            .iter()
            .map(|&b| {
                let config = PipelineConfig {
                    max_batch_events: b,
                    max_line_bytes: 4096,
                    ..Default::default()
                };
                let wasm = Pipeline::new(config.clone())
                    .unwrap()
                    .with_filter(WasmConfig::default().build(&module).unwrap());
                let native = Pipeline::new(config).unwrap().with_filter(DropWhere::drop_debug());
                Mutex::new((wasm, native))
            })
            .collect()
    })
}

fn run(p: &mut Pipeline, input: &[u8]) -> (Stats, CollectSink, CollectSink) {
    let mut out = CollectSink::new();
    let mut dead = CollectSink::new();
    let r = p
        .run_with_dead_letter(input, &mut out, &mut dead)
        .expect("drop_debug never breaks");
    assert!(r.stats.is_balanced(), "{:?}", r.stats);
    (r.stats, out, dead)
}

/// Whether the event's `level` is a string with escapes that decodes to DEBUG.
fn escaped_debug(event: &[u8]) -> bool {
    let s = parse_event(event, 1024).expect("emitted events are valid");
    lookup(event, &s, b"level").is_some_and(|f| f.escaped && f.is_str("DEBUG"))
}

fuzz_target!(|input: &[u8]| {
    let Some((&b, input)) = input.split_first() else {
        return;
    };
    let mut guard = pipelines()[usize::from(b) % BATCH.len()].lock().unwrap();
    let (wasm, native) = &mut *guard;
    let (ws, wout, wdead) = run(wasm, input);
    let (ns, nout, ndead) = run(native, input);
    assert_eq!(wdead.events, ndead.events, "dead letters differ");
    assert_eq!(ws.filter_failures, 0);
    let kept_by_wasm_only: Vec<_> = wout.events.iter().filter(|(e, _, _)| escaped_debug(e)).collect();
    let wout_rest: Vec<_> = wout.events.iter().filter(|(e, _, _)| !escaped_debug(e)).collect();
    let nout_all: Vec<_> = nout.events.iter().collect();
    assert_eq!(wout_rest, nout_all, "output events differ");
    let extra = kept_by_wasm_only.len() as u64;
    assert_eq!(ws.emitted, ns.emitted + extra);
    assert_eq!(ws.filtered + extra, ns.filtered);
    assert_eq!(ws.unchanged, ns.unchanged + extra);
    assert_eq!(
        (ws.received, ws.skipped, ws.dead_lettered, ws.bytes_in, ws.batches),
        (ns.received, ns.skipped, ns.dead_lettered, ns.bytes_in, ns.batches)
    );
});
