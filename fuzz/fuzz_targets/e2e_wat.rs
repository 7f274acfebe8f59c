//! Property: any NDJSON bytes through the hand-written WAT filter examples/wat/drop_debug.wat, at every batch size, give exactly what a reference model predicts line by line (skip blank lines; dead-letter lines over the limit or that the strict validator refuses or that are not objects; drop an object whose last top-level `level`, read by serde_json, is the raw text `"DEBUG"`; pass the rest byte for byte, in order), and the same output events, dead letters and counts as the native `DropWhere::drop_debug()`, the one documented difference being a `level` written with escapes (`"DEBU\u0047"`), which the WAT compares as raw bytes and so keeps.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use sluicebox::fuzzing::parse_event;
use sluicebox::parse::index::lookup;
use sluicebox::parse::scalar;
use sluicebox::wasm::WasmModule;
use sluicebox::{CollectSink, DropWhere, Pipeline, PipelineConfig, Stats};
use sluicebox_fuzz::lines::{is_blank, lines};

const WAT: &str = include_str!("../../examples/wat/drop_debug.wat");
const BATCH: [usize; 4] = [1, 3, 16, 1024];
const MAX_LINE: usize = 4096;

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
                    max_line_bytes: MAX_LINE,
                    ..Default::default()
                };
                let wasm = Pipeline::new(config.clone())
                    .unwrap()
                    .with_filter(sluicebox_fuzz::wasm_config().build(&module).unwrap());
                let native = Pipeline::new(config)
                    .unwrap()
                    .with_filter(DropWhere::drop_debug());
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

/// (kept events as (bytes, line), dead-lettered lines, dropped count).
type Expected = (Vec<(Vec<u8>, u64)>, Vec<u64>, u64);

/// What the model expects of the whole input: (kept events as (bytes, line), dead-lettered
/// lines, dropped count); `None` when serde_json cannot read some object line the validator
/// accepts (nesting past its recursion limit, lone surrogates in keys).
fn model(input: &[u8]) -> Option<Expected> {
    let (mut kept, mut dead, mut dropped) = (Vec::new(), Vec::new(), 0u64);
    for (i, l) in lines(input).iter().enumerate() {
        let line = i as u64 + 1;
        let c = l.content;
        if is_blank(c) {
            continue;
        }
        let mut s = Vec::new();
        if c.len() > MAX_LINE
            || scalar::validate(c, 1024, &mut s).is_err()
            || c[s[0] as usize] != b'{'
        {
            dead.push(line);
            continue;
        }
        let top: BTreeMap<String, &RawValue> = serde_json::from_slice(c).ok()?;
        if top.get("level").is_some_and(|v| v.get() == "\"DEBUG\"") {
            dropped += 1;
        } else {
            kept.push((c.to_vec(), line));
        }
    }
    Some((kept, dead, dropped))
}

fn dead_lines(dead: &CollectSink) -> Vec<u64> {
    dead.events
        .iter()
        .map(|(t, _, _)| {
            let d: serde_json::Value = serde_json::from_slice(t).expect("dead letter is JSON");
            d["line"].as_u64().expect("dead letter has a line")
        })
        .collect()
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
    let kept_by_wasm_only: Vec<_> = wout
        .events
        .iter()
        .filter(|(e, _, _)| escaped_debug(e))
        .collect();
    let wout_rest: Vec<_> = wout
        .events
        .iter()
        .filter(|(e, _, _)| !escaped_debug(e))
        .collect();
    let nout_all: Vec<_> = nout.events.iter().collect();
    assert_eq!(wout_rest, nout_all, "output events differ");
    let extra = kept_by_wasm_only.len() as u64;
    assert_eq!(ws.emitted, ns.emitted + extra);
    assert_eq!(ws.filtered + extra, ns.filtered);
    assert_eq!(ws.unchanged, ns.unchanged + extra);
    assert_eq!(
        (
            ws.received,
            ws.skipped,
            ws.dead_lettered,
            ws.bytes_in,
            ws.batches
        ),
        (
            ns.received,
            ns.skipped,
            ns.dead_lettered,
            ns.bytes_in,
            ns.batches
        )
    );
    if let Some((kept, dead, dropped)) = model(input) {
        let got: Vec<(Vec<u8>, u64)> = wout
            .events
            .iter()
            .map(|(e, l, _)| (e.clone(), *l))
            .collect();
        assert_eq!(got, kept, "output events differ from the model");
        assert_eq!(
            dead_lines(&wdead),
            dead,
            "dead letters differ from the model"
        );
        assert_eq!(ws.filtered, dropped);
        assert_eq!(ws.unchanged, ws.emitted, "drop_debug changes nothing");
    }
});
