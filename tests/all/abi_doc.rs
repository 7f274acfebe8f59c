//! docs/abi.md and its examples: the hand-written `tag_service.wat` map filter produces the
//! exact bytes the edit semantics promise and matches the native `TagService`, and every
//! ```wat block of the document is a module the host accepts (so the document cannot rot).

use sluicebox::fuzzing::{Edit, apply_edits};
use sluicebox::{JsonEngine, PipelineConfig, TagService, WasmConfig, wasm::WasmModule};

use crate::common::*;

const TAG_SERVICE_WAT: &str = include_str!("../../examples/wat/tag_service.wat");
const ABI_MD: &str = include_str!("../../docs/abi.md");

#[test]
fn tag_service_wat_edits_exactly() {
    let f = wasm("tag_service", TAG_SERVICE_WAT, &WasmConfig::default()).unwrap();
    assert_eq!(f.declared_fields(), Some(vec!["msg".to_string()]));
    let input = concat!(
        "{\"level\":\"INFO\",\"msg\":\"hello\"}\n",
        // No `msg`: RENAME is a no-op; whitespace inside a member is kept, around members not.
        "{ \"n\" : 1e400 , \"ok\":true }\n",
        // An escaped string moves with its escapes as written.
        "{\"msg\":\"say \\\"hi\\\"\\n\\u00e9\", \"x\" : [1, 2]}\n",
        // A number simd-json refuses (beyond f64) is a value like any other.
        "{\"msg\":1e400}\n",
        // An existing `env` is replaced in place; REMOVE (inside RENAME) removes every `msg`,
        // and the value moved is the last one.
        "{\"env\":\"dev\",\"msg\":\"a\",\"msg\":\"b\"}\n",
        "{}\n",
        "{\"msg\":{\"text\":\"x\"},\"z\":null}\n",
    );
    let (r, out, dead) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        input.as_bytes(),
    );
    assert!(dead.is_empty(), "{dead:?}");
    let expected = concat!(
        "{\"level\":\"INFO\",\"env\":\"prod\",\"message\":\"hello\"}\n",
        "{\"n\" : 1e400,\"ok\":true,\"env\":\"prod\"}\n",
        "{\"x\" : [1, 2],\"env\":\"prod\",\"message\":\"say \\\"hi\\\"\\n\\u00e9\"}\n",
        "{\"env\":\"prod\",\"message\":1e400}\n",
        "{\"env\":\"prod\",\"message\":\"b\"}\n",
        "{\"env\":\"prod\"}\n",
        "{\"z\":null,\"env\":\"prod\",\"message\":{\"text\":\"x\"}}\n",
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert_eq!(
        (
            r.stats.emitted,
            r.stats.unchanged,
            r.stats.filtered,
            r.stats.filter_failures
        ),
        (7, 0, 0, 0)
    );
}

#[test]
fn tag_service_wat_matches_the_native_filter() {
    let input = sluicebox::loggen::corpus(2000, 3);
    // Batches of 1,024 and of 7 (the answer buffer is reused, and grown once for 1,024).
    for config in [
        PipelineConfig::default(),
        PipelineConfig {
            max_batch_events: 7,
            ..Default::default()
        },
    ] {
        let f = wasm("tag_service", TAG_SERVICE_WAT, &WasmConfig::default()).unwrap();
        let (wasm_r, wasm_out, _) = run_with(config.clone(), vec![Box::new(f)], &input);
        let (nat_r, nat_out, _) = run_with(config, vec![Box::new(TagService)], &input);
        assert_eq!(wasm_out, nat_out);
        assert_eq!(
            (
                wasm_r.stats.emitted,
                wasm_r.stats.unchanged,
                wasm_r.stats.filter_failures
            ),
            (2000, 0, 0)
        );
        assert_eq!(wasm_r.stats.emitted, nat_r.stats.emitted);
    }
}

/// The ```wat blocks of `md`, in order.
/// Compact events take the editor's splicing path, the others the member walk; every event
/// must come out as the member walk alone writes it (`fuzzing::apply_edits`), whatever its
/// shape: compact or not, keys with escapes, duplicates, many members, non-ASCII text,
/// escaped quotes in values, the target keys already present, in batches of any size, with
/// either JSON engine's structural positions.
#[test]
fn edits_are_the_member_walks_bytes_for_every_event_shape_and_batch_size() {
    let many: String = (0..70).map(|i| format!(r#""k{i}":{i},"#)).collect();
    let shapes = [
        r#"{"level":"INFO","msg":"hi","http":{"a":[1,{"b":2}]},"n":1}"#.to_string(),
        r#"{ "msg" : "spaced" , "n" : 1 }"#.to_string(),
        r#"{"msg":"a","msg":"b","env":"dev"}"#.to_string(),
        r#"{"m\u0073g":"escaped key","x":1}"#.to_string(),
        r#"{"msg":"quote \" inside","é":"ü"}"#.to_string(),
        r#"{"message":"old","msg":"new"}"#.to_string(),
        format!(r#"{{{many}"msg":"last"}}"#),
        "{}".to_string(),
        r#"{"a":1 ,"msg":2}"#.to_string(),
    ];
    let input: String = (0..5)
        .flat_map(|_| shapes.iter())
        .map(|e| format!("{e}\n"))
        .collect();
    let edits = [Edit::Set("env", "\"prod\""), Edit::Rename("msg", "message")];
    let engines = [JsonEngine::Sluice, JsonEngine::SimdJson];
    for (max_batch_events, json_engine) in [1, 4, 1024]
        .into_iter()
        .flat_map(|b| engines.map(|e| (b, e)))
    {
        let config = PipelineConfig {
            max_batch_events,
            json_engine,
            ..Default::default()
        };
        let (_, out, _) = run_with(config, vec![Box::new(TagService)], input.as_bytes());
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5 * shapes.len());
        for (line, shape) in lines.iter().zip((0..5).flat_map(|_| shapes.iter())) {
            let want = apply_edits(shape.as_bytes(), &edits, 1024).unwrap();
            assert_eq!(
                *line,
                String::from_utf8(want).unwrap(),
                "batch {max_batch_events}"
            );
        }
    }
}

fn wat_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```wat") => current = Some(String::new()),
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(
        current.is_none(),
        "unterminated ```wat block in docs/abi.md"
    );
    blocks
}

#[test]
fn every_wat_block_in_the_abi_doc_loads() {
    let blocks = wat_blocks(ABI_MD);
    assert!(
        blocks.len() >= 3,
        "docs/abi.md should show its examples ({} ```wat blocks)",
        blocks.len()
    );
    for (i, wat) in blocks.iter().enumerate() {
        if let Err(e) = WasmModule::from_bytes(&format!("abi.md block {i}"), wat.as_bytes(), None) {
            panic!("```wat block {i} of docs/abi.md does not load: {e}\n{wat}");
        }
    }
    // The examples are shown whole, as they are in examples/wat/.
    for (name, file) in [
        ("tag_service.wat", TAG_SERVICE_WAT),
        ("drop_debug.wat", DROP_DEBUG_WAT),
    ] {
        assert!(
            blocks.iter().any(|b| b == file),
            "docs/abi.md should show examples/wat/{name} verbatim"
        );
    }
}

/// A guest that compares the first `expected.len()` bytes of its batch buffer (with the
/// header's three pointers made relative to the header) against `expected`, and fails the
/// call with "layout differs at byte K" otherwise. `fields` is the `FieldsDecl` to declare
/// (paths, flags), or `None` for full mode.
fn layout_checker(fields: Option<(&str, u32)>, expected: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("\\{x:02x}")).collect::<String>();
    let decl = match fields {
        Some((paths, flags)) => {
            let mut d = 16u32.to_le_bytes().to_vec();
            d.extend_from_slice(&(paths.len() as u32).to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            format!(
                r#"(data (i32.const 16) "{}") (data (i32.const 512) "{}")
  (func (export "sluicebox_fields") (result i32) (i32.const 512))"#,
                hex(paths.as_bytes()),
                hex(&d)
            )
        }
        None => String::new(),
    };
    format!(
        r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 16384))
  {decl}
  (data (i32.const 1024) "{expected}")
  (data (i32.const 960) "layout differs at byte ")
  (func (export "sluicebox_abi_version") (result i32) (i32.const 1))
  {ALLOC_WAT}
  (func (export "sluicebox_filter") (param $h i32) (result i32)
    (local $i i32)
    (memory.copy (i32.const 4096) (local.get $h) (i32.const {len}))
    (i32.store (i32.const 4104) (i32.sub (i32.load (i32.const 4104)) (local.get $h)))
    (i32.store (i32.const 4108) (i32.sub (i32.load (i32.const 4108)) (local.get $h)))
    (i32.store (i32.const 4116) (i32.sub (i32.load (i32.const 4116)) (local.get $h)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const {len})))
      (if (i32.ne (i32.load8_u offset=4096 (local.get $i)) (i32.load8_u offset=1024 (local.get $i)))
        (then
          ;; message: "layout differs at byte " + three decimal digits
          (i32.store8 (i32.const 983) (i32.add (i32.const 48) (i32.div_u (local.get $i) (i32.const 100))))
          (i32.store8 (i32.const 984) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $i) (i32.const 10)) (i32.const 10))))
          (i32.store8 (i32.const 985) (i32.add (i32.const 48) (i32.rem_u (local.get $i) (i32.const 10))))
          (i32.store offset=48 (local.get $h) (i32.const 960))
          (i32.store offset=52 (local.get $h) (i32.const 26))
          (return (i32.const -4))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.const 0))
)"#,
        expected = hex(expected),
        len = expected.len(),
    )
}

fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[allow(clippy::too_many_arguments)]
fn node(
    key_start: u32,
    key_len: u32,
    value_start: u32,
    value_len: u32,
    kind: u8,
    flags: u8,
    depth: u16,
    end: u32,
) -> Vec<u8> {
    let mut n = words(&[key_start, key_len, value_start, value_len]);
    n.extend_from_slice(&[kind, flags]);
    n.extend_from_slice(&depth.to_le_bytes());
    n.extend_from_slice(&end.to_le_bytes());
    n
}

/// Runs `input` through the layout checker; the call must succeed (every event kept).
fn check_layout(fields: Option<(&str, u32)>, expected: &[u8], input: &str) {
    let f = wasm(
        "layout",
        &layout_checker(fields, expected),
        &WasmConfig::default(),
    )
    .unwrap();
    let (r, out, dead) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        input.as_bytes(),
    );
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(r.stats.filter_failures, 0);
    assert_eq!(out, input.as_bytes());
}

#[test]
fn the_worked_projected_batch_of_the_abi_doc_is_what_the_host_writes() {
    // docs/abi.md, section 8.5: `msg` declared without FIELDS_RAW, two events.
    let mut expected = words(&[1, 2, 64, 96, 2, 144, 2, 1, 1]);
    expected.extend_from_slice(&[0; 28]); // out fields and reserved: zeroed by the host
    expected.extend(words(&[0, 0, 0, 1, 0, 0, 1, 1]));
    expected.extend(node(0, 0, 0, 2, 5, 0, 0, 0));
    expected.extend(node(0, 0, 0, 0, 0, 0, 0, 0));
    expected.extend_from_slice(b"hi");
    assert_eq!(expected.len(), 146);
    check_layout(Some(("msg", 0)), &expected, "{\"msg\":\"hi\"}\n{\"n\":1}\n");
}

const FULL_EXAMPLE: &str = r#"{"a":1,"b":{"c":[true,null]},"d":"x\n"}"#;

/// docs/abi.md, section 8.4: the batch of one event `FULL_EXAMPLE` in full mode.
fn full_example_layout() -> Vec<u8> {
    let mut expected = words(&[1, 1, 64, 80, 6, 224, 39, 2, 0]);
    expected.extend_from_slice(&[0; 28]);
    expected.extend(words(&[0, 39, 0, 6]));
    expected.extend(node(2, 1, 5, 1, 4, 0, 0, 1));
    expected.extend(node(8, 1, 11, 17, 6, 0, 0, 5));
    expected.extend(node(13, 1, 16, 11, 7, 0, 1, 5));
    expected.extend(node(0, 0, 17, 4, 3, 4, 2, 4));
    expected.extend(node(0, 0, 22, 4, 1, 4, 2, 5));
    expected.extend(node(30, 1, 34, 3, 5, 1, 0, 6));
    expected.extend_from_slice(FULL_EXAMPLE.as_bytes());
    expected
}

#[test]
fn the_full_index_example_of_the_abi_doc_is_what_the_host_writes() {
    assert_eq!(FULL_EXAMPLE.len(), 39);
    check_layout(None, &full_example_layout(), &format!("{FULL_EXAMPLE}\n"));
}

#[test]
fn an_empty_declaration_with_fields_raw_gets_raw_bytes_and_no_nodes() {
    // docs/abi.md, section 7: no paths + FIELDS_RAW = BATCH_PROJECTED | BATCH_RAW, F = 0.
    let mut expected = words(&[1, 2, 64, 96, 0, 96, 14, 3, 0]);
    expected.extend_from_slice(&[0; 28]);
    expected.extend(words(&[0, 7, 0, 0, 7, 7, 0, 0]));
    expected.extend_from_slice(b"{\"a\":1}{\"b\":2}");
    check_layout(Some(("", 1)), &expected, "{\"a\":1}\n{\"b\":2}\n");
}

#[test]
fn a_wrong_layout_is_reported_by_the_checker() {
    // The checker itself must be able to fail, or the tests above prove nothing.
    let mut expected = full_example_layout();
    expected[64 + 16 + 24 + 20] = 4; // node 1's `end` is 5
    let f = wasm(
        "layout",
        &layout_checker(None, &expected),
        &WasmConfig::default(),
    )
    .unwrap();
    let (_, _, dead) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        format!("{FULL_EXAMPLE}\n").as_bytes(),
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0]["reason"],
        "filter failed: module returned -4 (bad input): layout differs at byte 124"
    );
}
