//! The guest SDKs agree with the native filters: `drop_debug`, `tag_service` and
//! `field_paths` of every SDK (Rust, C, Zig, AssemblyScript, Go, and the JavaScript and Python
//! WIT components), as built by
//! `scripts/build-guests.sh` into `target/guests/<language>/`, give the output of the native
//! `DropWhere::drop_debug()`, `TagService` and [`FieldPaths`] byte for byte, on generated logs
//! and on hand-picked awkward events.

use std::path::PathBuf;
use std::sync::Arc;

use sluicebox::wasm::{LoadOptions, WasmModule};
use sluicebox::{DropWhere, Filter, PipelineConfig, TagService, WasmConfig};

use crate::common::*;

const LANGUAGES: [&str; 7] = ["rust", "c", "zig", "assemblyscript", "go", "js", "python"];

/// The languages whose modules need WASI preview 1 (the Go runtime does); the others must
/// load without it.
const WASI_LANGUAGES: [&str; 1] = ["go"];

/// Escapes, wrong types, duplicates, unicode, a `msg` holding an object, and one line the host
/// rejects (a lone surrogate) so dead letters are compared too.
const AWKWARD: &str = r#"{"level":"DEBUG","msg":"plain"}
{"level":"DEBU\u0047","msg":"escaped G"}
{"level":"\u0044\u0045\u0042\u0055\u0047"}
{"level":"DEBUG\u0000"}
{"level":"DEBUG ","msg":"trailing space"}
{"level":"debug"}
{"level":"DEBUG2"}
{"level":42,"msg":"number level"}
{"level":{"x":"DEBUG"},"msg":"object level"}
{"level":["DEBUG"],"msg":"array level"}
{"level":null,"msg":null}
{"level":true,"msg":false}
{"msg":"no level"}
{}
{"nested":{"level":"DEBUG"}}
{"le\u0076el":"DEBUG","msg":"escaped key"}
{"level":"INFO","level":"DEBUG","msg":"duplicate, last wins"}
{"level":"DEBUG","level":"INFO","msg":"duplicate, last is INFO"}
{"level":"WARN","msg":{"text":"hi","n":[1,2,{"a":null}]}}
{"level":"ÉTÉ ☃ 😀","msg":"unicode é \ud83d\ude00 \u00e9"}
{"level":"\ud83d","msg":"lone surrogate"}
{"msg":"tab\there \"quoted\"","message":"already there"}
{"m\u0073g":"escaped msg key","env":{"deep":1}}
   {"level" : "DEBUG" , "msg" : "spaces"}   
{"msg":1e400}
{"":{"":1},"a":{"":{"b":2},"":3},"e\\":4}
{"":{"a":5},"a":{"":6}}
{"level":"L","http":{"status":7},"u":{"😀":{"x":8}},"sp ace":9,"a\\":{"b":10}}
{"\u0065\u005c":11,"a\u005c":{"\u0062":12},"\u0075":{"\ud83d\ude00":{"x":"13"}}}
{"a":{"":{"b":1},"":{"c":1}}}
{"a":5,"":7}
{"le\u0076el":"esc","http":{"st\u0061tus":null}}
{"a":{"":{"b":{"deep":[1,{"x":2}]}}}}
"#;

fn guest(language: &str, name: &str) -> Arc<WasmModule> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target
        .join("guests")
        .join(language)
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/build-guests.sh` first (scripts/test.sh does)",
        path.display()
    );
    let options = LoadOptions {
        wasi: WASI_LANGUAGES.contains(&language),
        cache_dir: None,
    };
    WasmModule::load(&path, &options).unwrap_or_else(|e| panic!("{language} {name}: {e}"))
}

/// Runs `name` of every SDK and `native` over the same input, in batches of 1,024 and of 7,
/// and checks the outputs and dead letters are identical.
fn all_match_native(name: &str, native: fn() -> Box<dyn Filter>) {
    let mut input = sluicebox::loggen::corpus(2000, 3);
    input.extend_from_slice(AWKWARD.as_bytes());
    // Compiling a module takes a while (about a second for Go's 2 MB): once per language.
    let modules: Vec<_> = LANGUAGES.iter().map(|l| (*l, guest(l, name))).collect();
    for config in [
        PipelineConfig::default(),
        PipelineConfig {
            max_batch_events: 7,
            ..Default::default()
        },
    ] {
        let (nat_r, nat_out, nat_dead) = run_with(config.clone(), vec![native()], &input);
        assert_eq!(nat_dead.len(), 1, "only the lone surrogate is rejected");
        for (language, module) in &modules {
            // A generous deadline: this test compares answers, not speed. With the default
            // 100 ms a loaded machine made some Go calls time out (isolation then kept the
            // outputs identical, but `filter_failures` depended on the machine's speed).
            // With 60 s, any failed call is a real defect of the guest or the host.
            let f = WasmConfig {
                deadline: std::time::Duration::from_secs(60),
                ..Default::default()
            }
            .build(module)
            .unwrap();
            let (r, out, dead) = run_with(config.clone(), vec![Box::new(f)], &input);
            assert!(
                out == nat_out,
                "{language} {name} differs from the native filter (batches of {})",
                config.max_batch_events
            );
            assert_eq!(dead.len(), nat_dead.len(), "{language} {name}");
            assert_eq!(dead[0]["raw"], nat_dead[0]["raw"], "{language} {name}");
            assert_eq!(
                (r.stats.emitted, r.stats.filtered, r.stats.filter_failures),
                (
                    nat_r.stats.emitted,
                    nat_r.stats.filtered,
                    nat_r.stats.filter_failures
                ),
                "{language} {name}"
            );
        }
    }
}

#[test]
fn drop_debug_of_every_sdk_matches_the_native_filter() {
    all_match_native("drop_debug", || Box::new(DropWhere::drop_debug()));
}

#[test]
fn tag_service_of_every_sdk_matches_the_native_filter() {
    all_match_native("tag_service", || Box::new(TagService));
}

/// The paths every SDK's `field_paths` example probes (docs/abi.md section 10: `\x` is `x`, a
/// final `\` is itself, components may be empty).
const PATHS: [&str; 10] = [
    ".",
    "a..b",
    ".a",
    "a.",
    "e\\",
    "\\l\\e\\v\\e\\l",
    "http.st\\atus",
    "u.😀.x",
    "sp ace",
    "a\\\\.b",
];

/// `field_paths` with the host's own lookups: `"k"` gets one letter per path of [`PATHS`]
/// (its kind, `MNFTDSOA` by `sluicebox_abi::KIND_*`), and each value found is copied to
/// `"v<i>"`.
struct FieldPaths;

impl Filter for FieldPaths {
    fn name(&self) -> &str {
        "native:field_paths"
    }
    fn process(
        &mut self,
        events: &sluicebox::Events<'_>,
        d: &mut sluicebox::Decisions,
    ) -> sluicebox::Result<()> {
        for i in 0..events.len() {
            let e = events.get(i);
            let found: Vec<_> = PATHS.iter().map(|p| e.field(p)).collect();
            let k: String = found
                .iter()
                .map(|f| b"MNFTDSOA"[f.map_or(0, |f| f.kind.abi() as usize)] as char)
                .collect();
            d.set(i, "k", &format!("\"{k}\""));
            for (n, f) in found.iter().enumerate() {
                if let Some(f) = f {
                    let raw = String::from_utf8_lossy(f.raw);
                    let text = if f.kind == sluicebox::FieldKind::String {
                        format!("\"{raw}\"")
                    } else {
                        raw.into_owned()
                    };
                    d.set(i, &format!("v{n}"), &text);
                }
            }
        }
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn Filter>> {
        Ok(Box::new(FieldPaths))
    }
}

#[test]
fn field_paths_of_every_sdk_match_the_host() {
    all_match_native("field_paths", || Box::new(FieldPaths));
}

#[test]
fn every_sdk_declares_the_fields_it_reads() {
    for language in LANGUAGES {
        for (name, field) in [("drop_debug", "level"), ("tag_service", "msg")] {
            let f = WasmConfig::default().build(&guest(language, name)).unwrap();
            assert_eq!(
                f.declared_fields(),
                Some(vec![field.to_string()]),
                "{language} {name}"
            );
        }
    }
}
