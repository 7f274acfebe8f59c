//! `sluicebox run` into a real Elasticsearch-API server (noida-db), killed with SIGKILL at
//! random moments: the stored documents are checked with the official Python client.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::*;

/// `target/servers` (written by scripts/install-servers.sh).
fn servers() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let s = target.join("servers");
    s.join("bin/noida-db").exists().then_some(s)
}

/// A child process killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn noida(servers: &std::path::Path, data: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    (noida_on(servers, data, port), port)
}

/// noida-db on `port`, keeping its data in `data` (saved when it stops on SIGTERM).
fn noida_on(servers: &std::path::Path, data: &std::path::Path, port: u16) -> Proc {
    let child = Command::new(servers.join("bin/noida-db"))
        .args(["start", "--only", "elasticsearch", "--elasticsearch-port"])
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "noida-db did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// Asks the server, through the official Python client, what `index` holds for `n` in
/// `0..n`: returns (`_count`, documents per `n` as fetched by range searches).
fn stored(servers: &std::path::Path, port: u16, index: &str, n: u64) -> (u64, Vec<u32>) {
    let script = format!(
        r#"
import json
from elasticsearch import Elasticsearch
es = Elasticsearch("http://127.0.0.1:{port}")
es.indices.refresh(index="{index}")
count = es.count(index="{index}")["count"]
per = [0] * {n}
for lo in range(0, {n}, 2000):
    r = es.search(index="{index}", size=10000, query={{"range": {{"n": {{"gte": lo, "lt": lo + 2000}}}}}}, source=["n"])
    for h in r["hits"]["hits"]:
        per[h["_source"]["n"]] += 1
print(json.dumps({{"count": count, "per": per}}))
"#
    );
    // The venv's own python: through the bin/ symlink Python does not find the venv.
    let out = Command::new(servers.join("venv/bin/python"))
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let per = v["per"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    (v["count"].as_u64().unwrap(), per)
}

/// xorshift64: the kill moments, reproducible from the printed seed.
fn next(r: &mut u64) -> u64 {
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    *r
}

/// file → wasm filter (drop DEBUG) → elasticsearch (`create`, ids from origins,
/// `SLUICEBOX_ES_IN_FLIGHT` requests in flight, default 3). The file grows while sluicebox
/// is killed with SIGKILL at `SLUICEBOX_ES_KILLS` (default 20) random moments and
/// restarted; at the end the index must hold exactly one document per kept event, none
/// missing, none twice.
#[test]
fn kill9_into_elasticsearch_stores_each_kept_event_exactly_once() {
    let Some(servers) = servers() else {
        eprintln!("noida-db not installed (bash scripts/install-servers.sh): skipping");
        return;
    };
    let kills: usize = std::env::var("SLUICEBOX_ES_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("SLUICEBOX_ES_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    // Several requests in flight: their replies resolve batches out of order, and the
    // checkpoint must still move only over a delivered prefix.
    let in_flight: usize = std::env::var("SLUICEBOX_ES_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    eprintln!(
        "kill9 into elasticsearch: {kills} kills, max_in_flight {in_flight}, SLUICEBOX_ES_SEED={seed}"
    );
    let d = dir("es-kill9");
    let (_server, port) = noida(&servers, &d.join("es-data"));
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
include = ["logs/*.log"]
checkpoint_interval_ms = 50
glob_interval_ms = 100
[transforms.drop_debug]
type = "wasm"
inputs = ["app"]
module = "{}/../examples/wat/drop_debug.wat"
[sinks.es]
type = "elasticsearch"
inputs = ["drop_debug"]
endpoints = ["http://127.0.0.1:{port}"]
index = "kill9"
batch_max_events = 400
linger_ms = 50
retry_initial_ms = 50
retry_max_ms = 500
max_in_flight = {}
"#,
            env!("CARGO_MANIFEST_DIR"),
            in_flight
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    // A writer appends 40,000 events over about 8 s, a quarter of them DEBUG.
    let total: u64 = 40_000;
    let log = d.join("logs/app.log");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        for chunk in 0..(total / 500) {
            let mut s = String::new();
            for n in chunk * 500..(chunk + 1) * 500 {
                let level = if n % 4 == 0 { "DEBUG" } else { "INFO" };
                s.push_str(&format!(
                    "{{\"n\":{n},\"level\":\"{level}\",\"msg\":\"request {n} served\"}}\n"
                ));
            }
            f.write_all(s.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let start = || {
        Proc(
            bin()
                .arg("run")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut rng = seed;
    for _ in 0..kills {
        let p = start();
        // 150..650 ms: long enough to start and deliver, short enough to cut requests.
        std::thread::sleep(Duration::from_millis(150 + next(&mut rng) % 500));
        signal(p.0.id(), "KILL");
        drop(p);
    }
    writer.join().unwrap();
    let kept = total - total.div_ceil(4);
    let last = start();
    let t = Instant::now();
    let (count, per) = loop {
        let (count, per) = stored(&servers, port, "kill9", total);
        if count >= kept || t.elapsed() > Duration::from_secs(90) {
            break (count, per);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    signal(last.0.id(), "TERM");
    drop(last);
    let missing: Vec<usize> = (0..total as usize)
        .filter(|&n| n % 4 != 0 && per[n] == 0)
        .collect();
    let twice: Vec<usize> = (0..total as usize).filter(|&n| per[n] > 1).collect();
    let debug: Vec<usize> = (0..total as usize)
        .filter(|&n| n % 4 == 0 && per[n] > 0)
        .collect();
    eprintln!(
        "kill9 into elasticsearch: {kills} kills, _count {count}, kept {kept}, missing {}, twice {}, DEBUG stored {}",
        missing.len(),
        twice.len(),
        debug.len()
    );
    assert!(
        missing.is_empty(),
        "missing (first 20): {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        twice.is_empty(),
        "stored twice (first 20): {:?}",
        &twice[..twice.len().min(20)]
    );
    assert!(
        debug.is_empty(),
        "DEBUG stored: {:?}",
        &debug[..debug.len().min(20)]
    );
    assert_eq!(count, kept);
    assert_eq!(per.iter().map(|&c| u64::from(c)).sum::<u64>(), kept);
}

/// file → elasticsearch while the server is down for `SLUICEBOX_ES_OUTAGE_SECS` (default
/// 10; the issue's figure is 60) and then back: nothing is lost or stored twice, the file
/// source stops reading at its in-flight budget (4 MiB here) while 40 MB are written
/// behind it, the agent's memory stays bounded, and the retries and connection errors show
/// in `/metrics`. The server is really stopped (SIGTERM; noida-db saves its data and is
/// started again on the same port).
#[test]
fn elasticsearch_down_then_back_loses_nothing_in_bounded_memory() {
    let Some(servers) = servers() else {
        eprintln!("noida-db not installed (bash scripts/install-servers.sh): skipping");
        return;
    };
    let outage: u64 = std::env::var("SLUICEBOX_ES_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let d = dir("es-outage");
    let data = d.join("es-data");
    let (server, port) = noida(&servers, &data);
    let api = free_port();
    let budget: u64 = 4 << 20;
    let cfg = d.join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "state"
[api]
address = "127.0.0.1:{api}"
[sources.app]
type = "file"
include = ["logs/*.log"]
in_flight_bytes = {budget}
checkpoint_interval_ms = 100
glob_interval_ms = 100
[sinks.es]
type = "elasticsearch"
inputs = ["app"]
endpoints = ["http://127.0.0.1:{port}"]
index = "outage"
batch_max_events = 500
linger_ms = 50
retry_initial_ms = 100
retry_max_ms = 2000
request_timeout_ms = 2000
"#
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let log = d.join("logs/app.log");
    // Events of about 1 KB, numbered.
    let pad = "x".repeat(960);
    let write = |from: u64, to: u64| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut s = String::new();
        for n in from..to {
            s.push_str(&format!("{{\"n\":{n},\"msg\":\"{pad}\"}}\n"));
        }
        f.write_all(s.as_bytes()).unwrap();
    };
    let agent_log = d.join("agent.log");
    let agent = Proc(
        bin()
            .arg("run")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = agent.0.id();
    let log_tail = || {
        let s = std::fs::read_to_string(&agent_log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    // Up: 5,000 events flow.
    let before: u64 = 5_000;
    write(0, before);
    let t = Instant::now();
    while stored_count(port, "outage") < before {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "first events not stored; the agent's log ends:\n{}",
            log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_up = rss(pid);
    // Down: SIGTERM (noida-db saves its data), then 35,000 events (about 34 MB) written
    // during the first half of the outage.
    let mut server = server;
    signal(server.0.id(), "TERM");
    let t = Instant::now();
    while server.0.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "noida-db did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let total: u64 = 40_000;
    let down = Instant::now();
    let (mut peak, mut read_peak) = (0u64, 0f64);
    let mut next = before;
    while down.elapsed() < Duration::from_secs(outage) {
        if next < total {
            let to = (next + 2_500).min(total);
            write(next, to);
            next = to;
        }
        peak = peak.max(rss(pid));
        let m = scrape(api);
        read_peak = read_peak.max(metric_sum(
            &m,
            &["component_received_bytes_total", "component_id=\"app\""],
        ));
        std::thread::sleep(Duration::from_millis(250));
    }
    write(next, total);
    let during = scrape(api);
    // Back, on the same port and data.
    let _server = noida_on(&servers, &data, port);
    let t = Instant::now();
    while stored_count(port, "outage") < total && t.elapsed() < Duration::from_secs(120) {
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    // The server counts a document before the sink has read the reply that acknowledges
    // it: give the last reply a moment to be counted as sent.
    let sent = |m: &str| metric_sum(m, &["component_sent_events_total", "component_id=\"es\""]);
    let t = Instant::now();
    let mut after = scrape(api);
    while sent(&after) < total as f64 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        after = scrape(api);
    }
    signal(pid, "TERM");
    drop(agent);
    let (count, per) = stored(&servers, port, "outage", total);
    let missing = per.iter().filter(|&&c| c == 0).count();
    let twice = per.iter().filter(|&&c| c > 1).count();
    let retries = metric_sum(&during, &["component_retries_total", "component_id=\"es\""]);
    let errors = metric_sum(&during, &["component_errors_total", "component_id=\"es\""]);
    let event_bytes = 1_000f64; // per event, about
    eprintln!(
        "elasticsearch down {outage} s: stored {count} of {total}, missing {missing}, twice {twice}; \
         RSS {:.1} MiB up, peak {:.1} MiB; read by the source during the outage at most {:.1} MB \
         of {:.1} MB written; retries {retries}, errors {errors}",
        rss_up as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        read_peak / 1e6,
        total as f64 * event_bytes / 1e6,
    );
    assert_eq!((missing, twice), (0, 0), "lost or stored twice");
    assert_eq!(count, total);
    assert!(retries >= 2.0, "retries visible in /metrics: {retries}");
    assert!(
        errors >= 1.0,
        "connection errors visible in /metrics: {errors}"
    );
    // The source read at most what was delivered before the outage, plus its budget and a
    // batch: the rest waited in the file.
    let bound = before as f64 * event_bytes * 1.1 + budget as f64 + (1 << 20) as f64;
    assert!(
        read_peak <= bound,
        "the source read {read_peak} bytes during the outage (bound {bound})"
    );
    // Memory: what the agent held when up, plus the in-flight budget and the sink's held
    // request (both bounded), with room for the allocator.
    assert!(
        peak <= rss_up + 4 * budget + (16 << 20),
        "peak RSS {peak} vs {rss_up} when up"
    );
    assert!(
        metric_sum(
            &after,
            &["component_sent_events_total", "component_id=\"es\""]
        ) >= total as f64
    );
}

/// `_count` of `index` through a plain HTTP request (0 while the server is away).
fn stored_count(port: u16, index: &str) -> u64 {
    use std::io::{Read, Write};
    let ask = |method: &str, path: &str| -> Option<String> {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .ok()?;
        let mut s = String::new();
        c.read_to_string(&mut s).ok()?;
        Some(s)
    };
    ask("POST", &format!("/{index}/_refresh"));
    ask("GET", &format!("/{index}/_count"))
        .and_then(|s| {
            let i = s.find("\"count\":")? + 8;
            s[i..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// `sluicebox run` with the default `[dead_letter]`: the items Elasticsearch refuses (a
/// mapping conflict) land in the run's dead letter with the sink's name, the status and
/// the reason, the summary balances, and the file source's checkpoint moves past them (a
/// second run reads nothing again).
#[test]
fn refused_items_go_to_the_runs_dead_letter_and_acknowledge_the_source() {
    let Some(servers) = servers() else {
        eprintln!("noida-db not installed (bash scripts/install-servers.sh): skipping");
        return;
    };
    let d = dir("es-dead-letter");
    let (_server, port) = noida(&servers, &d.join("es-data"));
    let mut input = String::new();
    for i in 0..8 {
        if i == 3 || i == 6 {
            input.push_str(&format!("{{\"i\":{i},\"v\":{{\"x\":1}}}}\n"));
        } else {
            input.push_str(&format!("{{\"i\":{i},\"v\":{i}}}\n"));
        }
    }
    std::fs::write(d.join("in.ndjson"), input).unwrap();
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
[sinks.es]
type = "elasticsearch"
inputs = ["app"]
endpoints = ["http://127.0.0.1:{port}"]
index = "dl"
linger_ms = 50
batch_max_events = 4
"#
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = bin().arg("run").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("first run: {:?}\n{err}", t.elapsed());
    assert!(out.status.success(), "{err}");
    assert_eq!(stored_count(port, "dl"), 6, "{err}");
    let dead_path = d.join("state/dead_letter.ndjson");
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<u64> = dead
        .iter()
        .map(|d| {
            let raw: serde_json::Value = serde_json::from_str(d["raw"].as_str().unwrap()).unwrap();
            raw["i"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids, vec![3, 6], "{dead:?}");
    assert_eq!(
        (dead[0]["line"].as_u64(), dead[1]["line"].as_u64()),
        (Some(4), Some(7))
    );
    for d in &dead {
        assert_eq!(d["component"], "es", "{d}");
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("elasticsearch refused the item: 400") && reason.contains("\"dl\""),
            "{reason}"
        );
        assert!(d["stream"].as_str().unwrap().contains("in.ndjson"), "{d}");
    }
    assert!(
        err.lines()
            .any(|l| l.contains("es ") && l.contains("received=8") && l.contains("sent=6")),
        "{err}"
    );
    assert!(!err.contains("do not balance"), "{err}");
    // Acknowledged, dead letters included: a second run reads nothing again.
    let out = bin().arg("run").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        std::fs::read_to_string(&dead_path).unwrap().lines().count(),
        2,
        "{err}"
    );
    assert_eq!(stored_count(port, "dl"), 6);
}
