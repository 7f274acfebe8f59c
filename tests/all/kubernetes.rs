//! The `kubernetes_logs` source: path metadata, partial lines across restarts and
//! checkpoints, and pod metadata from a test server that speaks the Kubernetes list/watch
//! JSON (recorded responses; it breaks the watch, which must lead to a relist). No real API
//! server can run on this machine: the server here is a fake at the HTTP level.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluicebox::config::{BuildContext, Config, KubernetesLogsConfig};
use sluicebox::metrics::Metrics;
use sluicebox::runtime::{RunReport, RuntimeSettings, SinkSpec, SourceSpec, Topology};
use sluicebox::source::Shutdown;
use sluicebox::{Flow, Output, Sink};

use crate::torture;

type Events = Arc<Mutex<Vec<Value>>>;

struct Collect(Events);

impl Sink for Collect {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let mut v = self.0.lock().unwrap();
        for e in out.iter() {
            v.push(serde_json::from_slice(e.bytes).expect("an event is JSON"));
        }
        Ok(Flow::Continue)
    }
}

const UID_WEB: &str = "0b6f4f0e-8d8a-4c57-9a40-6a3f3b1d2c01";
const UID_JOB: &str = "5d2e9c1a-77b0-4f61-8a3e-0c9d8e7f6a02";

fn web_log(pods: &Path) -> PathBuf {
    pods.join(format!("shop_web-7c9d8f6b5-x2x9q_{UID_WEB}/nginx/0.log"))
}
fn job_log(pods: &Path) -> PathBuf {
    pods.join(format!(
        "batch_report-28731550-kq2lz_{UID_JOB}/report/2.log"
    ))
}

fn append(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

struct Run {
    running: sluicebox::runtime::Running,
    events: Events,
    dead: Events,
    metrics: Metrics,
}

fn start(pods: &Path, data: &Path, extra: &str) -> Run {
    let toml = format!(
        "pods_dir = {:?}\nglob_interval_ms = 100\ncheckpoint_interval_ms = 100\nrotate_wait_secs = 1\n{extra}",
        pods.display().to_string()
    );
    let cfg: KubernetesLogsConfig = toml::from_str(&toml).unwrap();
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let cx = BuildContext::new("k8s", data, data, metrics.clone(), shutdown.clone());
    let src = cfg.build(&cx).unwrap();
    let mut s = RuntimeSettings::default();
    s.data_dir = Some(data.to_path_buf());
    let events: Events = Default::default();
    let dead: Events = Default::default();
    let running = Topology::new(s)
        .with_metrics(metrics.clone())
        .with_shutdown(shutdown)
        .source(SourceSpec::new("k8s", "kubernetes_logs", src))
        .sink(SinkSpec::new(
            "out",
            "collect",
            vec!["k8s".into()],
            Box::new(Collect(events.clone())),
        ))
        .dead_letter(Box::new(Collect(dead.clone())))
        .start()
        .unwrap();
    Run {
        running,
        events,
        dead,
        metrics,
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn messages(events: &Events) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The acknowledged offsets in the source's checkpoint, by path.
fn checkpoint(data: &Path) -> Vec<(String, u64)> {
    let Ok(text) = std::fs::read_to_string(data.join("source-k8s/checkpoints.json")) else {
        return Vec::new(); // not written yet
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn metric(m: &Metrics, needle: &str) -> f64 {
    m.render()
        .lines()
        .filter(|l| l.contains(needle) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn report_balanced(r: &RunReport) {
    assert!(r.is_balanced(), "conservation law violated");
}

#[test]
fn kubernetes_path_metadata_partials_and_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let (pods, data) = (d.path().join("pods"), d.path().join("data"));
    let first = concat!(
        "2026-12-05T10:00:00.000000001Z stdout F {\"level\":\"INFO\",\"msg\":\"GET /\"}\n",
        "not a CRI line\n",
        "2026-12-05T10:00:00.000000002Z stderr F warn: slow upstream\n",
    );
    let partial = "2026-12-05T10:00:01.000000001Z stdout P the first half, \n";
    append(&web_log(&pods), &format!("{first}{partial}"));
    append(
        &job_log(&pods),
        "2026-12-05T10:00:00Z stdout F report done\n",
    );
    // Rotated and compressed files are not read.
    append(
        &pods.join(format!(
            "shop_web-7c9d8f6b5-x2x9q_{UID_WEB}/nginx/0.log.20261205-090000.gz"
        )),
        "2026-12-05T09:00:00Z stdout F old\n",
    );
    let r = start(
        &pods,
        &data,
        "merge_json = true\npartial_timeout_ms = 60000\n",
    );
    wait_until("3 events and a dead letter", || {
        r.events.lock().unwrap().len() >= 3 && !r.dead.lock().unwrap().is_empty()
    });
    // The open group holds the checkpoint at its first line.
    let web = web_log(&pods).display().to_string();
    wait_until("the checkpoint", || {
        checkpoint(&data).contains(&(web.clone(), first.len() as u64))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(checkpoint(&data).contains(&(web.clone(), first.len() as u64)));
    let report = r.running.stop().unwrap();
    report_balanced(&report);
    {
        let ev = r.events.lock().unwrap();
        assert_eq!(ev.len(), 3, "{ev:?}");
        let info = ev
            .iter()
            .find(|e| e["level"] == "INFO")
            .expect("merged JSON");
        assert_eq!(info["msg"], "GET /");
        assert_eq!(info["stream"], "stdout");
        assert_eq!(
            info["kubernetes"],
            serde_json::json!({"namespace":"shop","pod_name":"web-7c9d8f6b5-x2x9q","pod_uid":UID_WEB,
                "container_name":"nginx","restart_count":0})
        );
        let job = ev.iter().find(|e| e["message"] == "report done").unwrap();
        assert_eq!(job["kubernetes"]["namespace"], "batch");
        assert_eq!(job["kubernetes"]["restart_count"], 2);
        assert!(ev.iter().all(|e| e["message"] != "old"));
        let dead = r.dead.lock().unwrap();
        assert_eq!(dead.len(), 1);
        let at = first.lines().next().unwrap().len() + 1;
        assert_eq!(dead[0]["offset"], at);
        assert_eq!(dead[0]["stream"], web.as_str());
        assert!(
            dead[0]["reason"]
                .as_str()
                .unwrap()
                .starts_with(&format!("malformed CRI line in {web} at offset {at}")),
            "{}",
            dead[0]
        );
    }
    // The group's end arrives while the agent is down: after the restart the whole message
    // is read again from its first fragment, and nothing before it is repeated.
    append(
        &web_log(&pods),
        "2026-12-05T10:00:01.000000002Z stdout F the second half\n",
    );
    let r = start(&pods, &data, "partial_timeout_ms = 60000\n");
    wait_until("the merged event", || !r.events.lock().unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    report_balanced(&r.running.stop().unwrap());
    assert_eq!(messages(&r.events), ["the first half, the second half"]);
    let e = &r.events.lock().unwrap()[0];
    assert_eq!(e["time"], "2026-12-05T10:00:01.000000001Z");
    assert_eq!(e["kubernetes"]["pod_name"], "web-7c9d8f6b5-x2x9q");
}

#[test]
fn kubernetes_dangling_partial_is_flushed_after_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let (pods, data) = (d.path().join("pods"), d.path().join("data"));
    let line = "2026-12-05T10:00:00Z stderr P a line that never ends\n";
    append(&web_log(&pods), line);
    let r = start(&pods, &data, "partial_timeout_ms = 200\n");
    wait_until("the flushed partial", || {
        !r.events.lock().unwrap().is_empty()
    });
    let web = web_log(&pods).display().to_string();
    wait_until("the checkpoint past it", || {
        checkpoint(&data).contains(&(web.clone(), line.len() as u64))
    });
    report_balanced(&r.running.stop().unwrap());
    let e = &r.events.lock().unwrap()[0];
    assert_eq!(e["message"], "a line that never ends");
    assert_eq!(e["partial_flushed"], true);
    assert_eq!(e["stream"], "stderr");
}

/// A recorded `GET /api/v1/pods?fieldSelector=spec.nodeName=node-1` reply (kind 1.30,
/// trimmed to the fields that matter).
fn pod_list(rv: &str, web_tier: &str, with_job: bool) -> String {
    let mut items = vec![web_pod(rv, web_tier)];
    if with_job {
        items.push(format!(
            r#"{{"metadata":{{"name":"report-28731550-kq2lz","namespace":"batch","uid":"{UID_JOB}","resourceVersion":"{rv}","labels":{{"job-name":"report-28731550"}}}},"spec":{{"nodeName":"node-1"}},"status":{{"phase":"Succeeded"}}}}"#
        ));
    }
    format!(
        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
        items.join(",")
    )
}

fn web_pod(rv: &str, tier: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"web-7c9d8f6b5-x2x9q","namespace":"shop","uid":"{UID_WEB}","resourceVersion":"{rv}","labels":{{"app":"web","tier":"{tier}","pod-template-hash":"7c9d8f6b5"}},"annotations":{{"prometheus.io/scrape":"true"}}}},"spec":{{"nodeName":"node-1","containers":[{{"name":"nginx","image":"nginx:1.27"}}]}},"status":{{"phase":"Running"}}}}"#
    )
}

/// The fake API server: answers LISTs with the recorded lists in turn, and WATCHes with the
/// scripted events; the first watch breaks mid-stream.
struct FakeApi {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn fake_api() -> FakeApi {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests: Arc<Mutex<Vec<String>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (reqs, halt) = (requests.clone(), stop.clone());
    std::thread::spawn(move || {
        let (mut lists, mut watches) = (0, 0);
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            if halt.load(Ordering::SeqCst) {
                return;
            }
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
            }
            let target = first.split(' ').nth(1).unwrap_or("").to_string();
            reqs.lock().unwrap().push(target.clone());
            if !target.contains("watch=true") {
                lists += 1;
                let body = if lists == 1 {
                    pod_list("100", "front", true)
                } else {
                    // Relisted after the broken watch: a label changed, the job's pod is gone.
                    pod_list("200", "back", false)
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            watches += 1;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            let chunk = |conn: &mut TcpStream, s: &str| {
                let _ = write!(conn, "{:x}\r\n{s}\r\n", s.len());
                let _ = conn.flush();
            };
            if watches == 1 {
                chunk(
                    &mut conn,
                    &format!(
                        "{{\"type\":\"MODIFIED\",\"object\":{}}}\n",
                        web_pod("150", "middle")
                    ),
                );
                chunk(
                    &mut conn,
                    "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"160\"}}}\n",
                );
                // Half an event, then the connection drops: the chunked body never ends.
                chunk(&mut conn, "{\"type\":\"MODIF");
                std::thread::sleep(Duration::from_millis(100));
                let _ = conn.shutdown(std::net::Shutdown::Both);
            } else {
                // Later watches stay open and quiet (bookmarks only) until the test ends.
                while !halt.load(Ordering::SeqCst) {
                    chunk(
                        &mut conn,
                        "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"210\"}}}\n",
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink);
                return;
            }
        }
    });
    FakeApi {
        port,
        requests,
        stop,
    }
}

#[test]
fn kubernetes_api_list_watch_relist_and_deleted_pods() {
    let api = fake_api();
    let d = tempfile::tempdir().unwrap();
    let (pods, data) = (d.path().join("pods"), d.path().join("data"));
    append(&web_log(&pods), "2026-12-05T10:00:00Z stdout F early\n");
    append(&job_log(&pods), "2026-12-05T10:00:00Z stdout F early job\n");
    let r = start(
        &pods,
        &data,
        &format!(
            "node_name = \"node-1\"\n[api]\nendpoint = \"http://127.0.0.1:{}\"\nrelist_backoff_min_ms = 50\n",
            api.port
        ),
    );
    wait_until("a relist and a second watch", || {
        api.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.contains("watch=true"))
            .count()
            >= 2
    });
    append(
        &web_log(&pods),
        "2026-12-05T10:00:05Z stdout F after the relist\n",
    );
    append(
        &job_log(&pods),
        "2026-12-05T10:00:05Z stdout F job still draining\n",
    );
    wait_until("the late events", || r.events.lock().unwrap().len() >= 4);
    let metrics = r.metrics.clone();
    report_balanced(&r.running.stop().unwrap());
    let ev = r.events.lock().unwrap();
    let find = |m: &str| ev.iter().find(|e| e["message"] == m).unwrap().clone();
    let web = find("after the relist");
    assert_eq!(web["kubernetes"]["pod_labels"]["tier"], "back", "{web}");
    assert_eq!(web["kubernetes"]["pod_labels"]["app"], "web");
    assert_eq!(
        web["kubernetes"]["pod_annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(web["kubernetes"]["namespace"], "shop");
    // Deleted from the API (missing from the relist) while its file is still read: the pod's
    // metadata stays.
    let job = find("job still draining");
    assert_eq!(
        job["kubernetes"]["pod_labels"]["job-name"], "report-28731550",
        "{job}"
    );
    let reqs = api.requests.lock().unwrap().clone();
    let prefix = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1";
    assert!(reqs.iter().all(|t| t.starts_with(prefix)), "{reqs:?}");
    let lists = reqs.iter().filter(|t| !t.contains("watch=true")).count();
    assert_eq!(
        lists, 2,
        "one LIST, and one relist after the broken watch: {reqs:?}"
    );
    assert!(reqs[1].contains("resourceVersion=100"), "{reqs:?}");
    assert!(metric(&metrics, "kubernetes_watch_broken") >= 1.0);
    assert_eq!(metric(&metrics, "kubernetes_api_unreachable"), 0.0);
}

#[test]
fn kubernetes_api_unreachable_degrades_to_path_metadata() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = tempfile::tempdir().unwrap();
    let (pods, data) = (d.path().join("pods"), d.path().join("data"));
    append(
        &web_log(&pods),
        "2026-12-05T10:00:00Z stdout F still flowing\n",
    );
    let r = start(
        &pods,
        &data,
        &format!(
            "node_name = \"node-1\"\n[api]\nendpoint = \"http://127.0.0.1:{port}\"\nrelist_backoff_min_ms = 50\nrelist_backoff_max_ms = 100\n"
        ),
    );
    wait_until("the event", || !r.events.lock().unwrap().is_empty());
    wait_until("two failed lists", || {
        metric(&r.metrics, "kubernetes_api_unreachable") >= 2.0
    });
    report_balanced(&r.running.stop().unwrap());
    let e = &r.events.lock().unwrap()[0];
    assert_eq!(e["message"], "still flowing");
    assert_eq!(e["kubernetes"]["pod_name"], "web-7c9d8f6b5-x2x9q");
    assert!(e["kubernetes"].get("pod_labels").is_none());
}

#[test]
fn kubernetes_config_errors_name_the_key() {
    let d = tempfile::tempdir().unwrap();
    let bad = |extra: &str| {
        let text = format!(
            "data_dir = \"data\"\n[sources.k8s]\ntype = \"kubernetes_logs\"\n{extra}\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"k8s\"]\n"
        );
        Config::parse(&text)
            .and_then(|c| c.build(d.path()))
            .err()
            .map(|e| e.message().to_string())
    };
    assert_eq!(bad(""), None);
    let e = bad("pod_dir = \"/x\"").unwrap();
    assert!(e.contains("unknown field `pod_dir`"), "{e}");
    let e = bad("format = \"json\"").unwrap();
    assert!(
        e.contains("sources.k8s: key `format`: unknown format \"json\" (known: cri, docker, auto)"),
        "{e}"
    );
    let e = bad("max_merged_bytes = 0").unwrap();
    assert!(e.contains("sources.k8s: key `max_merged_bytes`"), "{e}");
    let e = bad("node_name = \"n\"\n[sources.k8s.api]\nendpoint = \"https://10.0.0.1\"").unwrap();
    assert!(
        e.contains("key `api.endpoint`: https is not built in"),
        "{e}"
    );
    let e = bad("node_name = \"n\"\n[sources.k8s.api]\ntimeout = 1").unwrap();
    assert!(e.contains("unknown field `timeout`"), "{e}");
    let e = bad("node_name = \"${SLUICEBOX_TEST_UNSET_NODE}\"\n[sources.k8s.api]").unwrap();
    assert!(
        e.contains(
            "key `node_name`: the environment variable SLUICEBOX_TEST_UNSET_NODE is not set"
        ),
        "{e}"
    );
    let e = bad("codec = \"cri\"").unwrap();
    assert!(
        e.contains("sources.k8s: key `codec`: kubernetes_logs decodes with `format`"),
        "{e}"
    );
}

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// `kubernetes-validate`, installed by `scripts/install-servers.sh` (which `scripts/test.sh`
/// runs) under the target dir.
fn kubernetes_validate() -> Option<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let p = dir.join("servers/bin/kubernetes-validate");
    p.exists().then_some(p)
}

#[test]
fn kubernetes_deploy_manifests_pass_strict_schema_validation() {
    let Some(kv) = kubernetes_validate() else {
        eprintln!(
            "SKIPPED: kubernetes-validate is not installed (bash scripts/install-servers.sh)"
        );
        return;
    };
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    manifests.sort();
    assert_eq!(manifests.len(), 4, "{manifests:?}");
    let out = std::process::Command::new(&kv)
        .args(["--strict", "-k", "1.30.0"])
        .args(&manifests)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for kind in [
        "daemonset/sluicebox",
        "configmap/sluicebox-config",
        "clusterrole/sluicebox",
        "clusterrolebinding/sluicebox",
        "serviceaccount/sluicebox",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind}: {text}"
        );
    }
    // The validator does reject what is wrong: a misspelt field under --strict.
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.yaml");
    let ds = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    std::fs::write(&bad, ds.replace("readOnly: true", "readonly: true")).unwrap();
    let out = std::process::Command::new(&kv)
        .args(["--strict", "-k", "1.30.0"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelt field must fail --strict");
}

/// The `pipeline.toml` block of configmap.yaml (a `|` block scalar, indented 4).
fn configmap_pipeline() -> String {
    let text = std::fs::read_to_string(deploy_dir().join("configmap.yaml")).unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim_end() != "  pipeline.toml: |");
    assert!(lines.next().is_some(), "no pipeline.toml in configmap.yaml");
    let mut toml = String::new();
    for l in lines {
        if l.trim().is_empty() {
            toml.push('\n');
        } else if let Some(body) = l.strip_prefix("    ") {
            toml.push_str(body);
            toml.push('\n');
        } else {
            break;
        }
    }
    toml
}

#[test]
fn kubernetes_deploy_configmap_pipeline_passes_sluicebox_validate() {
    let pipeline = configmap_pipeline();
    assert!(
        pipeline.contains("type = \"kubernetes_logs\""),
        "{pipeline}"
    );
    // The image's layout: /etc/sluicebox/pipeline.toml (the ConfigMap) next to
    // filters/drop_debug.wat (the Dockerfile). Only data_dir moves, to keep the test out of
    // /var/lib.
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    assert!(
        dockerfile
            .contains("COPY examples/wat/drop_debug.wat /etc/sluicebox/filters/drop_debug.wat")
    );
    let ds = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    assert!(ds.contains("mountPath: /etc/sluicebox/pipeline.toml"));
    assert!(ds.contains("containerPort: 8686") && pipeline.contains("address = \"0.0.0.0:8686\""));
    assert!(ds.contains("fieldPath: spec.nodeName") && pipeline.contains("${NODE_NAME}"));
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("filters")).unwrap();
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/wat/drop_debug.wat"),
        d.path().join("filters/drop_debug.wat"),
    )
    .unwrap();
    let data = d.path().join("data");
    let moved = pipeline.replace(
        "data_dir = \"/var/lib/sluicebox\"",
        &format!("data_dir = {:?}", data.display().to_string()),
    );
    assert_ne!(moved, pipeline, "data_dir not found");
    let config = d.path().join("pipeline.toml");
    std::fs::write(&config, &moved).unwrap();
    let validate = |node: Option<&str>| {
        let mut c = std::process::Command::new(crate::common::sluicebox_bin());
        c.arg("validate").arg(&config).env_remove("NODE_NAME");
        if let Some(n) = node {
            c.env("NODE_NAME", n);
        }
        c.output().unwrap()
    };
    let out = validate(Some("node-1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the downward API's NODE_NAME, validate names the key.
    let out = validate(None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "sources.pods: key `node_name`: the environment variable NODE_NAME is not set"
        ),
        "{err}"
    );
}

#[test]
fn kubernetes_cri_codec_on_a_plain_file_source() {
    // `codec = "cri"` works on the `file` source too (no pod metadata), with the file named
    // in dead letters.
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("app.log");
    append(
        &log,
        concat!(
            "2026-12-05T10:00:00Z stdout P one \n",
            "2026-12-05T10:00:00Z stdout F two\n",
            "broken\n",
        ),
    );
    let text = format!(
        "data_dir = \"data\"\n[sources.f]\ntype = \"file\"\ncodec = \"cri\"\nfollow = false\ninclude = [{:?}]\n[sinks.out]\ntype = \"file\"\ninputs = [\"f\"]\npath = \"out.ndjson\"\n",
        log.display().to_string()
    );
    let built = Config::parse(&text).unwrap().build(d.path()).unwrap();
    let report = built.topology.start().unwrap().wait().unwrap();
    report_balanced(&report);
    let out = std::fs::read_to_string(d.path().join("out.ndjson")).unwrap();
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["message"], "one two");
    let dead = std::fs::read_to_string(d.path().join("data/dead_letter.ndjson")).unwrap();
    assert!(
        dead.contains(&format!(
            "malformed CRI line in {} at offset 69",
            log.display()
        )),
        "{dead}"
    );
}

/// Regression: the kubelet rotates `0.log` to `0.log.<timestamp>`, a name the globs do not
/// match. When that happened while the agent was down (or before it had delivered the
/// file's end), the lines after the checkpoint were never read: the restarted agent only
/// looked for files the globs match. Now the file is found again by its inode in its
/// directory and read on from the checkpoint, with the pod metadata of the name it had.
#[test]
fn kubernetes_file_rotated_while_down_is_read_on_from_the_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let (pods, data) = (d.path().join("pods"), d.path().join("data"));
    let log = web_log(&pods);
    let first = "2026-12-06T10:00:00Z stdout F one\n";
    append(&log, first);
    let r = start(&pods, &data, "partial_timeout_ms = 60000\n");
    wait_until("the first event", || !r.events.lock().unwrap().is_empty());
    let web = log.display().to_string();
    wait_until("the checkpoint", || {
        checkpoint(&data).contains(&(web.clone(), first.len() as u64))
    });
    report_balanced(&r.running.stop().unwrap());
    // While the agent is down: more lines (a message split in two among them), then the
    // rotation, then the runtime writes on in a new 0.log.
    append(
        &log,
        concat!(
            "2026-12-06T10:00:01Z stdout F two\n",
            "2026-12-06T10:00:02Z stdout P thr\n",
            "2026-12-06T10:00:02Z stdout F ee\n",
        ),
    );
    std::fs::rename(&log, log.with_file_name("0.log.20261206-100003")).unwrap();
    append(&log, "2026-12-06T10:00:04Z stdout F four\n");
    let r = start(&pods, &data, "partial_timeout_ms = 60000\n");
    wait_until("three events", || r.events.lock().unwrap().len() >= 3);
    std::thread::sleep(Duration::from_millis(300));
    report_balanced(&r.running.stop().unwrap());
    let mut got = messages(&r.events);
    got.sort();
    assert_eq!(got, ["four", "three", "two"]);
    for e in r.events.lock().unwrap().iter() {
        assert_eq!(e["kubernetes"]["pod_name"], "web-7c9d8f6b5-x2x9q", "{e}");
        assert_eq!(e["kubernetes"]["restart_count"], 0, "{e}");
    }
}

/// Child mode of `kubernetes_kill9_torture`: the source over `<dir>/pods` into a fsyncing
/// file, until killed.
#[test]
fn kubernetes_torture_child() {
    let Ok(dir) = std::env::var(torture::CHILD_ENV) else {
        return; // only meaningful when spawned by `kubernetes_kill9_torture`
    };
    let dir = PathBuf::from(dir);
    let data = dir.join("data");
    // Partials never time out here: a flushed half would be a failure of the test.
    let toml = format!(
        "pods_dir = {:?}\nformat = \"auto\"\nglob_interval_ms = 100\ncheckpoint_interval_ms = 100\n\
         rotate_wait_secs = 2\npartial_timeout_ms = 600000\n",
        dir.join("pods").display().to_string()
    );
    let cfg: KubernetesLogsConfig = toml::from_str(&toml).unwrap();
    let (metrics, shutdown) = (Metrics::new(), Shutdown::new());
    let cx = BuildContext::new("k8s", &data, &data, metrics.clone(), shutdown.clone());
    let src = cfg.build(&cx).unwrap();
    let mut s = RuntimeSettings::default();
    s.data_dir = Some(data);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(torture::out_path(&dir))
        .unwrap();
    Topology::new(s)
        .with_metrics(metrics)
        .with_shutdown(shutdown)
        .source(SourceSpec::new("k8s", "kubernetes_logs", src))
        .sink(SinkSpec::new(
            "out",
            "file",
            vec!["k8s".into()],
            Box::new(torture::FileSink(out)),
        ))
        .start()
        .unwrap()
        .wait()
        .unwrap();
}

/// What one line of the torture must arrive as.
struct Expected {
    pod: usize,
    restart: u32,
    stream: usize,
    message: String,
}

/// One fake pod of the torture: its log directory and what its container is writing.
struct FakePod {
    /// Index into the torture's list of every pod (namespace, name, uid).
    index: usize,
    dir: PathBuf,
    docker: bool,
    restart: u32,
    /// Per stream (stdout, stderr): the last fragment of a message whose first fragments
    /// were written already, with the message's time.
    open: [Option<(Vec<u8>, String)>; 2],
    /// Rotated files not compressed yet, and compressed ones, oldest first.
    rotated: Vec<PathBuf>,
    compressed: Vec<PathBuf>,
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl FakePod {
    fn log(&self) -> PathBuf {
        self.dir.join("app").join(format!("{}.log", self.restart))
    }

    /// One physical line: CRI `<time> <stream> <P|F> <text>` or a Docker json-file record.
    fn physical(&self, stream: usize, partial: bool, time: &str, text: &[u8]) -> Vec<u8> {
        let s = STREAMS[stream];
        let text = std::str::from_utf8(text).unwrap();
        if self.docker {
            let end = if partial { "" } else { "\\n" };
            format!("{{\"log\":\"{text}{end}\",\"stream\":\"{s}\",\"time\":\"{time}\"}}\n")
        } else {
            let tag = if partial { "P" } else { "F" };
            format!("{time} {s} {tag} {text}\n")
        }
        .into_bytes()
    }
}

/// The message of line `n`: its number, then 0–299 characters.
fn torture_message(n: u32) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
    let len = (u64::from(n) * 7919 % 300) as usize;
    let filler: String = (0..len)
        .map(|i| ALPHABET[(n as usize + i) % ALPHABET.len()] as char)
        .collect();
    format!("id={n} {filler}")
}

/// The line number an output event carries in its message.
fn torture_id(line: &str) -> Option<u32> {
    let v: Value = serde_json::from_str(line).ok()?;
    let m = v["message"].as_str()?.strip_prefix("id=")?;
    m.split(' ').next()?.parse().ok()
}

/// The kubelet's rotation of `pod`'s live file: the rotated files not compressed yet are
/// compressed (`.gz.tmp`, renamed to `.gz`, the original deleted: a deletion of a file the
/// reader may be reading), the oldest compressed ones beyond two are removed, and the live
/// file is renamed to `<n>.log.<timestamp>` (false when postponed); the runtime's next line
/// creates a new one.
fn kubelet_rotate(
    pod: &mut FakePod,
    stamp: u32,
    ledger: &mut torture::Ledger,
    child: &torture::Child,
) -> bool {
    let mut kept = Vec::new();
    for r in std::mem::take(&mut pod.rotated) {
        let gz = PathBuf::from(format!("{}.gz", r.display()));
        let tmp = PathBuf::from(format!("{}.gz.tmp", r.display()));
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&tmp).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(&std::fs::read(&r).unwrap()).unwrap();
        enc.finish().unwrap();
        if ledger.delete(&r, child) {
            std::fs::rename(&tmp, &gz).unwrap();
            pod.compressed.push(gz);
        } else {
            std::fs::remove_file(&tmp).unwrap();
            kept.push(r);
        }
    }
    pod.rotated = kept;
    while pod.compressed.len() > 2 {
        std::fs::remove_file(pod.compressed.remove(0)).unwrap();
    }
    // The kubelet rotates a file once it passed its size limit (10 MiB), checked every 10 s:
    // never one the reader had no chance to see. Here: only one the reader recorded in its
    // checkpoint or delivered.
    let live = pod.log();
    let to = PathBuf::from(format!("{}.20261206-{stamp:06}", live.display()));
    if live.exists() && ledger.rename_if_recorded(&live, &to, child) {
        pod.rotated.push(to);
        true
    } else {
        false
    }
}

/// One write of `pod`'s container: 1–6 messages on random streams, a quarter of them split
/// into partial lines, half of those with the last fragment left for a later write.
fn container_writes(
    pod: &mut FakePod,
    rng: &mut torture::Rng,
    ledger: &mut torture::Ledger,
    expected: &mut Vec<Expected>,
    splits: &mut (u32, u32),
) {
    let mut chunks: Vec<(Option<u32>, Vec<u8>)> = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let s = rng.below(2) as usize;
        if let Some((rest, time)) = pod.open[s].take() {
            chunks.push((None, pod.physical(s, false, &time, &rest)));
            continue;
        }
        let n = ledger.lines() + chunks.iter().filter(|c| c.0.is_some()).count() as u32;
        assert_eq!(expected.len(), n as usize);
        let message = torture_message(n);
        let time = format!("2026-12-06T10:00:00.{n:09}Z");
        let bytes = message.as_bytes();
        if rng.below(4) == 0 {
            // Two or three fragments, each at least one byte.
            let mut cuts = vec![1 + rng.below(bytes.len() as u64 - 1) as usize];
            if rng.below(2) == 0 {
                cuts.push(1 + rng.below(bytes.len() as u64 - 1) as usize);
            }
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            cuts.dedup();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            let (tail, head) = pieces.split_last().unwrap();
            for (i, piece) in head.iter().enumerate() {
                let id = (i == 0).then_some(n);
                chunks.push((id, pod.physical(s, true, &time, piece)));
            }
            splits.0 += 1;
            if rng.below(2) == 0 {
                chunks.push((None, pod.physical(s, false, &time, tail)));
            } else {
                pod.open[s] = Some((tail.to_vec(), time));
                splits.1 += 1;
            }
        } else {
            chunks.push((Some(n), pod.physical(s, false, &time, bytes)));
        }
        expected.push(Expected {
            pod: pod.index,
            restart: pod.restart,
            stream: s,
            message,
        });
    }
    ledger.append(&pod.log(), &chunks);
}

/// Writes the last fragments of `pod`'s open messages.
fn close_messages(pod: &mut FakePod, ledger: &mut torture::Ledger) {
    let chunks: Vec<(Option<u32>, Vec<u8>)> = (0..2)
        .filter_map(|s| {
            let (rest, time) = pod.open[s].take()?;
            Some((None, pod.physical(s, false, &time, &rest)))
        })
        .collect();
    if !chunks.is_empty() {
        ledger.append(&pod.log(), &chunks);
    }
}

/// kill -9 torture of `kubernetes_logs` over a fake node's `/var/log/pods` (three pods at a
/// time, one of them writing Docker json-file records, the others CRI): messages split
/// into partial lines (some completed in a later write, so a kill may fall between the
/// halves), stdout and stderr interleaved, kubelet rotation (rename to `<n>.log.<timestamp>`,
/// earlier rotated files compressed and deleted), container restarts (`<n+1>.log`) and pods
/// going away (their directory deleted) while the reader is SIGKILLed at random moments.
/// Rounds (kills): `SLUICEBOX_TORTURE_ROUNDS` (default 5); a last round writes without a
/// kill. Every line arrives at least once and whole (never a half of a merged message),
/// with its pod's metadata; every duplicate is one the checkpoint at its kill did not
/// cover; deleted files leave the checkpoint; no run panics.
#[test]
fn kubernetes_kill9_torture() {
    let rounds = torture::rounds(5);
    let d = tempfile::tempdir().unwrap();
    let pods_dir = d.path().join("pods");
    std::fs::create_dir_all(&pods_dir).unwrap();
    let mut rng = torture::Rng::new();
    let mut ledger = torture::Ledger::new(d.path(), &d.path().join("data/source-k8s"), torture_id);
    let mut every_pod: Vec<(String, String, String)> = Vec::new();
    let new_pod = |every_pod: &mut Vec<(String, String, String)>| {
        let k = every_pod.len();
        let ns = ["shop", "batch"][k % 2].to_string();
        let name = format!("web-{k}");
        let uid = format!("{k:08x}-0000-4000-8000-{k:012x}");
        let dir = pods_dir.join(format!("{ns}_{name}_{uid}"));
        std::fs::create_dir_all(dir.join("app")).unwrap();
        every_pod.push((ns, name, uid));
        FakePod {
            index: k,
            dir,
            docker: k.is_multiple_of(3),
            restart: 0,
            open: [None, None],
            rotated: Vec::new(),
            compressed: Vec::new(),
        }
    };
    let mut pods: Vec<FakePod> = (0..3).map(|_| new_pod(&mut every_pod)).collect();
    let mut expected: Vec<Expected> = Vec::new();
    let (mut rotations, mut restarts, mut pods_gone) = (0, 0, 0);
    let mut splits = (0u32, 0u32);
    let mut stamp = 0u32;
    let mut child = torture::Child::spawn("kubernetes::kubernetes_torture_child", d.path(), 0);
    for round in 0..=rounds {
        let last = round == rounds;
        let until = Instant::now() + Duration::from_millis(200 + rng.below(800));
        while Instant::now() < until {
            let p = rng.below(pods.len() as u64) as usize;
            let pod = &mut pods[p];
            container_writes(pod, &mut rng, &mut ledger, &mut expected, &mut splits);
            let idle = pod.open.iter().all(Option::is_none);
            match rng.below(400) {
                0..=12 if idle => {
                    stamp += 1;
                    if kubelet_rotate(pod, stamp, &mut ledger, &child) {
                        rotations += 1;
                    }
                }
                13 if idle => {
                    pod.restart += 1;
                    restarts += 1;
                }
                14 if idle && ledger.delete_dir(&pod.dir.clone(), &child) => {
                    pods[p] = new_pod(&mut every_pod);
                    pods_gone += 1;
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if last {
            for pod in &mut pods {
                close_messages(pod, &mut ledger);
            }
        } else {
            if rng.below(2) == 0 {
                // Half the kills fall right after a write and a rotation: the rotated file's
                // end is not read yet.
                let p = rng.below(pods.len() as u64) as usize;
                let pod = &mut pods[p];
                container_writes(pod, &mut rng, &mut ledger, &mut expected, &mut splits);
                close_messages(pod, &mut ledger);
                stamp += 1;
                if kubelet_rotate(pod, stamp, &mut ledger, &child) {
                    rotations += 1;
                }
            }
            ledger.kill(child);
            child =
                torture::Child::spawn("kubernetes::kubernetes_torture_child", d.path(), round + 1);
        }
    }
    let o = ledger.settle(Duration::from_secs(60));
    let stale = ledger.stale_checkpoint_entries(Duration::from_secs(30));
    let crashed = child.exited();
    drop(child);
    let panics = torture::panics(d.path());
    // Every event whole, with its own stream and pod.
    let out = std::fs::read_to_string(torture::out_path(d.path())).unwrap_or_default();
    let mut wrong = Vec::new();
    for line in out.lines() {
        let Some(n) = torture_id(line) else {
            continue; // counted by the ledger as unparsed
        };
        let e = &expected[n as usize];
        let v: Value = serde_json::from_str(line).unwrap();
        let (ns, name, uid) = &every_pod[e.pod];
        let k = &v["kubernetes"];
        let whole = v["message"] == e.message.as_str()
            && v["stream"] == STREAMS[e.stream]
            && k["namespace"] == ns.as_str()
            && k["pod_name"] == name.as_str()
            && k["pod_uid"] == uid.as_str()
            && k["container_name"] == "app"
            && k["restart_count"] == e.restart
            && v.get("partial_flushed").is_none()
            && v.get("message_truncated").is_none();
        if !whole {
            wrong.push(line.to_string());
        }
    }
    eprintln!(
        "torture (kubernetes_logs, seed {}): {rounds} kills, {} lines ({} split into partials, \
         {} completed in a later write), {rotations} rotations, {restarts} container restarts, \
         {pods_gone} pods deleted, {} files deleted ({} deletions and {} rotations postponed), lost {}, excused {}, {} duplicates \
         ({:.2}%, at most {} per restart, {} within a run), unexplained duplicates {}, wrong events {}, \
         stale checkpoint entries {stale}",
        rng.seed,
        o.lines,
        splits.0,
        splits.1,
        ledger.deleted,
        ledger.postponed,
        ledger.postponed_renames,
        o.lost.len(),
        o.excused,
        o.duplicates,
        100.0 * f64::from(o.duplicates) / f64::from(o.lines.max(1)),
        o.max_per_restart,
        o.within_run,
        o.unexplained.len(),
        wrong.len(),
    );
    let failed = !(o.lost.is_empty()
        && wrong.is_empty()
        && o.unparsed.is_empty()
        && o.unexplained.is_empty()
        && o.within_run == 0);
    torture::keep_on_failure(failed, d, &ledger);
    if let Some(&first) = o.lost.first() {
        panic!(
            "lost lines: {:?}; the first is in {:?}",
            &o.lost[..o.lost.len().min(20)],
            ledger.whereabouts(first)
        );
    }
    assert!(
        wrong.is_empty(),
        "halves or wrong metadata: {:?}",
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        o.unparsed.is_empty(),
        "torn or garbled output: {:?}",
        &o.unparsed[..o.unparsed.len().min(5)]
    );
    assert!(
        o.unexplained.is_empty(),
        "duplicates the checkpoint covered: {:?}",
        &o.unexplained[..o.unexplained.len().min(20)]
    );
    assert_eq!(o.within_run, 0, "a run delivered a line twice");
    assert!(panics.is_empty(), "{panics:?}");
    assert!(!crashed, "the last reader exited on its own");
    assert_eq!(stale, 0, "checkpoint entries of deleted files left behind");
}
