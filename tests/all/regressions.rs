//! Regression tests for bugs the fuzz targets in `fuzz/` found, one test per bug, each
//! naming the target and the minimised input (see docs/RELIABILITY.md).

use sluicebox::fuzzing::{Edit, apply_edits, parse_event};
use sluicebox::parse::index::lookup;
use sluicebox::{CollectSink, DropWhere, JsonEngine, Pipeline, PipelineConfig};

use crate::common::run_with;

/// fuzz target `edits` (and `index_vs_serde`): a key written with an escape matched a path
/// naming the key spelled as its raw text. The JSON key `"x\\y"` is `x\y`; the path `x\\\\y`
/// names the key `x\\y`, so it must not find it (`parse::index::key_eq`).
#[test]
fn escaped_key_does_not_match_its_raw_spelling() {
    let text = br#"{"x\\y":1,"a":2}"#;
    let s = parse_event(text, 64).unwrap();
    assert_eq!(
        lookup(text, &s, br"x\\y").unwrap().raw,
        b"1",
        "path x\\\\y is the key x\\y"
    );
    assert!(lookup(text, &s, br"x\\\\y").is_none(), "no key x\\\\y");
    // Escapes of other characters: the raw `\u0061` is `a`, never the key `\u0061`.
    let text = br#"{"\u0061":1}"#;
    let s = parse_event(text, 64).unwrap();
    assert_eq!(lookup(text, &s, b"a").unwrap().raw, b"1");
    assert!(lookup(text, &s, br"\\u0061").is_none());

    // The minimised `edits` crash: REMOVE of a key that does not exist removed `x\y`.
    let text = br#"{"q":1,"x\\y":{"a":1}}"#;
    let out = apply_edits(text, &[Edit::Remove(r"x\\\\y")], 64).unwrap();
    assert_eq!(out, text);
    let out = apply_edits(text, &[Edit::Remove(r"x\\y")], 64).unwrap();
    assert_eq!(out, br#"{"q":1}"#);

    // Parse-time slots use the same comparison, under both engines.
    for json_engine in [JsonEngine::Sluice, JsonEngine::SimdJson] {
        let config = PipelineConfig {
            json_engine,
            ..Default::default()
        };
        let input = b"{\"x\\\\y\":\"v\"}\n";
        let (report, out, _) = run_with(
            config.clone(),
            vec![Box::new(DropWhere::new(r"x\\\\y", "v"))],
            input,
        );
        assert_eq!((report.stats.filtered, out.as_slice()), (0, &input[..]));
        let (report, _, _) = run_with(config, vec![Box::new(DropWhere::new(r"x\\y", "v"))], input);
        assert_eq!(report.stats.filtered, 1);
    }
}

/// fuzz target `edits`: a SET whose value text starts with whitespace (`" {\"b\":1} "`, valid
/// JSON) stored an object that later edits in the same answer did not see as one: `SET a.c`
/// then replaced it with a new object and `REMOVE a.b` did nothing (`batch::edit`, the
/// "holds an object" test of `ObjEditor::set` and `ObjEditor::remove`).
#[test]
fn an_object_set_with_surrounding_whitespace_is_still_an_object() {
    let set = apply_edits(
        b"{}",
        &[Edit::Set("a", " {\"b\":1} "), Edit::Set("a.c", "2")],
        64,
    )
    .unwrap();
    assert_eq!(set, br#"{"a":{"b":1,"c":2}}"#);
    let removed = apply_edits(
        b"{}",
        &[Edit::Set("a", "\t{\"b\":1,\"c\":2}"), Edit::Remove("a.b")],
        64,
    )
    .unwrap();
    assert_eq!(removed, br#"{"a":{"c":2}}"#);
    // The minimised crash: the member "b" inside "a.b" was lost.
    let out = apply_edits(
        b"{}",
        &[
            Edit::Set(r"a\.b", " {\"b\":1} "),
            Edit::Set(r"a\.b.a\.b", "\"s\""),
        ],
        64,
    )
    .unwrap();
    assert_eq!(out, br#"{"a.b":{"b":1,"a.b":"s"}}"#);
}

/// Returns the input `size` bytes per read.
struct Trickle<'a>(&'a [u8], usize);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.1.min(buf.len()).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// fuzz target `frame_parse`: a line exactly `max_line_bytes` long, ended by `\r\n`, was
/// dead-lettered as oversized when a read ended between the `\r` and the `\n` (the framer
/// counted the `\r`, which is not content, against the limit while waiting for the rest of
/// the line), and accepted otherwise: the outcome depended on the read sizes
/// (`frame::Framer::frame`).
#[test]
fn a_line_at_the_limit_ending_in_crlf_is_accepted_whatever_the_read_sizes() {
    let input = b"{\"b\":\"x\"}\r\n{\"c\":1}\r\n";
    for size in 1..=input.len() {
        let config = PipelineConfig {
            max_line_bytes: 9,
            ..Default::default()
        };
        let mut out = CollectSink::new();
        let mut dead = CollectSink::new();
        let report = Pipeline::new(config)
            .unwrap()
            .run_with_dead_letter(Trickle(input, size), &mut out, &mut dead)
            .unwrap();
        assert_eq!(
            (report.stats.emitted, report.stats.dead_lettered),
            (2, 0),
            "reads of {size} bytes: {:?}",
            String::from_utf8_lossy(&dead.ndjson())
        );
        assert_eq!(out.ndjson(), b"{\"b\":\"x\"}\n{\"c\":1}\n");
    }
    // One byte more is still oversized, however it is read.
    for size in [1, 5, 64] {
        let config = PipelineConfig {
            max_line_bytes: 8,
            ..Default::default()
        };
        let mut out = CollectSink::new();
        let report = Pipeline::new(config)
            .unwrap()
            .run(Trickle(input, size), &mut out)
            .unwrap();
        assert_eq!((report.stats.emitted, report.stats.dead_lettered), (1, 1));
    }
}
