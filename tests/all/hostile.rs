//! Hostile guests, round 2 (issue 16): module-controlled text on stderr, the log budget
//! across traps, the edit depth limit, and the deadline's unit. The memory bound during
//! isolation is in `resources.rs`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use sluicebox::fuzzing::{Edit, apply_edits};
use sluicebox::{PipelineConfig, WasmConfig};

use crate::common::{ALLOC_WAT, numbered, run_with, wasm};

/// Text a module would like to see on the host's stderr: a line break and a forged
/// summary, a carriage return, a window title, a screen clear, BEL, NUL, DEL and a C1 CSI.
const NASTY: &str =
    "x\nsluicebox: received=999 emitted=999\r\u{1b}]0;owned\u{7}\u{1b}[2J\0\u{7f}\u{9b}31m";

/// `s` as the body of a WAT string: every byte as a `\hh` escape.
fn wat_bytes(s: &str) -> String {
    s.bytes().map(|b| format!("\\{b:02x}")).collect()
}

/// A module with NASTY at address 1024, an allocator, and the given `init` and filter body
/// (`$h` is the header).
fn module(imports: &str, init: &str, filter: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 1024) "{msg}")
  (func (export "sluicebox_abi_version") (result i32) (i32.const 1))
  {ALLOC_WAT}
  {init}
  (func (export "sluicebox_filter") (param $h i32) (result i32)
    {filter})
)"#,
        msg = wat_bytes(NASTY)
    )
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluicebox-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `sluicebox filter --module <wat text> ARGS` on `input`; returns (exit code, stderr).
fn run_cli(name: &str, wat: &[u8], args: &[&str], input: &[u8]) -> (i32, Vec<u8>) {
    let path = dir().join(format!("{name}.wat"));
    std::fs::write(&path, wat).unwrap();
    let mut child = Command::new(crate::common::sluicebox_bin())
        .arg("filter")
        .arg("--module")
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (out.status.code().expect("exit code"), out.stderr)
}

/// Stderr carries the module's text only escaped: no control byte but the line ends, no C1
/// code, no line the module started; and the text did arrive (as escapes).
fn assert_escaped(what: &str, stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| c.is_control() && c != '\n')
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: control characters {bad:?} on stderr:\n{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("sluicebox: received=999")),
        "{what}: a forged summary line on stderr:\n{text}"
    );
    assert!(
        text.contains("\\nsluicebox: received=999") && text.contains("\\u{1b}]0;owned"),
        "{what}: the module's text is not on stderr at all, so this test checks nothing:\n{text}"
    );
}

#[test]
fn module_text_reaches_stderr_only_escaped() {
    let len = NASTY.len();
    let input = numbered(1, &[]);
    // sluicebox_init rejects its configuration with NASTY (exit 2, no summary).
    let reject = module(
        "",
        &format!(
            r#"(func (export "sluicebox_init") (param $p i32) (result i32)
    (i32.store offset=12 (local.get $p) (i32.const 1024))
    (i32.store offset=16 (local.get $p) (i32.const {len}))
    (i32.const -1))"#
        ),
        "(i32.const 0)",
    );
    let (code, err) = run_cli("init", reject.as_bytes(), &[], &input);
    assert_eq!(code, 2);
    assert_escaped("init rejection", &err);

    // Every call fails with NASTY as its status message: with one event, a dead letter
    // whose reason quotes it; with many, the breaker's "last failure".
    let fail = format!(
        "(i32.store offset=48 (local.get $h) (i32.const 1024))
    (i32.store offset=52 (local.get $h) (i32.const {len}))
    (i32.const -1)"
    );
    let failing = module("", "", &fail);
    let (_, err) = run_cli("status", failing.as_bytes(), &[], &input);
    assert_escaped("dead letter of a failed call", &err);
    let (code, err) = run_cli("breaker", failing.as_bytes(), &[], &numbered(300, &[]));
    assert_eq!(code, 1);
    assert!(String::from_utf8_lossy(&err).contains("last failure"));
    assert_escaped("breaker", &err);

    // A FAIL record whose reason is NASTY: the dead letter printed on stderr.
    let fail_record = module(
        "",
        "",
        &format!(
            "(i32.store8 (i32.const 4096) (i32.const {fail}))
    (i32.store (i32.const 4100) (i32.const 0))
    (i32.store (i32.const 4104) (i32.const {op}))
    (i32.store (i32.const 4108) (i32.const 0))
    (i32.store (i32.const 4112) (i32.const {len}))
    (memory.copy (i32.const 4116) (i32.const 1024) (i32.const {len}))
    (i32.store offset=36 (local.get $h) (i32.const 4096))
    (i32.store offset=40 (local.get $h) (i32.const 4100))
    (i32.store offset=44 (local.get $h) (i32.const {rl}))
    (i32.const 0)",
            fail = sluicebox_abi::Verdict::Fail as u8,
            op = sluicebox_abi::OP_FAIL,
            rl = 16 + len
        ),
    );
    let (code, err) = run_cli("fail-record", fail_record.as_bytes(), &[], &input);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_escaped("FAIL reason", &err);

    // An import the host does not provide, named with NASTY.
    let nasty_wat = wat_bytes(NASTY);
    let import = module(
        &format!(r#"(import "{nasty_wat}" "f{nasty_wat}" (func))"#),
        "",
        "(i32.const 0)",
    );
    let (code, err) = run_cli("import", import.as_bytes(), &[], &input);
    assert_eq!(code, 2);
    assert_escaped("unknown import", &err);

    // A WAT syntax error in a line holding NASTY's bytes raw (the error quotes the line).
    let mut syntax = b"(module\n  (func $f ".to_vec();
    syntax.extend_from_slice(NASTY.replace('\n', " ").as_bytes());
    syntax.extend_from_slice(b"\nsluicebox: received=999 emitted=999 ))\n");
    let (code, err) = run_cli("syntax", &syntax, &[], &input);
    assert_eq!(code, 2);
    let text = String::from_utf8_lossy(&err);
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "WAT syntax error: control characters on stderr:\n{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("sluicebox: received=999")),
        "WAT syntax error: a forged summary line:\n{text}"
    );
}

#[test]
fn a_trap_does_not_reset_the_log_budget() {
    // Five log lines, then a trap: every call of the isolation makes a fresh instance.
    let logs = module(
        r#"(import "sluicebox" "log" (func $log (param i32 i32 i32)))"#,
        "",
        "(call $log (i32.const 2) (i32.const 1024) (i32.const 1))
    (call $log (i32.const 2) (i32.const 1024) (i32.const 1))
    (call $log (i32.const 2) (i32.const 1024) (i32.const 1))
    (call $log (i32.const 2) (i32.const 1024) (i32.const 1))
    (call $log (i32.const 2) (i32.const 1024) (i32.const 1))
    unreachable",
    );
    let started = Instant::now();
    // 300 events: the breaker stops the run after 64 failed calls in a row (320 lines).
    let (code, err) = run_cli("logs", logs.as_bytes(), &[], &numbered(300, &[]));
    let secs = started.elapsed().as_secs() + 1;
    assert_eq!(code, 1);
    let text = String::from_utf8_lossy(&err);
    let logged = text
        .lines()
        .filter(|l| l.starts_with("sluicebox: INFO: x "))
        .count();
    assert!(logged > 0, "the module's lines are logged at all:\n{text}");
    assert!(
        logged as u64 <= 20 * secs,
        "{logged} log lines in under {secs} s: the budget is 20 a second per filter:\n{text}"
    );
}

#[test]
fn an_edit_descends_through_at_most_256_nested_objects() {
    let nested = |k: usize| format!("{}{{}}{}", "{\"a\":".repeat(k), "}".repeat(k));
    let path = |k: usize| format!("{}x", "a.".repeat(k));
    // 256 nested objects under the top level: accepted.
    let text = nested(256);
    let out = apply_edits(text.as_bytes(), &[Edit::Set(&path(256), "1")], 1024).unwrap();
    assert!(out.ends_with(format!("{{\"x\":1}}{}", "}".repeat(256)).as_bytes()));
    // 257: refused, as docs/abi.md section 11 says.
    let text = nested(257);
    let e = apply_edits(text.as_bytes(), &[Edit::Set(&path(257), "1")], 1024).unwrap_err();
    assert!(e.contains("edit path too deep"), "{e}");
    let e = apply_edits(text.as_bytes(), &[Edit::Remove(&path(257))], 1024).unwrap_err();
    assert!(e.contains("edit path too deep"), "{e}");
}

#[test]
fn the_deadline_reason_is_in_milliseconds() {
    let spin = module("", "", "(loop $l (br $l)) (i32.const 0)");
    let config = WasmConfig {
        deadline: std::time::Duration::from_millis(1500),
        ..Default::default()
    };
    let f = wasm("spin", &spin, &config).unwrap();
    let (_, _, dead) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        &numbered(1, &[]),
    );
    assert_eq!(
        dead[0]["reason"],
        "filter failed: deadline exceeded: the batch call ran longer than 1500ms"
    );
}
