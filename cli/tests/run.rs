//! `sluicebox run` and `sluicebox validate` end to end.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::*;

fn wat(name: &str) -> String {
    format!("{}/../examples/wat/{name}.wat", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_reports_every_problem_with_component_and_key() {
    let d = dir("validate");
    let cfg = d.join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "state"
[sources.app]
type = "generator"
eventz = 5
[sources.idle]
type = "stdin"
[transforms.a]
type = "wasm"
inputs = ["b"]
module = "{drop}"
[transforms.b]
type = "wasm"
inputs = ["a"]
module = "{drop}"
[transforms.broken]
type = "wasm"
inputs = ["idle"]
module = "/nonexistent.wasm"
[sinks.out]
type = "file"
inputs = ["nope", "idle"]
path = "out.ndjson"
"#,
            drop = wat("drop_debug")
        ),
    )
    .unwrap();
    let out = bin().arg("validate").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "sources.app: unknown field `eventz`",
        "transforms.broken: key `module`",
        "out: inputs: input \"nope\" names no source or transform",
        "the inputs form a cycle",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn run_reads_a_file_once_filters_and_balances_with_a_dead_letter() {
    let d = dir("once");
    let input = d.join("in.ndjson");
    let mut text = String::new();
    for i in 0..1000 {
        let level = if i % 4 == 0 { "DEBUG" } else { "INFO" };
        text.push_str(&format!("{{\"level\":\"{level}\",\"n\":{i}}}\n"));
        if i % 100 == 7 {
            text.push_str("not json\n");
        }
    }
    std::fs::write(&input, text).unwrap();
    let cfg = d.join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "state"
[api]
enabled = false
[sources.app]
type = "file"
include = ["in.ndjson"]
follow = false
[transforms.drop_debug]
type = "wasm"
inputs = ["app"]
module = "{}"
[sinks.out]
type = "file"
inputs = ["drop_debug"]
path = "out.ndjson"
"#,
            wat("drop_debug")
        ),
    )
    .unwrap();
    let out = bin().arg("run").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let written = std::fs::read_to_string(d.join("out.ndjson")).unwrap();
    assert_eq!(written.lines().count(), 750, "{err}");
    let dead = std::fs::read_to_string(d.join("state/dead_letter.ndjson")).unwrap();
    assert_eq!(dead.lines().count(), 10, "{err}");
    let first: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(first["component"], "app");
    assert_eq!(first["raw"], "not json");
    assert!(
        err.contains("drop_debug           received=1000 sent=750 discarded=250"),
        "{err}"
    );
}

#[test]
fn sigterm_drains_and_metrics_agree_with_the_run() {
    let d = dir("sigterm");
    let port = free_port();
    let cfg = d.join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "state"
[api]
address = "127.0.0.1:{port}"
[sources.gen]
type = "generator"
events = 0
rate = 20000
[transforms.drop_debug]
type = "wasm"
inputs = ["gen"]
module = "{}"
[sinks.out]
type = "file"
inputs = ["drop_debug"]
path = "out.ndjson"
"#,
            wat("drop_debug")
        ),
    )
    .unwrap();
    let mut child = bin()
        .arg("run")
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Scrape /metrics once the endpoint is up.
    let started = Instant::now();
    let metrics = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            if body.contains("component_received_events_total") {
                break body;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no /metrics");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("component_received_events_total{component_id=\"drop_debug\",component_kind=\"transform\",component_type=\"wasm\"}"),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_millis(500));
    // SIGTERM: drain and exit 0.
    let t0 = Instant::now();
    signal(child.id(), "15");
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "drain took {:?}",
        t0.elapsed()
    );
    assert!(err.contains("stopping: draining"), "{err}");
    // Every event the transform sent is in the file.
    let sent: u64 = err
        .lines()
        .find(|l| l.contains("transform drop_debug"))
        .and_then(|l| l.split("sent=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no drop_debug line in {err}"));
    let written = std::fs::read_to_string(d.join("out.ndjson")).unwrap();
    assert!(sent > 0);
    assert_eq!(written.lines().count() as u64, sent, "{err}");
}

#[test]
fn the_shipped_demo_pipeline_validates() {
    let cfg = format!(
        "{}/../examples/pipelines/demo.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = bin().arg("validate").arg(&cfg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped routing example (examples/pipelines/routing.toml), with its paths moved to a
/// temporary directory: ERROR events reach `errors` only, the others `rest`, the archive
/// gets every generated event, and nothing is dead-lettered.
#[test]
fn the_shipped_routing_pipeline_routes_by_level() {
    let d = dir("routing");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let shipped = std::fs::read_to_string(format!("{examples}/pipelines/routing.toml")).unwrap();
    let cfg = shipped
        .replace("../../target/pipeline-routing", d.to_str().unwrap())
        .replace("\"../wat/", &format!("\"{examples}/wat/"))
        .replace("127.0.0.1:8687", &format!("127.0.0.1:{}", free_port()))
        .replace("events = 200000", "events = 20000");
    assert_ne!(cfg, shipped);
    let path = d.join("routing.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = bin().arg("run").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join(f))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (all, errors, rest) = (
        lines("all.ndjson"),
        lines("errors.ndjson"),
        lines("rest.ndjson"),
    );
    assert_eq!(all.len(), 20000);
    let level = |v: &serde_json::Value| v["level"].as_str().unwrap_or("").to_string();
    let want_errors = all.iter().filter(|v| level(v) == "ERROR").count();
    let want_rest = all
        .iter()
        .filter(|v| level(v) != "ERROR" && level(v) != "DEBUG")
        .count();
    assert!(want_errors > 0 && want_rest > 0);
    assert_eq!(errors.len(), want_errors);
    assert!(errors.iter().all(|v| level(v) == "ERROR"));
    assert_eq!(rest.len(), want_rest);
    assert!(
        rest.iter()
            .all(|v| level(v) != "ERROR" && level(v) != "DEBUG")
    );
    assert!(lines("dead_letter.ndjson").is_empty());
}

/// Reloads under load: 50 SIGHUPs, each after a new version of the module was put in place,
/// while a generator sends 100k events/s. Nothing is lost (every event the source sent is
/// in the file), each worker's output shows the versions in order, the last version is
/// running at the end, a module that does not load is reported and changes nothing, and a
/// source change drains and starts the graph again.
#[test]
fn reloads_swap_modules_without_loss() {
    let d = dir("reload");
    let template = std::fs::read_to_string(wat("tag_service")).unwrap();
    assert!(template.contains(r#"\"prod\""#));
    // The version is the value tag_service sets: "r000" ... "r050" (same length as "prod").
    let put = |version: &str| {
        let text = template.replace(r#"\"prod\""#, &format!(r#"\"{version}\""#));
        std::fs::write(d.join("next.wat"), text).unwrap();
        std::fs::rename(d.join("next.wat"), d.join("tag.wat")).unwrap();
    };
    put("r000");
    let cfg = d.join("p.toml");
    let config = |rate: u32| {
        format!(
            r#"
data_dir = "state"
[api]
enabled = false
[sources.gen]
type = "generator"
events = 0
rate = {rate}
[transforms.tag]
type = "wasm"
inputs = ["gen"]
module = "tag.wat"
[sinks.out]
type = "file"
inputs = ["tag"]
path = "out.ndjson"
"#
        )
    };
    std::fs::write(&cfg, config(100_000)).unwrap();
    let mut child = bin()
        .arg("run")
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = d.join("out.ndjson");
    let started = Instant::now();
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "no output");
        std::thread::sleep(Duration::from_millis(50));
    }
    for v in 1..=50 {
        put(&format!("r{v:03}"));
        signal(child.id(), "1");
        std::thread::sleep(Duration::from_millis(60));
    }
    std::thread::sleep(Duration::from_millis(300));
    // A module that does not load: reported, the running one stays.
    std::fs::write(d.join("tag.wat"), "(module (func $broken").unwrap();
    signal(child.id(), "1");
    std::thread::sleep(Duration::from_millis(300));
    let before_restart = std::fs::read_to_string(&out).unwrap().lines().count();
    // A source change: drained, then started again from the new config (the module is
    // fixed first, so the new graph builds).
    put("r051");
    std::fs::write(&cfg, config(50_000)).unwrap();
    signal(child.id(), "1");
    let started = Instant::now();
    loop {
        let now = std::fs::read_to_string(&out).unwrap().lines().count();
        let text = std::fs::read_to_string(&out).unwrap();
        if now > before_restart && text.contains("r051") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no output after the restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    signal(child.id(), "15");
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(
        err.contains("reload failed, still running the previous config"),
        "{err}"
    );
    assert!(err.contains("draining to start again"), "{err}");
    assert!(err.contains("started again from the new config"), "{err}");
    let swaps = err.matches("swapped tag").count();
    assert!((40..=51).contains(&swaps), "{swaps} swaps: {err}");
    // No loss: the source's sent counts (one report per graph) are the file's lines.
    let sum = |prefix: &str| -> u64 {
        err.lines()
            .filter(|l| l.contains(prefix))
            .map(|l| {
                l.split("sent=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(err.matches("source    gen").count(), 2, "{err}");
    assert_eq!(sum("source    gen") as usize, lines.len(), "{err}");
    assert_eq!(sum("sink      out") as usize, lines.len(), "{err}");
    assert!(!err.contains("do not balance"), "{err}");
    // Versions only move forward (one worker keeps the order), and every swap shows.
    let versions: Vec<u32> = lines
        .iter()
        .map(|v| v["env"].as_str().unwrap()[1..].parse().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]),
        "a version went back"
    );
    let mut seen = versions.clone();
    seen.dedup();
    eprintln!(
        "reload: {swaps} swaps, {} versions seen, {} events, {} in the first graph",
        seen.len(),
        lines.len(),
        before_restart
    );
    assert!(seen.len() >= 40, "versions seen: {seen:?}");
    assert_eq!(*seen.last().unwrap(), 51);
    assert!(seen.contains(&50));
}

/// `/metrics` read by an independent parser (the OpenMetrics parser of the Python
/// `prometheus_client` package, which refuses malformed exposition text), after a file has
/// been read whole: every component's counters equal the run's final summary line.
#[test]
fn metrics_parse_as_openmetrics_and_agree_with_the_final_counts() {
    let Some(python) = servers_python() else {
        eprintln!("prometheus-client not installed (bash scripts/install-servers.sh): skipping");
        return;
    };
    let d = dir("openmetrics");
    let mut text = String::new();
    for i in 0..5000 {
        let level = ["DEBUG", "INFO", "WARN"][i % 3];
        text.push_str(&format!("{{\"level\":\"{level}\",\"n\":{i}}}\n"));
        if i % 1000 == 5 {
            text.push_str("{broken\n");
        }
    }
    std::fs::write(d.join("in.ndjson"), text).unwrap();
    let port = free_port();
    let cfg = d.join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "state"
[api]
address = "127.0.0.1:{port}"
[sources.app]
type = "file"
include = ["in.ndjson"]
[transforms.drop_debug]
type = "wasm"
inputs = ["app"]
module = "{}"
[sinks.out]
type = "file"
inputs = ["drop_debug"]
path = "out.ndjson"
"#,
            wat("drop_debug")
        ),
    )
    .unwrap();
    let mut child = bin()
        .arg("run")
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sink has written everything the filter keeps.
    let t = Instant::now();
    loop {
        let m = scrape(port);
        if metric_sum(&m, &["component_sent_events_total", "component_id=\"out\""]) >= 3333.0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "not done:\n{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Over HTTP/1.0, so that the body is not chunked.
    let plain = {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s.split_once("\r\n\r\n")
            .map_or(String::new(), |x| x.1.to_string())
    };
    assert!(!plain.is_empty());
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        if s.name in ("component_received_events_total", "component_sent_events_total",
                      "component_discarded_events_total", "dlq_events_total"):
            key = s.name + "|" + s.labels["component_id"] + "|" + s.labels.get("intentional", "")
            out[key] = s.value
print(json.dumps(out))
"#;
    let mut py = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        py.stdin
            .take()
            .unwrap()
            .write_all(plain.as_bytes())
            .unwrap();
    }
    let parsed = py.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{plain}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let v: std::collections::HashMap<String, f64> = serde_json::from_slice(&parsed.stdout).unwrap();
    signal(child.id(), "15");
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    // `sluicebox: <kind> <name> received=R sent=S discarded=X dead_lettered=D`
    let mut checked = 0;
    for line in err.lines().filter(|l| l.contains(" received=")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let name = words[2];
        let num = |k: &str| -> f64 {
            words
                .iter()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{k} in {line}"))
        };
        let get = |metric: &str, intentional: &str| -> f64 {
            *v.get(&format!("{metric}|{name}|{intentional}"))
                .unwrap_or_else(|| panic!("no {metric} for {name} in {v:?}"))
        };
        assert_eq!(
            get("component_received_events_total", ""),
            num("received="),
            "{line}"
        );
        assert_eq!(
            get("component_sent_events_total", ""),
            num("sent="),
            "{line}"
        );
        assert_eq!(
            get("component_discarded_events_total", "true")
                + get("component_discarded_events_total", "false"),
            num("discarded="),
            "{line}"
        );
        assert_eq!(get("dlq_events_total", ""), num("dead_lettered="), "{line}");
        checked += 1;
    }
    assert!(checked >= 3, "{err}");
    assert!(err.contains("app                  received=5005"), "{err}");
}

/// With its stderr closed (the log collector gone, `2>&1 | head`), the agent still drains
/// and exits 0 on SIGTERM: writing its log lines must not panic the thread that writes
/// them (the signal handler's "stopping" line used to, and the drain never started).
#[test]
fn sigterm_drains_even_with_stderr_closed() {
    let d = dir("stderr-closed");
    let cfg = d.join("p.toml");
    std::fs::write(
        &cfg,
        r#"
data_dir = "state"
[api]
enabled = false
[sources.gen]
type = "generator"
rate = 2000
[sinks.out]
type = "file"
inputs = ["gen"]
path = "out.ndjson"
"#,
    )
    .unwrap();
    let mut child = bin()
        .arg("run")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(child.stderr.take());
    std::thread::sleep(Duration::from_millis(200));
    signal(child.id(), "TERM");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("no exit 30 s after SIGTERM with stderr closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let written = std::fs::read_to_string(d.join("out.ndjson")).unwrap();
    assert!(written.lines().count() > 100, "{}", written.lines().count());
}
