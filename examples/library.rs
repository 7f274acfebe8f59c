//! Using sluicebox as a library: a pipeline with a native filter and a wasm filter, a writer
//! sink, a dead letter collected in memory, and the final statistics.
//!
//! Run with `cargo run --release --example library`.

use sluicebox::wasm::WasmModule;
use sluicebox::{CollectSink, DropWhere, Pipeline, PipelineConfig, WasmConfig, WriterSink};

fn main() -> Result<(), sluicebox::Error> {
    let input = concat!(
        "{\"level\":\"INFO\",\"msg\":\"user signed in\",\"n\":1e400}\n",
        "{\"level\":\"DEBUG\",\"msg\":\"cache miss\"}\n",
        "this line is not JSON\n",
        "{\"level\":\"WARN\",\"msg\":\"slow request\"}\n",
    );

    // A wasm module, compiled once and shared; here the hand-written WAT example.
    let module = WasmModule::from_bytes("drop_debug", include_bytes!("wat/drop_debug.wat"), None)?;
    let wasm_filter = WasmConfig::default().build(&module)?;

    let mut pipeline = Pipeline::new(PipelineConfig::default())?
        .with_filter(wasm_filter)
        .with_filter(DropWhere::new("level", "WARN"));

    let mut out = Vec::new();
    let mut dead = CollectSink::new();
    let report =
        pipeline.run_with_dead_letter(input.as_bytes(), WriterSink::new(&mut out), &mut dead)?;

    print!("{}", String::from_utf8_lossy(&out));
    for (dl, _, _) in &dead.events {
        println!("dead letter: {}", String::from_utf8_lossy(dl));
    }
    println!("{}", report.stats.summary(report.elapsed));
    assert!(report.stats.is_balanced());
    Ok(())
}
