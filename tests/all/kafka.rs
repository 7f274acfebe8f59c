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
        Self::start_advertising(None)
    }

    /// [`Broker::start`], telling clients to connect to `advertised` (a port on 127.0.0.1)
    /// instead of its own port when given.
    fn start_advertising(advertised: Option<u16>) -> Option<Self> {
        let Some(bin) = servers() else {
            eprintln!("skipped: no Tansu (run scripts/install-servers.sh)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Some(Self::launch(
            &bin,
            port,
            advertised.unwrap_or(port),
            "memory://tansu/",
            &[],
        ))
    }

    /// Starts Tansu from `bin` on `port` with `storage` (its environment in `env`) and waits
    /// until it listens.
    fn launch(
        bin: &std::path::Path,
        port: u16,
        advertised: u16,
        storage: &str,
        env: &[(&str, String)],
    ) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let child = Command::new(bin.join("tansu"))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", storage])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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
        b
    }

    /// Stops the broker with SIGTERM (Tansu on S3 loses acknowledged records to SIGKILL) and
    /// waits until it exited.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
    let c: KafkaSourceConfig = toml::from_str(
        r#"brokers = ["127.0.0.1:1"]
topics = ["t"]
group_id = "g"
key_field = "k"
timestamp_field = "k""#,
    )
    .unwrap();
    let e = c.build(&cx).err().expect("same field twice").to_string();
    assert!(e.contains("`timestamp_field`"), "{e}");
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

/// `key_field`, `timestamp_field` and `headers_field` put each message's key, timestamp and
/// headers into every event of the message (UTF-8 as strings, other bytes as
/// `{"base64": …}`, repeated header names as arrays), through the real broker and back.
#[test]
fn kafka_message_metadata_becomes_fields() {
    let Some(b) = Broker::start() else { return };
    b.py(r#"
from kafka.admin import KafkaAdminClient, NewTopic
a = KafkaAdminClient(bootstrap_servers=B)
a.create_topics([NewTopic("in", 1, 1), NewTopic("out", 1, 1)])
a.close()
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=B, acks="all")
p.send("in", key=b"user-1", value=b'{"i":0}\n{ "i" : 1 }', timestamp_ms=1700000000123,
       headers=[("trace", b"abc"), ("bin", b"\xff\x00\x01"), ("trace", b"def"), ("empty", b"")])
p.send("in", key=b"\xc3\x28", value=b'{}', timestamp_ms=1700000000124)
p.send("in", value=b'{"i":3,"s":"\xc3\xa9\\"q"}', timestamp_ms=1700000000125)
p.flush()
"#);
    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let tmp = std::env::temp_dir();
    let scx = BuildContext::new("kin", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let kcx = BuildContext::new("kout", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let src: KafkaSourceConfig = toml::from_str(&format!(
        r#"brokers = ["{}"]
topics = ["in"]
group_id = "meta"
start_from = "earliest"
session_timeout_ms = 2000
heartbeat_interval_ms = 300
commit_interval_ms = 300
key_field = "kafka_key"
timestamp_field = "kafka_ts"
headers_field = "kafka_headers""#,
        b.addr
    ))
    .unwrap();
    let metrics_handle = metrics.clone();
    let sink: KafkaSinkConfig = toml::from_str(&format!(
        "brokers = [\"{}\"]\ntopic = \"out\"\ncompression = \"gzip\"",
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
    let got = read_output(&b, 4);
    // The source's metrics: the committed offset reaches the end (3 messages), lag 0, and
    // each commit was timed.
    let t = Instant::now();
    let labels = r#"{component_id="kin",topic="in",partition="0"}"#;
    let text = loop {
        let text = metrics_handle.render();
        if text.contains(&format!("kafka_consumer_committed_offset{labels} 3"))
            || t.elapsed() > Duration::from_secs(15)
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    running.stop().unwrap();
    assert!(
        text.contains(&format!("kafka_consumer_committed_offset{labels} 3")),
        "{text}"
    );
    assert!(
        text.contains(&format!("kafka_consumer_lag_messages{labels} 0")),
        "{text}"
    );
    let commits = text
        .lines()
        .find_map(|l| l.strip_prefix("kafka_consumer_commit_seconds_count{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(commits >= 1, "{text}");
    let want = serde_json::json!([
        {"kafka_key": "user-1", "kafka_ts": 1700000000123u64,
         "kafka_headers": {"trace": ["abc", "def"], "bin": {"base64": "/wAB"}, "empty": ""},
         "i": 0},
        {"kafka_key": "user-1", "kafka_ts": 1700000000123u64,
         "kafka_headers": {"trace": ["abc", "def"], "bin": {"base64": "/wAB"}, "empty": ""},
         "i": 1},
        {"kafka_key": {"base64": "wyg="}, "kafka_ts": 1700000000124u64, "kafka_headers": {}},
        {"kafka_key": null, "kafka_ts": 1700000000125u64, "kafka_headers": {}, "i": 3,
         "s": "é\"q"},
    ]);
    assert_eq!(serde_json::Value::Array(got), want);
    // Keys come first, in the documented order, and the rest of the event is its bytes.
    let raw = b.py(r#"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=B, enable_auto_commit=False, auto_offset_reset="earliest")
c.assign([TopicPartition("out", 0)])
recs = []
while len(recs) < 4:
    for tp, rs in c.poll(timeout_ms=500).items():
        recs += rs
print(recs[1].value.decode())
"#);
    assert!(
        raw.trim().ends_with(r#""kafka_headers":{"trace":["abc","def"],"bin":{"base64":"/wAB"},"empty":""}, "i" : 1 }"#),
        "{raw}"
    );
    assert!(
        raw.starts_with(r#"{"kafka_key":"user-1","kafka_ts":1700000000123,"#),
        "{raw}"
    );
}

/// CRC-32C (Castagnoli), the checksum of a Kafka record batch.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn uvarint(buf: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let b = buf[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().unwrap())
}

/// In a Produce request (one topic, one partition), turns every `"n"` in the records into
/// `"x"` and fixes each batch's CRC: the broker stores the batch, and its producer's
/// sequence numbers, but not the events that were sent.
fn ghost_produce(req: &mut [u8]) {
    let version = be_i16(req, 2);
    let flexible = version >= 9;
    let mut at = 8;
    let client_id = be_i16(req, at);
    at += 2 + usize::try_from(client_id.max(0)).unwrap();
    if flexible {
        assert_eq!(
            uvarint(req, &mut at),
            0,
            "tagged fields in the request header"
        );
        let txn = uvarint(req, &mut at);
        at += usize::try_from(txn.saturating_sub(1)).unwrap();
    } else {
        let txn = be_i16(req, at);
        at += 2 + usize::try_from(txn.max(0)).unwrap();
    }
    at += 2 + 4; // acks, timeout
    let records = if flexible {
        assert_eq!(uvarint(req, &mut at), 2, "one topic");
        let name = uvarint(req, &mut at);
        at += usize::try_from(name - 1).unwrap();
        assert_eq!(uvarint(req, &mut at), 2, "one partition");
        at += 4;
        usize::try_from(uvarint(req, &mut at) - 1).unwrap()
    } else {
        assert_eq!(be_i32(req, at), 1, "one topic");
        at += 4;
        at += 2 + usize::try_from(be_i16(req, at)).unwrap();
        assert_eq!(be_i32(req, at), 1, "one partition");
        at += 4 + 4;
        let n = usize::try_from(be_i32(req, at)).unwrap();
        at += 4;
        n
    };
    let end = at + records;
    while at < end {
        let len = 12 + usize::try_from(be_i32(req, at + 8)).unwrap();
        let batch = &mut req[at..at + len];
        for i in 61..batch.len() - 2 {
            if &batch[i..i + 3] == b"\"n\"" {
                batch[i + 1] = b'x';
            }
        }
        let crc = crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        at += len;
    }
}

/// A TCP proxy in front of `broker` that ghosts (see [`ghost_produce`]) the `nth` Produce
/// request that carries records, forwards it, and closes the connection instead of passing
/// the broker's answer on: what a client sees of a broker that saved a batch's sequence
/// numbers and not its records and then stopped (Tansu 0.6.0 on S3, SIGTERMed between the
/// two writes). The client's retry of that batch is answered DUPLICATE_SEQUENCE_NUMBER.
fn ghosting_proxy(listener: std::net::TcpListener, broker: String, nth: usize) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let produces = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut upstream) = TcpStream::connect(&broker) else {
                return;
            };
            let cut: Arc<Mutex<Option<i32>>> = Arc::default();
            let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let (produces, cut2) = (produces.clone(), cut.clone());
            std::thread::spawn(move || {
                let mut len = [0u8; 4];
                while client.read_exact(&mut len).is_ok() {
                    let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
                    if client.read_exact(&mut req).is_err() {
                        break;
                    }
                    if be_i16(&req, 0) == 0
                        && req.windows(3).any(|w| w == b"\"n\"")
                        && produces.fetch_add(1, Ordering::SeqCst) + 1 == nth
                    {
                        ghost_produce(&mut req);
                        *cut2.lock().unwrap() = Some(be_i32(&req, 4));
                    }
                    if upstream.write_all(&len).is_err() || upstream.write_all(&req).is_err() {
                        break;
                    }
                }
                let _ = upstream.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut len = [0u8; 4];
                while u2.read_exact(&mut len).is_ok() {
                    let mut resp = vec![0u8; u32::from_be_bytes(len) as usize];
                    if u2.read_exact(&mut resp).is_err() {
                        break;
                    }
                    if *cut.lock().unwrap() == Some(be_i32(&resp, 0)) {
                        break;
                    }
                    if c2.write_all(&len).is_err() || c2.write_all(&resp).is_err() {
                        break;
                    }
                }
                let _ = c2.shutdown(std::net::Shutdown::Both);
                let _ = u2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

/// A broker that answers a retried batch DUPLICATE_SEQUENCE_NUMBER though it does not hold its
/// records (Tansu 0.6.0 on S3 after a stop: it saves a producer's sequence before the batch)
/// must not make the sink count those events delivered: krafka reports the answer as a
/// success without an offset (`Deduplicated`), and only an offset proves delivery. The sink
/// sends them again, and every event is in the topic.
#[test]
fn kafka_sink_resends_records_acknowledged_without_an_offset() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let Some(b) = Broker::start_advertising(Some(proxy_port)) else {
        return;
    };
    // The broker names the proxy as its address: every client goes through it.
    ghosting_proxy(listener, b.addr.clone(), 2);
    b.py(r#"
from kafka.admin import KafkaAdminClient, NewTopic
a = KafkaAdminClient(bootstrap_servers=B)
a.create_topics([NewTopic("out", 1, 1)])
a.close()
"#);
    let total = 3000;
    let input: String = (0..total)
        .map(|n| format!("{{\"n\":{n},\"msg\":\"event {n}\"}}\n"))
        .collect();
    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let tmp = std::env::temp_dir();
    let kcx = BuildContext::new("kout", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let sink: KafkaSinkConfig = toml::from_str(&format!(
        "brokers = [\"127.0.0.1:{proxy_port}\"]\ntopic = \"out\"\ncompression = \"none\"",
    ))
    .unwrap();
    let report = Topology::new(RuntimeSettings::default())
        .with_shutdown(shutdown)
        .with_metrics(metrics)
        .source(SourceSpec::new(
            "in",
            "reader",
            Box::new(sluicebox::source::reader::ReaderSource::new(
                "in",
                std::io::Cursor::new(input.into_bytes()),
            )),
        ))
        .sink(SinkSpec::new(
            "kout",
            "kafka",
            vec!["in".into()],
            sink.build(&kcx).unwrap(),
        ))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let sent = report.component("kout").unwrap().sent;
    // Every `n` in the topic (kafka-python, through the proxy, which only ghosts our sink's
    // Produce requests).
    let out = b.py(r#"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=B, enable_auto_commit=False, auto_offset_reset="earliest")
tp = TopicPartition("out", 0)
c.assign([tp])
c.seek_to_beginning(tp)
per, ghosts, quiet = {}, 0, 0
while quiet < 4:
    got = c.poll(timeout_ms=500)
    quiet = 0 if got else quiet + 1
    for recs in got.values():
        for r in recs:
            e = json.loads(r.value)
            if "n" in e:
                per[e["n"]] = per.get(e["n"], 0) + 1
            else:
                ghosts += 1
print(json.dumps({"per": per, "ghosts": ghosts}))
"#);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let per = v["per"].as_object().unwrap();
    let ghosts = v["ghosts"].as_u64().unwrap();
    let missing: Vec<u64> = (0..total)
        .filter(|n| !per.contains_key(&n.to_string()))
        .collect();
    eprintln!(
        "kafka sink resend: {total} events, sink sent {sent}, {} distinct in the topic, \
         {ghosts} ghosted records the broker kept instead",
        per.len()
    );
    assert!(
        ghosts > 0,
        "the proxy ghosted no batch: the test tested nothing"
    );
    assert!(
        missing.is_empty(),
        "{} events counted delivered by the sink are not in the topic (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(sent, total, "the sink counts every event sent once");
}

/// Throughput against the real broker (Tansu, memory storage), all in one run:
/// `cargo test --release --test all kafka_throughput -- --ignored --nocapture`. Prints
/// figures; asserts only that every event arrived.
/// - a plain producer (krafka, the client the sink uses, with the sink's settings: acks=all,
///   idempotent, 5 ms linger) sending the events as fast as it can;
/// - the sink: reader source → kafka sink, the same events;
/// - consumer → wasm drop_debug → blackhole: the kafka source reading them back.
#[test]
#[ignore]
fn kafka_throughput() {
    use sluicebox::runtime::TransformSpec;
    let Some(b) = Broker::start() else { return };
    b.py(r#"
from kafka.admin import KafkaAdminClient, NewTopic
a = KafkaAdminClient(bootstrap_servers=B)
a.create_topics([NewTopic("plain", 1, 1), NewTopic("sunk", 1, 1)])
a.close()
"#);
    let n = 100_000usize;
    let corpus = sluicebox::loggen::corpus(n, 7);
    let lines: Vec<&[u8]> = corpus
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), n);

    // 1. The plain producer.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let plain = rt.block_on(async {
        let kafka = krafka::Kafka::builder(b.addr.clone())
            .client_id("plain")
            .connect()
            .await
            .unwrap();
        let p = kafka
            .producer()
            .acks(krafka::producer::Acks::All)
            .idempotent(true)
            .linger(Duration::from_millis(5))
            .build()
            .await
            .unwrap();
        let t = Instant::now();
        let mut handles = Vec::with_capacity(n);
        for l in &lines {
            let r = krafka::Record::new("plain", bytes::Bytes::copy_from_slice(l));
            handles.push(p.enqueue(r).await.unwrap());
        }
        for h in handles {
            assert!(h.await.unwrap().is_success());
        }
        t.elapsed()
    });

    // 2. The sink.
    let metrics = Metrics::new();
    let tmp = std::env::temp_dir();
    let kcx = BuildContext::new("kout", &tmp, &tmp, metrics.clone(), Shutdown::new());
    let sink: KafkaSinkConfig =
        toml::from_str(&format!("brokers = [\"{}\"]\ntopic = \"sunk\"", b.addr)).unwrap();
    let t = Instant::now();
    let report = Topology::new(RuntimeSettings::default())
        .source(SourceSpec::new(
            "in",
            "reader",
            Box::new(sluicebox::source::reader::ReaderSource::new(
                "tp",
                std::io::Cursor::new(corpus.clone()),
            )),
        ))
        .sink(SinkSpec::new(
            "kout",
            "kafka",
            vec!["in".into()],
            sink.build(&kcx).unwrap(),
        ))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    let sunk = t.elapsed();
    assert_eq!(report.component("kout").unwrap().sent, n as u64);

    // 3. Consumer → drop_debug → blackhole, reading `sunk` back.
    let shutdown = Shutdown::new();
    let metrics = Metrics::new();
    let scx = BuildContext::new("kin", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let src: KafkaSourceConfig = toml::from_str(&format!(
        "brokers = [\"{}\"]\ntopics = [\"sunk\"]\ngroup_id = \"tp\"\nstart_from = \"earliest\"",
        b.addr
    ))
    .unwrap();
    let wat = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/wat/drop_debug.wat"
    ))
    .unwrap();
    let module = sluicebox::wasm::WasmModule::from_bytes("drop_debug", &wat, None).unwrap();
    let filter = sluicebox::WasmConfig::default().build(&module).unwrap();
    let t = Instant::now();
    let running = Topology::new(RuntimeSettings::default())
        .with_shutdown(shutdown.clone())
        .with_metrics(metrics.clone())
        .source(SourceSpec::new("kin", "kafka", src.build(&scx).unwrap()))
        .transform(TransformSpec::new(
            "drop_debug",
            "wasm",
            vec!["kin".into()],
            Box::new(filter),
        ))
        .sink(SinkSpec::new(
            "null",
            "blackhole",
            vec!["drop_debug".into()],
            Box::new(sluicebox::NullSink),
        ))
        .start()
        .unwrap();
    let received = || {
        running
            .metrics()
            .components()
            .into_iter()
            .find(|(id, _, _)| id == "drop_debug")
            .map_or(0, |(_, _, m)| m.received_events.get())
    };
    let mut first = None;
    while received() < n as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "consumed {}",
            received()
        );
        if first.is_none() && received() > 0 {
            first = Some((t.elapsed(), received()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let consumed = t.elapsed();
    let (joined, at_first) = first.unwrap_or((Duration::ZERO, 0));
    running.stop().unwrap();
    let eps = |d: Duration| n as f64 / d.as_secs_f64();
    eprintln!(
        "kafka (Tansu, memory), {n} generated events: plain krafka producer {:.0} events/s; \
         sink {:.0} events/s (sink / plain = {:.2}); consumer -> wasm drop_debug -> blackhole \
         {:.0} events/s from the consumer's start ({:.0} events/s after the first batch \
         arrived at {joined:?})",
        eps(plain),
        eps(sunk),
        plain.as_secs_f64() / sunk.as_secs_f64(),
        eps(consumed),
        (n as u64 - at_first) as f64 / (consumed - joined).as_secs_f64()
    );
}

/// An S3 API server (moto) with bucket `tansu`, for Tansu storage that outlives a Tansu
/// process (the memory engine loses everything when Tansu stops), killed on drop. Its
/// `env` is what Tansu needs to reach it.
struct S3 {
    child: Child,
    env: Vec<(&'static str, String)>,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    fn start(bin: &std::path::Path) -> Option<Self> {
        if !bin.join("moto_server").exists() {
            eprintln!("skipped: no moto_server (run scripts/install-servers.sh)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let python = bin.join("../venv/bin/python");
        let child = Command::new(&python)
            .arg(bin.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        let s3 = S3 {
            child,
            env: vec![
                ("AWS_ENDPOINT", endpoint.clone()),
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_DEFAULT_REGION", "eu-west-2".into()),
                ("AWS_ALLOW_HTTP", "true".into()),
            ],
        };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "moto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let script = format!(
            r#"
import boto3
s3 = boto3.client("s3", endpoint_url={endpoint:?}, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="eu-west-2")
s3.create_bucket(Bucket="tansu", CreateBucketConfiguration={{"LocationConstraint": "eu-west-2"}})
"#
        );
        let out = Command::new(&python)
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "create bucket: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(s3)
    }
}

/// `{"n":N,...}` lines, `chunk` per read, one read every `every`: a source that keeps
/// producing while the test runs. `made` counts the events handed out so far.
struct Paced {
    next: u64,
    total: u64,
    chunk: u64,
    every: Duration,
    buf: Vec<u8>,
    at: usize,
    made: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::io::Read for Paced {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.next == self.total {
                return Ok(0);
            }
            std::thread::sleep(self.every);
            self.buf.clear();
            self.at = 0;
            let end = (self.next + self.chunk).min(self.total);
            for n in self.next..end {
                self.buf.extend_from_slice(
                    format!("{{\"n\":{n},\"msg\":\"event {n} of the outage test\"}}\n").as_bytes(),
                );
            }
            self.made
                .fetch_add(end - self.next, std::sync::atomic::Ordering::SeqCst);
            self.next = end;
        }
        let k = out.len().min(self.buf.len() - self.at);
        out[..k].copy_from_slice(&self.buf[self.at..self.at + k]);
        self.at += k;
        Ok(k)
    }
}

/// How many times each `n` is in topic `out` (kafka-python, from the beginning, until 2 s
/// pass with nothing new).
fn out_counts(b: &Broker) -> std::collections::HashMap<u64, u64> {
    let out = b.py(r#"
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=B, enable_auto_commit=False, auto_offset_reset="earliest")
tp = TopicPartition("out", 0)
c.assign([tp])
c.seek_to_beginning(tp)
per, quiet = {}, 0
while quiet < 4:
    got = c.poll(timeout_ms=500)
    quiet = 0 if got else quiet + 1
    for recs in got.values():
        for r in recs:
            n = json.loads(r.value)["n"]
            per[n] = per.get(n, 0) + 1
print(json.dumps(per))
"#);
    serde_json::from_str::<std::collections::HashMap<String, u64>>(out.trim())
        .unwrap()
        .into_iter()
        .map(|(n, c)| (n.parse().unwrap(), c))
        .collect()
}

/// The sum of the samples of `name` for component `id` in `text` (OpenMetrics).
fn sample(text: &str, name: &str, id: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("component_id=\"{id}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The broker (Tansu on S3, so the topic outlives the process) is stopped while events
/// flow, for several times the sink's delivery timeout (1.5 s), and started again on the
/// same port. The sink retries the failed batches with backoff until the broker is back
/// (counted in `component_retries_total`), and the run goes on: no error, every event in
/// the topic (kafka-python reads it back), the counts balance. During the outage the
/// source stops at its in-flight budget (it reads nothing more), so memory stays bounded.
/// `SLUICEBOX_KAFKA_OUTAGE_SECS` (default 5) sets the outage.
#[test]
fn kafka_sink_rides_out_a_broker_outage() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let Some(bin) = servers() else {
        eprintln!("skipped: no Tansu (run scripts/install-servers.sh)");
        return;
    };
    let Some(s3) = S3::start(&bin) else { return };
    let outage = Duration::from_secs(
        std::env::var("SLUICEBOX_KAFKA_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = Broker::launch(&bin, port, port, "s3://tansu/", &s3.env);
    broker.py(r#"
from kafka.admin import KafkaAdminClient, NewTopic
a = KafkaAdminClient(bootstrap_servers=B)
a.create_topics([NewTopic("out", 1, 1)])
a.close()
"#);
    // 400 events/s for the outage and 5 s more.
    let (chunk, every) = (40u64, Duration::from_millis(100));
    let total = (outage.as_secs() + 5) * 400;
    let made = Arc::new(AtomicU64::new(0));
    let reader = Paced {
        next: 0,
        total,
        chunk,
        every,
        buf: Vec::new(),
        at: 0,
        made: made.clone(),
    };
    // 16 batches (the budget counts each batch's 64 KiB buffer).
    let budget = 1 << 20;
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let tmp = std::env::temp_dir();
    let kcx = BuildContext::new("kout", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let sink: KafkaSinkConfig = toml::from_str(&format!(
        r#"brokers = ["{}"]
topic = "out"
compression = "none"
request_timeout_ms = 1000
delivery_timeout_ms = 1500
retry_initial_ms = 200
retry_max_ms = 1000"#,
        broker.addr
    ))
    .unwrap();
    let mut settings = RuntimeSettings::default();
    settings.drain_timeout = Duration::from_secs(60);
    let began = Instant::now();
    let running = Topology::new(settings)
        .with_shutdown(shutdown)
        .with_metrics(metrics.clone())
        .source(
            SourceSpec::new(
                "in",
                "reader",
                Box::new(sluicebox::source::reader::ReaderSource::new("in", reader)),
            )
            .in_flight(budget, sluicebox::source::OverflowPolicy::Block),
        )
        .sink(SinkSpec::new(
            "kout",
            "kafka",
            vec!["in".into()],
            sink.build(&kcx).unwrap(),
        ))
        .start()
        .unwrap();

    std::thread::sleep(Duration::from_millis(2500));
    let before = sample(&metrics.render(), "component_sent_events_total", "kout");
    let t = Instant::now();
    broker.stop();
    let exit = t.elapsed();
    let stopped = Instant::now();
    // The source fills its budget and stops reading: what it has read stops growing.
    std::thread::sleep(outage / 2);
    let read_mid = made.load(Ordering::SeqCst);
    let mut peak_bytes = 0;
    while stopped.elapsed() < outage {
        let text = metrics.render();
        peak_bytes = peak_bytes.max(sample(&text, "buffer_byte_size", "in"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let read_end = made.load(Ordering::SeqCst);
    let during = sample(&metrics.render(), "component_sent_events_total", "kout");
    let broker = Broker::launch(&bin, port, port, "s3://tansu/", &s3.env);
    let down = stopped.elapsed();
    let report = running.wait().unwrap();
    let text = metrics.render();
    let retries = sample(&text, "component_retries_total", "kout");
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("component_errors_total") && l.contains("\"kout\""))
        .collect();
    let per = out_counts(&broker);
    let missing: Vec<u64> = (0..total).filter(|n| !per.contains_key(n)).collect();
    let dups: u64 = per.values().map(|c| c - 1).sum();
    let k = report.component("kout").unwrap();
    eprintln!(
        "kafka outage: broker down {down:.1?} (delivery timeout 1.5 s; SIGTERM to exit took \
         {exit:.1?}), {total} events, sink \
         sent {} (failed {}), {} distinct in the topic, missing {}, duplicates {dups}, \
         {retries} retries, errors {errors:?}; sent before the stop {before}, at the restart \
         {during}; the reader handed {read_mid} events half-way through the outage and \
         {read_end} at its end; peak bytes in flight {peak_bytes} (budget {budget}); run \
         {:.1?}",
        k.sent,
        k.failed,
        per.len(),
        missing.len(),
        began.elapsed()
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(!report.timed_out, "the drain timed out");
    assert!(report.is_balanced(), "{:?}", report.components);
    assert!(
        missing.is_empty(),
        "{} events missing from the topic (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(k.sent, total, "every event counted delivered once");
    assert_eq!(k.failed, 0);
    assert!(retries > 0, "no retry counted: the outage tested nothing");
    assert!(
        read_end - read_mid < 2 * chunk,
        "the source kept reading during the outage ({read_mid} -> {read_end})"
    );
    assert!(peak_bytes <= budget, "{peak_bytes} bytes in flight");
}

/// A shutdown while the sink retries (the broker is gone for good) ends the run within the
/// drain timeout, and the batches it was retrying count as not delivered (their positions
/// stay unacknowledged), never as sent.
#[test]
fn kafka_sink_shutdown_while_retrying_leaves_batches_unacknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    let Some(b) = Broker::start() else { return };
    b.py(r#"
from kafka.admin import KafkaAdminClient, NewTopic
a = KafkaAdminClient(bootstrap_servers=B)
a.create_topics([NewTopic("out", 1, 1)])
a.close()
"#);
    let reader = Paced {
        next: 0,
        total: 100_000,
        chunk: 20,
        every: Duration::from_millis(100),
        buf: Vec::new(),
        at: 0,
        made: Arc::new(AtomicU64::new(0)),
    };
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let tmp = std::env::temp_dir();
    let kcx = BuildContext::new("kout", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let sink: KafkaSinkConfig = toml::from_str(&format!(
        r#"brokers = ["{}"]
topic = "out"
request_timeout_ms = 1000
delivery_timeout_ms = 1500
retry_initial_ms = 200
retry_max_ms = 1000"#,
        b.addr
    ))
    .unwrap();
    let mut settings = RuntimeSettings::default();
    settings.drain_timeout = Duration::from_secs(10);
    let running = Topology::new(settings)
        .with_shutdown(shutdown)
        .with_metrics(metrics.clone())
        .source(SourceSpec::new(
            "in",
            "reader",
            Box::new(sluicebox::source::reader::ReaderSource::new("in", reader)),
        ))
        .sink(SinkSpec::new(
            "kout",
            "kafka",
            vec!["in".into()],
            sink.build(&kcx).unwrap(),
        ))
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    drop(b);
    // Past the delivery timeout: the sink is retrying.
    let t = Instant::now();
    while sample(&metrics.render(), "component_retries_total", "kout") == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "no retry began");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let report = running.stop().unwrap();
    let took = t.elapsed();
    let k = report
        .component("kout")
        .unwrap_or_else(|| panic!("no sink report after {took:?}: {report:?}"));
    eprintln!(
        "kafka shutdown while retrying: stopped in {took:.1?}, sink received {} sent {} failed {}",
        k.received, k.sent, k.failed
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert!(!report.timed_out, "the drain timed out");
    assert!(
        k.failed > 0,
        "the retried batches were not counted undelivered"
    );
    assert!(k.sent > 0 && k.sent < k.received);
    assert!(report.is_balanced(), "{:?}", report.components);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

/// A sink that keeps the lines it is given, readable after the run.
#[derive(Clone, Default)]
struct Kept(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl sluicebox::sink::Sink for Kept {
    fn write(
        &mut self,
        out: &sluicebox::sink::Output<'_>,
    ) -> sluicebox::Result<sluicebox::sink::Flow> {
        let mut lines = self.0.lock().unwrap();
        lines.extend(
            out.iter()
                .map(|e| String::from_utf8_lossy(e.bytes).into_owned()),
        );
        Ok(sluicebox::sink::Flow::Continue)
    }
}

/// Events that cannot become records (a `topic` field missing, a field that makes a name
/// Kafka refuses, a topic the cluster does not have, an event above `max_message_bytes`)
/// go to the dead letter with their reason and origin; their neighbours reach the topic,
/// and the run goes on (an unknown topic used to hold the sink 30 s, then stop the run).
#[test]
fn kafka_sink_dead_letters_events_it_cannot_send() {
    use sluicebox::source::reader::ReaderSource;
    let Some(b) = Broker::start() else { return };
    b.py(CREATE);
    let pad = "x".repeat(3000);
    let mut input = String::new();
    let mut want = Vec::new();
    for n in 0..70 {
        let line = match n % 7 {
            6 => format!(r#"{{"t":"nosuch","n":{n}}}"#),
            1 => format!(r#"{{"n":{n}}}"#),
            2 => format!(r#"{{"t":"no such/topic","n":{n}}}"#),
            3 => format!(r#"{{"t":"out","n":{n},"pad":"{pad}"}}"#),
            4 => format!(r#"{{"t":{{"o":1}},"n":{n}}}"#),
            _ => {
                want.push(serde_json::json!({"t": "out", "n": n}));
                format!(r#"{{"t":"out","n":{n}}}"#)
            }
        };
        input.push_str(&line);
        input.push('\n');
    }
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let tmp = std::env::temp_dir();
    let kcx = BuildContext::new("kout", &tmp, &tmp, metrics.clone(), shutdown.clone());
    let sink: KafkaSinkConfig = toml::from_str(&format!(
        "brokers = [\"{}\"]\ntopic = \"{{{{ t }}}}\"\nmax_message_bytes = 2000\ncompression = \"gzip\"",
        b.addr
    ))
    .unwrap();
    let dead = Kept::default();
    let report = Topology::new(RuntimeSettings::default())
        .with_shutdown(shutdown)
        .with_metrics(metrics)
        .with_dead_letter_outlet(kcx.dead_letters.clone())
        .source(SourceSpec::new(
            "in",
            "reader",
            Box::new(ReaderSource::new("input", std::io::Cursor::new(input))),
        ))
        .sink(SinkSpec::new(
            "kout",
            "kafka",
            vec!["in".into()],
            sink.build(&kcx).unwrap(),
        ))
        .dead_letter(Box::new(dead.clone()))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.is_balanced(), "{report:?}");
    let k = report.component("kout").unwrap();
    assert_eq!((k.received, k.sent, k.dead_lettered), (70, 20, 50), "{k:?}");

    assert_eq!(
        read_output(&b, want.len()),
        want,
        "the sendable events, in order"
    );
    let dead = dead.0.lock().unwrap();
    let reasons: Vec<(u64, String)> = dead
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["component"], "kout", "{v}");
            let event: serde_json::Value =
                serde_json::from_str(v["raw"].as_str().unwrap()).unwrap();
            let n = event["n"].as_u64().unwrap();
            assert_eq!(v["line"], n + 1, "{v}");
            let why = v["reason"].as_str().unwrap();
            (n, why.split(':').nth(1).unwrap().trim().to_string())
        })
        .collect();
    let mut expect = Vec::new();
    for n in 0..70u64 {
        let why = match n % 7 {
            6 => "topic_unknown",
            1 | 4 => "topic_field_missing",
            2 => "topic_invalid",
            3 => "message_too_large",
            _ => continue,
        };
        expect.push((n, why.to_string()));
    }
    let mut reasons = reasons;
    reasons.sort();
    assert_eq!(reasons, expect);
}
