//! Kafka source and sink against a real broker (Tansu, started per test), verified with an
//! independent client (kafka-python).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluicebox::config::BuildContext;
use sluicebox::metrics::Metrics;
use sluicebox::runtime::{RuntimeSettings, SinkSpec, SourceSpec, Topology};
use sluicebox::sink::kafka::KafkaSinkConfig;
use sluicebox::source::Shutdown;
use sluicebox::source::kafka::KafkaSourceConfig;

fn servers() -> Option<PathBuf> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let dir = PathBuf::from(target).join("servers/bin");
    dir.join("tansu").exists().then_some(dir)
}

/// A Tansu broker on a free port, killed on drop.
struct Broker {
    child: Child,
    addr: String,
    python: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    fn start() -> Option<Self> {
        let Some(bin) = servers() else {
            eprintln!("skipped: no Tansu (run scripts/install-servers.sh)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let child = Command::new(bin.join("tansu"))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let b = Broker {
            child,
            addr: addr.clone(),
            // The venv's own python: through the bin/ symlink Python does not find the venv.
            python: bin.join("../venv/bin/python"),
        };
        let t = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(b)
    }

    /// Runs a kafka-python script with `B` = the broker address; returns its stdout.
    fn py(&self, script: &str) -> String {
        let full = format!("import json, time\nB = {:?}\n{script}", self.addr);
        let out = Command::new(&self.python)
            .args(["-c", &full])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

const CREATE: &str = r#"
from kafka.admin import KafkaAdminClient, NewTopic
a = KafkaAdminClient(bootstrap_servers=B)
a.create_topics([NewTopic("in", 2, 1), NewTopic("out", 1, 1)])
a.close()
"#;

/// Produces, per input partition, messages of one or two NDJSON lines and one poison message.
/// Returns the valid events per partition, in order.
fn produce_input(b: &Broker, per_partition: usize) -> Vec<Vec<serde_json::Value>> {
    let out = b.py(&format!(
        r#"
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=B, acks="all")
want = {{0: [], 1: []}}
for part in (0, 1):
    for i in range({per_partition}):
        if i == 3:
            p.send("in", value=b"this is not json", partition=part)
            continue
        if i % 4 == 1:
            a = {{"p": part, "i": i, "j": 0}}
            c = {{"p": part, "i": i, "j": 1}}
            p.send("in", value=(json.dumps(a) + "\n" + json.dumps(c) + "\n").encode(), partition=part)
            want[part] += [a, c]
        else:
            a = {{"p": part, "i": i, "j": 0}}
            p.send("in", value=json.dumps(a).encode(), partition=part)
            want[part].append(a)
p.flush()
print(json.dumps([want[0], want[1]]))
"#
    ));
    serde_json::from_str(out.trim()).unwrap()
}

/// Reads the whole `out` topic back, in partition order.
fn read_output(b: &Broker, expect: usize) -> Vec<serde_json::Value> {
    let out = b.py(&format!(
        r#"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=B, enable_auto_commit=False, auto_offset_reset="earliest")
c.assign([TopicPartition("out", 0)])
got = []
deadline = time.time() + 30
while time.time() < deadline:
    for tp, recs in c.poll(timeout_ms=500).items():
        got += [json.loads(r.value) for r in recs]
    if len(got) >= {expect}:
        # wait a little for anything unexpected beyond
        for tp, recs in c.poll(timeout_ms=1000).items():
            got += [json.loads(r.value) for r in recs]
        break
print(json.dumps(got))
"#
    ));
    serde_json::from_str(out.trim()).unwrap()
}

fn committed(b: &Broker, group: &str) -> Vec<(i64, i64)> {
    // The consumer's OffsetFetch (it does not join the group); kafka-python's admin
    // `list_consumer_group_offsets` cannot decode Tansu's reply.
    let out = b.py(&format!(
        r#"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=B, group_id={group:?}, enable_auto_commit=False)
res = []
for p in (0, 1):
    o = c.committed(TopicPartition("in", p))
    if o is not None:
        res.append([p, o])
c.close(autocommit=False)
print(json.dumps(res))
"#
    ));
    let v: Vec<(i64, i64)> = serde_json::from_str(out.trim()).unwrap();
    v
}

#[test]
fn kafka_round_trip_commits_the_delivered_prefix() {
    let Some(b) = Broker::start() else { return };
    b.py(CREATE);
    let per = 40;
    let want = produce_input(&b, per);
    let total: usize = want.iter().map(Vec::len).sum();

    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let tmp = std::env::temp_dir();
    let scx = BuildContext::new("kin", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let kcx = BuildContext::new("kout", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let src: KafkaSourceConfig = toml::from_str(&format!(
        r#"brokers = ["{}"]
topics = ["in"]
group_id = "g1"
start_from = "earliest"
session_timeout_ms = 2000
heartbeat_interval_ms = 300
commit_interval_ms = 300"#,
        b.addr
    ))
    .unwrap();
    let sink: KafkaSinkConfig = toml::from_str(&format!(
        r#"brokers = ["{}"]
topic = "out"
key_field = "p"
compression = "gzip""#,
        b.addr
    ))
    .unwrap();
    let running = Topology::new(RuntimeSettings::default())
        .with_shutdown(shutdown.clone())
        .with_metrics(metrics)
        .source(SourceSpec::new("kin", "kafka", src.build(&scx).unwrap()))
        .sink(SinkSpec::new(
            "kout",
            "kafka",
            vec!["kin".into()],
            sink.build(&kcx).unwrap(),
        ))
        .start()
        .unwrap();

    // Wait until the committed offsets cover every input message (per partitions: `per`).
    let t = Instant::now();
    let mut last = Vec::new();
    while t.elapsed() < Duration::from_secs(60) {
        last = committed(&b, "g1");
        if last == vec![(0, per as i64), (1, per as i64)] {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = running.stop().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        last,
        vec![(0, per as i64), (1, per as i64)],
        "committed offsets = all messages delivered"
    );

    let got = read_output(&b, total);
    assert_eq!(
        got.len(),
        total,
        "exactly the valid events, no more: {got:?}"
    );
    for (p, want_p) in want.iter().enumerate() {
        let got_p: Vec<_> = got
            .iter()
            .filter(|e| e["p"] == serde_json::json!(p))
            .cloned()
            .collect();
        assert_eq!(&got_p, want_p, "partition {p} in order");
    }
    // Committed offsets stay where the delivered prefix is after shutdown.
    assert_eq!(committed(&b, "g1"), vec![(0, per as i64), (1, per as i64)]);
}

#[test]
fn kafka_bad_config_names_the_key() {
    let tmp = std::env::temp_dir();
    let cx = BuildContext::new("k", &tmp, &tmp, Metrics::new(), Shutdown::new());
    let c: KafkaSourceConfig = toml::from_str(
        r#"brokers = ["nohost"]
topics = ["t"]
group_id = "g""#,
    )
    .unwrap();
    let e = c.build(&cx).err().expect("bad brokers").to_string();
    assert!(e.contains("sources.k") && e.contains("`brokers`"), "{e}");
    let s: KafkaSinkConfig = toml::from_str(
        r#"brokers = ["127.0.0.1:1"]
topic = "{{ unclosed""#,
    )
    .unwrap();
    let e = s.build(&cx).err().expect("bad topic").to_string();
    assert!(e.contains("`topic`"), "{e}");
    // Nothing listens on port 1: a clear error naming `brokers`, not a panic.
    let s: KafkaSinkConfig = toml::from_str(
        r#"brokers = ["127.0.0.1:1"]
topic = "t""#,
    )
    .unwrap();
    let e = s.build(&cx).err().expect("unreachable").to_string();
    assert!(e.contains("`brokers`"), "{e}");
}
