//! `sluicebox bench`: baselines and pipelines measured in one process, on the same bytes,
//! interleaved and repeated; medians reported. Names are stable so figures compare across
//! versions.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use sluicebox::frame::{
    ContainerDecoder, ContainerFormat, ContainerSettings, Decoder, Framer, NdjsonDecoder,
};
use sluicebox::wasm::{LoadOptions, WasmModule};
use sluicebox::{
    Batch, DropWhere, JsonEngine, Pipeline, PipelineConfig, TagService, WasmConfig, WriterSink,
};

use crate::{DROP_DEBUG_WAT, Fail, NOOP_WAT};

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// NDJSON corpus to measure on (default: generated log events).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Number of generated events when no corpus is given.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Extra modules to measure, each as scenario `module.<file stem>`.
    #[arg(long = "module")]
    modules: Vec<PathBuf>,
    /// Worker threads for the pipeline scenarios.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Rounds over all scenarios; the median round is reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Directory holding the example guests (`<dir>/rust/drop_debug.wasm`, ...) [default:
    /// `$CARGO_TARGET_DIR/guests` when that is set, else `target/guests`, where
    /// `scripts/build-guests.sh` puts them]
    #[arg(long)]
    guests: Option<PathBuf>,
    /// Only run scenarios whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Allow the `--module` modules a minimal WASI preview 1 (Go, C with libc).
    #[arg(long)]
    wasi: bool,
    /// Also measure `drop_debug` and `tag_service` of every guest language built under
    /// `--guests` (`lang.<language>.<filter>`), with module sizes in the notes.
    #[arg(long)]
    languages: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure this pipeline file (`config.<file stem>`) next to the baselines: its filters
    /// and routes as configured, its sources replaced by the corpus and its sinks by
    /// blackholes, on its own `[runtime]` workers; prints each component's counts and
    /// filter time. The file is first checked as `sluicebox validate` checks it.
    #[arg(long)]
    config: Option<PathBuf>,
}

type Run<'a> = Box<dyn FnMut() -> Result<(), Fail> + 'a>;

struct Scenario<'a> {
    name: String,
    note: String,
    run: Run<'a>,
    secs: Vec<f64>,
    /// Input bytes per run when not the corpus (the CRI-wrapped corpus).
    bytes: Option<u64>,
}

pub(crate) fn run(a: BenchArgs) -> Result<(), Fail> {
    let corpus = match &a.corpus {
        Some(p) => std::fs::read(p)
            .map_err(|e| Fail::usage(format!("cannot read corpus {}: {e}", p.display())))?,
        None => sluicebox::loggen::corpus(a.events, 42),
    };
    let lines: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut start = 0;
        // The events: lines with more than whitespace (the pipeline skips the others).
        for nl in memchr::memchr_iter(b'\n', &corpus) {
            if !corpus[start..nl].trim_ascii().is_empty() {
                v.push((start, nl - start));
            }
            start = nl + 1;
        }
        if !corpus[start..].trim_ascii().is_empty() {
            v.push((start, corpus.len() - start));
        }
        v
    };
    let events = lines.len() as u64;
    let bytes = corpus.len() as u64;
    // The user's pipeline file, read once (a file that does not parse stops here). With
    // it, the graph runs on its own `[runtime]` workers and batches, not on --workers
    // (which the report then states).
    let user = a
        .config
        .as_deref()
        .map(crate::bench_config::load)
        .transpose()?;
    let own = user
        .as_ref()
        .map(|c| (c.runtime.workers, c.runtime.batch_events));
    let workers = own.map_or(a.workers, |o| o.0);
    if !a.json {
        errln!(
            "sluicebox bench: {events} events, {:.1} MB, {} round(s), {workers} worker(s){}",
            bytes as f64 / 1e6,
            a.rounds,
            if a.config.is_some() {
                " (the pipeline file's [runtime] workers)"
            } else {
                ""
            }
        );
    }

    let cri = cri_corpus(&corpus);
    let mut scenarios: Vec<Scenario<'_>> = Vec::new();

    // baseline.memcpy
    let mut copy = vec![0u8; corpus.len()];
    scenarios.push(sc("baseline.memcpy", "copy the corpus once".into(), {
        let corpus = &corpus;
        Box::new(move || {
            copy.copy_from_slice(corpus);
            std::hint::black_box(&copy);
            Ok(())
        })
    }));

    // baseline.simd_json_tape: fill_tape_padded in place over the lines back to back.
    let mut work = vec![0u8; corpus.len() + simd_json::INPUT_PADDING];
    let mut buffers = simd_json::Buffers::new(4096);
    let mut tape_store = Some(simd_json::Tape::null());
    {
        let (corpus, lines) = (&corpus, &lines);
        scenarios.push(sc(
            "baseline.simd_json_tape",
            "simd-json fill_tape_padded per line, in place, reused Buffers and tape (copy of the corpus not timed)".into(),
            Box::new(move || {
                work[..corpus.len()].copy_from_slice(corpus);
                let t0 = Instant::now();
                let mut tape = tape_store.take().unwrap_or_else(simd_json::Tape::null).reset();
                for &(s, l) in lines {
                    let _ = simd_json::fill_tape_padded(&mut work[s..], l, &mut buffers, &mut tape);
                    tape = tape.reset();
                }
                tape_store = Some(tape.reset());
                TAPE_ADJUST.with(|c| c.set(t0.elapsed().as_secs_f64()));
                Ok(())
            }),
        ));
    }

    // baseline.simd_json_value
    let mut buffers2 = simd_json::Buffers::new(4096);
    let mut line_buf = Vec::new();
    {
        let (corpus, lines) = (&corpus, &lines);
        scenarios.push(sc(
            "baseline.simd_json_value",
            "simd-json to_borrowed_value_with_buffers per line (copied to a reused Vec)".into(),
            Box::new(move || {
                for &(s, l) in lines {
                    line_buf.clear();
                    line_buf.extend_from_slice(&corpus[s..s + l]);
                    let v = simd_json::to_borrowed_value_with_buffers(&mut line_buf, &mut buffers2);
                    std::hint::black_box(&v);
                }
                Ok(())
            }),
        ));
    }

    // baseline.serde_json_roundtrip
    let mut out = Vec::new();
    {
        let (corpus, lines) = (&corpus, &lines);
        scenarios.push(sc(
            "baseline.serde_json_roundtrip",
            "serde_json parse to Value + serialize per line".into(),
            Box::new(move || {
                for &(s, l) in lines {
                    out.clear();
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&corpus[s..s + l]) {
                        let _ = serde_json::to_writer(&mut out, &v);
                    }
                    std::hint::black_box(&out);
                }
                Ok(())
            }),
        ));
    }

    let config = PipelineConfig {
        workers: a.workers,
        // The corpus is in memory.
        input_never_blocks: true,
        ..PipelineConfig::default()
    };
    scenarios.push(sc(
        "pipeline.passthrough",
        "validate only, output to io::sink".into(),
        pipeline_run(Pipeline::new(config.clone())?, &corpus),
    ));
    // The container log decoders next to the NDJSON framer, on the same events, in 64 KiB
    // chunks as the file source reads: framing (+ decoding) alone, then with the parse.
    let framer = {
        let c = config.clone();
        move || {
            Framer::new(
                c.max_batch_events,
                c.max_batch_bytes,
                c.max_line_bytes,
                c.dead_letter_raw_max,
            )
        }
    };
    let cri_decoder = |merge_json: bool| {
        move || -> Box<dyn Decoder> {
            let settings = ContainerSettings {
                format: ContainerFormat::Cri,
                merge_json,
                ..ContainerSettings::default()
            };
            Box::new(ContainerDecoder::new(framer(), settings, "bench"))
        }
    };
    let ndjson_decoder = { move || -> Box<dyn Decoder> { Box::new(NdjsonDecoder::new(framer())) } };
    for (parse, what) in [(false, "decode"), (true, "decode_parse")] {
        scenarios.push(sc(
            &format!("{what}.ndjson"),
            format!(
                "NdjsonDecoder over the corpus in 64 KiB chunks{}",
                if parse { ", then the parse stage" } else { "" }
            ),
            decode_run(ndjson_decoder, &corpus, parse),
        ));
        let mut s = sc(
            &format!("{what}.cri"),
            format!(
                "CRI decoder (F lines, `<time> stdout F <json>`) into {{stream,time,message}} events{}; MB/s of the CRI input",
                if parse { ", then the parse stage" } else { "" }
            ),
            decode_run(cri_decoder(false), &cri, parse),
        );
        s.bytes = Some(cri.len() as u64);
        scenarios.push(s);
        let mut s = sc(
            &format!("{what}.cri_merge_json"),
            format!(
                "CRI decoder with merge_json (the message's members in the event){}; MB/s of the CRI input",
                if parse { ", then the parse stage" } else { "" }
            ),
            decode_run(cri_decoder(true), &cri, parse),
        );
        s.bytes = Some(cri.len() as u64);
        scenarios.push(s);
    }
    scenarios.push(sc(
        "pipeline.passthrough_simd_json",
        "validate only with JsonEngine::SimdJson, output to io::sink".into(),
        pipeline_run(
            Pipeline::new(PipelineConfig {
                json_engine: JsonEngine::SimdJson,
                ..config.clone()
            })?,
            &corpus,
        ),
    ));
    scenarios.push(sc(
        "pipeline.native_drop_debug",
        "native Rust DropWhere(level=DEBUG)".into(),
        pipeline_run(
            Pipeline::new(config.clone())?.with_filter(DropWhere::drop_debug()),
            &corpus,
        ),
    ));
    scenarios.push(sc(
        "pipeline.native_tag_service",
        "native Rust TagService (set env, rename msg)".into(),
        pipeline_run(
            Pipeline::new(config.clone())?.with_filter(TagService),
            &corpus,
        ),
    ));
    let wcfg = WasmConfig::default();
    // With --config, the user's graph is measured against the baselines only.
    let want = |name: &str| {
        a.only.as_ref().is_none_or(|o| name.contains(o.as_str()))
            && (a.config.is_none() || name.starts_with("baseline.") || name.starts_with("config."))
    };
    // The graph scenarios read the corpus from a file in a scratch directory (removed when
    // the bench ends).
    let scratch =
        Scratch(std::env::temp_dir().join(format!("sluicebox-bench-{}", std::process::id())));
    let corpus_path = if a.config.is_some()
        || want("runtime.wasm_drop_debug")
        || want("runtime.blackhole")
        || want("sink.elasticsearch")
    {
        std::fs::create_dir_all(&scratch.0)
            .map_err(|e| Fail::usage(format!("cannot create {}: {e}", scratch.0.display())))?;
        Some(match &a.corpus {
            Some(p) => std::fs::canonicalize(p)
                .map_err(|e| Fail::usage(format!("corpus {}: {e}", p.display())))?,
            None => {
                let p = scratch.0.join("corpus.ndjson");
                std::fs::write(&p, &corpus)
                    .map_err(|e| Fail::usage(format!("cannot write {}: {e}", p.display())))?;
                p
            }
        })
    } else {
        None
    };
    let instant = if a.config.is_some() || want("sink.elasticsearch") {
        Some(
            crate::bench_server::InstantServer::start()
                .map_err(|e| Fail::usage(format!("cannot start the bench's local server: {e}")))?,
        )
    } else {
        None
    };
    let instant_url = instant.as_ref().map_or("", |s| s.url.as_str());
    let graph = match (&a.config, user, &corpus_path) {
        (Some(path), Some(user), Some(corpus_path)) => {
            let g = crate::bench_config::ConfigBench::checked(
                user,
                path,
                corpus_path,
                &scratch.0,
                instant_url,
            )?;
            let stem = path.file_stem().map_or_else(
                || "pipeline".to_string(),
                |s| s.to_string_lossy().into_owned(),
            );
            Some((std::rc::Rc::new(std::cell::RefCell::new(g)), stem))
        }
        _ => None,
    };
    // runtime.wasm_drop_debug: the same filter as pipeline.wasm_drop_debug through the
    // runtime (a file source read once, acknowledgements, a blackhole sink): the cost of the
    // runtime and its acknowledgements.
    if let (None, Some(corpus_path)) = (&a.config, &corpus_path) {
        let rust = guests_dir(&a).join("rust").join("drop_debug.wasm");
        let module = if rust.exists() {
            std::fs::canonicalize(&rust).unwrap_or(rust)
        } else {
            let p = scratch.0.join("drop_debug.wat");
            std::fs::write(&p, DROP_DEBUG_WAT)
                .map_err(|e| Fail::usage(format!("cannot write {}: {e}", p.display())))?;
            p
        };
        let cfg = scratch.0.join("runtime.toml");
        std::fs::write(
            &cfg,
            format!(
                "[runtime]\nworkers = {}\n[sources.file]\ntype = \"file\"\ninclude = [\"unused\"]\n\
                 [transforms.drop_debug]\ntype = \"wasm\"\ninputs = [\"file\"]\nmodule = {:?}\n\
                 [sinks.out]\ntype = \"blackhole\"\ninputs = [\"drop_debug\"]\n",
                a.workers.max(1),
                module.display().to_string()
            ),
        )
        .map_err(|e| Fail::usage(format!("cannot write {}: {e}", cfg.display())))?;
        let g = std::rc::Rc::new(std::cell::RefCell::new(
            crate::bench_config::ConfigBench::new(
                &cfg,
                corpus_path,
                &scratch.0.join("runtime"),
                instant_url,
            )?,
        ));
        scenarios.push(sc(
            "runtime.wasm_drop_debug",
            format!(
                "{}: file source read once -> wasm -> blackhole, with acknowledgements",
                module.display()
            ),
            Box::new(move || {
                let secs = g.borrow_mut().run_once()?;
                TAPE_ADJUST.with(|c| c.set(secs));
                Ok(())
            }),
        ));
    }
    // tail.*: the corpus spread over 100 files, read once or followed while appended to,
    // with checkpoints at the default interval or (almost) never.
    if a.config.is_none() {
        let rust = guests_dir(&a).join("rust").join("drop_debug.wasm");
        let module = if rust.exists() {
            std::fs::canonicalize(&rust).unwrap_or(rust)
        } else {
            std::fs::create_dir_all(&scratch.0)
                .map_err(|e| Fail::usage(format!("cannot create {}: {e}", scratch.0.display())))?;
            let p = scratch.0.join("drop_debug.wat");
            std::fs::write(&p, DROP_DEBUG_WAT)
                .map_err(|e| Fail::usage(format!("cannot write {}: {e}", p.display())))?;
            p
        };
        use crate::bench_tail::{Mode, TailBench};
        for (name, mode, note) in [
            (
                "tail.read_once_100",
                Mode::ReadOnce,
                "the corpus in 100 files, read once -> wasm drop_debug -> file sink",
            ),
            (
                "tail.follow_100",
                Mode::Follow {
                    checkpoint_ms: 1000,
                },
                "100 files followed while a writer appends the corpus to them -> wasm drop_debug -> file sink; checkpoints every 1 s (default)",
            ),
            (
                "tail.follow_100_no_ckpt",
                Mode::Follow {
                    checkpoint_ms: 3_600_000,
                },
                "the same with checkpoints once an hour: the difference is the checkpoints' cost",
            ),
        ] {
            if !want(name) {
                continue;
            }
            let mut t = TailBench::new(&corpus, &module, &scratch.0.join(name), mode);
            scenarios.push(sc(
                name,
                note.into(),
                Box::new(move || {
                    let secs = t.run_once()?;
                    TAPE_ADJUST.with(|c| c.set(secs));
                    Ok(())
                }),
            ));
        }
    }
    // runtime.blackhole and sink.elasticsearch: the runtime alone (file source read once →
    // blackhole), and the same into an elasticsearch sink that sends to the local server
    // answering at once: the difference is the sink's own cost per event (action lines,
    // origin ids, the request, parsing the per-item reply, acknowledgements).
    let mut es_graph = None;
    if let (None, Some(corpus_path)) = (&a.config, &corpus_path) {
        for (name, sink, note) in [
            (
                "runtime.blackhole",
                "type = \"blackhole\"".to_string(),
                "file source read once -> blackhole, with acknowledgements",
            ),
            (
                "sink.elasticsearch",
                format!(
                    "type = \"elasticsearch\"\nendpoints = [{instant_url:?}]\nindex = \"logs-%Y.%m.%d\"\nlinger_ms = 1000"
                ),
                "file source read once -> elasticsearch sink (create, origin ids, 10k events/request) -> a local server that answers 201 per item at once",
            ),
        ] {
            if !want(name) {
                continue;
            }
            let cfg = scratch.0.join(format!("{name}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[sources.file]\ntype = \"file\"\ninclude = [\"unused\"]\n[sinks.out]\ninputs = [\"file\"]\n{sink}\n"
                ),
            )
            .map_err(|e| Fail::usage(format!("cannot write {}: {e}", cfg.display())))?;
            let g = std::rc::Rc::new(std::cell::RefCell::new(
                crate::bench_config::ConfigBench::new(
                    &cfg,
                    corpus_path,
                    &scratch.0.join(name),
                    instant_url,
                )?,
            ));
            if name == "sink.elasticsearch" {
                es_graph = Some(g.clone());
            }
            scenarios.push(sc(
                name,
                note.into(),
                Box::new(move || {
                    let secs = g.borrow_mut().run_once()?;
                    TAPE_ADJUST.with(|c| c.set(secs));
                    Ok(())
                }),
            ));
        }
    }
    if let Some((g, stem)) = &graph {
        let g = g.clone();
        scenarios.push(sc(
            &format!("config.{stem}"),
            format!(
                "{}: its filters and routes; sources = the corpus, sinks = blackholes",
                a.config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Box::new(move || {
                let secs = g.borrow_mut().run_once()?;
                TAPE_ADJUST.with(|c| c.set(secs));
                Ok(())
            }),
        ));
    }
    if want("pipeline.wasm_noop") {
        let noop = WasmModule::from_bytes("noop", NOOP_WAT.as_bytes(), None)?;
        scenarios.push(sc(
            "pipeline.wasm_noop",
            "examples/wat/noop.wat: reads no fields, keeps all".into(),
            pipeline_run(
                Pipeline::new(config.clone())?.with_filter(wcfg.build(&noop)?),
                &corpus,
            ),
        ));
    }
    for (scenario, file, fallback) in [
        (
            "pipeline.wasm_drop_debug",
            "drop_debug",
            Some(("examples/wat/drop_debug.wat", DROP_DEBUG_WAT)),
        ),
        ("pipeline.wasm_tag_service", "tag_service", None),
    ] {
        if !want(scenario) {
            continue;
        }
        let path = guests_dir(&a).join("rust").join(format!("{file}.wasm"));
        let (module, note) = if path.exists() {
            (
                WasmModule::from_file(&path, None)?,
                format!("{} (Rust SDK guest)", path.display()),
            )
        } else if let Some((name, wat)) = fallback {
            (
                WasmModule::from_bytes(file, wat.as_bytes(), None)?,
                format!("{name} (Rust guest not built: run scripts/build-guests.sh rust)"),
            )
        } else {
            if !a.json {
                errln!(
                    "sluicebox bench: skipping {scenario}: {} not found (run scripts/build-guests.sh rust)",
                    path.display()
                );
            }
            continue;
        };
        scenarios.push(sc(
            scenario,
            note.clone(),
            pipeline_run(
                Pipeline::new(config.clone())?.with_filter(wcfg.build(&module)?),
                &corpus,
            ),
        ));
        // The same chain in a plain loop: no acknowledgements, no in-flight budget, no
        // ordering (what Pipeline::run cost before it ran on the runtime).
        let plain = scenario.replace("pipeline.", "loop.");
        if scenario == "pipeline.wasm_drop_debug" && want(&plain) {
            scenarios.push(sc(
                &plain,
                format!("{note}: the chain in a loop without acknowledgements (run_async)"),
                loop_run(
                    Pipeline::new(config.clone())?.with_filter(wcfg.build(&module)?),
                    &corpus,
                )?,
            ));
        }
    }
    if a.languages {
        let mut langs: Vec<PathBuf> = std::fs::read_dir(guests_dir(&a))
            .map_err(|e| {
                Fail::usage(format!(
                    "--languages: cannot read {}: {e} (run scripts/build-guests.sh)",
                    guests_dir(&a).display()
                ))
            })?
            .filter_map(|d| d.ok().map(|d| d.path()))
            .filter(|p| p.is_dir())
            .collect();
        langs.sort();
        for dir in langs {
            let lang = dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            // noop: the per-batch boundary cost (x 1,024 events per call).
            for filter in ["noop", "drop_debug", "tag_service"] {
                let path = dir.join(format!("{filter}.wasm"));
                let name = format!("lang.{lang}.{filter}");
                if !path.exists() || !want(&name) {
                    continue;
                }
                // Our own example guests: WASI is allowed for the toolchains that need it.
                let options = LoadOptions {
                    wasi: true,
                    ..Default::default()
                };
                let t0 = Instant::now();
                let module = WasmModule::load(&path, &options)?;
                let filter = wcfg.build(&module)?;
                let load = t0.elapsed().as_secs_f64() * 1e3;
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                scenarios.push(sc(
                    &name,
                    format!(
                        "{} ({size} bytes, load + instantiate {load:.0} ms)",
                        path.display()
                    ),
                    pipeline_run(Pipeline::new(config.clone())?.with_filter(filter), &corpus),
                ));
            }
        }
    }
    for p in &a.modules {
        let options = LoadOptions {
            wasi: a.wasi,
            ..Default::default()
        };
        let module = WasmModule::load(p, &options)?;
        let name = format!("module.{}", module.name());
        scenarios.push(sc(
            &name,
            p.display().to_string(),
            pipeline_run(
                Pipeline::new(config.clone())?.with_filter(wcfg.build(&module)?),
                &corpus,
            ),
        ));
    }
    scenarios.retain(|s| want(&s.name));

    // Warm up once, then interleave rounds.
    for s in scenarios.iter_mut() {
        (s.run)()?;
    }
    // Every other round runs the scenarios in reverse: a scenario runs measurably slower
    // right after one that ran several threads (runtime.*: 15-20% measured on 2 cores),
    // so each takes turns behind each of its two neighbours.
    for round in 0..a.rounds.max(1) {
        if round > 0 {
            scenarios.reverse();
        }
        for s in scenarios.iter_mut() {
            let t0 = Instant::now();
            TAPE_ADJUST.with(|c| c.set(f64::NAN));
            (s.run)()?;
            let mut secs = t0.elapsed().as_secs_f64();
            let inner = TAPE_ADJUST.with(|c| c.get());
            if !inner.is_nan() {
                secs = inner;
            }
            s.secs.push(secs);
        }
    }
    if a.rounds.max(1).is_multiple_of(2) {
        // Back in the order of the table.
        scenarios.reverse();
    }

    let results: Vec<(String, String, f64, u64)> = scenarios
        .iter_mut()
        .map(|s| {
            s.secs.sort_by(|x, y| x.total_cmp(y));
            (
                s.name.clone(),
                s.note.clone(),
                s.secs[s.secs.len() / 2],
                s.bytes.unwrap_or(bytes),
            )
        })
        .collect();
    let row = |secs: f64, bytes: u64| {
        (
            events as f64 / secs,
            bytes as f64 / secs / 1e6,
            secs * 1e9 / events as f64,
        )
    };
    if a.json {
        let res: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, note, secs, b)| {
                let (eps, mbps, ns) = row(*secs, *b);
                serde_json::json!({"name": name, "events_per_s": eps.round(), "mb_per_s": (mbps * 10.0).round() / 10.0, "ns_per_event": (ns * 10.0).round() / 10.0, "note": note})
            })
            .collect();
        let mut obj = serde_json::json!({
            "corpus": {"events": events, "bytes": bytes, "source": a.corpus.as_ref().map_or("generated".to_string(), |p| p.display().to_string())},
            "machine": machine(),
            "config": {"workers": workers, "rounds": a.rounds, "batch_events": own.map_or(config.max_batch_events, |o| o.1)},
            "results": res,
        });
        if let Some((g, _)) = &graph {
            obj["graph"] = g.borrow().breakdown(events).1;
        }
        outln!("{obj}");
        return Ok(());
    }
    let m = machine();
    outln!(
        "machine: {}, {} cores, parse stage SIMD: {}",
        m["cpu"].as_str().unwrap_or("unknown"),
        m["cores"],
        m["simd"].as_str().unwrap_or("unknown")
    );
    outln!(
        "{:<32} {:>14} {:>10} {:>10}  note",
        "scenario",
        "events/s",
        "MB/s",
        "ns/event"
    );
    for (name, note, secs, b) in &results {
        let (eps, mbps, ns) = row(*secs, *b);
        outln!("{name:<32} {eps:>14.0} {mbps:>10.1} {ns:>10.1}  {note}");
    }
    let get = |n: &str| results.iter().find(|r| r.0 == n).map(|r| r.2);
    outln!();
    if let Some(g) = &es_graph {
        let mut secs = g.borrow().encode_secs.clone();
        if !secs.is_empty() {
            secs.sort_by(f64::total_cmp);
            outln!(
                "sink.elasticsearch: building requests and reading replies (sink_encode_seconds_total) {:.1} ns/event, median of {} runs",
                secs[secs.len() / 2] * 1e9 / events as f64,
                secs.len()
            );
        }
    }
    if let Some((g, stem)) = graph
        .as_ref()
        .filter(|(_, stem)| get(&format!("config.{stem}")).is_some())
    {
        outln!("config.{stem}, per component (last round):");
        for line in g.borrow().breakdown(events).0 {
            outln!("  {line}");
        }
        if let (Some(n), Some(d)) = (
            get(&format!("config.{stem}")),
            get("baseline.simd_json_value"),
        ) {
            outln!(
                "config.{stem} / baseline.simd_json_value = {:.2} (throughput ratio)",
                d / n
            );
        }
        return Ok(());
    }
    // The targets of issue 17 (speed, round 2), where it set them.
    for (num, den, target) in [
        ("pipeline.wasm_drop_debug", "baseline.simd_json_tape", 1.0),
        ("pipeline.wasm_drop_debug", "baseline.simd_json_value", 2.5),
        ("pipeline.wasm_noop", "pipeline.passthrough", 0.97),
        ("runtime.wasm_drop_debug", "pipeline.wasm_drop_debug", 0.97),
        // Acknowledgement tracking costs at most 3%.
        ("pipeline.wasm_drop_debug", "loop.wasm_drop_debug", 0.97),
        ("tail.follow_100", "tail.read_once_100", 0.8),
        // Checkpoints at the default interval cost at most 2%.
        ("tail.follow_100", "tail.follow_100_no_ckpt", 0.98),
        ("pipeline.wasm_tag_service", "baseline.simd_json_value", 1.5),
        (
            "pipeline.wasm_tag_service",
            "baseline.serde_json_roundtrip",
            4.0,
        ),
    ] {
        if let (Some(n), Some(d)) = (get(num), get(den)) {
            // Throughput ratio: time of the denominator over time of the numerator.
            let ratio = d / n;
            outln!(
                "{num} / {den} = {ratio:.2} (target >= {target}){}",
                if ratio >= target {
                    ""
                } else {
                    "  BELOW TARGET"
                }
            );
        }
    }
    Ok(())
}

/// A scratch directory, removed when the bench ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    /// Scenarios that must exclude a setup step (a copy, a graph's build) report their inner
    /// time here.
    static TAPE_ADJUST: std::cell::Cell<f64> = const { std::cell::Cell::new(f64::NAN) };
}

/// Where the example guests are: `--guests`, else `$CARGO_TARGET_DIR/guests`, else
/// `target/guests`.
fn guests_dir(a: &BenchArgs) -> PathBuf {
    if let Some(dir) = &a.guests {
        return dir.clone();
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => PathBuf::from(t).join("guests"),
        _ => PathBuf::from("target/guests"),
    }
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown", str::trim);
    serde_json::json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "simd": sluicebox::parse::simd_level(),
        "sluicebox": env!("CARGO_PKG_VERSION"),
    })
}

fn sc<'a>(name: &str, note: String, run: Run<'a>) -> Scenario<'a> {
    Scenario {
        name: name.to_string(),
        note,
        run,
        secs: Vec::new(),
        bytes: None,
    }
}

/// The corpus as a container runtime writes it under /var/log/pods: each line behind a CRI
/// header (`<time> stdout F `).
fn cri_corpus(corpus: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(corpus.len() + corpus.len() / 4);
    for line in corpus.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        out.extend_from_slice(b"2026-12-05T10:00:00.123456789Z stdout F ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// Decodes `input` in 64 KiB chunks as the file source hands them on (and parses each batch
/// when `parse`), recycling one batch.
fn decode_run<'a>(
    mut make: impl FnMut() -> Box<dyn Decoder> + 'a,
    input: &'a [u8],
    parse: bool,
) -> Run<'a> {
    let mut parser = sluicebox::parse::Parser::new(1024, 64);
    let mut batch = Batch::new();
    Box::new(move || {
        let mut d = make();
        let mut n = 0usize;
        for chunk in input.chunks(64 << 10) {
            let mut rest = chunk;
            while d.decode(&mut rest, &mut batch) {
                if parse {
                    parser.parse(&mut batch);
                }
                n += batch.output().len();
            }
        }
        while d.decode_eof(&mut batch) {
            if parse {
                parser.parse(&mut batch);
            }
            n += batch.output().len();
        }
        std::hint::black_box(n);
        Ok(())
    })
}

/// [`Pipeline::run_async`] over the corpus on a current-thread runtime: the chain's loop
/// without the runtime's acknowledgements.
fn loop_run(mut p: Pipeline, corpus: &[u8]) -> Result<Run<'_>, Fail> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Fail::usage(format!("cannot start a tokio runtime: {e}")))?;
    Ok(Box::new(move || {
        rt.block_on(p.run_async(corpus, WriterSink::new(std::io::sink()), None))
            .map(|_| ())
            .map_err(Fail::from)
    }))
}

/// [`Pipeline::run_at`] over the corpus in memory: read by position, as `sluicebox filter`
/// reads a regular file (with several workers, each reads and frames its own byte ranges).
fn pipeline_run(mut p: Pipeline, corpus: &[u8]) -> Run<'_> {
    Box::new(move || {
        p.run_at(&corpus, WriterSink::new(std::io::sink()))
            .map(|_| ())
            .map_err(Fail::from)
    })
}
