//! `sluicebox test`: golden cases for filter modules of any language. A case file (TOML)
//! lists cases; each runs its input events through the real pipeline with one module and
//! compares what comes out, line by line, with the expected events and dead letters. The
//! format is documented in docs/testing.md.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use sluicebox::wasm::{LoadOptions, WasmModule, default_cache_dir};
use sluicebox::{Kind, Pipeline, PipelineConfig, WasmConfig, WriterSink};
use toml_edit::{Array, DocumentMut, Item, Table, Value};

use crate::Fail;

#[derive(Args)]
pub(crate) struct TestArgs {
    /// Case files (TOML), or directories: every `*.toml` file directly inside is a case file.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Rewrite the expected events and dead letters of every failing case with what the
    /// module gives (inline, or into the files the case names).
    #[arg(long)]
    update: bool,
    /// Do not use the compiled-module cache.
    #[arg(long)]
    no_cache: bool,
}

/// The keys a case file may have at the top, and in each `[[case]]`.
const FILE_KEYS: [&str; 4] = ["module", "wasi", "params", "case"];
const CASE_KEYS: [&str; 10] = [
    "name",
    "module",
    "wasi",
    "params",
    "input",
    "input_file",
    "output",
    "output_file",
    "dead_letters",
    "dead_letters_file",
];

/// One case, read and checked.
struct Case {
    name: String,
    module: PathBuf,
    wasi: bool,
    params: BTreeMap<String, String>,
    input: Vec<u8>,
    output: Expected,
    dead_letters: Expected,
}

/// Expected lines: inline in the case file, in a file, or not given.
struct Expected {
    lines: Vec<String>,
    /// `None` for inline lines; the file the lines came from otherwise.
    file: Option<PathBuf>,
    /// Whether the case gives them at all.
    given: bool,
}

/// What a case gave: the emitted events and the dead letters, one string per line.
struct Got {
    output: Vec<String>,
    dead_letters: Vec<String>,
}

/// A malformed case file: the message names the file, the case and the key.
fn malformed(file: &Path, case: Option<&str>, key: &str, problem: impl std::fmt::Display) -> Fail {
    let at = match case {
        Some(c) => format!("{}: case {c}: key `{key}`", file.display()),
        None => format!("{}: key `{key}`", file.display()),
    };
    Fail::usage(format!("{at}: {problem}"))
}

pub(crate) fn run(a: TestArgs) -> Result<(), Fail> {
    let files = case_files(&a.paths)?;
    let cache_dir = if a.no_cache {
        None
    } else {
        default_cache_dir()
    };
    let mut modules: HashMap<(PathBuf, bool), Arc<WasmModule>> = HashMap::new();
    let (mut passed, mut failed, mut updated) = (0usize, 0usize, 0usize);
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Fail::usage(format!("{}: cannot read: {e}", file.display())))?;
        let mut doc: DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| toml_error(file, &text, &e))?;
        let cases = read_cases(file, &doc, a.update)?;
        let mut rewrite = false;
        for (i, case) in cases.iter().enumerate() {
            let label = format!("{}: {}", file.display(), case.name);
            let module = load(&mut modules, case, file, cache_dir.clone())?;
            let got = run_case(case, &module, file)?;
            let diff = diff_case(case, &got);
            // With --update, a case that does not give `output` yet gets it even when empty.
            if diff.is_empty() && (case.output.given || !a.update) {
                passed += 1;
                outln!("ok   {label}");
                continue;
            }
            if a.update {
                update_case(&mut doc, i, case, &got, file)?;
                rewrite = true;
                updated += 1;
                outln!("updated {label}");
                continue;
            }
            failed += 1;
            outln!("FAIL {label}");
            out!("{diff}");
        }
        if rewrite {
            std::fs::write(file, doc.to_string())
                .map_err(|e| Fail::io(&format!("cannot rewrite {}", file.display()), e))?;
        }
    }
    let mut summary = format!("test result: {passed} passed, {failed} failed");
    if a.update {
        summary.push_str(&format!(", {updated} updated"));
    }
    outln!("{summary} ({} case files)", files.len());
    if failed > 0 {
        return Err(Fail {
            code: 1,
            message: format!("{failed} case(s) failed"),
        });
    }
    Ok(())
}

/// A TOML syntax error on one line: the file, the line and column, and the parser's message.
fn toml_error(file: &Path, text: &str, e: &toml_edit::TomlError) -> Fail {
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    let message = e.message().trim().replace('\n', " ");
    Fail::usage(format!(
        "{}: not valid TOML at line {line}, column {col}: {message}",
        file.display()
    ))
}

/// The case files named by `paths`, directories expanded to their `*.toml` files (sorted).
fn case_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Fail> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p)
                .map_err(|e| Fail::usage(format!("{}: cannot list: {e}", p.display())))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "toml"))
                .collect();
            if found.is_empty() {
                return Err(Fail::usage(format!(
                    "{}: no case files (*.toml) in this directory",
                    p.display()
                )));
            }
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(Fail::usage(format!("{}: no such case file", p.display())));
        }
    }
    Ok(files)
}

/// Reads and checks every case of a file. Missing expectations are an error unless updating.
fn read_cases(file: &Path, doc: &DocumentMut, update: bool) -> Result<Vec<Case>, Fail> {
    let top = doc.as_table();
    for (key, _) in top.iter() {
        if !FILE_KEYS.contains(&key) {
            return Err(malformed(
                file,
                None,
                key,
                format!("unknown key (expected one of {})", FILE_KEYS.join(", ")),
            ));
        }
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let default_module = opt_str(top, "module", file, None)?;
    let default_wasi = opt_bool(top, "wasi", file, None)?.unwrap_or(false);
    let default_params = params(top, file, None)?.unwrap_or_default();
    let tables = match top.get("case") {
        Some(Item::ArrayOfTables(t)) if !t.is_empty() => t,
        Some(_) => {
            return Err(malformed(
                file,
                None,
                "case",
                "must be an array of tables: one `[[case]]` section per case",
            ));
        }
        None => {
            return Err(malformed(
                file,
                None,
                "case",
                "missing: add a `[[case]]` section per case",
            ));
        }
    };
    let mut cases = Vec::new();
    let mut names = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let fallback = format!("#{}", i + 1);
        let name = match t.get("name") {
            None => fallback.clone(),
            Some(item) => match item.as_str() {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => {
                    return Err(malformed(
                        file,
                        Some(fallback.as_str()),
                        "name",
                        "must be a non-empty string",
                    ));
                }
            },
        };
        let at = Some(name.as_str());
        if names.contains(&name) {
            return Err(malformed(file, at, "name", "two cases have this name"));
        }
        names.push(name.clone());
        for (key, _) in t.iter() {
            if !CASE_KEYS.contains(&key) {
                return Err(malformed(
                    file,
                    at,
                    key,
                    format!("unknown key (expected one of {})", CASE_KEYS.join(", ")),
                ));
            }
        }
        let module = match opt_str(t, "module", file, at)?.or(default_module.clone()) {
            Some(m) => dir.join(m),
            None => {
                return Err(malformed(
                    file,
                    at,
                    "module",
                    "missing: give the module path (relative to the case file) in the case or at the top of the file",
                ));
            }
        };
        let wasi = opt_bool(t, "wasi", file, at)?.unwrap_or(default_wasi);
        let mut case_params = default_params.clone();
        case_params.extend(params(t, file, at)?.unwrap_or_default());
        let input = lines(t, "input", dir, file, at)?.ok_or_else(|| {
            malformed(
                file,
                at,
                "input",
                "missing: give `input` (an array of JSON lines) or `input_file`",
            )
        })?;
        let mut input_bytes = Vec::new();
        for l in &input.lines {
            input_bytes.extend_from_slice(l.as_bytes());
            input_bytes.push(b'\n');
        }
        let output = match lines(t, "output", dir, file, at)? {
            Some(o) => o,
            None if update => Expected::none(),
            None => {
                return Err(malformed(
                    file,
                    at,
                    "output",
                    "missing: give `output` (the expected events) or `output_file`, or run with --update to record them",
                ));
            }
        };
        let dead_letters = lines(t, "dead_letters", dir, file, at)?.unwrap_or_else(Expected::none);
        cases.push(Case {
            name,
            module,
            wasi,
            params: case_params,
            input: input_bytes,
            output,
            dead_letters,
        });
    }
    Ok(cases)
}

impl Expected {
    fn none() -> Self {
        Expected {
            lines: Vec::new(),
            file: None,
            given: false,
        }
    }
}

fn opt_str(t: &Table, key: &str, file: &Path, case: Option<&str>) -> Result<Option<String>, Fail> {
    match t.get(key) {
        None => Ok(None),
        Some(item) => match item.as_str() {
            Some(s) => Ok(Some(s.to_string())),
            None => Err(malformed(file, case, key, "must be a string")),
        },
    }
}

fn opt_bool(t: &Table, key: &str, file: &Path, case: Option<&str>) -> Result<Option<bool>, Fail> {
    match t.get(key) {
        None => Ok(None),
        Some(item) => match item.as_bool() {
            Some(b) => Ok(Some(b)),
            None => Err(malformed(file, case, key, "must be true or false")),
        },
    }
}

/// `params`: a table of strings, given to the module's init.
fn params(
    t: &Table,
    file: &Path,
    case: Option<&str>,
) -> Result<Option<BTreeMap<String, String>>, Fail> {
    let Some(item) = t.get("params") else {
        return Ok(None);
    };
    let Some(table) = item.as_table_like() else {
        return Err(malformed(
            file,
            case,
            "params",
            "must be a table of strings (`params = { key = \"value\" }`)",
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in table.iter() {
        match v.as_str() {
            Some(s) => {
                out.insert(k.to_string(), s.to_string());
            }
            None => {
                return Err(malformed(
                    file,
                    case,
                    &format!("params.{k}"),
                    "must be a string (write numbers and booleans in quotes)",
                ));
            }
        }
    }
    Ok(Some(out))
}

/// The lines of `key` (an inline array of strings) or `key_file` (a path to an NDJSON file,
/// relative to the case file); `None` when neither is given.
fn lines(
    t: &Table,
    key: &str,
    dir: &Path,
    file: &Path,
    case: Option<&str>,
) -> Result<Option<Expected>, Fail> {
    let file_key = format!("{key}_file");
    match (t.get(key), t.get(&file_key)) {
        (Some(_), Some(_)) => Err(malformed(
            file,
            case,
            key,
            format!("give `{key}` or `{file_key}`, not both"),
        )),
        (None, None) => Ok(None),
        (Some(item), None) => {
            let Some(array) = item.as_array() else {
                return Err(malformed(
                    file,
                    case,
                    key,
                    "must be an array of strings, one JSON line each",
                ));
            };
            let mut out = Vec::new();
            for (i, v) in array.iter().enumerate() {
                let Some(s) = v.as_str() else {
                    return Err(malformed(
                        file,
                        case,
                        &format!("{key}[{i}]"),
                        "must be a string (one JSON line)",
                    ));
                };
                if s.contains(['\n', '\r']) {
                    return Err(malformed(
                        file,
                        case,
                        &format!("{key}[{i}]"),
                        "holds a line break: give one event per string",
                    ));
                }
                out.push(s.to_string());
            }
            Ok(Some(Expected {
                lines: out,
                file: None,
                given: true,
            }))
        }
        (None, Some(item)) => {
            let Some(rel) = item.as_str() else {
                return Err(malformed(
                    file,
                    case,
                    &file_key,
                    "must be a string (a path relative to the case file)",
                ));
            };
            let path = dir.join(rel);
            let text = std::fs::read(&path).map_err(|e| {
                malformed(
                    file,
                    case,
                    &file_key,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let text = String::from_utf8(text).map_err(|_| {
                malformed(
                    file,
                    case,
                    &file_key,
                    format!("{} is not UTF-8", path.display()),
                )
            })?;
            Ok(Some(Expected {
                lines: split_lines(&text),
                file: Some(path),
                given: true,
            }))
        }
    }
}

/// NDJSON text as lines, without their line feeds (a final line feed ends the last line).
fn split_lines(text: &str) -> Vec<String> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() {
        return Vec::new();
    }
    body.split('\n').map(str::to_string).collect()
}

fn load(
    modules: &mut HashMap<(PathBuf, bool), Arc<WasmModule>>,
    case: &Case,
    file: &Path,
    cache_dir: Option<PathBuf>,
) -> Result<Arc<WasmModule>, Fail> {
    let key = (case.module.clone(), case.wasi);
    if let Some(m) = modules.get(&key) {
        return Ok(m.clone());
    }
    let options = LoadOptions {
        cache_dir,
        wasi: case.wasi,
    };
    let m = WasmModule::load(&case.module, &options).map_err(|e| {
        malformed(
            file,
            Some(case.name.as_str()),
            "module",
            format!("cannot load {}: {e}", case.module.display()),
        )
    })?;
    modules.insert(key, m.clone());
    Ok(m)
}

/// Runs the case's input through a pipeline with the module, collecting both outputs.
fn run_case(case: &Case, module: &Arc<WasmModule>, file: &Path) -> Result<Got, Fail> {
    let config = WasmConfig {
        params: case.params.clone(),
        ..WasmConfig::default()
    };
    let filter = config.build(module).map_err(|e| {
        let key = if e.kind() == Kind::ModuleInit {
            "params"
        } else {
            "module"
        };
        malformed(file, Some(case.name.as_str()), key, e)
    })?;
    let mut pipeline = Pipeline::new(PipelineConfig::default())?.with_filter(filter);
    let (mut out, mut dead) = (Vec::new(), Vec::new());
    let _report = pipeline.run_with_dead_letter(
        &case.input[..],
        WriterSink::new(&mut out),
        WriterSink::new(&mut dead).described_as("writing dead letters"),
    )?;
    Ok(Got {
        output: split_lines(&String::from_utf8_lossy(&out)),
        dead_letters: split_lines(&String::from_utf8_lossy(&dead)),
    })
}

/// The differences between the expected and the actual lines of a case, as text (empty when
/// they match).
fn diff_case(case: &Case, got: &Got) -> String {
    let mut text = String::new();
    diff_lines("output", &case.output.lines, &got.output, &mut text);
    diff_lines(
        "dead_letters",
        &case.dead_letters.lines,
        &got.dead_letters,
        &mut text,
    );
    text
}

/// Line by line: each line that differs, with the expected and the actual text.
fn diff_lines(what: &str, expected: &[String], got: &[String], text: &mut String) {
    if expected == got {
        return;
    }
    text.push_str(&format!(
        "  {what}: expected {} line(s), got {}\n",
        expected.len(),
        got.len()
    ));
    for i in 0..expected.len().max(got.len()) {
        let (e, g) = (expected.get(i), got.get(i));
        if e == g {
            continue;
        }
        text.push_str(&format!("    line {}:\n", i + 1));
        text.push_str(&format!("      - expected: {}\n", show(e)));
        text.push_str(&format!("      + got:      {}\n", show(g)));
    }
}

fn show(line: Option<&String>) -> String {
    match line {
        Some(l) => l.clone(),
        None => "(no line)".to_string(),
    }
}

/// Writes what the case got as its expectations: into the files it names, or inline.
fn update_case(
    doc: &mut DocumentMut,
    i: usize,
    case: &Case,
    got: &Got,
    file: &Path,
) -> Result<(), Fail> {
    let Some(table) = doc
        .get_mut("case")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|t| t.get_mut(i))
    else {
        return Err(malformed(
            file,
            Some(case.name.as_str()),
            "case",
            "changed while the test ran",
        ));
    };
    for (key, expected, lines) in [
        ("output", &case.output, &got.output),
        ("dead_letters", &case.dead_letters, &got.dead_letters),
    ] {
        if !expected.given && lines.is_empty() && key == "dead_letters" {
            continue;
        }
        match &expected.file {
            Some(path) => {
                let mut body = String::new();
                for l in lines {
                    body.push_str(l);
                    body.push('\n');
                }
                std::fs::write(path, body)
                    .map_err(|e| Fail::io(&format!("cannot rewrite {}", path.display()), e))?;
            }
            None => {
                table.insert(key, Item::Value(Value::Array(inline_array(lines))));
            }
        }
    }
    Ok(())
}

/// A TOML array of strings, one per line.
fn inline_array(lines: &[String]) -> Array {
    let mut array: Array = lines.iter().map(String::as_str).collect();
    if !array.is_empty() {
        for v in array.iter_mut() {
            v.decor_mut().set_prefix("\n    ");
        }
        array.set_trailing_comma(true);
        array.set_trailing("\n");
    }
    array
}
