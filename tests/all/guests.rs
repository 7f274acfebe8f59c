//! Hostile guests, written in WAT: each is contained, the conservation law holds, the poison
//! events are dead-lettered with their line, and the process stays healthy.

use std::time::Duration;

use sluicebox::{Kind, PipelineConfig, WasmConfig};

use crate::common::*;

const IF_POISON: &str =
    "(if (i32.eq (call $field (local.get $h) (local.get $i) (i32.const 0)) (i32.const 3))";

fn fast() -> WasmConfig {
    WasmConfig {
        deadline: Duration::from_millis(20),
        ..Default::default()
    }
}

fn poison_guest(action: &str, extra: &str) -> String {
    guest(
        "poison",
        &format!("{IF_POISON} (then {action}))"),
        extra,
        "",
        1,
    )
}

/// Runs 1,000 events with one poison event through `wat`; checks 999 emitted and 1
/// dead-lettered at the poison's line with a reason containing `reason`.
fn contains_one_poison(wat: &str, config: &WasmConfig, reason: &str) {
    let f = wasm("hostile", wat, config).unwrap();
    let input = numbered(1000, &[613]);
    let (r, out, dead) = run_with(PipelineConfig::default(), vec![Box::new(f)], &input);
    assert_eq!(r.stats.emitted, 999, "{:?} {dead:?}", r.stats);
    assert_eq!(r.stats.dead_lettered, 1);
    assert_eq!(dead[0]["line"], 614);
    assert_eq!(dead[0]["filter"], "hostile");
    assert_eq!(dead[0]["raw"], "{\"i\":613,\"poison\":true}");
    let why = dead[0]["reason"].as_str().unwrap();
    assert!(
        why.contains(reason),
        "reason {why:?} should mention {reason:?}"
    );
    // Everyone else passed byte for byte, in order.
    let expected: Vec<u8> = input
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"{\"i\":613,"))
        .flatten()
        .copied()
        .collect();
    assert_eq!(out, expected);
    healthy();
}

#[test]
fn trap_on_one_event_of_a_thousand() {
    contains_one_poison(&poison_guest("unreachable", ""), &fast(), "unreachable");
}

#[test]
fn infinite_loop_is_stopped_at_the_deadline() {
    contains_one_poison(
        &poison_guest("(loop $spin (br $spin))", ""),
        &fast(),
        "deadline exceeded",
    );
}

#[test]
fn unbounded_memory_grow_is_capped() {
    let config = WasmConfig {
        memory_limit: 4 << 20,
        ..fast()
    };
    contains_one_poison(
        &poison_guest("(loop $g (drop (memory.grow (i32.const 1))) (br $g))", ""),
        &config,
        "memory limit exceeded",
    );
}

#[test]
fn deep_recursion_hits_the_stack_limit() {
    let rec = "(func $rec (param i32) (result i32) (i32.add (call $rec (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))";
    contains_one_poison(
        &poison_guest("(drop (call $rec (i32.const 0)))", rec),
        &fast(),
        "stack overflow",
    );
}

#[test]
fn guest_error_status_with_message_isolates_the_event() {
    // Returns -1 with a message when the batch holds the poison event.
    let extra = r#"(data (i32.const 3000) "poison seen")"#;
    let action = "(i32.store offset=48 (local.get $h) (i32.const 3000)) (i32.store offset=52 (local.get $h) (i32.const 11)) (return (i32.const -1))";
    contains_one_poison(&poison_guest(action, extra), &fast(), "poison seen");
}

/// A guest whose every answer is malformed: every event ends dead-lettered with a typed
/// reason (no panic, no out-of-bounds read), then the process is healthy.
fn every_answer_refused(after: &str, extra: &str, reason: &str) {
    let wat = guest("poison", "", extra, after, 1);
    let f = wasm("bad", &wat, &fast()).unwrap();
    let input = numbered(20, &[]);
    let (r, out, dead) = run_with(PipelineConfig::default(), vec![Box::new(f)], &input);
    assert!(out.is_empty());
    assert_eq!(r.stats.dead_lettered, 20, "{:?}", r.stats);
    for d in &dead {
        let why = d["reason"].as_str().unwrap();
        assert!(
            why.contains(reason),
            "reason {why:?} should mention {reason:?}"
        );
    }
    healthy();
}

#[test]
fn out_of_range_verdicts_pointer() {
    every_answer_refused(
        "(i32.store offset=36 (local.get $h) (i32.const 0x7ffffff0))",
        "",
        "outside guest memory",
    );
}

#[test]
fn out_of_range_records() {
    every_answer_refused(
        "(i32.store offset=40 (local.get $h) (i32.const 0x7fff0000)) (i32.store offset=44 (local.get $h) (i32.const 0x100000))",
        "",
        "outside guest memory",
    );
}

#[test]
fn negative_records_length() {
    every_answer_refused(
        "(i32.store offset=40 (local.get $h) (i32.const 0x10)) (i32.store offset=44 (local.get $h) (i32.const -1))",
        "",
        "exceed the cap",
    );
}

#[test]
fn record_names_an_event_past_the_batch() {
    // One SET record for event 5000.
    let extra =
        r#"(data (i32.const 2048) "\88\13\00\00\01\00\00\00\01\00\00\00\01\00\00\00a1\00\00")"#;
    every_answer_refused(
        "(i32.store offset=40 (local.get $h) (i32.const 2048)) (i32.store offset=44 (local.get $h) (i32.const 20))",
        extra,
        "record names event 5000",
    );
}

#[test]
fn invalid_json_in_an_edit() {
    // Event 0: verdict EDIT, record SET "a" = "{bad".
    let extra = r#"(data (i32.const 2048) "\00\00\00\00\01\00\00\00\01\00\00\00\04\00\00\00a{bad\00\00\00")"#;
    every_answer_refused(
        "(i32.store8 (global.get $vbuf) (i32.const 2)) (i32.store offset=40 (local.get $h) (i32.const 2048)) (i32.store offset=44 (local.get $h) (i32.const 24))",
        extra,
        "not JSON",
    );
}

#[test]
fn invalid_utf8_in_a_message() {
    let extra = r#"(data (i32.const 3000) "\ff\fe\fd")"#;
    every_answer_refused(
        "(i32.store offset=48 (local.get $h) (i32.const 3000)) (i32.store offset=52 (local.get $h) (i32.const 3)) (return (i32.const -1))",
        extra,
        "not UTF-8",
    );
}

#[test]
fn unknown_verdict_byte() {
    every_answer_refused(
        "(i32.store8 (global.get $vbuf) (i32.const 9))",
        "",
        "unknown verdict",
    );
}

#[test]
fn a_filter_that_always_traps_trips_the_breaker() {
    let wat = guest("poison", "unreachable", "", "", 1);
    let f = wasm("always", &wat, &fast()).unwrap();
    let mut p = sluicebox::Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(f);
    let err = p
        .run(&numbered(5000, &[])[..], sluicebox::NullSink)
        .unwrap_err();
    assert_eq!(err.kind(), Kind::FilterBroken);
    assert!(
        err.to_string().contains("failed 64 times in a row"),
        "{err}"
    );
    assert!(err.to_string().contains("unreachable"), "{err}");
    healthy();
}

#[test]
fn load_errors_are_clear() {
    let cases = [
        (guest("poison", "", "", "", 2), "ABI version 2"),
        (
            guest("poison", "", "", "", 1).replace("(export \"sluicebox_filter\")", ""),
            "missing export `sluicebox_filter`",
        ),
        (
            guest("poison", "", "", "", 1).replace(
                "(memory (export \"memory\") 1)",
                "(import \"env\" \"foo\" (func))\n(memory (export \"memory\") 1)",
            ),
            "unknown import `env.foo`",
        ),
    ];
    for (wat, want) in cases.iter() {
        let e = wasm("x", wat, &WasmConfig::default())
            .err()
            .expect("load must fail");
        assert_eq!(e.kind(), Kind::ModuleLoad);
        assert!(e.to_string().contains(want), "{e} should mention {want}");
    }
    let e = sluicebox::wasm::WasmModule::from_bytes("x", b"\x7fELF not wasm", None)
        .err()
        .unwrap();
    assert!(e.to_string().contains("bad magic"), "{e}");
    healthy();
}

#[test]
fn state_persists_across_batches_and_resets_after_a_trap() {
    // Keeps events while a per-instance counter is even; traps on the poison event.
    let per_event = format!(
        "{IF_POISON} (then unreachable)) (local.set $v (i32.and (global.get $count) (i32.const 1))) (global.set $count (i32.add (global.get $count) (i32.const 1)))"
    );
    let wat = guest("poison", &per_event, "", "", 1);
    let f = wasm("counter", &wat, &fast()).unwrap();
    let config = PipelineConfig {
        max_batch_events: 1,
        ..Default::default()
    };
    let (r, out, dead) = run_with(config, vec![Box::new(f)], &numbered(13, &[6]));
    let kept: Vec<u64> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["i"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // 0..5 on the first instance (counter 0..5: keep even), 6 traps, 7.. on a fresh one.
    assert_eq!(kept, vec![0, 2, 4, 7, 9, 11]);
    assert_eq!(
        (r.stats.dead_lettered, dead[0]["line"].as_u64()),
        (1, Some(7))
    );
}

#[test]
fn the_documented_wat_example_runs() {
    let f = wasm("drop_debug", DROP_DEBUG_WAT, &WasmConfig::default()).unwrap();
    assert_eq!(f.declared_fields(), Some(vec!["level".to_string()]));
    let input = sluicebox::loggen::corpus(10_000, 5);
    let (wasm_r, wasm_out, _) = run_with(PipelineConfig::default(), vec![Box::new(f)], &input);
    let (nat_r, nat_out, _) = run_with(
        PipelineConfig::default(),
        vec![Box::new(sluicebox::DropWhere::drop_debug())],
        &input,
    );
    assert_eq!(wasm_out, nat_out);
    assert_eq!(wasm_r.stats.filtered, nat_r.stats.filtered);
    assert!(wasm_r.stats.filtered > 1000);
}

/// A reactor-style guest that uses WASI (like Go or C with libc): `_initialize`, stdout,
/// clock, random and a sleep in init.
const WASI_GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $ready (mut i32) (i32.const 0))
  (data (i32.const 100) "hello from wasi\n")
  (data (i32.const 200) "\64\00\00\00\10\00\00\00")
  (func (export "_initialize")
    (drop (call $fd_write (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 300)))
    (if (i32.ne (call $clock (i32.const 1) (i64.const 0) (i32.const 400)) (i32.const 0)) (then unreachable))
    (if (i32.ne (call $random (i32.const 500) (i32.const 16)) (i32.const 0)) (then unreachable))
    ;; no filesystem: path_open must fail
    (if (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 600))) (then unreachable))
    ;; a 1 s sleep (a relative clock subscription, userdata 7) returns at once, fired
    (i64.store (i32.const 700) (i64.const 7))
    (i32.store8 (i32.const 708) (i32.const 0))
    (i64.store (i32.const 724) (i64.const 1000000000))
    (if (i32.ne (call $poll (i32.const 700) (i32.const 800) (i32.const 1) (i32.const 900)) (i32.const 0)) (then unreachable))
    (if (i32.ne (i32.load (i32.const 900)) (i32.const 1)) (then unreachable))
    (if (i64.ne (i64.load (i32.const 800)) (i64.const 7)) (then unreachable))
    (if (i32.ne (i32.load16_u (i32.const 808)) (i32.const 0)) (then unreachable))
    (global.set $ready (i32.const 1)))
  ;; Like Go's exports: traps until `_initialize` has run, even at load.
  (func (export "sluicebox_abi_version") (result i32)
    (if (i32.eqz (global.get $ready)) (then unreachable))
    (i32.const 1))
  (func (export "sluicebox_alloc") (param i32 i32) (result i32) (i32.const 4096))
  (func (export "sluicebox_filter") (param $h i32) (result i32)
    (if (i32.eqz (global.get $ready)) (then unreachable))
    (i32.store offset=36 (local.get $h) (i32.const 0))
    (i32.const 0))
)"#;

#[test]
fn wasi_is_refused_by_default_and_works_when_allowed() {
    let e = sluicebox::wasm::WasmModule::from_bytes("w", WASI_GUEST.as_bytes(), None)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("WASI is off by default"), "{e}");
    let options = sluicebox::wasm::LoadOptions {
        wasi: true,
        ..Default::default()
    };
    let m =
        sluicebox::wasm::WasmModule::from_bytes_with("w", WASI_GUEST.as_bytes(), &options).unwrap();
    let f = WasmConfig::default().build(&m).unwrap();
    let (r, out, _) = run_with(PipelineConfig::default(), vec![Box::new(f)], b"{\"a\":1}\n");
    assert_eq!(out, b"{\"a\":1}\n");
    assert_eq!(r.stats.emitted, 1);
    // An import outside WASI preview 1 is still refused.
    let bad = WASI_GUEST.replace("\"path_open\"", "\"path_open_v2\"");
    let e = sluicebox::wasm::WasmModule::from_bytes_with("w", bad.as_bytes(), &options)
        .err()
        .unwrap();
    assert!(e.to_string().contains("not provided"), "{e}");
}

#[test]
fn a_line_break_in_a_set_value_is_refused() {
    // Event 0: verdict EDIT, record SET "a" = "1\n" (valid JSON, but it would split the
    // event across two NDJSON lines).
    let extra =
        r#"(data (i32.const 2048) "\00\00\00\00\01\00\00\00\01\00\00\00\02\00\00\00a1\0a\00")"#;
    every_answer_refused(
        "(i32.store8 (global.get $vbuf) (i32.const 2)) (i32.store offset=40 (local.get $h) (i32.const 2048)) (i32.store offset=44 (local.get $h) (i32.const 20))",
        extra,
        "line break",
    );
}

#[test]
fn a_set_value_too_deep_for_its_path_is_refused() {
    // SET "a" = 1,024 nested arrays: with the top-level object, 1,025 levels.
    let value = format!("{}{}", "[".repeat(1024), "]".repeat(1024));
    let extra = format!(
        r#"(data (i32.const 8192) "\00\00\00\00\01\00\00\00\01\00\00\00\00\08\00\00a{value}\00\00\00")"#
    );
    let wat = guest(
        "poison",
        "",
        &extra,
        "(i32.store8 (global.get $vbuf) (i32.const 2)) (i32.store offset=40 (local.get $h) (i32.const 8192)) (i32.store offset=44 (local.get $h) (i32.const 2068))",
        1,
    )
    .replace("(global $heap (mut i32) (i32.const 8192))", "(global $heap (mut i32) (i32.const 16384))");
    let f = wasm("deep", &wat, &fast()).unwrap();
    let (r, out, dead) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        &numbered(3, &[]),
    );
    assert!(out.is_empty());
    assert_eq!(r.stats.dead_lettered, 3, "{:?}", r.stats);
    let why = dead[0]["reason"].as_str().unwrap();
    assert!(
        why.contains("SET value is not JSON") && why.contains("deep"),
        "{why}"
    );
}

#[test]
fn a_rename_that_nests_past_max_depth_is_dead_lettered() {
    let config = PipelineConfig {
        max_depth: 8,
        ..Default::default()
    };
    // Depth 8 (the object and 7 arrays) is accepted; moved under `x`, it would be 9.
    let input = b"{\"a\":[[[[[[[1]]]]]]]}\n{\"a\":[1]}\n";
    let (r, out, dead) = run_with(
        config,
        vec![Box::new(Answer(
            "rename_deeper",
            |_, i, d: &mut sluicebox::Decisions| d.rename(i, "a", "x.y"),
        ))],
        input,
    );
    assert_eq!(out, b"{\"x\":{\"y\":[1]}}\n");
    assert_eq!(r.stats.dead_lettered, 1);
    assert_eq!(dead[0]["line"], 1);
    let why = dead[0]["reason"].as_str().unwrap();
    assert!(why.contains("edit failed") && why.contains("deep"), "{why}");
}

#[test]
fn the_first_batch_after_an_idle_spell_is_not_timed_out() {
    // The instance's last deadline was armed when it was built; the first call, which
    // also allocates the batch buffer, comes much later.
    let config = WasmConfig {
        deadline: Duration::from_millis(10),
        ..Default::default()
    };
    let f = wasm("noop", NOOP_WAT, &config).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A single event: a failed call could not be split, the event would be dead-lettered.
    let (r, _, dead) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        &numbered(1, &[]),
    );
    assert_eq!(
        (
            r.stats.emitted,
            r.stats.dead_lettered,
            r.stats.filter_failures
        ),
        (1, 0, 0),
        "{dead:?}"
    );
}

#[test]
fn a_module_with_a_large_initial_memory_loads_when_its_cap_allows() {
    // 1,100 pages (68.75 MiB) initially: above the default cap of 64 MiB, within 128 MiB.
    let wat = NOOP_WAT.replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 1100)",
    );
    assert_ne!(wat, NOOP_WAT, "the noop guest's memory declaration changed");
    let big = WasmConfig {
        memory_limit: 128 << 20,
        ..Default::default()
    };
    let f = wasm("big", &wat, &big).unwrap();
    let (r, _, _) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        &numbered(10, &[]),
    );
    assert_eq!(r.stats.emitted, 10);
    // Under the default cap it is refused when built, with the reason.
    let e = wasm("big", &wat, &WasmConfig::default())
        .err()
        .expect("refused");
    assert_eq!(e.kind(), Kind::ModuleInit);
    assert!(e.to_string().contains("memory"), "{e}");
}

#[test]
fn proc_exit_is_named_in_the_dead_letter() {
    // Review of hostile guests: the reason showed wasmtime's backtrace, not the exit code.
    let wat = poison_guest("(call $exit (i32.const 3))", "").replacen(
        "(module",
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#,
        1,
    );
    let options = sluicebox::wasm::LoadOptions {
        wasi: true,
        ..Default::default()
    };
    let m = sluicebox::wasm::WasmModule::from_bytes_with("exit", wat.as_bytes(), &options).unwrap();
    let f = fast().build(&m).unwrap();
    let (r, _, dead) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        &numbered(10, &[4]),
    );
    assert_eq!((r.stats.emitted, r.stats.dead_lettered), (9, 1));
    let why = dead[0]["reason"].as_str().unwrap();
    assert_eq!(why, "filter failed: the module called proc_exit(3)");
}
