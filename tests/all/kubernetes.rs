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
