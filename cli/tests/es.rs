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
    (Proc(child), port)
}

/// Asks the server, through the official Python client, what index `kill9` holds for
/// `n` in `0..n`: returns (`_count`, documents per `n` as fetched by range searches).
fn stored(servers: &std::path::Path, port: u16, n: u64) -> (u64, Vec<u32>) {
    let script = format!(
        r#"
import json
from elasticsearch import Elasticsearch
es = Elasticsearch("http://127.0.0.1:{port}")
es.indices.refresh(index="kill9")
count = es.count(index="kill9")["count"]
per = [0] * {n}
for lo in range(0, {n}, 2000):
    r = es.search(index="kill9", size=10000, query={{"range": {{"n": {{"gte": lo, "lt": lo + 2000}}}}}}, source=["n"])
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

/// file → wasm filter (drop DEBUG) → elasticsearch (`create`, ids from origins). The file
/// grows while sluicebox is killed with SIGKILL at `SLUICEBOX_ES_KILLS` (default 20) random
/// moments and restarted; at the end the index must hold exactly one document per kept
/// event, none missing, none twice.
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
    eprintln!("kill9 into elasticsearch: {kills} kills, SLUICEBOX_ES_SEED={seed}");
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
"#,
            env!("CARGO_MANIFEST_DIR")
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
        let (count, per) = stored(&servers, port, total);
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
