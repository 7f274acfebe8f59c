//! Pod labels and annotations from the Kubernetes API, through **one LIST+WATCH** of this
//! node's pods (`fieldSelector=spec.nodeName=<node>`), never a GET per pod (K2).
//!
//! - The LIST fills a [`PodStore`]; the WATCH that follows applies `ADDED`, `MODIFIED` and
//!   `DELETED` at once, so a label change reaches the next batch of the pod's files.
//! - A broken or failed watch (a closed connection, an `ERROR` event such as 410 Gone, a
//!   line that is not a watch event) is followed by a fresh LIST: no event is missed by
//!   resuming from a stale `resourceVersion`. Failures back off from `relist_backoff_min_ms`
//!   (1 s) doubling to `relist_backoff_max_ms` (30 s); each is counted in
//!   `component_errors_total{error_type="kubernetes_api_unreachable"|"kubernetes_watch_broken"}`.
//! - While the API is unreachable, events carry their path metadata alone (the source never
//!   waits for the API).
//! - A deleted pod's metadata stays while any of its files is still read (drained to its
//!   end), and at least `keep_deleted_secs` (60 s).
//!
//! Transport: plain HTTP/1.1 (hyper), to keep TLS and its C out of the build
//! (`scripts/check-no-c.sh`). In a cluster the endpoint is a `kubectl proxy` sidecar on
//! `127.0.0.1:8001`, which speaks TLS to the API server with the pod's service account (see
//! `deploy/kubernetes/daemonset.yaml`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::metrics::ComponentMetrics;
use crate::source::Shutdown;

fn default_endpoint() -> String {
    "http://127.0.0.1:8001".into()
}
fn default_keep_deleted() -> u64 {
    60
}
fn default_backoff_min() -> u64 {
    1000
}
fn default_backoff_max() -> u64 {
    30_000
}
fn default_request_timeout() -> u64 {
    30_000
}
fn default_watch_timeout() -> u64 {
    290
}

/// `[sources.NAME.api]`: where and how to LIST+WATCH pods. Plain data.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The API's base URL, `http://` only. Default `http://127.0.0.1:8001` (a `kubectl
    /// proxy` sidecar).
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Keep a deleted pod's metadata at least this many seconds (and while its files are
    /// read). Default 60.
    #[serde(default = "default_keep_deleted")]
    pub keep_deleted_secs: u64,
    /// First wait after a failed LIST or a broken WATCH, in ms. Default 1000.
    #[serde(default = "default_backoff_min")]
    pub relist_backoff_min_ms: u64,
    /// Longest wait (the wait doubles per failure), in ms. Default 30000.
    #[serde(default = "default_backoff_max")]
    pub relist_backoff_max_ms: u64,
    /// Timeout of a LIST, in ms. Default 30000.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// The server ends each WATCH after this many seconds (then a LIST follows). Default 290.
    #[serde(default = "default_watch_timeout")]
    pub watch_timeout_secs: u64,
}

/// A checked [`ApiConfig`] with this node's name. Plain data, cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    endpoint: String,
    node: String,
    pub(super) keep_deleted: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    request_timeout: Duration,
    watch_timeout: u64,
}

impl ApiConfig {
    /// Checks the values for component `name` watching the pods of `node`.
    ///
    /// # Errors
    /// [`crate::Kind::Config`] naming the key.
    pub fn check(&self, name: &str, node: String) -> Result<Api> {
        let bad =
            |key: &str, msg: &str| Error::config(format!("sources.{name}: key `api.{key}`: {msg}"));
        let endpoint = self.endpoint.trim_end_matches('/').to_string();
        if endpoint.starts_with("https://") {
            return Err(bad(
                "endpoint",
                "https is not built in (no TLS, to stay free of C); use a `kubectl proxy` sidecar on http://127.0.0.1:8001",
            ));
        }
        if !endpoint.starts_with("http://") || endpoint.parse::<hyper::Uri>().is_err() {
            return Err(bad("endpoint", "must be an http:// URL"));
        }
        if self.relist_backoff_min_ms == 0
            || self.relist_backoff_max_ms < self.relist_backoff_min_ms
        {
            return Err(bad(
                "relist_backoff_min_ms",
                "must be at least 1 and at most relist_backoff_max_ms",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(bad("request_timeout_ms", "must be greater than 0"));
        }
        if self.watch_timeout_secs == 0 {
            return Err(bad("watch_timeout_secs", "must be greater than 0"));
        }
        Ok(Api {
            endpoint,
            node,
            keep_deleted: Duration::from_secs(self.keep_deleted_secs),
            backoff_min: Duration::from_millis(self.relist_backoff_min_ms),
            backoff_max: Duration::from_millis(self.relist_backoff_max_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            watch_timeout: self.watch_timeout_secs,
        })
    }
}

/// The pods of this node the API told of, by UID, each as its rendered members
/// (`"pod_labels":{…},"pod_annotations":{…}`).
///
/// Cost: one entry per pod of the node (a few hundred at most); one mutex, taken per batch
/// by each file's decoder and per watch event. `Send + Sync`.
#[derive(Debug)]
pub struct PodStore {
    inner: Mutex<StoreInner>,
    keep_deleted: Duration,
}

#[derive(Debug, Default)]
struct StoreInner {
    pods: HashMap<String, Entry>,
    /// Files being read, per pod UID.
    interest: HashMap<String, usize>,
}

#[derive(Debug)]
struct Entry {
    members: Arc<[u8]>,
    deleted: Option<Instant>,
}

impl PodStore {
    /// An empty store that keeps deleted pods at least `keep_deleted`.
    pub fn new(keep_deleted: Duration) -> Self {
        Self {
            inner: Mutex::new(StoreInner::default()),
            keep_deleted,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The members of pod `uid`, if known (deleted pods included until pruned).
    pub fn get(&self, uid: &str) -> Option<Arc<[u8]>> {
        self.lock().pods.get(uid).map(|e| e.members.clone())
    }

    /// Sets pod `uid`'s members (an ADDED or MODIFIED pod; a pod that came back is live).
    pub fn upsert(&self, uid: &str, members: Arc<[u8]>) {
        self.lock().pods.insert(
            uid.to_string(),
            Entry {
                members,
                deleted: None,
            },
        );
    }

    /// Marks pod `uid` deleted at `at`.
    pub fn delete(&self, uid: &str, at: Instant) {
        if let Some(e) = self.lock().pods.get_mut(uid) {
            e.deleted.get_or_insert(at);
        }
    }

    /// A fresh LIST: its pods replace the live ones; pods missing from it are deleted now.
    fn replace(&self, pods: Vec<(String, Arc<[u8]>)>, now: Instant) {
        let mut g = self.lock();
        let listed: std::collections::HashSet<&str> =
            pods.iter().map(|(u, _)| u.as_str()).collect();
        for (uid, e) in g.pods.iter_mut() {
            if !listed.contains(uid.as_str()) {
                e.deleted.get_or_insert(now);
            }
        }
        drop(listed);
        for (uid, members) in pods {
            g.pods.insert(
                uid,
                Entry {
                    members,
                    deleted: None,
                },
            );
        }
    }

    /// A file of pod `uid` starts (`true`) or stops (`false`) being read.
    pub fn interest(&self, uid: &str, more: bool) {
        let mut g = self.lock();
        let n = g.interest.entry(uid.to_string()).or_insert(0);
        if more {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.interest.remove(uid);
            }
        }
    }

    /// Forgets pods deleted at least `keep_deleted` before `now` whose files are all closed.
    pub fn prune(&self, now: Instant) {
        let keep = self.keep_deleted;
        let mut g = self.lock();
        let StoreInner { pods, interest } = &mut *g;
        pods.retain(|uid, e| match e.deleted {
            Some(at) => now.saturating_duration_since(at) < keep || interest.contains_key(uid),
            None => true,
        });
    }

    /// Pods known (live and kept deleted).
    pub fn len(&self) -> usize {
        self.lock().pods.len()
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
}

#[derive(Deserialize)]
struct Pod {
    metadata: ObjectMeta,
}

#[derive(Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

impl Pod {
    fn members(&self) -> Arc<[u8]> {
        super::render_api(&self.metadata.labels, &self.metadata.annotations)
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Most bytes of a LIST reply (a node's pods; a big node's list is a few MiB).
const LIST_MAX: usize = 256 << 20;
/// How often the store is pruned while a watch is quiet.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// `fieldSelector=spec.nodeName=<node>`, percent-encoded.
fn selector(node: &str) -> String {
    let mut s = String::from("fieldSelector=spec.nodeName%3D");
    for b in node.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

async fn get(
    client: &HttpClient,
    uri: &str,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, String> {
    let req = hyper::Request::get(uri)
        .header("accept", "application/json")
        .body(Empty::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = client.request(req).await.map_err(|e| format!("{e}"))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    Ok(resp)
}

/// One LIST: the pods and the list's resourceVersion.
async fn list(
    client: &HttpClient,
    api: &Api,
) -> std::result::Result<(String, Vec<(String, Arc<[u8]>)>), String> {
    let uri = format!("{}/api/v1/pods?{}", api.endpoint, selector(&api.node));
    let fetch = async {
        let resp = get(client, &uri).await?;
        let body = http_body_util::Limited::new(resp.into_body(), LIST_MAX)
            .collect()
            .await
            .map_err(|e| format!("reading the list: {e}"))?
            .to_bytes();
        serde_json::from_slice::<PodList>(&body).map_err(|e| format!("not a pod list: {e}"))
    };
    let l = tokio::time::timeout(api.request_timeout, fetch)
        .await
        .map_err(|_| "timed out".to_string())??;
    let pods = l
        .items
        .iter()
        .filter(|p| !p.metadata.uid.is_empty())
        .map(|p| (p.metadata.uid.clone(), p.members()))
        .collect();
    Ok((l.metadata.resource_version, pods))
}

/// One WATCH from `rv`, applied to the store as it streams. `Ok` when the server ended it
/// (its timeout); `Err` when it broke.
async fn watch(
    client: &HttpClient,
    api: &Api,
    rv: &str,
    store: &PodStore,
    shutdown: &Shutdown,
) -> std::result::Result<(), String> {
    let uri = format!(
        "{}/api/v1/pods?{}&watch=true&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}",
        api.endpoint,
        selector(&api.node),
        rv,
        api.watch_timeout
    );
    let resp = tokio::time::timeout(api.request_timeout, get(client, &uri))
        .await
        .map_err(|_| "timed out".to_string())??;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    // The server closes the watch after `watch_timeout`; a silent connection past that
    // (plus a margin) is broken.
    let limit = Duration::from_secs(api.watch_timeout + 30);
    let mut last = Instant::now();
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let frame = match tokio::time::timeout(PRUNE_EVERY, body.frame()).await {
            Err(_) => {
                store.prune(Instant::now());
                if last.elapsed() > limit {
                    return Err("the watch went silent".into());
                }
                continue;
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(format!("the watch broke: {e}")),
            Ok(Some(Ok(f))) => f,
        };
        last = Instant::now();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(i) = memchr::memchr(b'\n', &buf) {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            apply(line, store)?;
        }
        if buf.len() > LIST_MAX {
            return Err("a watch event is too large".into());
        }
    }
}

/// Applies one watch event line.
fn apply(line: &[u8], store: &PodStore) -> std::result::Result<(), String> {
    let ev: WatchEvent =
        serde_json::from_slice(line).map_err(|e| format!("not a watch event: {e}"))?;
    match ev.kind.as_str() {
        "ADDED" | "MODIFIED" | "DELETED" => {
            let pod: Pod = serde_json::from_value(ev.object)
                .map_err(|e| format!("not a pod in a {} event: {e}", ev.kind))?;
            if pod.metadata.uid.is_empty() {
                return Ok(());
            }
            if ev.kind == "DELETED" {
                store.delete(&pod.metadata.uid, Instant::now());
            } else {
                store.upsert(&pod.metadata.uid, pod.members());
            }
            Ok(())
        }
        "BOOKMARK" => Ok(()),
        "ERROR" => {
            let msg = ev
                .object
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("no message");
            Err(format!("the watch reported an error: {msg}"))
        }
        other => Err(format!("unknown watch event type {other:?}")),
    }
}

/// Keeps `store` in step with the API until `shutdown`: LIST, WATCH, and LIST again after
/// every watch. Never returns an error: failures are logged, counted and retried.
pub(super) async fn run(
    api: Api,
    store: Arc<PodStore>,
    metrics: ComponentMetrics,
    shutdown: Shutdown,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut backoff = api.backoff_min;
    let mut reachable = true;
    while !shutdown.is_triggered() {
        let failed = match list(&client, &api).await {
            Ok((rv, pods)) => {
                if !reachable {
                    tracing::info!(
                        source = metrics.id(),
                        "the Kubernetes API is reachable again"
                    );
                    reachable = true;
                }
                store.replace(pods, Instant::now());
                store.prune(Instant::now());
                match watch(&client, &api, &rv, &store, &shutdown).await {
                    Ok(()) => {
                        backoff = api.backoff_min;
                        false
                    }
                    Err(e) => {
                        tracing::warn!(
                            source = metrics.id(),
                            "Kubernetes pod watch: {e}; listing again"
                        );
                        metrics.error("kubernetes_watch_broken", "receiving");
                        true
                    }
                }
            }
            Err(e) => {
                if reachable {
                    tracing::warn!(source = metrics.id(), endpoint = %api.endpoint,
                        "the Kubernetes API is unreachable ({e}): events carry path metadata only until it answers");
                    reachable = false;
                }
                metrics.error("kubernetes_api_unreachable", "receiving");
                true
            }
        };
        if failed {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait() => return,
            }
            backoff = (backoff * 2).min(api.backoff_max);
            store.prune(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_is_encoded() {
        assert_eq!(
            selector("node-1.example"),
            "fieldSelector=spec.nodeName%3Dnode-1.example"
        );
        assert_eq!(selector("a b&c"), "fieldSelector=spec.nodeName%3Da%20b%26c");
    }

    #[test]
    fn watch_events_apply_to_the_store() {
        let s = PodStore::new(Duration::ZERO);
        apply(
            br#"{"type":"ADDED","object":{"metadata":{"uid":"u1","labels":{"app":"a"}}}}"#,
            &s,
        )
        .unwrap();
        assert_eq!(
            &*s.get("u1").unwrap(),
            br#""pod_labels":{"app":"a"},"pod_annotations":{}"#
        );
        apply(
            br#"{"type":"MODIFIED","object":{"metadata":{"uid":"u1","labels":{"app":"b"}}}}"#,
            &s,
        )
        .unwrap();
        assert!(
            s.get("u1")
                .unwrap()
                .starts_with(br#""pod_labels":{"app":"b"}"#)
        );
        apply(
            br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"#,
            &s,
        )
        .unwrap();
        apply(
            br#"{"type":"DELETED","object":{"metadata":{"uid":"u1"}}}"#,
            &s,
        )
        .unwrap();
        s.prune(Instant::now() + Duration::from_secs(1));
        assert!(s.get("u1").is_none());
        let e = apply(br#"{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old resource version"}}"#, &s)
            .unwrap_err();
        assert!(e.contains("too old resource version"), "{e}");
        assert!(apply(b"{not json", &s).is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let c: ApiConfig = toml::from_str("endpoint = \"https://kubernetes.default.svc\"").unwrap();
        let e = c.check("k8s", "n".into()).unwrap_err();
        assert!(
            e.message()
                .contains("sources.k8s: key `api.endpoint`: https is not built in"),
            "{e}"
        );
        let e = toml::from_str::<ApiConfig>("endpont = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `endpont`"), "{e}");
    }
}
