//! Regression tests, one per bug: those the fuzz targets in `fuzz/` found, each naming the
//! target and the minimised input (see docs/RELIABILITY.md), and those a review found with
//! hostile guests written from `docs/abi.md` alone.

use sluicebox::fuzzing::{Edit, apply_edits, parse_event};
use sluicebox::parse::index::lookup;
use sluicebox::{CollectSink, DropWhere, JsonEngine, Pipeline, PipelineConfig};

use crate::common::{Answer, run_with};

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

/// Review of hostile guests: a SET whose path has more components than `max_depth`, with a
/// scalar value, wrote an event nested past the limit (the room left for the value
/// saturated at 0, and a scalar fits in 0). The path itself is now counted.
#[test]
fn a_set_path_deeper_than_max_depth_is_refused() {
    let config = || PipelineConfig {
        max_depth: 8,
        ..Default::default()
    };
    let path = |k: usize| vec!["a"; k].join(".");
    for value in ["1", "\"s\""] {
        // 8 components: the event's object and 7 more, 8 levels: accepted.
        let ok = Answer("set8", move |_, i, d: &mut sluicebox::Decisions| {
            d.set(i, &path(8), value)
        });
        let (r, out, _) = run_with(config(), vec![Box::new(ok)], b"{\"x\":1}\n");
        assert_eq!(r.stats.emitted, 1, "{value}");
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.matches('{').count(), 8, "{line}");
        assert!(parse_event(line.trim_end().as_bytes(), 8).is_ok(), "{line}");
        // 9 components: refused, whatever the value; the neighbours are not affected.
        let deep = Answer("set9", move |line, i, d: &mut sluicebox::Decisions| {
            if line == 2 {
                d.set(i, &path(9), value)
            }
        });
        let (r, out, dead) = run_with(
            config(),
            vec![Box::new(deep)],
            b"{\"x\":1}\n{\"x\":2}\n{\"x\":3}\n",
        );
        assert_eq!(out, b"{\"x\":1}\n{\"x\":3}\n", "{value}");
        assert_eq!(r.stats.dead_lettered, 1);
        let why = dead[0]["reason"].as_str().unwrap();
        assert!(why.contains("SET path has 9 components"), "{why}");
        assert_eq!(dead[0]["line"], 2);
    }
}

/// Review of hostile guests: the host's work applying edits was not bounded, so a guest
/// within its deadline could make the host spend minutes on one batch (thousands of edits
/// per event, each a scan of the event). Past the per-event budget an event is
/// dead-lettered; past the per-batch budget, the rest of the batch's edited events are.
#[test]
fn host_edit_work_is_bounded() {
    // 8,000 REMOVEs on one event: 8,000 x 8,001 steps, over the 2^24 of one event.
    let many = Answer("many", |line, i, d: &mut sluicebox::Decisions| {
        if line == 2 {
            for k in 0..8000 {
                d.remove(i, &format!("k{k}"));
            }
        } else {
            d.set(i, "tag", "1");
        }
    });
    let (r, out, dead) = run_with(
        PipelineConfig::default(),
        vec![Box::new(many)],
        b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n",
    );
    assert_eq!(out, b"{\"a\":1,\"tag\":1}\n{\"a\":3,\"tag\":1}\n");
    assert_eq!((r.stats.emitted, r.stats.dead_lettered), (2, 1));
    let why = dead[0]["reason"].as_str().unwrap();
    assert!(
        why.starts_with("edit failed: too much edit work: 8000 edits"),
        "{why}"
    );

    // 3,900 REMOVEs per event: about 15.2 million steps each, within one event's budget;
    // 2^28 steps hold 17 such events, so of 20 in one batch the last 3 are dead-lettered.
    let heavy = Answer("heavy", |_, i, d: &mut sluicebox::Decisions| {
        for k in 0..3900 {
            d.remove(i, &format!("k{k}"));
        }
    });
    let input: Vec<u8> = (0..20)
        .flat_map(|i| format!("{{\"a\":{i}}}\n").into_bytes())
        .collect();
    let (r, _, dead) = run_with(PipelineConfig::default(), vec![Box::new(heavy)], &input);
    assert_eq!(
        (r.stats.emitted, r.stats.dead_lettered),
        (17, 3),
        "{:?}",
        r.stats
    );
    let lines: Vec<u64> = dead.iter().map(|d| d["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [18, 19, 20]);
}

/// Review of hostile guests: a FAIL reason of any size went whole into the dead letter
/// (status messages are cut at 64 KiB). It is now cut at 64 KiB too.
#[test]
fn a_huge_fail_reason_is_cut() {
    let fail = Answer("fail", |_, i, d: &mut sluicebox::Decisions| {
        d.fail(i, &"é".repeat(1 << 20))
    });
    let (_, _, dead) = run_with(PipelineConfig::default(), vec![Box::new(fail)], b"{}\n");
    let why = dead[0]["reason"].as_str().unwrap();
    assert!(why.len() <= (64 << 10) + 16, "{}", why.len());
    assert!(why.ends_with("… (cut)"), "{}", &why[why.len() - 20..]);
}

/// Review of hostile guests: an empty ROUTE name was reported as an "empty path".
#[test]
fn an_empty_route_name_is_named_as_such() {
    let route = Answer("route", |_, i, d: &mut sluicebox::Decisions| d.route(i, ""));
    let (_, _, dead) = run_with(PipelineConfig::default(), vec![Box::new(route)], b"{}\n");
    let why = dead[0]["reason"].as_str().unwrap();
    assert!(why.contains("empty route name"), "{why}");
}

/// Review of hostile guests: `workers = 256` passed validation but could never run, since
/// each wasm module holds workers + 1 instances of the 256 a process has.
#[test]
fn workers_stop_at_255() {
    let p = |workers| {
        Pipeline::new(PipelineConfig {
            workers,
            ..Default::default()
        })
    };
    assert!(p(255).is_ok());
    let e = p(256).err().unwrap();
    assert!(e.to_string().contains("1..=255"), "{e}");
}
