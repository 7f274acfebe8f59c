//! `type = "kubernetes_logs"`: the container logs of one Kubernetes node. It is the
//! [`crate::source::file`] source over `/var/log/pods/*/*/*.log` (same identity, rotation,
//! checkpoints of acknowledged offsets, K3), with each file decoded by a
//! [`ContainerDecoder`] (CRI by default, K1) and its events enriched with the pod metadata
//! the path holds, `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`:
//!
//! ```json
//! {"stream":"stdout","time":"…","message":"…",
//!  "kubernetes":{"namespace":"…","pod_name":"…","pod_uid":"…","container_name":"…","restart_count":0}}
//! ```
//!
//! With an `[sources.NAME.api]` table, labels and annotations come from the Kubernetes API
//! too (`pod_labels`, `pod_annotations` in the same object), through one LIST+WATCH of this
//! node's pods ([`api`], K2). Without it, or while the API is unreachable, events carry the
//! path metadata alone.
//!
//! Cost: as the file source, plus one escaped copy of each message (the decoder), and per
//! batch one short mutex section to read the pod's current metadata.

pub mod api;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::file::{DecoderFactory, FileSource, FileSourceConfig, ReadFrom};
use super::{BoxFuture, Source, SourceContext};
use crate::error::{Error, Result};
use crate::frame::{ContainerDecoder, ContainerFormat, ContainerSettings, ExtraFields};

use api::{ApiConfig, PodStore};

fn default_pods_dir() -> PathBuf {
    PathBuf::from("/var/log/pods")
}
fn default_true() -> bool {
    true
}
fn default_exclude() -> Vec<String> {
    vec!["*.gz".into(), "*.tmp".into()]
}
fn default_glob_interval() -> u64 {
    1000
}
fn default_rotate_wait() -> u64 {
    30
}
fn default_checkpoint_interval() -> u64 {
    1000
}
fn default_format() -> String {
    "cri".into()
}
fn default_max_merged() -> usize {
    1 << 20
}
fn default_partial_timeout() -> u64 {
    5000
}

/// `type = "kubernetes_logs"`. Every key is optional. Plain data; building it compiles the
/// globs and checks the keys.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLogsConfig {
    /// Where the kubelet keeps pod logs. Default `/var/log/pods`.
    #[serde(default = "default_pods_dir")]
    pub pods_dir: PathBuf,
    /// Glob patterns of the files to read. Default `["<pods_dir>/*/*/*.log"]`.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Patterns of files to skip. Default `["*.gz", "*.tmp"]`.
    #[serde(default = "default_exclude")]
    pub exclude: Vec<String>,
    /// `beginning` (default) or `end`, for the files found at the first start.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Skip files not modified for this many seconds. Default: none.
    #[serde(default)]
    pub ignore_older_secs: Option<u64>,
    /// Follow files as they grow (default true); false reads each once (tests).
    #[serde(default = "default_true")]
    pub follow: bool,
    /// How often the globs are expanded again, in ms. Default 1000.
    #[serde(default = "default_glob_interval")]
    pub glob_interval_ms: u64,
    /// How long a rotated-away or deleted file stays open, in s. Default 30.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait_secs: u64,
    /// How often the checkpoint is written, in ms. Default 1000.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
    /// `cri` (default, containerd and CRI-O), `docker` (json-file) or `auto` (per line).
    #[serde(default = "default_format")]
    pub format: String,
    /// Most bytes of a message merged from partial lines. Default 1 MiB.
    #[serde(default = "default_max_merged")]
    pub max_merged_bytes: usize,
    /// A dangling partial line is emitted after this many ms without its end. Default 5000.
    #[serde(default = "default_partial_timeout")]
    pub partial_timeout_ms: u64,
    /// Merge a message that is a JSON object into the event. Default false.
    #[serde(default)]
    pub merge_json: bool,
    /// This node's name, for the API's field selector. Default `"${NODE_NAME}"` (the
    /// environment variable the DaemonSet sets from `spec.nodeName`). Only the API uses it.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Labels and annotations from the Kubernetes API. Default: none (path metadata only).
    #[serde(default)]
    pub api: Option<ApiConfig>,
}

impl KubernetesLogsConfig {
    /// Checks the config and builds the source.
    ///
    /// # Errors
    /// [`crate::Kind::Config`] naming the key.
    pub fn build(&self, cx: &crate::config::BuildContext) -> Result<Box<dyn Source>> {
        let bad = |key: &str, msg: &str| {
            Error::config(format!("sources.{}: key `{key}`: {msg}", cx.name))
        };
        if self.max_merged_bytes == 0 {
            return Err(bad("max_merged_bytes", "must be at least 1"));
        }
        if self.partial_timeout_ms == 0 {
            return Err(bad("partial_timeout_ms", "must be greater than 0"));
        }
        let pods_dir = cx.resolve(&self.pods_dir);
        let include = match &self.include {
            Some(v) => v
                .iter()
                .map(|p| cx.resolve(Path::new(p)).display().to_string())
                .collect(),
            None => vec![pods_dir.join("*/*/*.log").display().to_string()],
        };
        if include.is_empty() {
            return Err(bad("include", "at least one pattern is required"));
        }
        let file_cfg = FileSourceConfig {
            include,
            exclude: self.exclude.clone(),
            read_from: self.read_from,
            ignore_older_secs: self.ignore_older_secs,
            follow: self.follow,
            glob_interval_ms: self.glob_interval_ms,
            rotate_wait_secs: self.rotate_wait_secs,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
        };
        for (k, v) in [
            ("glob_interval_ms", self.glob_interval_ms),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
        ] {
            if v == 0 {
                return Err(bad(k, "must be greater than 0"));
            }
        }
        let files = FileSource::new(&file_cfg)
            .map_err(|e| Error::config(format!("sources.{}: {}", cx.name, e.message())))?;
        let api = match &self.api {
            None => None,
            Some(a) => {
                let node = self.node_name.as_deref().unwrap_or("${NODE_NAME}");
                let node =
                    crate::config::secret(node).map_err(|e| bad("node_name", e.message()))?;
                if node.is_empty() {
                    return Err(bad("node_name", "is empty"));
                }
                Some(a.check(&cx.name, node)?)
            }
        };
        let format = match self.format.as_str() {
            "cri" => ContainerFormat::Cri,
            "docker" => ContainerFormat::Docker,
            "auto" => ContainerFormat::Auto,
            other => {
                return Err(bad(
                    "format",
                    &format!("unknown format {other:?} (known: cri, docker, auto)"),
                ));
            }
        };
        let settings = ContainerSettings {
            format,
            max_merged_bytes: self.max_merged_bytes,
            partial_timeout: Duration::from_millis(self.partial_timeout_ms),
            merge_json: self.merge_json,
        };
        let store = api
            .as_ref()
            .map(|a| Arc::new(PodStore::new(a.keep_deleted)));
        Ok(Box::new(KubernetesLogsSource::new(
            files, settings, store, api,
        )))
    }
}

/// The `kubernetes_logs` source. Build it with [`KubernetesLogsConfig::build`].
///
/// Cost: the file source's (one descriptor per followed file, one blocking thread), one
/// [`ContainerDecoder`] per file, and with `api` one tokio task holding one HTTP connection.
pub struct KubernetesLogsSource {
    files: FileSource,
    store: Option<Arc<PodStore>>,
    api: Option<api::Api>,
}

impl std::fmt::Debug for KubernetesLogsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesLogsSource")
            .field("files", &self.files)
            .field("api", &self.api.is_some())
            .finish()
    }
}

impl KubernetesLogsSource {
    fn new(
        files: FileSource,
        settings: ContainerSettings,
        store: Option<Arc<PodStore>>,
        api: Option<api::Api>,
    ) -> Self {
        let s = store.clone();
        let factory: DecoderFactory = Arc::new(move |path: &Path, cx: &SourceContext, start| {
            let origin = path.display().to_string();
            let d = ContainerDecoder::new(cx.frame().framer(start), settings.clone(), origin);
            match PodPath::parse(path) {
                Some(p) => Box::new(d.with_extra(Arc::new(PodFields::new(p, s.clone())))),
                None => {
                    tracing::warn!(source = cx.name(), path = %path.display(),
                        "not a /var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log path: no pod metadata");
                    cx.metrics().error("kubernetes_path_unparsed", "receiving");
                    Box::new(d)
                }
            }
        });
        Self {
            files: files.with_decoder(factory),
            store,
            api,
        }
    }
}

impl Source for KubernetesLogsSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let this = *self;
            let watcher = match (this.api, this.store) {
                (Some(api), Some(store)) => Some(tokio::spawn(api::run(
                    api,
                    store,
                    cx.metrics().clone(),
                    cx.shutdown().clone(),
                ))),
                _ => None,
            };
            let r = Box::new(this.files).run(cx).await;
            if let Some(w) = watcher {
                w.abort();
            }
            r
        })
    }
}

/// The pod metadata a log path holds. Plain data (five small strings), parsed once per file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPath {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name.
    pub container_name: String,
    /// The container's restart count (the file's name).
    pub restart_count: u32,
}

impl PodPath {
    /// Parses `…/<namespace>_<pod>_<uid>/<container>/<restart>.log`. Namespace and pod names
    /// are DNS names, which hold no `_`. `None` for any other shape.
    pub fn parse(path: &Path) -> Option<Self> {
        let mut parts = path.iter().rev();
        let file = parts.next()?.to_str()?;
        let container = parts.next()?.to_str()?;
        let pod_dir = parts.next()?.to_str()?;
        let restart_count = file.strip_suffix(".log")?.parse().ok()?;
        let mut f = pod_dir.split('_');
        let (namespace, pod_name, pod_uid) = (f.next()?, f.next()?, f.next()?);
        if f.next().is_some()
            || [namespace, pod_name, pod_uid, container]
                .iter()
                .any(|s| s.is_empty())
        {
            return None;
        }
        Some(Self {
            namespace: namespace.into(),
            pod_name: pod_name.into(),
            pod_uid: pod_uid.into(),
            container_name: container.into(),
            restart_count,
        })
    }

    /// The members of the `kubernetes` object, without its closing brace.
    fn render_open(&self) -> Vec<u8> {
        let mut o = serde_json::Map::new();
        o.insert("namespace".into(), self.namespace.clone().into());
        o.insert("pod_name".into(), self.pod_name.clone().into());
        o.insert("pod_uid".into(), self.pod_uid.clone().into());
        o.insert("container_name".into(), self.container_name.clone().into());
        o.insert("restart_count".into(), self.restart_count.into());
        let mut out = b"\"kubernetes\":".to_vec();
        // Writing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &serde_json::Value::Object(o));
        out.pop(); // the closing brace: API members may follow
        out
    }
}

/// One file's [`ExtraFields`]: its path metadata, and the pod's API metadata when the store
/// has it. While it lives, the store keeps the pod's metadata after a deletion (the file is
/// still being drained).
///
/// Cost: per batch, one store lookup; a new rendering only when the pod's metadata changed.
struct PodFields {
    uid: String,
    path_part: Vec<u8>,
    store: Option<Arc<PodStore>>,
    cache: Mutex<Rendered>,
}

/// The API part last used (`None`: none), and the members rendered with it.
type Rendered = (Option<Arc<[u8]>>, Arc<[u8]>);

impl PodFields {
    fn new(p: PodPath, store: Option<Arc<PodStore>>) -> Self {
        let path_part = p.render_open();
        let mut first = path_part.clone();
        first.push(b'}');
        if let Some(s) = &store {
            s.interest(&p.pod_uid, true);
        }
        Self {
            uid: p.pod_uid,
            path_part,
            store,
            cache: Mutex::new((None, Arc::from(first))),
        }
    }
}

impl Drop for PodFields {
    fn drop(&mut self) {
        if let Some(s) = &self.store {
            s.interest(&self.uid, false);
        }
    }
}

impl ExtraFields for PodFields {
    fn members(&self) -> Arc<[u8]> {
        let api = self.store.as_ref().and_then(|s| s.get(&self.uid));
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let same = match (&c.0, &api) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !same {
            let mut m = self.path_part.clone();
            if let Some(a) = &api {
                m.push(b',');
                m.extend_from_slice(a);
            }
            m.push(b'}');
            *c = (api, Arc::from(m));
        }
        c.1.clone()
    }

    fn keys(&self) -> &[&'static str] {
        &["kubernetes"]
    }
}

/// Labels and annotations, as the members `"pod_labels":{…},"pod_annotations":{…}`.
fn render_api(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Arc<[u8]> {
    let mut out = b"\"pod_labels\":".to_vec();
    let _ = serde_json::to_writer(&mut out, labels);
    out.extend_from_slice(b",\"pod_annotations\":");
    let _ = serde_json::to_writer(&mut out, annotations);
    Arc::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_paths() {
        let p = PodPath::parse(Path::new(
            "/var/log/pods/kube-system_coredns-7db6d8ff4d-x2xq9_8f1c6a0e-3b4d-4c9a-9f0e-2a1b3c4d5e6f/coredns/3.log",
        ))
        .unwrap();
        assert_eq!(p.namespace, "kube-system");
        assert_eq!(p.pod_name, "coredns-7db6d8ff4d-x2xq9");
        assert_eq!(p.pod_uid, "8f1c6a0e-3b4d-4c9a-9f0e-2a1b3c4d5e6f");
        assert_eq!(p.container_name, "coredns");
        assert_eq!(p.restart_count, 3);
        for bad in [
            "/var/log/pods/ns_pod/c/0.log",
            "/var/log/pods/ns_pod_uid_x/c/0.log",
            "/var/log/pods/ns_pod_uid/c/0.log.20261205-100000",
            "/var/log/pods/ns_pod_uid/c/x.log",
            "/var/log/pods/ns__uid/c/0.log",
            "0.log",
        ] {
            assert_eq!(PodPath::parse(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn fields_follow_the_store() {
        let p = PodPath::parse(Path::new("/p/ns_web-1_u1/nginx/0.log")).unwrap();
        let store = Arc::new(PodStore::new(Duration::from_secs(60)));
        let f = PodFields::new(p, Some(store.clone()));
        let render = |f: &PodFields| {
            let mut s = b"{".to_vec();
            s.extend_from_slice(&f.members());
            s.push(b'}');
            serde_json::from_slice::<serde_json::Value>(&s).unwrap()
        };
        assert_eq!(
            render(&f),
            serde_json::json!({"kubernetes":{"namespace":"ns","pod_name":"web-1","pod_uid":"u1","container_name":"nginx","restart_count":0}})
        );
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        store.upsert("u1", render_api(&labels, &BTreeMap::new()));
        assert_eq!(render(&f)["kubernetes"]["pod_labels"]["app"], "web");
        assert_eq!(
            render(&f)["kubernetes"]["pod_annotations"],
            serde_json::json!({})
        );
        // Deleted, but a file of it is still read: kept.
        store.delete("u1", std::time::Instant::now() - Duration::from_secs(3600));
        store.prune(std::time::Instant::now());
        assert_eq!(render(&f)["kubernetes"]["pod_labels"]["app"], "web");
        drop(f);
        store.prune(std::time::Instant::now());
        assert!(store.get("u1").is_none());
    }
}
