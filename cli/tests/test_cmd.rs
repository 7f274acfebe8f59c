//! `sluicebox test`: golden cases through the real pipeline, with the hand-written WAT
//! modules of examples/wat (so these tests need no guest toolchain).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WAT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/wat");

/// A fresh directory for one test, holding copies of the WAT modules.
fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluicebox-test-cmd-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("modules")).unwrap();
    for m in ["drop_debug.wat", "tag_service.wat"] {
        std::fs::copy(Path::new(WAT).join(m), d.join("modules").join(m)).unwrap();
    }
    d
}

fn test(args: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluicebox"));
    c.args(["test", "--no-cache"]);
    c.args(args);
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const PASSING: &str = r#"
module = "modules/drop_debug.wat"

[[case]]
name = "drops DEBUG, keeps the rest byte for byte"
input = [
    '{"level":"DEBUG","msg":"a"}',
    '{"level":"INFO", "msg":"b"}',
    '{"msg":"no level"}',
]
output = [
    '{"level":"INFO", "msg":"b"}',
    '{"msg":"no level"}',
]

[[case]]
name = "tags"
module = "modules/tag_service.wat"
input_file = "in.ndjson"
output_file = "expected/out.ndjson"
"#;

#[test]
fn passing_cases_exit_0() {
    let d = dir("pass");
    std::fs::write(d.join("in.ndjson"), "{\"msg\":\"hi\"}\n{\"x\":1}\n").unwrap();
    std::fs::create_dir_all(d.join("expected")).unwrap();
    std::fs::write(
        d.join("expected/out.ndjson"),
        "{\"env\":\"prod\",\"message\":\"hi\"}\n{\"x\":1,\"env\":\"prod\"}\n",
    )
    .unwrap();
    let case = d.join("cases.toml");
    std::fs::write(&case, PASSING).unwrap();
    let o = test(&[&case]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("ok   "), "{out}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    // A directory runs every case file in it.
    let o = test(&[&d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

#[test]
fn a_mismatch_prints_a_line_diff_and_exits_1_and_update_fixes_it() {
    let d = dir("mismatch");
    let case = d.join("c.toml");
    let original = r#"# a comment the update keeps
module = "modules/drop_debug.wat"

[[case]]
name = "wrong expectation"
input = ['{"level":"DEBUG"}', '{"level":"INFO"}', '{"oops": tru}']
output = ['{"level":"DEBUG"}', '{"level":"INFO"}']
"#;
    std::fs::write(&case, original).unwrap();
    let o = test(&[&case]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}{}", text(&o.stderr));
    assert!(out.contains("FAIL"), "{out}");
    assert!(out.contains("wrong expectation"), "{out}");
    assert!(out.contains("output: expected 2 line(s), got 1"), "{out}");
    assert!(out.contains(r#"- expected: {"level":"DEBUG"}"#), "{out}");
    assert!(out.contains(r#"+ got:      {"level":"INFO"}"#), "{out}");
    assert!(out.contains(r#"- expected: {"level":"INFO"}"#), "{out}");
    assert!(out.contains("+ got:      (no line)"), "{out}");
    // The invalid line is a dead letter that the case did not expect.
    assert!(
        out.contains("dead_letters: expected 0 line(s), got 1"),
        "{out}"
    );
    assert!(out.contains("- expected: (no line)"), "{out}");

    let mut update = Command::new(env!("CARGO_BIN_EXE_sluicebox"));
    let o = update
        .args(["test", "--no-cache", "--update"])
        .arg(&case)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("1 updated"), "{}", text(&o.stdout));
    let rewritten = std::fs::read_to_string(&case).unwrap();
    assert!(
        rewritten.starts_with("# a comment the update keeps"),
        "{rewritten}"
    );
    assert!(rewritten.contains("dead_letters = ["), "{rewritten}");
    assert!(
        rewritten.contains("not valid JSON") || rewritten.contains("reason"),
        "{rewritten}"
    );
    let o = test(&[&case]);
    assert_eq!(o.status.code(), Some(0), "{}{rewritten}", text(&o.stdout));
}

#[test]
fn update_writes_expectation_files_and_records_missing_output() {
    let d = dir("update-files");
    std::fs::write(d.join("in.ndjson"), "{\"msg\":\"m\"}\n").unwrap();
    std::fs::write(d.join("out.ndjson"), "stale\n").unwrap();
    let case = d.join("c.toml");
    std::fs::write(
        &case,
        r#"
module = "modules/tag_service.wat"
[[case]]
name = "from files"
input_file = "in.ndjson"
output_file = "out.ndjson"
[[case]]
name = "no output yet"
input = ['{"a":1}']
"#,
    )
    .unwrap();
    // Without --update a missing `output` is a malformed case.
    let o = test(&[&case]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("case no output yet: key `output`"), "{err}");

    let o = Command::new(env!("CARGO_BIN_EXE_sluicebox"))
        .args(["test", "--no-cache", "--update"])
        .arg(&case)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(d.join("out.ndjson")).unwrap(),
        "{\"env\":\"prod\",\"message\":\"m\"}\n"
    );
    let rewritten = std::fs::read_to_string(&case).unwrap();
    assert!(rewritten.contains(r#"{"a":1,"env":"prod"}"#), "{rewritten}");
    assert_eq!(test(&[&case]).status.code(), Some(0));
}

/// Each malformed file: the message names the file, the case and the key.
#[test]
fn malformed_case_files_exit_2_naming_file_case_and_key() {
    let d = dir("malformed");
    let bad: [(&str, &str, &[&str]); 9] = [
        (
            "syntax.toml",
            "module = \n",
            &["syntax.toml", "not valid TOML"],
        ),
        (
            "nocase.toml",
            "module = \"modules/drop_debug.wat\"\n",
            &["nocase.toml", "key `case`"],
        ),
        (
            "unknown.toml",
            "[[case]]\nname = \"a\"\nmodule = \"modules/drop_debug.wat\"\ninputs = []\noutput = []\n",
            &["unknown.toml", "case a", "key `inputs`", "unknown key"],
        ),
        (
            "noinput.toml",
            "[[case]]\nname = \"b\"\nmodule = \"modules/drop_debug.wat\"\noutput = []\n",
            &["case b", "key `input`", "missing"],
        ),
        (
            "notstring.toml",
            "[[case]]\nname = \"c\"\nmodule = \"modules/drop_debug.wat\"\ninput = [1]\noutput = []\n",
            &["case c", "key `input[0]`", "must be a string"],
        ),
        (
            "both.toml",
            "[[case]]\nname = \"d\"\nmodule = \"modules/drop_debug.wat\"\ninput = []\ninput_file = \"x\"\noutput = []\n",
            &["case d", "key `input`", "not both"],
        ),
        (
            "nomodule.toml",
            "[[case]]\nname = \"e\"\ninput = []\noutput = []\n",
            &["case e", "key `module`", "missing"],
        ),
        (
            "missingmodule.toml",
            "[[case]]\nname = \"f\"\nmodule = \"modules/nope.wasm\"\ninput = []\noutput = []\n",
            &["case f", "key `module`", "nope.wasm"],
        ),
        (
            "params.toml",
            "module = \"modules/drop_debug.wat\"\n[[case]]\nname = \"g\"\nparams = { n = 3 }\ninput = []\noutput = []\n",
            &["case g", "key `params.n`", "must be a string"],
        ),
    ];
    for (name, body, wants) in bad {
        let f = d.join(name);
        std::fs::write(&f, body).unwrap();
        let o = test(&[&f]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}{}", text(&o.stdout));
        assert_eq!(err.lines().count(), 1, "{name}: one clear line: {err}");
        for w in wants {
            assert!(err.contains(w), "{name}: {err:?} should mention {w:?}");
        }
    }
    let o = test(&[&d.join("absent.toml")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("absent.toml"));
}
