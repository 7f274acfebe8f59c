//! The `elasticsearch` source (a `_bulk` ingest endpoint) driven by the official Python
//! client, through a wasm filter and the `elasticsearch` sink into the real ES-API server
//! (noida-db). What was stored is asserted on noida-db, never only through our counters.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluicebox::config::Config;
use sluicebox::runtime::{RunReport, Running, SinkSpec};
use sluicebox::{Flow, Output, Sink};

use super::es::{Server, TempDir, count, free_port, http, noida_bin, start};

fn python() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    dir.join("servers/venv/bin/python")
}

/// Runs `script` with the official client; its last stdout line is JSON.
fn client(script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("the servers' python (bash scripts/install-servers.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("python printed no JSON ({e}): {stdout}"))
}

/// A sluicebox pipeline: the `elasticsearch` source on `port` → drop_debug (wasm) → the
/// `elasticsearch` sink into noida-db at `es_port`, routing by the original index and
/// writing with the shipper's ids. `source_extra` goes into the source's table.
struct Agent {
    running: Option<Running>,
    port: u16,
    dir: TempDir,
}

impl Agent {
    fn start(es_port: u16, source_extra: &str, extra_sink: Option<Box<dyn Sink + Send>>) -> Self {
        Self::start_with(es_port, source_extra, extra_sink, "")
    }

    /// [`Agent::start`] with more `[runtime]` settings.
    fn start_with(
        es_port: u16,
        source_extra: &str,
        extra_sink: Option<Box<dyn Sink + Send>>,
        runtime_extra: &str,
    ) -> Self {
        let dir = TempDir::new("agent");
        let port = free_port();
        let wat = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/wat/drop_debug.wat");
        let text = format!(
            r#"
data_dir = "data"
[runtime]
batch_events = 64
{runtime_extra}

[sources.shippers]
type = "elasticsearch"
address = "127.0.0.1:{port}"
{source_extra}

[transforms.drop_debug]
type = "wasm"
inputs = ["shippers"]
module = "{wat}"

[sinks.es]
type = "elasticsearch"
inputs = ["drop_debug"]
endpoints = ["http://127.0.0.1:{es_port}"]
index = "{{{{ @metadata._index }}}}"
id = "@metadata._id"
retry_initial_ms = 20
retry_max_ms = 200

[dead_letter]
type = "file"
path = "dead.ndjson"
"#,
            wat = wat.display()
        );
        let built = Config::parse(&text).unwrap().build(&dir.0).unwrap();
        let mut topo = built.topology;
        if let Some(s) = extra_sink {
            topo = topo.sink(SinkSpec::new(
                "flaky",
                "flaky",
                vec!["drop_debug".into()],
                s,
            ));
        }
        let running = topo.start().unwrap();
        let t = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed().as_secs() < 10, "the source did not listen");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Agent {
            running: Some(running),
            port,
            dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) -> RunReport {
        let report = self.running.take().unwrap().stop().unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
        report
    }

    fn dead_letters(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.0.join("dead.ndjson"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop();
        }
    }
}

/// Every component's counts balance, the source's above all (received = emitted + filtered +
/// dead-lettered), and the sink's (sent when the cluster confirmed).
fn assert_balanced(report: &RunReport) {
    for c in &report.components {
        assert!(c.is_balanced(), "{c:?} in {report:?}");
    }
}

fn noida() -> Option<Server> {
    noida_bin()?;
    start("source")
}

/// Documents `first..first+n`, every fifth a DEBUG line (drop_debug drops those), spread
/// over two indices by `_index`, each with its own `_id`.
const DOCS: &str = r#"
def docs(first, n, prefix):
    for i in range(first, first + n):
        yield {
            "_index": "app-a" if i % 2 else "app-b",
            "_id": f"{prefix}{i}",
            "level": "DEBUG" if i % 5 == 0 else "INFO",
            "n": i,
            "message": f"event {i}",
        }
"#;

fn kept(first: u64, n: u64) -> u64 {
    (first..first + n).filter(|i| i % 5 != 0).count() as u64
}

/// Documents in `index` on noida-db (0 when the index was never created).
fn docs_in(es_port: u16, index: &str) -> u64 {
    if http(es_port, "GET", &format!("/{index}/_count"), "").0 == 404 {
        return 0;
    }
    count(es_port, index)
}

fn stored(es_port: u16) -> u64 {
    docs_in(es_port, "app-a") + docs_in(es_port, "app-b")
}

#[test]
fn es_source_python_bulk_and_streaming_bulk_through_wasm_into_noida() {
    let Some(srv) = noida() else { return };
    let mut agent = Agent::start(srv.port, "", None);
    let script = format!(
        r#"
import json, sys
from elasticsearch import Elasticsearch, helpers
{DOCS}
url = sys.argv[1]
es = Elasticsearch(url, request_timeout=60)
info = es.info()  # the 8.x client's product check runs here
ok, errors = helpers.bulk(es, docs(0, 1000, "b"), chunk_size=300, raise_on_error=False)
gz = Elasticsearch(url, request_timeout=60, http_compress=True)
streamed = [ok for ok, item in helpers.streaming_bulk(gz, docs(1000, 500, "s"), chunk_size=200, max_retries=3, initial_backoff=0.1)]
print(json.dumps({{"version": info["version"]["number"], "tagline": info["tagline"], "ok": ok, "errors": errors, "streamed": len(streamed), "all_ok": all(streamed)}}))
"#
    );
    let out = client(&script, &[&agent.url()]);
    assert_eq!(out["version"], "8.17.0", "{out}");
    assert_eq!(out["tagline"], "You Know, for Search");
    assert_eq!(out["ok"], 1000, "{out}");
    assert_eq!(out["errors"], serde_json::json!([]));
    assert_eq!(out["streamed"], 500);
    assert_eq!(out["all_ok"], true);
    // Answered after delivery: what the client was told is stored is stored now.
    assert_eq!(stored(srv.port), kept(0, 1500));
    assert_eq!(
        count(srv.port, "app-b"),
        (0..1500).filter(|i| i % 2 == 0 && i % 5 != 0).count() as u64
    );
    // The stored document is the shipper's, with the action's metadata beside it.
    let (_, body) = http(
        srv.port,
        "POST",
        "/app-a/_search",
        r#"{"query":{"term":{"n":1001}}}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hit = &v["hits"]["hits"][0];
    assert_eq!(hit["_id"], "s1001", "{body}");
    assert_eq!(hit["_source"]["message"], "event 1001");
    assert_eq!(hit["_source"]["@metadata"]["_index"], "app-a");
    let report = agent.stop();
    assert_balanced(&report);
}

/// Fails the acknowledgement of the first `fail` batches it is given, then delivers.
struct Flaky {
    fail: usize,
    seen: Arc<AtomicUsize>,
}

impl Sink for Flaky {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        let ack = out.ack();
        if n < self.fail {
            ack.failed();
        } else {
            ack.delivered();
        }
        Ok(Flow::Continue)
    }
}

/// A sink that takes every batch and never resolves its acknowledgement (until it is
/// dropped at the end of the run).
struct Hoarder(Vec<sluicebox::sink::Ack>);

impl Sink for Hoarder {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        self.0.push(out.ack());
        Ok(Flow::Continue)
    }
}

/// A shutdown while a shipper's request waits for a sink that holds its acknowledgements:
/// the request is answered "retry" (429 per item) within half the drain timeout, and the
/// run ends. Before, the answer never came and the process stayed up until the shipper hung
/// up, with a thread spinning at 100% CPU.
#[test]
fn es_source_answers_a_waiting_request_at_shutdown_within_the_drain() {
    let Some(srv) = noida() else { return };
    let mut agent = Agent::start_with(
        srv.port,
        "",
        Some(Box::new(Hoarder(Vec::new()))),
        "drain_timeout_ms = 4000",
    );
    let port = agent.port;
    let body = b"{\"index\":{\"_index\":\"held\"}}\n{\"n\":1}\n{\"index\":{\"_index\":\"held\"}}\n{\"n\":2}\n";
    let (answered, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let r = raw(port, "POST", "/_bulk", NDJSON, body);
        let _ = answered.send((r, t.elapsed()));
    });
    // The request is in: its batch went to both sinks, and one of them holds it.
    let wait = std::time::Duration::from_millis(1500);
    assert!(
        answer.recv_timeout(wait).is_err(),
        "answered before the hoarding sink let go"
    );
    let t = std::time::Instant::now();
    let running = agent.running.take().unwrap();
    let (stopped, stop) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = stopped.send(running.stop().unwrap());
    });
    // (A hang fails here instead of blocking the suite.)
    let ((status, _, answer), waited) = answer
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the waiting request was never answered");
    let report = stop
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the run did not stop");
    let stopped_in = t.elapsed();
    assert_eq!(status, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["errors"], true, "{v}");
    let statuses: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [429, 429], "{v}");
    assert!(
        waited < std::time::Duration::from_millis(1500 + 2000 + 1500),
        "answered {waited:?} after it was sent"
    );
    assert!(
        stopped_in < std::time::Duration::from_secs(9),
        "{stopped_in:?}"
    );
    assert_balanced(&report);
}

#[test]
fn es_source_downstream_failure_answers_429_per_item_and_the_retry_delivers() {
    let Some(srv) = noida() else { return };
    let seen = Arc::new(AtomicUsize::new(0));
    let flaky = Flaky {
        fail: 2,
        seen: seen.clone(),
    };
    let mut agent = Agent::start(srv.port, "", Some(Box::new(flaky)));
    let script = format!(
        r#"
import json, sys
from elasticsearch import Elasticsearch, helpers
{DOCS}
es = Elasticsearch(sys.argv[1], request_timeout=60)
ops = []
for d in docs(0, 10, "f"):
    ops.append({{"create": {{"_index": d.pop("_index"), "_id": d.pop("_id")}}}})
    ops.append(d)
first = es.bulk(operations=ops)
statuses = [list(i.values())[0]["status"] for i in first["items"]]
types = sorted({{list(i.values())[0].get("error", {{}}).get("type", "") for i in first["items"]}})
results = []
for ok, item in helpers.streaming_bulk(es, docs(0, 200, "f"), chunk_size=100, max_retries=5, initial_backoff=0.05, raise_on_error=False):
    results.append(ok)
    if not ok: print(json.dumps(item))
print(json.dumps({{"errors": first["errors"], "statuses": statuses, "types": types, "results": len(results), "all_ok": all(results)}}))
"#
    );
    let out = client(&script, &[&agent.url()]);
    // The first request's only batch failed in one sink: every item is to be retried.
    assert_eq!(out["errors"], true, "{out}");
    assert_eq!(out["statuses"], serde_json::json!(vec![429; 10]), "{out}");
    assert_eq!(
        out["types"],
        serde_json::json!(["es_rejected_execution_exception"])
    );
    // streaming_bulk met the second failure and retried those items until delivered.
    assert_eq!(out["results"], 200);
    assert_eq!(out["all_ok"], true, "{out}");
    assert!(seen.load(Ordering::SeqCst) > 2);
    // The retries did not duplicate: ids are the shipper's, written with `create`.
    assert_eq!(stored(srv.port), kept(0, 200));
    agent.stop();
}

/// A raw HTTP/1.1 request with headers; returns (status, head, body).
fn raw(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}content-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        text[9..12].parse().unwrap(),
        head.to_ascii_lowercase(),
        body.to_string(),
    )
}

const NDJSON: &str = "content-type: application/x-ndjson\r\n";

#[test]
fn es_source_answers_malformed_input_as_elasticsearch_does() {
    let Some(srv) = noida() else { return };
    let mut agent = Agent::start(srv.port, "", None);
    let p = agent.port;
    // A bad source line is answered per item (and dead-lettered); the rest are stored.
    let body = "{\"index\":{\"_index\":\"app-a\",\"_id\":\"m1\"}}\n{\"level\":\"INFO\",\"n\":1}\n\
                {\"index\":{\"_index\":\"app-a\",\"_id\":\"m2\"}}\n{\"level\":\"INFO\",\"n\":\n\
                {\"create\":{\"_index\":\"app-a\",\"_id\":\"m3\"}}\n[\"not\",\"an\",\"object\"]\n\
                {\"delete\":{\"_index\":\"app-a\",\"_id\":\"m1\"}}\n\
                {\"create\":{\"_index\":\"app-a\",\"_id\":\"m4\"}}\n{\"level\":\"INFO\",\"n\":4}\n";
    let (st, head, reply) = raw(p, "POST", "/_bulk", NDJSON, body.as_bytes());
    assert_eq!(st, 200, "{reply}");
    assert!(head.contains("x-elastic-product: elasticsearch"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["errors"], true);
    let items = v["items"].as_array().unwrap();
    let status: Vec<_> = items
        .iter()
        .map(|i| {
            let (op, r) = i.as_object().unwrap().iter().next().unwrap();
            (
                op.clone(),
                r["status"].as_u64().unwrap(),
                r["error"]["type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let s = |op: &str, st: u64, t: &str| (op.to_string(), st, t.to_string());
    assert_eq!(
        status,
        [
            s("index", 201, ""),
            s("index", 400, "mapper_parsing_exception"),
            s("create", 400, "mapper_parsing_exception"),
            s("delete", 400, "illegal_argument_exception"),
            s("create", 201, ""),
        ],
        "{reply}"
    );
    assert_eq!(items[1]["index"]["error"]["reason"], "failed to parse");
    assert_eq!(stored(srv.port), 2);
    // Whole-request errors: nothing is taken.
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "{\"upsert\":{\"_index\":\"a\"}}\n{}\n",
            NDJSON,
            400,
            "illegal_argument_exception",
        ),
        ("{oops\n{}\n", NDJSON, 400, "x_content_parse_exception"),
        (
            "{\"index\":{\"_index\":\"a\"}}\n{}",
            NDJSON,
            400,
            "illegal_argument_exception",
        ),
        (
            "{\"index\":{}}\n{}\n",
            NDJSON,
            400,
            "action_request_validation_exception",
        ),
        ("", NDJSON, 400, "parse_exception"),
    ];
    for (body, headers, want, kind) in cases {
        let (st, _, reply) = raw(p, "POST", "/_bulk", headers, body.as_bytes());
        assert_eq!(st, *want, "{body:?}: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["error"]["type"], *kind, "{body:?}: {reply}");
        assert_eq!(v["status"], *want);
    }
    let (st, _, reply) = raw(p, "POST", "/_bulk", "content-type: text/plain\r\n", b"x\n");
    assert_eq!(st, 406, "{reply}");
    assert!(reply.contains("Content-Type header [text/plain] is not supported"));
    let (st, _, reply) = raw(p, "GET", "/_cat/indices", "", b"");
    assert_eq!(st, 400);
    assert!(
        reply.contains("no handler found for uri [/_cat/indices] and method [GET]"),
        "{reply}"
    );
    let (st, _, reply) = raw(p, "GET", "/_bulk", "", b"");
    assert_eq!(st, 405, "{reply}");
    let (st, _, reply) = raw(p, "GET", "/_license", "", b"");
    assert_eq!(st, 200);
    assert!(reply.contains("\"active\""), "{reply}");
    let (st, _, reply) = raw(p, "PUT", "/_index_template/filebeat-8", NDJSON, b"{}");
    assert_eq!((st, reply.as_str()), (200, r#"{"acknowledged":true}"#));
    // A gzip body, and `/{index}/_bulk` giving the index.
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(b"{\"create\":{\"_id\":\"g1\"}}\n{\"level\":\"WARN\",\"n\":10}\n")
        .unwrap();
    let gz = z.finish().unwrap();
    let (st, _, reply) = raw(
        p,
        "POST",
        "/app-b/_bulk",
        "content-type: application/vnd.elasticsearch+x-ndjson; compatible-with=8\r\ncontent-encoding: gzip\r\n",
        &gz,
    );
    assert_eq!(st, 200, "{reply}");
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["items"][0]["create"]["status"], 201, "{reply}");
    assert_eq!(v["items"][0]["create"]["_index"], "app-b");
    assert_eq!(docs_in(srv.port, "app-b"), 1);
    let report = agent.stop();
    assert_balanced(&report);
    // Every refused item is a dead letter, with its line and offset in the body.
    let dead = agent.dead_letters();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("mapper_parsing_exception")
    );
    assert_eq!(dead[0]["line"], 4);
    assert_eq!(
        dead[2]["raw"],
        "{\"delete\":{\"_index\":\"app-a\",\"_id\":\"m1\"}}"
    );
}

#[test]
fn es_source_requires_its_credentials() {
    let Some(srv) = noida() else { return };
    // Secrets come from files (or the environment), never from the config text itself.
    let secrets = TempDir::new("secrets");
    let (pw, key) = (secrets.0.join("pw"), secrets.0.join("key"));
    std::fs::write(&pw, "s3cret\n").unwrap();
    std::fs::write(&key, "aWQ6a2V5").unwrap();
    let mut agent = Agent::start(
        srv.port,
        &format!(
            "auth = {{ user = \"shipper\", password = \"@file:{}\", api_key = \"@file:{}\" }}",
            pw.display(),
            key.display()
        ),
        None,
    );
    let (st, head, reply) = raw(agent.port, "GET", "/", "", b"");
    assert_eq!(st, 401, "{reply}");
    assert!(
        head.contains("www-authenticate: basic realm=\"security\""),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["error"]["type"], "security_exception");
    let script = format!(
        r#"
import json, sys
from elasticsearch import Elasticsearch, helpers, AuthenticationException
{DOCS}
url = sys.argv[1]
try:
    Elasticsearch(url, basic_auth=("shipper", "wrong")).info()
    wrong = "accepted"
except AuthenticationException as e:
    wrong = e.meta.status
good = helpers.bulk(Elasticsearch(url, basic_auth=("shipper", "s3cret")), docs(0, 10, "u"))[0]
key = helpers.bulk(Elasticsearch(url, api_key="aWQ6a2V5"), docs(10, 10, "u"))[0]
print(json.dumps({{"wrong": wrong, "good": good, "key": key}}))
"#
    );
    let out = client(&script, &[&agent.url()]);
    assert_eq!(
        out,
        serde_json::json!({"wrong": 401, "good": 10, "key": 10})
    );
    assert_eq!(stored(srv.port), kept(0, 20));
    agent.stop();
}

#[test]
fn es_source_config_names_tls_and_unknown_keys() {
    let dir = TempDir::new("cfg");
    let build = |extra: &str| {
        let text = format!(
            "[sources.s]\ntype = \"elasticsearch\"\naddress = \"127.0.0.1:0\"\n{extra}\n[sinks.o]\ntype = \"blackhole\"\ninputs = [\"s\"]\n"
        );
        Config::parse(&text)
            .and_then(|c| c.build(&dir.0))
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(build(""), None);
    let e = build("tls = { crt_file = \"x.pem\", key_file = \"x.key\" }").unwrap();
    assert!(
        e.contains("key `tls.crt_file`") && e.contains("x.pem"),
        "{e}"
    );
    let e = build("colour = 1").unwrap();
    assert!(e.contains("colour"), "{e}");
    let e = build("metadata_field = \"a.b\"").unwrap();
    assert!(e.contains("key `metadata_field`"), "{e}");
    let e = build("auth = { api_key = \"${SLUICEBOX_TEST_SURELY_UNSET}\" }").unwrap();
    assert!(e.contains("auth.api_key") && !e.contains("aWQ6"), "{e}");
}

/// HTTPS to the ingest endpoint with a CA made by the test: the official client trusting
/// that CA sends and the documents are stored; one that does not trust it, and a plain-HTTP
/// client, are refused. With `client_ca_file`, only a client with a certificate gets in.
#[cfg(feature = "tls")]
#[test]
fn es_source_serves_https_and_mutual_tls_to_the_python_client() {
    let Some(srv) = noida() else { return };
    let pki = TempDir::new("pki");
    crate::common::pki(&pki.0);
    let f = |name: &str| pki.0.join(name).display().to_string();
    let script = format!(
        r#"
import json, sys
from elasticsearch import Elasticsearch, helpers
{DOCS}
port, ca, first, cert, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
url = f"https://localhost:{{port}}"
def refused(make):
    try:
        make().info()
        return False
    except Exception:
        return True
out = {{
    "untrusted_refused": refused(lambda: Elasticsearch(url, request_timeout=5, max_retries=0)),
    "plain_refused": refused(lambda: Elasticsearch(f"http://127.0.0.1:{{port}}", request_timeout=5, max_retries=0)),
    "no_cert_refused": refused(lambda: Elasticsearch(url, ca_certs=ca, request_timeout=5, max_retries=0)),
}}
es = Elasticsearch(url, ca_certs=ca, client_cert=cert or None, client_key=key or None, request_timeout=60)
out["ok"], out["errors"] = helpers.bulk(es, docs(first, 300, "t"), raise_on_error=False)
print(json.dumps(out))
"#
    );
    // Server certificate only.
    let tls = format!(
        "tls = {{ crt_file = {:?}, key_file = {:?} }}",
        f("server.pem"),
        f("server.key")
    );
    let mut agent = Agent::start(srv.port, &tls, None);
    let port = agent.port.to_string();
    let out = client(&script, &[&port, &f("ca.pem"), "0", "", ""]);
    assert_eq!(out["untrusted_refused"], true, "{out}");
    assert_eq!(out["plain_refused"], true, "{out}");
    assert_eq!(
        out["no_cert_refused"], false,
        "no client certificate is asked for: {out}"
    );
    assert_eq!(out["ok"], 300, "{out}");
    assert_eq!(stored(srv.port), kept(0, 300));
    assert_balanced(&agent.stop());
    // Mutual TLS: the same client without a certificate is refused, with one it sends.
    let mtls = format!(
        "tls = {{ crt_file = {:?}, key_file = {:?}, client_ca_file = {:?} }}",
        f("server.pem"),
        f("server.key"),
        f("ca.pem")
    );
    let mut agent = Agent::start(srv.port, &mtls, None);
    let port = agent.port.to_string();
    let out = client(
        &script,
        &[
            &port,
            &f("ca.pem"),
            "300",
            &f("client.pem"),
            &f("client.key"),
        ],
    );
    assert_eq!(out["no_cert_refused"], true, "{out}");
    assert_eq!(out["ok"], 300, "{out}");
    assert_eq!(stored(srv.port), kept(0, 600));
    assert_balanced(&agent.stop());
}
