//! The `sluicebox` command end to end: a generated mixed corpus through `filter`.

mod common;
use common::bin;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sluicebox-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// `sluicebox bench ARGS --json`, which must succeed: its one JSON object.
fn bench_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = bin()
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The build's target directory (where `scripts/build-guests.sh` puts `guests/`).
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))
        })
}

/// Parses `received=N emitted=N ...` from the summary line.
fn counter(stderr: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    let at = stderr
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {stderr}"))
        + key.len();
    stderr[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn mixed_corpus_through_the_cli() {
    let good = sluicebox::loggen::corpus(5000, 11);
    let mut input = Vec::new();
    let mut bad_lines = Vec::new();
    let mut expected = Vec::new();
    for (i, l) in good.split_inclusive(|&b| b == b'\n').enumerate() {
        let line_no = input.iter().filter(|&&b| b == b'\n').count() + 1;
        if i % 500 == 7 {
            input.extend_from_slice(b"{\"oops\": tru}\n");
            bad_lines.push(line_no as u64);
            continue;
        }
        if i % 700 == 3 {
            input.extend_from_slice(b"\n");
        }
        input.extend_from_slice(l);
        expected.extend_from_slice(l);
    }
    let (inp, out, dl) = (tmp("in.ndjson"), tmp("out.ndjson"), tmp("dead.ndjson"));
    std::fs::write(&inp, &input).unwrap();
    let o = bin()
        .args(["filter", "--input"])
        .arg(&inp)
        .arg("--output")
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dl)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        expected,
        "passthrough must be byte-identical"
    );
    let (r, e, f, d) = (
        counter(&stderr, "received"),
        counter(&stderr, "emitted"),
        counter(&stderr, "filtered"),
        counter(&stderr, "dead_lettered"),
    );
    assert_eq!(r, e + f + d);
    assert_eq!(d, bad_lines.len() as u64);
    let dead = std::fs::read_to_string(&dl).unwrap();
    let lines: Vec<u64> = dead
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(lines, bad_lines);
    assert!(stderr.contains("MB/s"));
}

#[test]
fn wasm_module_through_the_cli_and_load_errors_exit_2() {
    let input = sluicebox::loggen::corpus(2000, 1);
    let o = bin()
        .args([
            "filter",
            "--module",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/wat/drop_debug.wat"
            ),
            "--no-cache",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let mut stdin = c.stdin.take().unwrap();
            let writer = std::thread::spawn(move || stdin.write_all(&input));
            let out = c.wait_with_output();
            writer.join().unwrap()?;
            out
        })
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(!out.contains("\"DEBUG\""));
    assert!(out.lines().count() > 1000);

    let bad = tmp("bad.wasm");
    std::fs::write(&bad, b"definitely not wasm").unwrap();
    let o = bin()
        .args(["filter", "--module"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("bad magic"), "{err}");

    let o = bin()
        .args(["filter", "--input", "/nonexistent/file"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

/// `sluicebox bench --json`: one JSON object with the corpus, the machine and every
/// scenario under its stable name, each with positive figures.
#[test]
fn bench_json_names_every_scenario() {
    let guests = target_dir().join("guests");
    let v = bench_json(&[
        "--events".as_ref(),
        "3000".as_ref(),
        "--rounds".as_ref(),
        "1".as_ref(),
        "--guests".as_ref(),
        guests.as_os_str(),
    ]);
    assert_eq!(v["corpus"]["events"], 3000);
    assert!(v["corpus"]["bytes"].as_u64().unwrap() > 3000 * 200);
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    let results = v["results"].as_array().unwrap();
    for name in [
        "baseline.memcpy",
        "baseline.simd_json_tape",
        "baseline.simd_json_value",
        "baseline.serde_json_roundtrip",
        "pipeline.passthrough",
        "pipeline.native_drop_debug",
        "pipeline.wasm_noop",
        "pipeline.wasm_drop_debug",
        "pipeline.wasm_tag_service",
        "runtime.wasm_drop_debug",
        "tail.read_once_100",
        "tail.follow_100",
        "tail.follow_100_no_ckpt",
    ] {
        let r = results
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no scenario {name} in {v}"));
        for field in ["events_per_s", "mb_per_s", "ns_per_event"] {
            assert!(r[field].as_f64().unwrap() > 0.0, "{name}.{field}: {r}");
        }
    }
}

/// Review of hostile input: `--output` naming the input emptied it (created before the read),
/// and one file as both output and dead letter interleaved two writers; both exited 0.
#[test]
fn the_same_file_twice_is_refused() {
    let input = tmp("same.ndjson");
    std::fs::write(&input, b"{\"a\":1}\nx\n").unwrap();
    let other = tmp("same-out.ndjson");
    let dotted = input.parent().unwrap().join(".").join("same.ndjson");
    for args in [
        vec![
            "--input",
            input.to_str().unwrap(),
            "--output",
            input.to_str().unwrap(),
        ],
        vec![
            "--input",
            input.to_str().unwrap(),
            "--dead-letter",
            dotted.to_str().unwrap(),
        ],
        vec![
            "--input",
            input.to_str().unwrap(),
            "--output",
            other.to_str().unwrap(),
            "--dead-letter",
            other.to_str().unwrap(),
        ],
    ] {
        let o = bin().arg("filter").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("are the same file"), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), b"{\"a\":1}\nx\n");
    }
    // Sharing a device such as /dev/null is fine.
    let o = bin()
        .args(["filter", "--input", input.to_str().unwrap()])
        .args(["--output", "/dev/null", "--dead-letter", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
}

/// Review of hostile input: std's `Stdout` treats EBADF as success, so output to a
/// standard output opened read-only was lost with exit 0. It is now a failed run.
#[test]
fn an_unwritable_standard_output_fails_the_run() {
    let input = tmp("ro.ndjson");
    std::fs::write(&input, b"{\"a\":1}\n").unwrap();
    let o = bin()
        .args(["filter", "--input", input.to_str().unwrap()])
        .stdout(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("writing output"), "{err}");
}

/// A reader that goes away (`sluicebox bench --json | head -c 100`) ends the command quietly
/// with the SIGPIPE status, never with a panic.
#[test]
fn a_closed_standard_output_ends_quietly() {
    let mut child = bin()
        .args(["bench", "--events", "2000", "--rounds", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// `sluicebox bench --config` with a flat-map filter on two workers: every component's
/// row balances (received + created = sent + discarded + failed + dead), the events the
/// filter made are counted, and the report states the pipeline file's worker count, not
/// `--workers`.
#[test]
fn bench_config_counts_created_events_and_states_the_files_workers() {
    let explode = target_dir().join("guests/rust/explode.wasm");
    assert!(
        explode.exists(),
        "{} (run scripts/build-guests.sh)",
        explode.display()
    );
    // Of every five events, three have two items, one an empty array (dropped), one none.
    let corpus = tmp("explode-items.ndjson");
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&match i % 5 {
            0 => format!("{{\"n\":{i},\"items\":[]}}\n"),
            1 => format!("{{\"n\":{i}}}\n"),
            _ => format!("{{\"n\":{i},\"items\":[1,2]}}\n"),
        });
        if i % 10 == 0 {
            // Blank and whitespace-only lines are not events, to the pipeline or the bench.
            text.push_str("\n \t\r\n");
        }
    }
    std::fs::write(&corpus, text).unwrap();
    let config = tmp("explode.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nworkers = 2\n[sources.in]\ntype = \"stdin\"\n\
             [transforms.ex]\ntype = \"wasm\"\ninputs = [\"in\"]\nmodule = {:?}\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"ex\"]\n",
            explode.display().to_string()
        ),
    )
    .unwrap();
    let v = bench_json(&[
        "--rounds".as_ref(),
        "1".as_ref(),
        "--workers".as_ref(),
        "1".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--corpus".as_ref(),
        corpus.as_os_str(),
    ]);
    assert_eq!(v["config"]["workers"], 2);
    assert_eq!(v["corpus"]["events"], 30);
    let comps = v["graph"]["components"].as_array().unwrap();
    for c in comps {
        let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
        assert_eq!(
            n("received") + n("created"),
            n("sent") + n("discarded") + n("failed") + n("dead_lettered"),
            "{c}"
        );
    }
    let get = |name: &str| comps.iter().find(|c| c["component"] == name).unwrap();
    // 18 events with two items: 36 out, 18 made; 6 with an empty array dropped; 6 passed.
    assert_eq!(get("ex")["received"], 30);
    assert_eq!(get("ex")["created"], 18);
    assert_eq!(get("ex")["discarded"], 6);
    assert_eq!(get("ex")["sent"], 42);
    assert_eq!(get("out")["received"], 42);
    // The table says the same, with the file's workers in the header.
    let out = bin()
        .args(["bench", "--rounds", "1", "--workers", "1", "--config"])
        .arg(&config)
        .arg("--corpus")
        .arg(&corpus)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 worker(s) (the pipeline file's [runtime] workers)"),
        "{err}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("created"), "{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.trim_start().starts_with("transform") && l.contains(" ex "))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[2..8], ["30", "18", "42", "6", "0", "0"], "{table}");
}

/// `sluicebox bench --config` refuses a file `sluicebox validate` refuses, listing every
/// problem (its sources and sinks are checked before they are replaced), and checking a good
/// file neither listens on its ports, nor writes its files, nor needs its servers.
#[test]
fn bench_config_checks_the_file_as_validate_does() {
    let bad = tmp("bench-bad.toml");
    std::fs::write(
        &bad,
        "[sources.in]\ntype = \"stdin\"\nbogus = 1\n[sources.p]\ntype = \"carrier_pigeon\"\n\
         [sinks.h]\ntype = \"http\"\ninputs = [\"in\", \"p\"]\n",
    )
    .unwrap();
    let out = bin()
        .args(["bench", "--events", "100", "--rounds", "1", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for want in [
        "sources.in: unknown field `bogus`",
        "sources.p: key `type`: unknown source type",
        "sinks.h: missing field `uri`",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    // A good file whose source's port is taken and whose sink writes a file.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let written = tmp("bench-should-not-exist.ndjson");
    let good = tmp("bench-good.toml");
    std::fs::write(
        &good,
        format!(
            "[sources.t]\ntype = \"tcp\"\naddress = \"{}\"\n[sinks.f]\ntype = \"file\"\n\
             inputs = [\"t\"]\npath = {:?}\n[sinks.h]\ntype = \"http\"\ninputs = [\"t\"]\n\
             uri = \"http://127.0.0.1:9/\"\n",
            busy.local_addr().unwrap(),
            written.display().to_string()
        ),
    )
    .unwrap();
    let v = bench_json(&[
        "--events".as_ref(),
        "100".as_ref(),
        "--rounds".as_ref(),
        "1".as_ref(),
        "--config".as_ref(),
        good.as_os_str(),
    ]);
    let comps = v["graph"]["components"].as_array().unwrap();
    let f = comps.iter().find(|c| c["component"] == "f").unwrap();
    assert_eq!(f["sent"], 100);
    assert!(!written.exists(), "the bench wrote {}", written.display());
}

/// `sluicebox bench --config`: the shipped routing pipeline is measured next to the
/// baselines, with each component's counts (its sources fed the corpus, its sinks
/// blackholes) and the filters' time.
#[test]
fn bench_config_measures_a_users_pipeline() {
    let v = bench_json(&[
        "--events".as_ref(),
        "3000".as_ref(),
        "--rounds".as_ref(),
        "1".as_ref(),
        "--config".as_ref(),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/pipelines/routing.toml"
        )
        .as_ref(),
    ]);
    let names: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"config.routing"), "{names:?}");
    assert!(names.contains(&"baseline.simd_json_value"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("pipeline.")),
        "{names:?}"
    );
    let comps = v["graph"]["components"].as_array().unwrap();
    let get = |name: &str| comps.iter().find(|c| c["component"] == name).unwrap();
    assert_eq!(get("logs")["received"], 3000);
    assert_eq!(get("archive")["sent"], 3000);
    let dropped = get("drop_debug")["discarded"].as_u64().unwrap();
    let routed = get("errors")["sent"].as_u64().unwrap() + get("rest")["sent"].as_u64().unwrap();
    assert!(dropped > 0);
    assert_eq!(dropped + routed, 3000);
    assert!(get("by_level")["own_ns_per_event"].as_f64().unwrap() > 0.0);
    // The source's own time is its parse stage; a blackhole sink has none.
    assert!(get("logs")["own_ns_per_event"].as_f64().unwrap() > 0.0);
    assert!(get("archive")["own_ns_per_event"].is_null());
    assert!(v["graph"]["parse_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["machine"]["simd"], sluicebox::parse::simd_level());
}
