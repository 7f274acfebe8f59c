//! `sluicebox run` against a real Kafka-API broker (Tansu): two members of one consumer group,
//! one killed with SIGKILL again and again, and a broker restarted mid-run. What the topics and
//! the group hold afterwards is read with an independent client (kafka-python).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::*;

/// `target/servers` (written by scripts/install-servers.sh), when Tansu is installed.
fn servers() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let s = target.join("servers");
    s.join("bin/tansu").exists().then_some(s)
}

/// A child process killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The venv's own python: through the bin/ symlink Python does not find the venv.
fn python(servers: &Path) -> Command {
    Command::new(servers.join("venv/bin/python"))
}

/// Starts Tansu on `port` with `storage` (`memory://tansu/`, or `s3://BUCKET/` with the
/// S3 endpoint in `env`) and waits until it listens.
fn tansu(servers: &Path, port: u16, storage: &str, env: &[(&str, String)], log: &Path) -> Proc {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(servers.join("bin/tansu"))
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", storage])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tansu");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "tansu did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// Runs a kafka-python script to its end with `B` = the broker address; returns its stdout.
fn py(servers: &Path, addr: &str, script: &str) -> String {
    let full = format!("import json, sys, time\nB = {addr:?}\n{script}");
    let out = python(servers).args(["-c", &full]).output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Creates topic `name` with `partitions` partitions.
fn create_topic(servers: &Path, addr: &str, name: &str, partitions: u32) {
    py(
        servers,
        addr,
        &format!(
            r#"
from kafka.admin import KafkaAdminClient, NewTopic
a = KafkaAdminClient(bootstrap_servers=B)
a.create_topics([NewTopic({name:?}, {partitions}, 1)])
a.close()
"#
        ),
    );
}

/// A kafka-python process that stays up and answers `committed` with the group's committed
/// offsets of every input partition (OffsetFetch; it never joins the group), one JSON line
/// per question, so the test can ask right before each kill without a Python start.
struct Oracle {
    _proc: Proc,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    fn start(servers: &Path, addr: &str, group: &str, partitions: u32) -> Self {
        let script = format!(
            r#"
import json, sys
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers={addr:?}, group_id={group:?}, enable_auto_commit=False)
tps = [TopicPartition("in", p) for p in range({partitions})]
for line in sys.stdin:
    if line.strip() == "committed":
        while True:
            try:
                res = [c.committed(tp) for tp in tps]
                break
            except Exception:
                # The coordinator is moving (a broker restart): ask again.
                time.sleep(0.2)
        sys.stdout.write(json.dumps([-1 if o is None else o for o in res]) + "\n")
        sys.stdout.flush()
"#
        );
        let mut child = python(servers)
            .args(["-c", &format!("import time\n{script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            _proc: Proc(child),
            stdin,
            stdout,
        }
    }

    /// The committed offset of each input partition; -1 where none is.
    fn committed(&mut self) -> Vec<i64> {
        writeln!(self.stdin, "committed").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("oracle said {line:?}: {e}"))
    }
}

/// Where each produced event landed, as the producer's acknowledgements tell it.
#[derive(Default)]
struct Produced {
    /// Event `n` → (partition, offset of its message).
    at: HashMap<u64, (usize, i64)>,
    /// Per partition, one past the highest acknowledged offset.
    ends: Vec<i64>,
    done: bool,
}

/// Starts a kafka-python producer that writes `total` events, `per_msg` NDJSON lines per
/// message, round-robin over `partitions`, paced over `secs`; a quarter of them DEBUG. Its
/// acknowledgements are read into the returned [`Produced`] as they come.
fn produce(
    servers: &Path,
    addr: &str,
    total: u64,
    per_msg: u64,
    secs: f64,
    partitions: u32,
) -> (Proc, Arc<Mutex<Produced>>) {
    let script = format!(
        r#"
import json, sys, threading, time
from kafka import KafkaProducer
out = threading.Lock()
def said(n0, part):
    def f(md):
        with out:
            sys.stdout.write(f"{{n0}} {{part}} {{md.offset}}\n")
            sys.stdout.flush()
    return f
def failed(e):
    with out:
        sys.stdout.write(f"error {{e}}\n")
        sys.stdout.flush()
p = KafkaProducer(bootstrap_servers={addr:?}, acks="all", linger_ms=5, retries=1000000,
                  max_in_flight_requests_per_connection=1, request_timeout_ms=5000,
                  reconnect_backoff_max_ms=500)
msgs = {total} // {per_msg}
start = time.time()
for m in range(msgs):
    part = m % {partitions}
    n0 = m * {per_msg}
    lines = []
    for n in range(n0, n0 + {per_msg}):
        level = "DEBUG" if n % 4 == 0 else "INFO"
        lines.append(json.dumps({{"n": n, "level": level, "msg": f"request {{n}} served"}}))
    f = p.send("in", value=("\n".join(lines) + "\n").encode(), partition=part)
    f.add_callback(said(n0, part))
    f.add_errback(failed)
    wait = start + {secs} * (m + 1) / msgs - time.time()
    if wait > 0:
        time.sleep(wait)
p.flush()
with out:
    sys.stdout.write("done\n")
    sys.stdout.flush()
"#
    );
    let mut child = python(servers)
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let produced = Arc::new(Mutex::new(Produced {
        ends: vec![0; partitions as usize],
        ..Produced::default()
    }));
    let p = produced.clone();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let line = line.unwrap();
            let mut p = p.lock().unwrap();
            if line == "done" {
                p.done = true;
                continue;
            }
            assert!(!line.starts_with("error"), "producer: {line}");
            let v: Vec<i64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let (n0, part, off) = (v[0] as u64, v[1] as usize, v[2]);
            for n in n0..n0 + per_msg {
                p.at.insert(n, (part, off));
            }
            p.ends[part] = p.ends[part].max(off + 1);
        }
    });
    (Proc(child), produced)
}

/// Reads the whole `out` topic with kafka-python: how many times each `n` is there, the
/// DEBUG events seen, and the gaps in its offsets (records the broker acknowledged to our
/// sink and no longer serves), as `[from, to)` pairs.
fn read_output(servers: &Path, addr: &str) -> (HashMap<u64, u32>, u64, Vec<(i64, i64)>) {
    let out = py(
        servers,
        addr,
        r#"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=B, enable_auto_commit=False, auto_offset_reset="earliest")
tp = TopicPartition("out", 0)
c.assign([tp])
c.seek_to_beginning(tp)
per, debug, quiet, gaps, nxt = {}, 0, 0, [], 0
while quiet < 4:
    got = c.poll(timeout_ms=500)
    quiet = 0 if got else quiet + 1
    for recs in got.values():
        for r in recs:
            if r.offset != nxt:
                gaps.append([nxt, r.offset])
            nxt = r.offset + 1
            e = json.loads(r.value)
            per[e["n"]] = per.get(e["n"], 0) + 1
            debug += e["level"] == "DEBUG"
print(json.dumps({"per": per, "debug": debug, "gaps": gaps}))
"#,
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let per = v["per"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.parse().unwrap(), c.as_u64().unwrap() as u32))
        .collect();
    let gaps = serde_json::from_value(v["gaps"].clone()).unwrap();
    (per, v["debug"].as_u64().unwrap(), gaps)
}

/// xorshift64: the kill moments, reproducible from the printed seed.
fn next(r: &mut u64) -> u64 {
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    *r
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    env_or(
        "SLUICEBOX_KAFKA_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    )
}

/// kafka source (broker `addr`) → wasm drop_debug → kafka sink (broker `out`), as member
/// `name` of group `failover`.
fn write_config(d: &Path, name: &str, addr: &str, out: &str) -> PathBuf {
    write_config_api(d, name, addr, out, None)
}

/// [`write_config`] with `/metrics` on `api` when given.
fn write_config_api(d: &Path, name: &str, addr: &str, out: &str, api: Option<u16>) -> PathBuf {
    let api = match api {
        Some(p) => format!("address = \"127.0.0.1:{p}\""),
        None => "enabled = false".into(),
    };
    let cfg = d.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "state-{name}"
[api]
{api}
[sources.in]
type = "kafka"
brokers = ["{addr}"]
topics = ["in"]
group_id = "failover"
start_from = "earliest"
session_timeout_ms = 2000
heartbeat_interval_ms = 300
commit_interval_ms = 200
[transforms.drop_debug]
type = "wasm"
inputs = ["in"]
module = "{}/../examples/wat/drop_debug.wat"
[sinks.out]
type = "kafka"
inputs = ["drop_debug"]
brokers = ["{out}"]
topic = "out"
compression = "gzip"
"#,
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    cfg
}

/// Starts member `name`, its stderr appended to `NAME.log` in `d`.
fn member(d: &Path, name: &str, cfg: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join(format!("{name}.log")))
        .unwrap();
    Proc(
        bin()
            .arg("run")
            .arg(cfg)
            .current_dir(d)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// One uncommitted window at a kill: per partition, from the committed offset just before
/// the kill to one past the last message acknowledged to the producer just after it. A
/// message the killed member read but had not committed lies in such a window.
type Window = Vec<(i64, i64)>;

/// Waits until the group's committed offsets equal the producer's ends, or `limit`.
fn wait_committed(oracle: &mut Oracle, ends: &[i64], limit: Duration) -> Vec<i64> {
    let t = Instant::now();
    loop {
        let c = oracle.committed();
        if c == ends || t.elapsed() > limit {
            return c;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the whole `in` topic with kafka-python: how many times each `n` is there.
fn input_copies(servers: &Path, in_addr: &str) -> HashMap<u64, u32> {
    let out = py(
        servers,
        in_addr,
        r#"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=B, enable_auto_commit=False, auto_offset_reset="earliest")
tps = [TopicPartition("in", p) for p in sorted(c.partitions_for_topic("in") or [])]
c.assign(tps)
c.seek_to_beginning(*tps)
seen, quiet = {}, 0
while quiet < 4:
    got = c.poll(timeout_ms=500)
    quiet = 0 if got else quiet + 1
    for recs in got.values():
        for r in recs:
            for line in r.value.splitlines():
                n = json.loads(line)["n"]
                seen[n] = seen.get(n, 0) + 1
print(json.dumps(seen))
"#,
    );
    serde_json::from_str::<HashMap<String, u32>>(out.trim())
        .unwrap()
        .into_iter()
        .map(|(n, c)| (n.parse().unwrap(), c))
        .collect()
}

/// The checks shared by the failover and broker-restart tests: every kept event is in the
/// output, no DEBUG is, and each duplicate's message lies in an uncommitted window of a
/// fault (or is in the input topic as often). Returns (kept, duplicates, in-window bound in
/// events).
fn check_output(
    servers: &Path,
    in_addr: &str,
    addr: &str,
    total: u64,
    produced: &Produced,
    windows: &[Window],
    per_msg: u64,
) -> (u64, u64, u64) {
    let (per, debug, gaps) = read_output(servers, addr);
    let kept: Vec<u64> = (0..total).filter(|n| n % 4 != 0).collect();
    let missing: Vec<u64> = kept
        .iter()
        .copied()
        .filter(|n| !per.contains_key(n))
        .collect();
    let mut dups = 0u64;
    let mut outside = Vec::new();
    for (&n, &c) in &per {
        if c < 2 {
            continue;
        }
        dups += u64::from(c - 1);
        let (part, off) = produced.at[&n];
        let covering = windows
            .iter()
            .filter(|w| off >= w[part].0 && off < w[part].1)
            .count() as u32;
        if c - 1 > covering {
            outside.push((n, c, part, off, covering));
        }
    }
    // What was uncommitted at the faults, in events (per_msg per message; a quarter dropped).
    let bound: u64 = windows
        .iter()
        .flat_map(|w| w.iter().map(|(a, b)| (b - a).max(0) as u64))
        .sum::<u64>()
        * per_msg;
    // The input topic, read when something is off: a message the input broker holds twice
    // (kafka-python's producer is not idempotent: a retry across a broker restart may append
    // a batch again) is consumed twice, whatever the pipeline does.
    let input =
        (!missing.is_empty() || !outside.is_empty()).then(|| input_copies(servers, in_addr));
    if let Some(input) = &input {
        let twice: Vec<_> = outside
            .iter()
            .filter(|(n, ..)| input.get(n).copied().unwrap_or(0) > 1)
            .collect();
        eprintln!(
            "{} of the {} duplicates outside every window are events the input topic holds \
             more than once (first 20: {:?})",
            twice.len(),
            outside.len(),
            &twice[..twice.len().min(20)]
        );
        outside.retain(|&(n, c, _, _, covering)| {
            c - 1 > covering + input.get(&n).copied().unwrap_or(1).saturating_sub(1)
        });
    }
    if let Some(input) = input.as_ref().filter(|_| !missing.is_empty()) {
        let absent: Vec<u64> = missing
            .iter()
            .copied()
            .filter(|n| !input.contains_key(n))
            .collect();
        // Offsets the broker gave to two different messages (the producer's acknowledgements).
        let mut by_offset: HashMap<(usize, i64), std::collections::BTreeSet<u64>> = HashMap::new();
        for (n, at) in &produced.at {
            by_offset.entry(*at).or_default().insert(n - n % per_msg);
        }
        let mut reused: Vec<_> = by_offset.iter().filter(|(_, m)| m.len() > 1).collect();
        reused.sort();
        eprintln!(
            "offsets the broker acknowledged for two different messages ((partition, offset): first events): {:?}",
            &reused[..reused.len().min(20)]
        );
        eprintln!(
            "{} of the {} lost events are not in the input topic either (the broker acknowledged \
             them to the producer and does not serve them): {:?}",
            absent.len(),
            missing.len(),
            &absent[..absent.len().min(20)]
        );
    }
    assert!(
        missing.is_empty(),
        "lost {} kept events (first 20: {:?}); offsets missing from the output topic \
         (acknowledged, then not served by the broker): {gaps:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(debug, 0, "DEBUG events reached the output");
    outside.sort();
    assert!(
        outside.is_empty(),
        "duplicates outside every uncommitted window and not twice in the input (n, copies, \
         partition, offset, windows covering it; first 20): {:?}",
        &outside[..outside.len().min(20)]
    );
    (kept.len() as u64, dups, bound)
}

/// Two `sluicebox run` members of one group (kafka → drop_debug.wat → kafka) share a
/// 4-partition topic while events are produced; `SLUICEBOX_KAFKA_KILLS` times (default 4) one
/// of them, chosen at random, is killed with SIGKILL and restarted, then one is killed for
/// good and the other must finish alone. Before every other kill the output broker is paused
/// (SIGSTOP) for a second, so that the kill cuts batches read and not yet delivered: a member
/// that committed what it read rather than what was delivered loses them. Afterwards
/// kafka-python finds every kept event in the output topic (0 lost), no DEBUG event, each
/// duplicate within what was uncommitted at a kill, and the group's committed offsets at the
/// end of each input partition.
#[test]
fn kafka_two_members_survive_kill9() {
    let Some(servers) = servers() else {
        eprintln!("tansu not installed (bash scripts/install-servers.sh): skipping");
        return;
    };
    let kills: usize = env_or("SLUICEBOX_KAFKA_KILLS", 4);
    let seed = seed();
    let began = Instant::now();
    eprintln!("kafka failover: {kills} kills, SLUICEBOX_KAFKA_SEED={seed}");
    let d = dir("kafka-failover");
    let (port, out_port) = (free_port(), free_port());
    let (addr, out_addr) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{out_port}"));
    let _broker = tansu(&servers, port, "memory://tansu/", &[], &d.join("tansu.log"));
    let out_broker = tansu(
        &servers,
        out_port,
        "memory://tansu/",
        &[],
        &d.join("tansu-out.log"),
    );
    let partitions = 4;
    create_topic(&servers, &addr, "in", partitions);
    create_topic(&servers, &out_addr, "out", 1);
    let cfgs = [
        write_config(&d, "a", &addr, &out_addr),
        write_config(&d, "b", &addr, &out_addr),
    ];
    let mut members = [
        Some(member(&d, "a", &cfgs[0])),
        Some(member(&d, "b", &cfgs[1])),
    ];
    let mut oracle = Oracle::start(&servers, &addr, "failover", partitions);

    // 1,000 events/s in messages of 5 lines, for longer than the kills take on average.
    let per_msg = 5;
    let secs = (5 * kills + 4) as f64;
    let total = (secs as u64) * 1000;
    let (mut producer, produced) = produce(&servers, &addr, total, per_msg, secs, partitions);

    let mut rng = seed;
    let mut windows: Vec<Window> = Vec::new();
    let mut kill = |members: &mut [Option<Proc>; 2], victim: usize, pause: bool| {
        if pause {
            signal(out_broker.0.id(), "STOP");
            std::thread::sleep(Duration::from_millis(1000));
        }
        let before = oracle.committed();
        let mut p = members[victim].take().unwrap();
        signal(p.0.id(), "KILL");
        let _ = p.0.wait();
        if pause {
            signal(out_broker.0.id(), "CONT");
        }
        // The producer's acknowledgements of what the broker had stored at the kill.
        std::thread::sleep(Duration::from_millis(300));
        let ends = produced.lock().unwrap().ends.clone();
        windows.push(before.iter().map(|&c| c.max(0)).zip(ends).collect());
    };
    for k in 0..kills {
        // 1.5..4 s: a join takes about 1 s, so the victim has often just got partitions.
        std::thread::sleep(Duration::from_millis(1500 + next(&mut rng) % 2500));
        let victim = (next(&mut rng) % 2) as usize;
        kill(&mut members, victim, k.is_multiple_of(2));
        // Restart after 0..3 s: the survivor takes the partitions over first when the
        // session (2 s) ends before.
        std::thread::sleep(Duration::from_millis(next(&mut rng) % 3000));
        members[victim] = Some(member(&d, ["a", "b"][victim], &cfgs[victim]));
    }
    // One more, for good: the survivor must take every partition over and finish.
    std::thread::sleep(Duration::from_millis(2000));
    let victim = (next(&mut rng) % 2) as usize;
    kill(&mut members, victim, kills.is_multiple_of(2));
    let status = producer.0.wait().unwrap();
    assert!(status.success(), "producer failed");
    let t = Instant::now();
    while !produced.lock().unwrap().done {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "producer output lost"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ends = produced.lock().unwrap().ends.clone();
    let committed = wait_committed(&mut oracle, &ends, Duration::from_secs(60));
    for m in members.iter_mut().flatten() {
        signal(m.0.id(), "TERM");
        let _ = m.0.wait();
    }
    // A clean stop commits nothing past the end either.
    let after_stop = oracle.committed();
    let produced = produced.lock().unwrap();
    let (kept, dups, bound) = check_output(
        &servers, &addr, &out_addr, total, &produced, &windows, per_msg,
    );
    eprintln!(
        "kafka failover: {} kills, {total} events ({kept} kept), lost 0, duplicates {dups} \
         (uncommitted at the kills: {bound} events), committed {committed:?} = ends {ends:?}, \
         {:.1} s",
        kills + 1,
        began.elapsed().as_secs_f64()
    );
    assert_eq!(
        committed, ends,
        "committed offsets = end of every partition"
    );
    assert_eq!(
        after_stop, ends,
        "still the ends after the survivor stopped"
    );
}

/// An S3 API server (moto) with bucket `tansu`: Tansu's storage, which outlives a Tansu
/// process (the memory engine loses everything when Tansu stops). Returns the server and
/// the environment Tansu needs to reach it.
fn s3(servers: &Path, log: &Path) -> Option<(Proc, Vec<(&'static str, String)>)> {
    if !servers.join("bin/moto_server").exists() {
        eprintln!("moto_server not installed (bash scripts/install-servers.sh): skipping");
        return None;
    }
    let port = free_port();
    let log = std::fs::File::create(log).unwrap();
    let child = python(servers)
        .arg(servers.join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "moto did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    py(
        servers,
        "",
        &format!(
            r#"
import boto3
s3 = boto3.client("s3", endpoint_url={endpoint:?}, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="eu-west-2")
s3.create_bucket(Bucket="tansu", CreateBucketConfiguration={{"LocationConstraint": "eu-west-2"}})
"#
        ),
    );
    let env = vec![
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_DEFAULT_REGION", "eu-west-2".into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ];
    Some((proc, env))
}

/// Reads the `out` topic as it is now (until 1.5 s pass with nothing new): the `n` it holds.
fn output_now(servers: &Path, addr: &str) -> std::collections::HashSet<u64> {
    let out = py(
        servers,
        addr,
        r#"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=B, enable_auto_commit=False, auto_offset_reset="earliest")
tp = TopicPartition("out", 0)
c.assign([tp])
c.seek_to_beginning(tp)
seen, quiet = set(), 0
while quiet < 3:
    got = c.poll(timeout_ms=500)
    quiet = 0 if got else quiet + 1
    for recs in got.values():
        for r in recs:
            seen.add(json.loads(r.value)["n"])
print(json.dumps(sorted(seen)))
"#,
    );
    serde_json::from_str::<Vec<u64>>(out.trim())
        .unwrap()
        .into_iter()
        .collect()
}

/// One `sluicebox run` (kafka → drop_debug.wat → kafka) while the input broker (Tansu on S3
/// storage) is stopped (SIGTERM) and restarted on the same port,
/// `SLUICEBOX_KAFKA_RESTARTS` times (default 1), with events flowing. After each restart,
/// every kept event below the group's committed offsets must already be in the output
/// (nothing committed that was not delivered); at the end nothing is lost and the
/// committed offsets are the partition ends.
#[test]
fn kafka_broker_restart_loses_nothing() {
    let Some(servers) = servers() else {
        eprintln!("tansu not installed (bash scripts/install-servers.sh): skipping");
        return;
    };
    let restarts: usize = env_or("SLUICEBOX_KAFKA_RESTARTS", 1);
    let began = Instant::now();
    let d = dir("kafka-restart");
    let Some((_s3, env)) = s3(&servers, &d.join("moto.log")) else {
        return;
    };
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let start_broker = || tansu(&servers, port, "s3://tansu/", &env, &d.join("tansu.log"));
    let mut broker = start_broker();
    // The output on the restarted broker too with SLUICEBOX_KAFKA_RESTART_OUTPUT=1. Tansu 0.6.0
    // on S3 saves a producer's sequence numbers before the batch, so a stop between the two
    // leaves sequence numbers without records, and the retry of that batch is answered
    // DUPLICATE_SEQUENCE_NUMBER; krafka calls that a success without an offset. Our sink
    // sends such records again (see `confirm` in src/sink/kafka.rs): before it did, 7-17 of
    // 2,250 events were lost in 4 runs out of 9, each one krafka had reported Deduplicated.
    // By default the output goes to a second broker that keeps running.
    let same = std::env::var_os("SLUICEBOX_KAFKA_RESTART_OUTPUT").is_some();
    let out_port = free_port();
    let _out_broker = (!same).then(|| {
        tansu(
            &servers,
            out_port,
            "memory://tansu/",
            &[],
            &d.join("tansu-out.log"),
        )
    });
    let out_addr = if same {
        addr.clone()
    } else {
        format!("127.0.0.1:{out_port}")
    };
    let partitions = 2;
    create_topic(&servers, &addr, "in", partitions);
    create_topic(&servers, &out_addr, "out", 1);
    let api = free_port();
    let cfg = write_config_api(&d, "a", &addr, &out_addr, Some(api));
    let _member = member(&d, "a", &cfg);
    let mut oracle = Oracle::start(&servers, &addr, "failover", partitions);

    // Tansu on S3 is slow: 250 events/s, 5 lines a message.
    let per_msg = 5;
    let secs = (8 * restarts + 4) as f64;
    let total = (secs as u64) * 250;
    let (mut producer, produced) = produce(&servers, &addr, total, per_msg, secs, partitions);
    let mut windows: Vec<Window> = Vec::new();
    let mut checked = 0usize;
    for _ in 0..restarts {
        std::thread::sleep(Duration::from_millis(3000));
        let before = oracle.committed();
        // SIGTERM: with SIGKILL, Tansu 0.6.0 on S3 loses records it had acknowledged (see
        // the README's Kafka section), which no client can make up for.
        signal(broker.0.id(), "TERM");
        let t = Instant::now();
        while broker.0.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(15) {
                signal(broker.0.id(), "KILL");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1000));
        broker = start_broker();
        // Requests in flight at the stop may have been stored without their answer: their
        // events may come twice. Wait until a commit moves past the one before the stop.
        let t = Instant::now();
        while oracle
            .committed()
            .iter()
            .zip(&before)
            .all(|(now, then)| now <= then)
            && t.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let ends = produced.lock().unwrap().ends.clone();
        windows.push(before.iter().map(|&c| c.max(0)).zip(ends).collect());
        // Nothing committed that was not delivered: whatever lies below the committed
        // offsets is in the output already.
        let committed = oracle.committed();
        let seen = output_now(&servers, &out_addr);
        let at = produced.lock().unwrap().at.clone();
        let undelivered: Vec<u64> = at
            .iter()
            .filter(|(n, (p, off))| *n % 4 != 0 && *off < committed[*p] && !seen.contains(n))
            .map(|(n, _)| *n)
            .collect();
        assert!(
            undelivered.is_empty(),
            "committed {committed:?} past {} undelivered events (first: {:?})",
            undelivered.len(),
            &undelivered[..undelivered.len().min(20)]
        );
        checked += at
            .iter()
            .filter(|(n, (p, off))| *n % 4 != 0 && *off < committed[*p])
            .count();
    }
    let status = producer.0.wait().unwrap();
    assert!(status.success(), "producer failed");
    let t = Instant::now();
    while !produced.lock().unwrap().done {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "producer output lost"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ends = produced.lock().unwrap().ends.clone();
    let committed = wait_committed(&mut oracle, &ends, Duration::from_secs(60));
    let metrics = scrape(api);
    let count = |name: &str, id: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(&format!("component_id=\"{id}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    eprintln!(
        "kafka broker restart: source received {} events, sink sent {} (delivered)",
        count("component_received_events_total", "in"),
        count("component_sent_events_total", "out")
    );
    let produced = produced.lock().unwrap();
    let (kept, dups, bound) = check_output(
        &servers, &addr, &out_addr, total, &produced, &windows, per_msg,
    );
    eprintln!(
        "kafka broker restart: {restarts} restarts, {total} events ({kept} kept), lost 0, \
         duplicates {dups} (uncommitted at the restarts: {bound} events), {checked} kept events \
         below a commit checked delivered, committed {committed:?} = ends {ends:?}, {:.1} s",
        began.elapsed().as_secs_f64()
    );
    assert!(checked > 0, "no commit moved before the check");
    assert_eq!(
        committed, ends,
        "committed offsets = end of every partition"
    );
}
