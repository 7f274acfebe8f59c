//! Elasticsearch sink against the real ES-API server (noida-db), directly and through a
//! fault-injecting proxy of ours.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluicebox::config::BuildContext;
use sluicebox::metrics::Metrics;
use sluicebox::runtime::{SinkSpec, SourceSpec, Topology};
use sluicebox::sink::elasticsearch::ElasticsearchSinkConfig;
use sluicebox::source::Shutdown;
use sluicebox::source::reader::ReaderSource;

pub(super) fn noida_bin() -> Option<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let p = dir.join("servers/bin/noida-db");
    p.exists().then_some(p)
}

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(super) struct Server {
    child: Child,
    pub(super) port: u16,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) struct TempDir(pub(super) PathBuf);
impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "sluicebox-es-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn start(tag: &str) -> Option<Server> {
    let Some(bin) = noida_bin() else {
        eprintln!("noida-db not installed (bash scripts/install-servers.sh): skipping");
        return None;
    };
    let dir = TempDir::new(tag);
    let port = free_port();
    let child = Command::new(bin)
        .args(["start", "--only", "elasticsearch", "--elasticsearch-port"])
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server {
        child,
        port,
        _dir: dir,
    };
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "noida-db did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(s)
}

/// A blocking one-shot HTTP/1.1 request; returns (status, body).
pub(super) fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Chunked replies: good enough to find the JSON between chunk sizes for small bodies.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => body[a..=b].to_string(),
        _ => body.to_string(),
    };
    (status, body)
}

pub(super) fn count(port: u16, index: &str) -> u64 {
    http(port, "POST", &format!("/{index}/_refresh"), "");
    let (st, body) = http(port, "GET", &format!("/{index}/_count"), "");
    assert_eq!(st, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["count"]
        .as_u64()
        .unwrap()
}

fn config(port: u16, extra: &str) -> ElasticsearchSinkConfig {
    toml::from_str(&format!(
        "endpoints = [\"http://127.0.0.1:{port}\"]\nretry_initial_ms = 20\nretry_max_ms = 200\nrequest_timeout_ms = 2000\n{extra}"
    ))
    .unwrap()
}

/// Runs `input` through a reader source named `key` into the sink; returns the sink's metrics.
fn run(cfg: &ElasticsearchSinkConfig, key: &str, input: Vec<u8>, dir: &std::path::Path) -> Metrics {
    let metrics = Metrics::new();
    let cx = BuildContext::new("es", dir, dir, metrics.clone(), Shutdown::new());
    let sink = cfg.build(&cx).unwrap();
    let report = Topology::new(Default::default())
        .source(SourceSpec::new(
            "in",
            "reader",
            Box::new(ReaderSource::new(key, std::io::Cursor::new(input))),
        ))
        .sink(SinkSpec::new(
            "es",
            "elasticsearch",
            vec!["in".into()],
            sink,
        ))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert!(report.is_balanced(), "{report:?}");
    metrics
}

fn events(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{{\"n\":{i},\"msg\":\"event {i}\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

fn metric(m: &Metrics, needle: &str) -> f64 {
    m.render()
        .lines()
        .filter(|l| l.contains(needle) && !l.starts_with('#'))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn es_stores_every_event_once_and_replay_is_idempotent() {
    let Some(srv) = start("once") else { return };
    let dir = TempDir::new("once-work");
    let cfg = config(srv.port, "index = \"logs\"\nbatch_max_events = 300");
    let m = run(&cfg, "file-a", events(1000), &dir.0);
    assert_eq!(count(srv.port, "logs"), 1000);
    assert_eq!(metric(&m, "status_class=\"2xx\""), 1000.0);
    // The same input again: create + origin ids → 409s, nothing new.
    let m = run(&cfg, "file-a", events(1000), &dir.0);
    assert_eq!(count(srv.port, "logs"), 1000);
    assert_eq!(metric(&m, "status_class=\"409\""), 1000.0);
    // A stored document is the event byte for byte.
    let (_, body) = http(
        srv.port,
        "POST",
        "/logs/_search",
        r#"{"query":{"term":{"n":7}}}"#,
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["hits"]["hits"][0]["_source"]["msg"], "event 7", "{body}");
}

#[test]
fn es_mapping_conflicts_are_dead_lettered_exactly() {
    let Some(srv) = start("conflict") else { return };
    let dir = TempDir::new("conflict-work");
    let dl = dir.0.join("dead.ndjson");
    let cfg = config(
        srv.port,
        &format!("index = \"m\"\ndead_letter_path = \"{}\"", dl.display()),
    );
    // First a number, then objects at 3 and 6.
    let mut input = String::new();
    for i in 0..8 {
        if i == 3 || i == 6 {
            input.push_str(&format!("{{\"i\":{i},\"v\":{{\"x\":1}}}}\n"));
        } else {
            input.push_str(&format!("{{\"i\":{i},\"v\":{i}}}\n"));
        }
    }
    let m = run(&cfg, "conf", input.into_bytes(), &dir.0);
    assert_eq!(count(srv.port, "m"), 6);
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<u64> = dead
        .iter()
        .map(|d| d["event"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![3, 6]);
    assert_eq!(dead[0]["status"], 400);
    assert_eq!(dead[0]["index"], "m");
    assert!(!dead[0]["error_type"].as_str().unwrap().is_empty());
    assert_eq!(metric(&m, "status_class=\"4xx\""), 2.0);
}

#[test]
fn es_without_dead_letter_keeps_rejected_unacked() {
    let Some(srv) = start("nodl") else { return };
    let dir = TempDir::new("nodl-work");
    let cfg = config(srv.port, "index = \"m\"");
    let input = b"{\"v\":1}\n{\"v\":{\"x\":1}}\n".to_vec();
    let metrics = Metrics::new();
    let cx = BuildContext::new("es", &dir.0, &dir.0, metrics.clone(), Shutdown::new());
    let sink = cfg.build(&cx).unwrap();
    let src = ReaderSource::new("k", std::io::Cursor::new(input));
    let _ = Topology::new(Default::default())
        .source(SourceSpec::new("in", "reader", Box::new(src)))
        .sink(SinkSpec::new(
            "es",
            "elasticsearch",
            vec!["in".into()],
            sink,
        ))
        .start()
        .unwrap()
        .wait();
    assert_eq!(count(srv.port, "m"), 1);
    assert!(metric(&metrics, "no_dead_letter") >= 1.0);
}

/// Fault modes for requests, by request number (0-based).
#[derive(Clone, Copy)]
enum Fault {
    Pass,
    Status503,
    Status429,
    Truncate,
    Drop,
    Hang,
    TooLarge,
    Status401,
    Status403,
}

/// A proxy that reads one request per connection, applies `plan(n, body_len)` and forwards
/// the rest to the real server (answering with `connection: close`).
fn proxy(
    upstream: u16,
    plan: impl Fn(usize, usize) -> Fault + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>) {
    let (port, n, _) = proxy_with_peak(upstream, plan);
    (port, n)
}

/// [`proxy`], also returning the most requests it held at once.
fn proxy_with_peak(
    upstream: u16,
    plan: impl Fn(usize, usize) -> Fault + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let peak = Arc::new(AtomicUsize::new(0));
    let active = Arc::new(AtomicUsize::new(0));
    let peak2 = peak.clone();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let plan = Arc::new(plan);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let (n, plan) = (n2.clone(), plan.clone());
            let (active, peak) = (active.clone(), peak2.clone());
            std::thread::spawn(move || {
                loop {
                    // Read headers.
                    let mut buf = Vec::new();
                    let mut b = [0u8; 1];
                    while !buf.ends_with(b"\r\n\r\n") {
                        match c.read(&mut b) {
                            Ok(1) => buf.push(b[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if c.read_exact(&mut body).is_err() {
                        return;
                    }
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Held while this request is answered (every arm below returns).
                    struct Leave(Arc<AtomicUsize>);
                    impl Drop for Leave {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _leave = Leave(active.clone());
                    let reply = |c: &mut TcpStream, st: &str| {
                        let _ = write!(
                            c,
                            "HTTP/1.1 {st}\r\nretry-after: 0\r\ncontent-length: 2\r\n\r\n{{}}"
                        );
                    };
                    match plan(i, len) {
                        Fault::Status503 => reply(&mut c, "503 Service Unavailable"),
                        Fault::Status429 => reply(&mut c, "429 Too Many Requests"),
                        Fault::TooLarge => reply(&mut c, "413 Payload Too Large"),
                        Fault::Status401 => reply(&mut c, "401 Unauthorized"),
                        Fault::Status403 => reply(&mut c, "403 Forbidden"),
                        Fault::Drop => return,
                        Fault::Hang => {
                            std::thread::sleep(Duration::from_secs(5));
                            return;
                        }
                        f @ (Fault::Pass | Fault::Truncate) => {
                            // Forward with connection: close, relay the whole reply.
                            let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                            let text = String::from_utf8_lossy(&buf).to_string();
                            let mut out = String::new();
                            for line in text.split("\r\n") {
                                if line.to_lowercase().starts_with("connection:") || line.is_empty()
                                {
                                    continue;
                                }
                                out.push_str(line);
                                out.push_str("\r\n");
                            }
                            out.push_str("connection: close\r\n\r\n");
                            up.write_all(out.as_bytes()).unwrap();
                            up.write_all(&body).unwrap();
                            let mut resp = Vec::new();
                            let _ = up.read_to_end(&mut resp);
                            if let Fault::Truncate = f {
                                resp.truncate(resp.len() - 10);
                                let _ = c.write_all(&resp);
                                return;
                            }
                            // Make it close-delimited for the client.
                            let _ = c.write_all(&resp);
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, n, peak)
}

#[test]
fn es_request_faults_retry_split_and_store_exactly_once() {
    let Some(srv) = start("faults") else { return };
    let dir = TempDir::new("faults-work");
    let (pport, reqs) = proxy(srv.port, |i, len| match i {
        0 => Fault::Status503,
        1 => Fault::Status429,
        2 => Fault::Drop,
        3 => Fault::Truncate, // the server stored it; the retry gets 409s
        4 => Fault::Hang,
        _ if len > 20_000 => Fault::TooLarge,
        _ => Fault::Pass,
    });
    let cfg = config(pport, "index = \"f\"\nbatch_max_events = 500");
    let m = run(&cfg, "faulty", events(1200), &dir.0);
    assert_eq!(count(srv.port, "f"), 1200);
    assert!(metric(&m, "component_retries_total") >= 5.0);
    assert!(
        reqs.load(Ordering::SeqCst) > 8,
        "413 split into more requests"
    );
    assert_eq!(
        metric(&m, "status_class=\"2xx\"") + metric(&m, "status_class=\"409\""),
        1200.0
    );
}

/// Its bytes, then one more event every 50 ms for ever: a source that stays open.
struct Trickle(std::io::Cursor<Vec<u8>>);

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf)? {
            0 if !buf.is_empty() => {
                std::thread::sleep(Duration::from_millis(50));
                let line = b"{\"n\":-1}\n";
                let n = line.len().min(buf.len());
                buf[..n].copy_from_slice(&line[..n]);
                Ok(n)
            }
            n => Ok(n),
        }
    }
}

#[test]
fn es_refused_credentials_stop_the_sink_and_keep_every_event_unacknowledged() {
    let Some(srv) = start("auth") else { return };
    let dir = TempDir::new("auth-work");
    for (fault, status) in [(Fault::Status401, 401), (Fault::Status403, 403)] {
        let (pport, reqs) = proxy(srv.port, move |_, _| fault);
        let cfg = config(pport, "index = \"auth\"\nbatch_max_events = 100");
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let cx = BuildContext::new("es", &dir.0, &dir.0, metrics.clone(), shutdown.clone());
        let running = Topology::new(Default::default())
            .with_shutdown(shutdown.clone())
            .with_metrics(metrics.clone())
            .source(SourceSpec::new(
                "in",
                "reader",
                // More events after these keep the source (and the sink) running.
                Box::new(ReaderSource::new(
                    "a",
                    Trickle(std::io::Cursor::new(events(300))),
                )),
            ))
            .sink(SinkSpec::new(
                "es",
                "elasticsearch",
                vec!["in".into()],
                cfg.build(&cx).unwrap(),
            ))
            .start()
            .unwrap();
        // The sink stops at the first refusal: no retries pile up while we wait.
        std::thread::sleep(Duration::from_millis(1500));
        let asked = reqs.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            reqs.load(Ordering::SeqCst),
            asked,
            "{status}: it kept sending"
        );
        // It shows as stopped (`/healthz` answers 503 naming it) while the run goes on.
        assert_eq!(
            metric(&metrics, "component_up{component_id=\"es\""),
            0.0,
            "{status}"
        );
        shutdown.trigger();
        let report = running.wait().unwrap();
        let es = report.component("es").unwrap();
        assert_eq!(es.sent, 0, "{status}: {es:?}");
        assert_eq!(es.dead_lettered, 0, "{status}: {es:?}");
        assert_eq!(es.failed, es.received, "{status}: {es:?}");
        assert!(report.is_balanced(), "{report:?}");
        assert_eq!(metric(&metrics, "auth_refused"), 1.0, "{status}");
        assert_eq!(count(srv.port, "auth*"), 0);
    }
}

#[test]
fn es_per_item_429_on_read_only_index_is_retried() {
    let Some(srv) = start("ro") else { return };
    let dir = TempDir::new("ro-work");
    let (st, b) = http(srv.port, "PUT", "/ro", "");
    assert!(st == 200, "{b}");
    let (st, b) = http(
        srv.port,
        "PUT",
        "/ro/_settings",
        r#"{"index.blocks.read_only_allow_delete":true}"#,
    );
    assert_eq!(st, 200, "{b}");
    let port = srv.port;
    let unblock = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        http(
            port,
            "PUT",
            "/ro/_settings",
            r#"{"index.blocks.read_only_allow_delete":null}"#,
        )
    });
    let cfg = config(srv.port, "index = \"ro\"");
    let m = run(&cfg, "ro", events(50), &dir.0);
    let (st, b) = unblock.join().unwrap();
    assert_eq!(st, 200, "{b}");
    assert_eq!(count(srv.port, "ro"), 50);
    assert!(metric(&m, "status_class=\"429\"") >= 50.0);
}

#[test]
fn es_config_errors_name_the_key() {
    let dir = TempDir::new("cfg");
    let cx = BuildContext::new("es", &dir.0, &dir.0, Metrics::new(), Shutdown::new());
    for (extra, key) in [
        ("index = \"x-%Q\"", "`index`"),
        ("index = \"x\"\naction = \"upsert\"", "`action`"),
        ("index = \"x\"\ncompression = \"zstd\"", "`compression`"),
        ("index = \"x\"\nauth = { user = \"u\" }", "`auth`"),
    ] {
        let e = config(1, extra).build(&cx).err().expect(extra).to_string();
        assert!(e.contains(key), "{e}");
    }
}

#[test]
fn es_gzip_bodies_are_stored() {
    let Some(srv) = start("gzip") else { return };
    let dir = TempDir::new("gzip-work");
    let cfg = config(srv.port, "index = \"gz-%Y\"\ncompression = \"gzip\"");
    run(&cfg, "g", events(300), &dir.0);
    let year = {
        let (_, b) = http(srv.port, "GET", "/_cat/indices?format=json", "");
        b
    };
    assert!(year.contains("gz-20"), "{year}");
    assert_eq!(count(srv.port, "gz-*"), 300);
}

/// Throughput against the real server, next to its own ceiling measured in the same run
/// with a plain client: `cargo test --release --test all es_throughput -- --ignored
/// --nocapture`. Prints figures; asserts only that every document arrived.
#[test]
#[ignore]
fn es_throughput() {
    let Some(srv) = start("tp") else { return };
    let dir = TempDir::new("tp-work");
    let n = 40_000;
    let input = events(n);
    // The server's own ceiling: the same documents in `_bulk` bodies of 5,000 `create`s,
    // sent one after another on one connection at a time, as the sink does.
    let bodies: Vec<String> = String::from_utf8(input.clone())
        .unwrap()
        .lines()
        .enumerate()
        .collect::<Vec<_>>()
        .chunks(5000)
        .map(|c| {
            c.iter()
                .map(|(i, l)| format!("{{\"create\":{{\"_id\":\"{i}\"}}}}\n{l}\n"))
                .collect()
        })
        .collect();
    let t = Instant::now();
    for b in &bodies {
        let (st, _) = http(srv.port, "POST", "/tp_plain/_bulk", b);
        assert_eq!(st, 200);
    }
    let plain = t.elapsed();
    assert_eq!(count(srv.port, "tp_plain"), n as u64);
    let cfg = config(srv.port, "index = \"tp\"\nbatch_max_events = 5000");
    let t = Instant::now();
    run(&cfg, "tp", input, &dir.0);
    let el = t.elapsed();
    assert_eq!(count(srv.port, "tp"), n as u64);
    eprintln!(
        "es sink -> noida-db: {n} events in {el:?} = {:.0} events/s; a plain client with the \
         same documents: {plain:?} = {:.0} events/s (sink / plain = {:.2})",
        n as f64 / el.as_secs_f64(),
        n as f64 / plain.as_secs_f64(),
        plain.as_secs_f64() / el.as_secs_f64()
    );
}

/// TLS to the cluster: a TLS-terminating proxy of ours (the library's own listener TLS) in
/// front of the real server, with a CA and certificates made by the test.
#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use crate::common::pki;
    use sluicebox::tls::ServerTlsConfig;

    /// Terminates TLS on a free port and forwards the plain bytes to `upstream`. Returns the
    /// port and the number of handshakes that failed.
    fn tls_proxy(upstream: u16, tls: &ServerTlsConfig) -> (u16, Arc<AtomicUsize>) {
        let acceptor = tls.build(|p| p.to_path_buf()).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let failed = Arc::new(AtomicUsize::new(0));
        let failed2 = failed.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                loop {
                    let Ok((sock, _)) = l.accept().await else {
                        continue;
                    };
                    let (acceptor, failed) = (acceptor.clone(), failed2.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(sock).await else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        };
                        let Ok(mut up) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    });
                }
            });
        });
        (port, failed)
    }

    /// Runs 500 events into the sink for at most `secs`; returns the metrics.
    fn run_for(cfg: &ElasticsearchSinkConfig, dir: &std::path::Path, secs: u64) -> Metrics {
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let cx = BuildContext::new("es", dir, dir, metrics.clone(), shutdown.clone());
        let sink = cfg.build(&cx).unwrap();
        let running = Topology::new(Default::default())
            .with_shutdown(shutdown.clone())
            .source(SourceSpec::new(
                "in",
                "reader",
                Box::new(ReaderSource::new("t", std::io::Cursor::new(events(500)))),
            ))
            .sink(SinkSpec::new(
                "es",
                "elasticsearch",
                vec!["in".into()],
                sink,
            ))
            .start()
            .unwrap();
        let stopper = shutdown.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            stopper.trigger();
        });
        let _ = running.wait();
        metrics
    }

    fn https_config(port: u16, tls: &str) -> ElasticsearchSinkConfig {
        toml::from_str(&format!(
            "endpoints = [\"https://localhost:{port}\"]\nindex = \"secure\"\nretry_initial_ms = 20\nretry_max_ms = 100\nrequest_timeout_ms = 2000\n{tls}"
        ))
        .unwrap()
    }

    #[test]
    fn es_over_tls_trusts_the_given_ca_and_nothing_else() {
        let Some(srv) = start("tls") else { return };
        let dir = TempDir::new("tls-work");
        let d = &dir.0;
        pki(d);
        let (port, failed) = tls_proxy(
            srv.port,
            &toml::from_str(&format!(
                "crt_file = {:?}\nkey_file = {:?}",
                d.join("server.pem"),
                d.join("server.key")
            ))
            .unwrap(),
        );
        // The wrong CA: every handshake fails, nothing is stored, nothing is acknowledged.
        let wrong = https_config(
            port,
            &format!(
                "tls = {{ ca_file = {:?}, system_roots = false }}",
                d.join("other-ca.pem")
            ),
        );
        let m = run_for(&wrong, d, 2);
        assert_eq!(count(srv.port, "secure*"), 0);
        assert!(failed.load(Ordering::Relaxed) >= 1);
        assert!(
            metric(&m, "component_errors_total") >= 1.0,
            "{}",
            m.render()
        );
        // The system roots alone do not know the test CA either (or, on a machine with no
        // system roots, the sink refuses to build and says what to set).
        let system = https_config(port, "");
        let cx = BuildContext::new("es", d, d, Metrics::new(), Shutdown::new());
        let has_roots = [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
        match system.build(&cx) {
            Err(e) if !has_roots => assert!(e.to_string().contains("no trusted roots"), "{e}"),
            Err(e) => panic!("the system has roots, yet: {e}"),
            Ok(_) => {
                let m = run_for(&system, d, 1);
                assert_eq!(count(srv.port, "secure*"), 0);
                assert!(metric(&m, "component_errors_total") >= 1.0);
            }
        }
        // The right CA: all 500 stored, read back through the server's plain port.
        let right = https_config(
            port,
            &format!("tls = {{ ca_file = {:?} }}", d.join("ca.pem")),
        );
        run_for(&right, d, 30);
        assert_eq!(count(srv.port, "secure"), 500);
    }

    #[test]
    fn es_over_mutual_tls_needs_the_client_certificate() {
        let Some(srv) = start("mtls") else { return };
        let dir = TempDir::new("mtls-work");
        let d = &dir.0;
        pki(d);
        let (port, _) = tls_proxy(
            srv.port,
            &toml::from_str(&format!(
                "crt_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}",
                d.join("server.pem"),
                d.join("server.key"),
                d.join("ca.pem")
            ))
            .unwrap(),
        );
        let ca = format!("ca_file = {:?}, system_roots = false", d.join("ca.pem"));
        run_for(&https_config(port, &format!("tls = {{ {ca} }}")), d, 2);
        assert_eq!(count(srv.port, "secure*"), 0);
        let with_cert = format!(
            "tls = {{ {ca}, crt_file = {:?}, key_file = {:?} }}",
            d.join("client.pem"),
            d.join("client.key")
        );
        run_for(&https_config(port, &with_cert), d, 30);
        assert_eq!(count(srv.port, "secure"), 500);
    }

    #[test]
    fn tls_config_errors_name_the_key() {
        let dir = TempDir::new("tls-cfg");
        let d = &dir.0;
        pki(d);
        let cx = BuildContext::new("es", d, d, Metrics::new(), Shutdown::new());
        for (cfg, key) in [
            (
                config(1, "index = \"x\"\ntls = { ca_file = \"ca.pem\" }"),
                "key `tls`: is set, but no URL starts with https://",
            ),
            (
                https_config(1, "tls = { ca_file = \"missing.pem\" }"),
                "key `tls.ca_file`",
            ),
            (
                https_config(1, "tls = { ca_file = \"server.key\" }"),
                "key `tls.ca_file`",
            ),
            (
                https_config(
                    1,
                    "tls = { ca_file = \"ca.pem\", crt_file = \"client.pem\" }",
                ),
                "key `tls.key_file`",
            ),
            (
                https_config(
                    1,
                    "tls = { ca_file = \"ca.pem\", crt_file = \"client.pem\", key_file = \"server.key\" }",
                ),
                "key `tls.key_file`",
            ),
        ] {
            let e = cfg.build(&cx).err().expect(key).to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        // Relative paths resolve against the config's directory.
        let ok = https_config(1, "tls = { ca_file = \"ca.pem\", system_roots = false }");
        assert!(ok.build(&cx).is_ok());
    }
}

/// `max_in_flight = 4`: requests overlap (the proxy sees more than one at once), faults on
/// some of them are retried while the others go on, and every event is stored once.
#[test]
fn es_requests_in_flight_overlap_and_store_exactly_once() {
    let Some(srv) = start("inflight") else { return };
    let dir = TempDir::new("inflight-work");
    let (pport, reqs, peak) = proxy_with_peak(srv.port, |i, _| match i % 7 {
        2 => Fault::Status503,
        5 => Fault::Drop,
        _ => Fault::Pass,
    });
    let cfg = config(
        pport,
        "index = \"inflight\"\nbatch_max_events = 100\nmax_in_flight = 4\nlinger_ms = 5",
    );
    let m = run(&cfg, "inflight", events(6000), &dir.0);
    assert_eq!(count(srv.port, "inflight"), 6000);
    assert!(reqs.load(Ordering::SeqCst) >= 60);
    assert!(
        peak.load(Ordering::SeqCst) > 1,
        "requests never overlapped (peak {})",
        peak.load(Ordering::SeqCst)
    );
    assert!(metric(&m, "component_retries_total") >= 1.0);
    assert_eq!(
        metric(&m, "status_class=\"2xx\"") + metric(&m, "status_class=\"409\""),
        6000.0
    );
}
