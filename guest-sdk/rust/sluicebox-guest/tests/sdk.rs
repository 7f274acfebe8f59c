//! The SDK's public API, natively: event lookups in both index modes, the record stream that
//! edits and emitters write (decoded and checked against the ABI by the harness), params.

use std::borrow::Cow;

use sluicebox_guest::testing::{Harness, Record, TestEvent, decode_records, run_init};
use sluicebox_guest::{Edits, Emitter, Event, Kind, Params, Verdict};

const NESTED: &str = r#"{
    "level": "INFO",
    "http": {"method": "GET", "status": 404, "headers": {"x.y": "1", "a\\b": "2"}},
    "tags": ["a", "b", {"c": true}],
    "n": -3, "f": 1.5, "e": 1e3, "big": 123456789012345678901234567890,
    "ok": true, "no": false, "nil": null,
    "esc": "tab\there \"q\" \u00e9 \ud83d\ude00",
    "le\u0076el2": "escaped key",
    "dup": {"x": 1}, "dup": {"y": 2}
}"#;

#[test]
fn full_mode_finds_nested_paths() {
    let t = TestEvent::new(NESTED);
    let e = t.event();
    assert_eq!(e.str("level").as_deref(), Some("INFO"));
    assert_eq!(e.str("http.method").as_deref(), Some("GET"));
    assert_eq!(e.get_i64("http.status"), Some(404));
    assert_eq!(e.str(r"http.headers.x\.y").as_deref(), Some("1"));
    assert_eq!(e.str(r"http.headers.a\\b").as_deref(), Some("2"));
    assert!(e.get("http.headers.x").is_none(), "the key is `x.y`");
    assert!(e.get("http.nope").is_none());
    assert!(e.get("level.deeper").is_none(), "a string has no members");
    assert!(
        e.get("tags.0").is_none(),
        "array elements are not addressable"
    );
    assert!(e.get(r"bad\path").is_none());
    assert_eq!(e.get("http").unwrap().kind(), Kind::Object);
    assert!(e.get("http").unwrap().raw().starts_with(b"{\"method\""));
}

#[test]
fn full_mode_decodes_keys_and_values() {
    let t = TestEvent::new(NESTED);
    let e = t.event();
    assert_eq!(e.str("level2").as_deref(), Some("escaped key"));
    assert!(matches!(e.str("level"), Some(Cow::Borrowed(_))));
    let esc = e.str("esc").unwrap();
    assert!(matches!(esc, Cow::Owned(_)));
    assert_eq!(esc, "tab\there \"q\" é 😀");
    assert!(e.get("esc").unwrap().is_escaped());
    assert!(e.get("esc").unwrap().str_eq("tab\there \"q\" é 😀"));
    assert!(e.str_eq("esc", "tab\there \"q\" é 😀"));
    assert!(!e.str_eq("esc", "tab"));
    assert!(!e.str_eq("dup", "tab"), "an object is not a string");
    assert!(!e.str_eq("nope", ""), "a missing path is not a string");
    assert!(e.has("dup") && !e.has("nope"));
}

#[test]
fn full_mode_last_duplicate_wins() {
    let t = TestEvent::new(NESTED);
    let e = t.event();
    assert_eq!(e.get_i64("dup.y"), Some(2));
    assert_eq!(e.get_i64("dup.x"), None);
    let t = TestEvent::new(r#"{"a":1,"b":0,"a":"two"}"#);
    assert_eq!(t.event().str("a").as_deref(), Some("two"));
}

#[test]
fn typed_getters() {
    let t = TestEvent::new(NESTED);
    let e = t.event();
    assert_eq!(e.get_i64("n"), Some(-3));
    assert_eq!(e.get_i64("f"), None);
    assert_eq!(e.get_i64("e"), None);
    assert_eq!(e.get_i64("big"), None);
    assert_eq!(e.get_i64("level"), None);
    assert_eq!(e.get_f64("f"), Some(1.5));
    assert_eq!(e.get_f64("e"), Some(1000.0));
    assert_eq!(e.get_f64("n"), Some(-3.0));
    assert_eq!(e.get_bool("ok"), Some(true));
    assert_eq!(e.get_bool("no"), Some(false));
    assert_eq!(e.get_bool("nil"), None);
    assert!(e.is_null("nil"));
    assert!(!e.is_null("missing"));
    assert!(!e.is_null("no"));
    assert_eq!(e.str("n"), None);
    assert_eq!(e.get("nil").unwrap().kind(), Kind::Null);
    assert_eq!(
        e.get("big").unwrap().raw(),
        b"123456789012345678901234567890"
    );
}

#[test]
fn walks_members_and_elements() {
    let t = TestEvent::new(NESTED);
    let e = t.event();
    let keys: Vec<String> = e.members().map(|m| m.key().unwrap().into_owned()).collect();
    assert_eq!(
        keys,
        [
            "level", "http", "tags", "n", "f", "e", "big", "ok", "no", "nil", "esc", "level2",
            "dup", "dup"
        ]
    );
    let tags = e.get("tags").unwrap();
    assert_eq!(tags.kind(), Kind::Array);
    let elems: Vec<_> = tags.elements().collect();
    assert_eq!(elems.len(), 3);
    assert_eq!(elems[1].as_str().as_deref(), Some("b"));
    assert_eq!(elems[2].get("c").and_then(|v| v.as_bool()), Some(true));
    let http = e.get("http").unwrap();
    assert_eq!(
        http.get("headers.x\\.y")
            .and_then(|v| v.as_str())
            .as_deref(),
        Some("1")
    );
    assert_eq!(http.members().count(), 3);
    assert_eq!(http.elements().count(), 0, "an object has no elements");
    assert!(e.raw().unwrap().starts_with(b"{"));
}

#[test]
fn projected_mode_reads_declared_paths_only() {
    let fields = [
        "level",
        "http.status",
        "missing",
        r"http.headers.x\.y",
        "esc",
    ];
    let t = TestEvent::projected(NESTED, &fields);
    let e = t.event();
    assert_eq!(e.str("level").as_deref(), Some("INFO"));
    assert_eq!(e.get_i64("http.status"), Some(404));
    assert_eq!(e.str(r"http.headers.x\.y").as_deref(), Some("1"));
    assert_eq!(e.str("esc").as_deref(), Some("tab\there \"q\" é 😀"));
    assert!(e.get("missing").is_none());
    assert!(e.get("n").is_none(), "not declared");
    assert!(e.raw().is_none());
    assert_eq!(e.members().count(), 0);
    let t = t.with_raw(true);
    assert!(t.event().raw().is_some());
}

#[test]
fn edits_write_records_and_set_verdicts() {
    fn edit(event: &Event, edits: &mut Edits) -> Result<(), String> {
        match event.str("do").as_deref() {
            Some("all") => {
                edits
                    .set("a", "{\"x\":[1]}")
                    .set_str("s", "quote \" backslash \\ newline \n")
                    .set_i64("i", i64::MIN)
                    .set_bool("b", true)
                    .remove("gone")
                    .rename("from", "to.here")
                    .route("audit");
            }
            Some("route") => {
                edits.route("audit");
            }
            Some("drop") => {
                edits.set_i64("x", 1).route("r");
                edits.discard();
                edits.set_i64("ignored", 1);
            }
            Some("fail") => {
                edits.set_i64("x", 1);
                edits.fail("nope");
                edits.route("ignored");
            }
            Some("err") => {
                edits.set_i64("x", 1);
                return Err("bad event".to_owned());
            }
            Some("copy") => {
                let v = event.get("obj").unwrap();
                edits.set_value("copy", &v);
                edits.set_value("s", &event.get("do").unwrap());
            }
            _ => {}
        }
        Ok(())
    }
    let outcomes = Harness::full().map_batch(
        edit,
        &[
            r#"{"do":"all"}"#,
            r#"{"do":"none"}"#,
            r#"{"do":"route"}"#,
            r#"{"do":"drop"}"#,
            r#"{"do":"fail"}"#,
            r#"{"do":"err"}"#,
            r#"{"do":"copy","obj":{"k":"v\n"}}"#,
        ],
    );
    let verdicts: Vec<_> = outcomes.iter().map(|o| o.verdict).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Edit,
            Verdict::Keep,
            Verdict::Keep,
            Verdict::Drop,
            Verdict::Fail,
            Verdict::Fail,
            Verdict::Edit
        ]
    );
    assert_eq!(
        outcomes[0].records,
        [
            Record::set("a", "{\"x\":[1]}"),
            Record::set("s", r#""quote \" backslash \\ newline \n""#),
            Record::set("i", "-9223372036854775808"),
            Record::set("b", "true"),
            Record::remove("gone"),
            Record::rename("from", "to.here"),
            Record::route("audit"),
        ]
    );
    assert!(outcomes[1].records.is_empty());
    assert_eq!(outcomes[2].records, [Record::route("audit")]);
    assert!(outcomes[3].records.is_empty());
    assert_eq!(outcomes[4].records, [Record::fail("nope")]);
    assert_eq!(outcomes[5].records, [Record::fail("bad event")]);
    assert_eq!(
        outcomes[6].records,
        [
            Record::set("copy", r#"{"k":"v\n"}"#),
            Record::set("s", r#""copy""#)
        ]
    );
}

#[test]
fn filters_may_fail_events() {
    fn check(event: &Event) -> Result<bool, &'static str> {
        match event.get_i64("n") {
            Some(n) => Ok(n > 0),
            None => Err("no n"),
        }
    }
    let outcomes =
        Harness::projected(&["n"]).filter_batch(check, &[r#"{"n":1}"#, r#"{"n":0}"#, "{}"]);
    assert_eq!(outcomes[0].verdict, Verdict::Keep);
    assert_eq!(outcomes[1].verdict, Verdict::Drop);
    assert_eq!(outcomes[2].verdict, Verdict::Fail);
    assert_eq!(outcomes[2].records, [Record::fail("no n")]);
}

#[test]
fn emitters_replace_events() {
    fn split(event: &Event, out: &mut Emitter) -> Result<(), String> {
        for item in event.get("items").iter().flat_map(|v| v.elements()) {
            let mut obj = out.object();
            for m in event.members().filter(|m| !m.key_eq("items")) {
                obj.member(&m);
            }
            obj.value("item", &item).str("k\"ey", "v\u{1}").i64("n", 7);
        }
        if event.has("boom") {
            return Err("boom".into());
        }
        if event.has("plain") {
            out.emit(r#"{"plain":1}"#).route("side");
        }
        Ok(())
    }
    let outcomes = Harness::full().flat_map_batch(
        split,
        &[
            r#"{"id":"a\"b","items":[1,{"x":"y"}],"t":true}"#,
            r#"{"items":[]}"#,
            r#"{"items":[1],"boom":1}"#,
            r#"{"plain":1}"#,
        ],
    );
    assert_eq!(
        outcomes[0].emitted(),
        [
            r#"{"id":"a\"b","t":true,"item":1,"k\"ey":"v\u0001","n":7}"#,
            r#"{"id":"a\"b","t":true,"item":{"x":"y"},"k\"ey":"v\u0001","n":7}"#,
        ]
    );
    assert_eq!(outcomes[0].verdict, Verdict::Replace);
    assert_eq!(outcomes[1].verdict, Verdict::Replace);
    assert!(outcomes[1].records.is_empty());
    assert!(!outcomes[1].passes());
    assert_eq!(outcomes[2].verdict, Verdict::Fail);
    assert_eq!(outcomes[2].records, [Record::fail("boom")]);
    assert_eq!(
        outcomes[3].records,
        [Record::emit(r#"{"plain":1}"#), Record::route("side")]
    );
}

#[test]
fn record_stream_is_framed_and_padded() {
    let mut edits = Edits::new();
    edits.set("ab", "1").remove("abcde").rename("a", "bb");
    let stream = edits.records();
    assert_eq!(stream.len() % 4, 0);
    // 16 + 2 + 1 -> 20; 16 + 5 -> 24; 16 + 1 + 2 -> 20.
    assert_eq!(stream.len(), 64);
    assert_eq!(
        decode_records(stream),
        [
            (0, Record::set("ab", "1")),
            (0, Record::remove("abcde")),
            (0, Record::rename("a", "bb"))
        ]
    );
    let mut out = Emitter::new();
    out.object().str("a", "b").finish();
    out.object();
    assert_eq!(out.count(), 2);
    assert_eq!(
        decode_records(out.records()),
        [(0, Record::emit(r#"{"a":"b"}"#)), (0, Record::emit("{}"))]
    );
}

#[test]
fn init_parses_params() {
    fn init(params: &Params) -> Result<(), String> {
        let n: u32 = params.require("n")?;
        if n == 0 {
            return Err("n must be positive".into());
        }
        Ok(())
    }
    assert_eq!(run_init(init, r#"{"n":"3"}"#), Ok(()));
    assert_eq!(
        run_init(init, r#"{"n":"0"}"#).unwrap_err(),
        "n must be positive"
    );
    assert_eq!(
        run_init(init, r#"{"n":3}"#).unwrap_err(),
        "parameter `n` must be a string"
    );
    assert_eq!(
        run_init(init, "[").unwrap_err(),
        "invalid parameters: expected a JSON object"
    );
    assert_eq!(run_init(|_: &Params| {}, ""), Ok(()));
}
