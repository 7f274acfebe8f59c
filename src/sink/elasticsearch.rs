//! Elasticsearch `_bulk` sink.
//!
//! Events go into the bulk body byte for byte (no re-serialization); each is preceded by an
//! action line (`create` by default, `index` on request) naming the index and, by default, an
//! id derived from the event's origin (stream key and byte offset), so a replay after a crash
//! answers 409 instead of duplicating documents.
//!
//! Delivery: the sink owns a one-thread tokio runtime and sends one bulk request at a time
//! (`max_in_flight` is accepted but 1 is the only value implemented so far). A batch's
//! [`Ack`] is resolved only when every one of its items is stored, a duplicate (409 on
//! `create`), or written to the dead letter. Per-item classes:
//!
//! | status | class | what happens |
//! |---|---|---|
//! | 200, 201 | `2xx` | done |
//! | 409 on `create` | `409` | done (already stored) |
//! | 429, 5xx | `429` / `5xx` | only those items are retried with backoff |
//! | other 4xx (400, 404, 409 on `index`) | `4xx` | dead-lettered with status, type, reason, index |
//!
//! Whole request: 429, 5xx, timeout, connection error, unparsable or short reply → retried
//! whole (500 ms → 60 s full jitter, `Retry-After` honoured); 413 → split in half; 401/403 →
//! no more retries, events stay unacknowledged, `component_errors_total` counts it.
//!
//! Cost per event: one action line (~100 bytes) formatted, the event copied once into the
//! body, an xxh3-128 for the id; the response is parsed once per request with serde_json.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;

use crate::config::BuildContext;
use crate::error::{Error, Kind, Result};
use crate::metrics::ComponentMetrics;
use crate::sink::net::{Backoff, BlockingHttp, base64, retry_after};
use crate::sink::{Ack, Flow, Output, Sink};
use crate::source::Shutdown;

/// Configuration of `type = "elasticsearch"` sinks.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    /// Base URLs (`http://host:9200`), used round-robin; a failed request moves to the next.
    /// Required, at least one.
    pub endpoints: Vec<String>,
    /// Index name template: `%Y`, `%m`, `%d`, `%H` from the event's `@timestamp` or
    /// `timestamp` (an RFC 3339 string) or the current UTC time; `{{ a.b }}` from an event
    /// field. Required.
    pub index: String,
    /// Index used when a `{{ field }}` of `index` is missing. Default: none (the event is
    /// dead-lettered).
    #[serde(default)]
    pub fallback_index: Option<String>,
    /// `create` (default) or `index`.
    #[serde(default = "default_action")]
    pub action: String,
    /// Writing to a data stream: forces `create`. Default false.
    #[serde(default)]
    pub data_stream: bool,
    /// Document ids: `origin` (default, xxh3-128 of stream key and byte offset), `auto`
    /// (Elasticsearch assigns), or a field path whose value becomes the id.
    #[serde(default = "default_id")]
    pub id: String,
    /// Credentials. Default: none.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS for `https://` endpoints: extra CA, system roots, client certificate. Default: the
    /// system roots (feature `tls`).
    #[serde(default)]
    pub tls: Option<crate::tls::ClientTlsConfig>,
    /// `none` (default) or `gzip`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// A request is sent once its body reaches this many bytes. Default 10 MiB.
    #[serde(default = "default_max_bytes")]
    pub batch_max_bytes: usize,
    /// ... or this many events. Default 10000.
    #[serde(default = "default_max_events")]
    pub batch_max_events: usize,
    /// ... or the oldest held event is this old when the next batch arrives; an idle queue
    /// flushes at once. Default 1000.
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    /// Requests in flight. Default 1 (the only value implemented).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Timeout of one request including its reply. Default 30000.
    #[serde(default = "default_timeout")]
    pub request_timeout_ms: u64,
    /// First retry delay. Default 500.
    #[serde(default = "default_backoff_min")]
    pub retry_initial_ms: u64,
    /// Largest retry delay. Default 60000.
    #[serde(default = "default_backoff_max")]
    pub retry_max_ms: u64,
    /// File (JSON lines, fsynced) for rejected items when no [`DeadLetters`] callback is set.
    /// Default: none — then rejected items stay unacknowledged (never dropped silently).
    #[serde(default)]
    pub dead_letter_path: Option<std::path::PathBuf>,
}

/// `auth` of [`ElasticsearchSinkConfig`]: `{ user, password }` or `{ api_key }`. Values may be
/// `${ENV_VAR}`; they are never logged.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Basic auth user.
    #[serde(default)]
    pub user: Option<String>,
    /// Basic auth password.
    #[serde(default)]
    pub password: Option<String>,
    /// API key (the base64 `id:key` Elasticsearch hands out).
    #[serde(default)]
    pub api_key: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthConfig { <redacted> }")
    }
}

fn default_action() -> String {
    "create".into()
}
fn default_id() -> String {
    "origin".into()
}
fn default_compression() -> String {
    "none".into()
}
fn default_max_bytes() -> usize {
    10 << 20
}
fn default_max_events() -> usize {
    10_000
}
fn default_linger() -> u64 {
    1000
}
fn default_in_flight() -> usize {
    1
}
fn default_timeout() -> u64 {
    30_000
}
fn default_backoff_min() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    60_000
}

/// One rejected item, as handed to a [`DeadLetters`] callback.
#[derive(Debug, Clone)]
pub struct EsDeadLetter {
    /// The event bytes as sent.
    pub event: Vec<u8>,
    /// The item's HTTP status.
    pub status: u16,
    /// `error.type` from Elasticsearch.
    pub error_type: String,
    /// `error.reason`.
    pub reason: String,
    /// Target index.
    pub index: String,
    /// Index of its batch's Ack in the request in flight (`u32::MAX`: refused before sending).
    ack: u32,
}

impl EsDeadLetter {
    /// One JSON object (the dead-letter line format).
    pub fn to_json(&self) -> String {
        let event = match serde_json::from_slice::<serde_json::Value>(&self.event) {
            Ok(v) => v,
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(&self.event).into()),
        };
        serde_json::json!({
            "event": event, "status": self.status, "error_type": self.error_type,
            "reason": self.reason, "index": self.index, "sink": "elasticsearch",
        })
        .to_string()
    }
}

/// Where rejected items go: called with each request's rejected items; `Ok` must mean they
/// are durably stored (the batch is then acknowledged). An `Err` keeps the batch unacked.
pub type DeadLetters = Arc<dyn Fn(&[EsDeadLetter]) -> Result<()> + Send + Sync>;

fn cfg_err(name: &str, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(Kind::Config, format!("sinks.{name}: key `{key}`: {msg}"))
}

fn resolve_secret(v: &str) -> std::result::Result<String, String> {
    if let Some(var) = v.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
        std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
    } else {
        Ok(v.to_string())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Date(char),
    Field(Vec<String>),
}

fn parse_template(t: &str) -> std::result::Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let mut lit = String::new();
    let mut rest = t;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("{{") {
            let end = r.find("}}").ok_or("`{{` without `}}`")?;
            let path = r[..end].trim();
            if path.is_empty() {
                return Err("empty `{{ }}`".into());
            }
            if !lit.is_empty() {
                segs.push(Seg::Lit(std::mem::take(&mut lit)));
            }
            segs.push(Seg::Field(path.split('.').map(str::to_string).collect()));
            rest = &r[end + 2..];
        } else if c == '%' {
            let d = rest[1..].chars().next().ok_or("`%` at the end")?;
            if !matches!(d, 'Y' | 'm' | 'd' | 'H') {
                return Err(format!("unsupported `%{d}` (use %Y %m %d %H)"));
            }
            if !lit.is_empty() {
                segs.push(Seg::Lit(std::mem::take(&mut lit)));
            }
            segs.push(Seg::Date(d));
            rest = &rest[1 + d.len_utf8()..];
        } else {
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !lit.is_empty() {
        segs.push(Seg::Lit(lit));
    }
    Ok(segs)
}

/// (year, month, day, hour) of a Unix time, UTC.
fn civil(secs: u64) -> (i64, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let hour = ((secs % 86_400) / 3600) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d, hour)
}

fn lookup<'v>(v: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

#[derive(Debug, Clone, PartialEq)]
enum IdMode {
    Origin,
    Auto,
    Field(Vec<String>),
}

/// One item held for a request.
#[derive(Clone)]
struct Doc {
    action: Arc<[u8]>,
    event: Arc<[u8]>,
    index: Arc<str>,
    /// Index of its batch's [`Ack`] among those held for the same request.
    ack: u32,
}

/// The Elasticsearch sink built from [`ElasticsearchSinkConfig`].
pub struct ElasticsearchSink {
    name: String,
    endpoints: Vec<String>,
    segs: Vec<Seg>,
    fallback: Option<Vec<Seg>>,
    needs_event: bool,
    create: bool,
    id: IdMode,
    auth_header: Option<String>,
    gzip: bool,
    max_bytes: usize,
    max_events: usize,
    linger: Duration,
    timeout: Duration,
    backoff: Backoff,
    rr: usize,
    http: BlockingHttp,
    metrics: ComponentMetrics,
    shutdown: Shutdown,
    dead_letters: Option<DeadLetters>,
    held: Vec<Doc>,
    held_bytes: usize,
    held_acks: Vec<Ack>,
    oldest: Option<Instant>,
    stuck: Vec<Ack>,
    /// Per held Ack of the request in flight: events (and bytes) dead-lettered.
    dead_per_ack: Vec<(u64, u64)>,
}

impl ElasticsearchSinkConfig {
    /// Checks the config and builds the sink (one tokio thread, one HTTP client).
    ///
    /// # Errors
    /// A Config error naming the key for a bad value.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink + Send>> {
        Ok(Box::new(self.build_sink(cx)?))
    }

    /// As [`Self::build`] but typed, so a caller can attach [`ElasticsearchSink::with_dead_letters`].
    ///
    /// # Errors
    /// A Config error naming the key for a bad value.
    pub fn build_sink(&self, cx: &BuildContext) -> Result<ElasticsearchSink> {
        let n = &cx.name;
        if self.endpoints.is_empty() {
            return Err(cfg_err(n, "endpoints", "needs at least one URL"));
        }
        let mut endpoints = Vec::new();
        for e in &self.endpoints {
            let e = e.trim_end_matches('/');
            let uri: hyper::Uri = e
                .parse()
                .map_err(|err| cfg_err(n, "endpoints", format!("`{e}`: {err}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(cfg_err(
                    n,
                    "endpoints",
                    format!("`{e}`: must start with http:// or https://"),
                ));
            }
            if uri.host().is_none_or(str::is_empty) {
                return Err(cfg_err(n, "endpoints", format!("`{e}`: names no host")));
            }
            endpoints.push(e.to_string());
        }
        let urls: Vec<&str> = endpoints.iter().map(String::as_str).collect();
        let tls = crate::sink::net::client_tls(n, &urls, self.tls.as_ref(), |p| cx.resolve(p))?;
        let segs = parse_template(&self.index).map_err(|m| cfg_err(n, "index", m))?;
        if segs.is_empty() {
            return Err(cfg_err(n, "index", "is empty"));
        }
        let fallback = match &self.fallback_index {
            Some(f) => {
                let s = parse_template(f).map_err(|m| cfg_err(n, "fallback_index", m))?;
                if s.iter().any(|s| matches!(s, Seg::Field(_))) {
                    return Err(cfg_err(n, "fallback_index", "may not use `{{ field }}`"));
                }
                Some(s)
            }
            None => None,
        };
        let create = match self.action.as_str() {
            "create" => true,
            "index" => self.data_stream,
            a => return Err(cfg_err(n, "action", format!("`{a}`: use create or index"))),
        };
        let id = match self.id.as_str() {
            "origin" => IdMode::Origin,
            "auto" => IdMode::Auto,
            "" => return Err(cfg_err(n, "id", "is empty")),
            p => IdMode::Field(p.split('.').map(str::to_string).collect()),
        };
        let gzip = match self.compression.as_str() {
            "none" => false,
            "gzip" => true,
            c => {
                return Err(cfg_err(
                    n,
                    "compression",
                    format!("`{c}`: use gzip or none"),
                ));
            }
        };
        if self.max_in_flight != 1 {
            return Err(cfg_err(n, "max_in_flight", "only 1 is implemented so far"));
        }
        if self.batch_max_bytes == 0 || self.batch_max_events == 0 {
            return Err(cfg_err(n, "batch_max_events", "batch limits must be > 0"));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(cfg_err(
                n,
                "retry_initial_ms",
                "must be > 0 and <= retry_max_ms",
            ));
        }
        let auth_header = match &self.auth {
            None => None,
            Some(a) => match (&a.user, &a.password, &a.api_key) {
                (Some(u), Some(p), None) => {
                    let u = resolve_secret(u).map_err(|m| cfg_err(n, "auth.user", m))?;
                    let p = resolve_secret(p).map_err(|m| cfg_err(n, "auth.password", m))?;
                    Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes())))
                }
                (None, None, Some(k)) => {
                    let k = resolve_secret(k).map_err(|m| cfg_err(n, "auth.api_key", m))?;
                    Some(format!("ApiKey {k}"))
                }
                _ => return Err(cfg_err(n, "auth", "give user and password, or api_key")),
            },
        };
        let dead_letters: Option<DeadLetters> = self.dead_letter_path.as_ref().map(|p| {
            let path = cx.resolve(p);
            let f: DeadLetters = Arc::new(move |items: &[EsDeadLetter]| {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| Error::sink("elasticsearch dead letter file", e))?;
                let mut s = String::new();
                for i in items {
                    s.push_str(&i.to_json());
                    s.push('\n');
                }
                f.write_all(s.as_bytes())
                    .and_then(|()| f.sync_data())
                    .map_err(|e| Error::sink("elasticsearch dead letter file", e))
            });
            f
        });
        let http = BlockingHttp::new("elasticsearch runtime", tls.as_ref())?;
        let needs_event = !matches!(id, IdMode::Origin | IdMode::Auto)
            || segs.iter().any(|s| !matches!(s, Seg::Lit(_)));
        Ok(ElasticsearchSink {
            name: n.clone(),
            endpoints,
            segs,
            fallback,
            needs_event,
            create,
            id,
            auth_header,
            gzip,
            max_bytes: self.batch_max_bytes,
            max_events: self.batch_max_events,
            linger: Duration::from_millis(self.linger_ms),
            timeout: Duration::from_millis(self.request_timeout_ms),
            backoff: Backoff::new(self.retry_initial_ms, self.retry_max_ms),
            rr: 0,
            http,
            metrics: cx.metrics.component(n, "sink", "elasticsearch"),
            shutdown: cx.shutdown.clone(),
            dead_letters,
            held: Vec::new(),
            held_bytes: 0,
            held_acks: Vec::new(),
            oldest: None,
            stuck: Vec::new(),
            dead_per_ack: Vec::new(),
        })
    }
}

enum Outcome {
    Done,
    /// Stop retrying (auth refused, dead letters unwritable, shutdown): keep unacked.
    Stuck,
}

enum Reply {
    /// Retry the whole request (with the server's Retry-After, if any).
    Retry(Option<Duration>),
    TooLarge,
    Refused(u16),
    /// Per-item statuses with error type and reason.
    Items(Vec<(u16, String, String)>),
}

impl ElasticsearchSink {
    /// Sends rejected items to `dl` instead of `dead_letter_path` (the runtime's dead-letter
    /// sink, for instance). Cost: one call per request that had rejections.
    pub fn with_dead_letters(mut self, dl: DeadLetters) -> Self {
        self.dead_letters = Some(dl);
        self
    }

    fn render_index(&self, segs: &[Seg], ev: Option<&serde_json::Value>) -> Option<String> {
        let mut out = String::new();
        let mut date: Option<(i64, u32, u32, u32)> = None;
        for s in segs {
            match s {
                Seg::Lit(l) => out.push_str(l),
                Seg::Field(p) => match ev.and_then(|v| lookup(v, p))? {
                    serde_json::Value::String(s) => out.push_str(s),
                    serde_json::Value::Number(n) => out.push_str(&n.to_string()),
                    _ => return None,
                },
                Seg::Date(c) => {
                    let (y, m, d, h) = *date.get_or_insert_with(|| event_date(ev));
                    match c {
                        'Y' => out.push_str(&format!("{y:04}")),
                        'm' => out.push_str(&format!("{m:02}")),
                        'd' => out.push_str(&format!("{d:02}")),
                        _ => out.push_str(&format!("{h:02}")),
                    }
                }
            }
        }
        Some(out)
    }

    /// Queues one event; returns an item to dead-letter at once if it has no index or id.
    fn add(&mut self, bytes: &[u8], key: Option<&str>, offset: u64) -> Option<EsDeadLetter> {
        let parsed = if self.needs_event {
            serde_json::from_slice::<serde_json::Value>(bytes).ok()
        } else {
            None
        };
        let index = match self.render_index(&self.segs, parsed.as_ref()) {
            Some(i) => i,
            None => match &self.fallback {
                Some(f) => self.render_index(f, parsed.as_ref()).unwrap_or_default(),
                None => {
                    return Some(EsDeadLetter {
                        event: bytes.to_vec(),
                        status: 0,
                        error_type: "index_field_missing".into(),
                        reason: "a `{{ field }}` of `index` is missing and no fallback_index"
                            .into(),
                        index: String::new(),
                        ack: u32::MAX,
                    });
                }
            },
        };
        let id = match (&self.id, key) {
            (IdMode::Origin, Some(k)) => {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                h.update(k.as_bytes());
                h.update(&[0]);
                h.update(&offset.to_le_bytes());
                Some(format!("{:032x}", h.digest128()))
            }
            (IdMode::Origin | IdMode::Auto, _) => None,
            (IdMode::Field(p), _) => match parsed.as_ref().and_then(|v| lookup(v, p)) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => {
                    return Some(EsDeadLetter {
                        event: bytes.to_vec(),
                        status: 0,
                        error_type: "id_field_missing".into(),
                        reason: "the `id` field is missing or not a string/number".into(),
                        index,
                        ack: u32::MAX,
                    });
                }
            },
        };
        let mut head = serde_json::Map::new();
        head.insert("_index".into(), index.clone().into());
        if let Some(id) = id {
            head.insert("_id".into(), id.into());
        }
        let verb = if self.create { "create" } else { "index" };
        let action = serde_json::json!({ verb: head }).to_string();
        self.held_bytes += action.len() + bytes.len() + 2;
        self.held.push(Doc {
            action: action.into_bytes().into(),
            event: bytes.into(),
            index: index.into(),
            ack: self.held_acks.len() as u32,
        });
        None
    }

    fn body(&self, docs: &[Doc]) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            docs.iter()
                .map(|d| d.action.len() + d.event.len() + 2)
                .sum(),
        );
        for d in docs {
            b.extend_from_slice(&d.action);
            b.push(b'\n');
            b.extend_from_slice(&d.event);
            b.push(b'\n');
        }
        if self.gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            // Writing into a Vec cannot fail.
            let _ = e.write_all(&b);
            b = e.finish().unwrap_or_default();
        }
        b
    }

    fn send_once(&mut self, docs: &[Doc]) -> Reply {
        let ep = &self.endpoints[self.rr % self.endpoints.len()];
        self.rr = self.rr.wrapping_add(1);
        let uri = format!("{ep}/_bulk?filter_path=errors,items.*.error,items.*.status");
        let mut req = hyper::Request::post(uri).header("content-type", "application/x-ndjson");
        if self.gzip {
            req = req.header("content-encoding", "gzip");
        }
        if let Some(a) = &self.auth_header {
            req = req.header("authorization", a.as_str());
        }
        let req = match req.body(Full::new(Bytes::from(self.body(docs)))) {
            Ok(r) => r,
            Err(_) => return Reply::Retry(None),
        };
        let (status, retry_after, body) = match self.http.send(req, self.timeout) {
            Ok(r) => (r.status, retry_after(&r.headers), r.body),
            Err(e) => {
                self.metrics.error(e.as_str(), "sending");
                return Reply::Retry(None);
            }
        };
        match status {
            200 => {}
            413 => return Reply::TooLarge,
            401 | 403 => return Reply::Refused(status),
            _ => return Reply::Retry(retry_after),
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Reply::Retry(None);
        };
        let items = v.get("items").and_then(|i| i.as_array());
        let mut out = Vec::with_capacity(docs.len());
        if v.get("errors").and_then(|e| e.as_bool()) == Some(false) && items.is_none() {
            // filter_path drops `items` entirely only if every item lacks status: not expected.
            return Reply::Retry(None);
        }
        for it in items.map(|a| a.as_slice()).unwrap_or_default() {
            let Some(inner) = it.as_object().and_then(|o| o.values().next()) else {
                return Reply::Retry(None);
            };
            let st = inner.get("status").and_then(|s| s.as_u64()).unwrap_or(0) as u16;
            let err = inner.get("error");
            let ty = err
                .and_then(|e| e.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .to_string();
            let reason = err
                .and_then(|e| e.get("reason"))
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .to_string();
            out.push((st, ty, reason));
        }
        if out.len() != docs.len() {
            self.metrics.error("short_reply", "receiving");
            return Reply::Retry(None);
        }
        Reply::Items(out)
    }

    fn sleep_backoff(&mut self, attempt: u32, hint: Option<Duration>) -> bool {
        self.metrics.retries.inc();
        if attempt == 0 {
            self.backoff.reset();
        }
        self.backoff.sleep(hint, &self.shutdown)
    }

    fn deliver(&mut self, docs: Vec<Doc>) -> Outcome {
        let mut pending = docs;
        let mut attempt = 0u32;
        while !pending.is_empty() {
            if self.shutdown.is_triggered() {
                return Outcome::Stuck;
            }
            match self.send_once(&pending) {
                Reply::Retry(hint) => {
                    if !self.sleep_backoff(attempt, hint) {
                        return Outcome::Stuck;
                    }
                    attempt += 1;
                }
                Reply::TooLarge => {
                    if pending.len() == 1 {
                        let d = &pending[0];
                        return self.dead_letter(vec![EsDeadLetter {
                            event: d.event.to_vec(),
                            status: 413,
                            error_type: "request_entity_too_large".into(),
                            reason: "a single event is larger than the server accepts".into(),
                            index: d.index.to_string(),
                            ack: d.ack,
                        }]);
                    }
                    let right = pending.split_off(pending.len() / 2);
                    if let Outcome::Stuck = self.deliver(std::mem::take(&mut pending)) {
                        return Outcome::Stuck;
                    }
                    pending = right;
                    attempt = 0;
                }
                Reply::Refused(st) => {
                    tracing::error!(
                        sink = %self.name, status = st,
                        "elasticsearch refused the credentials; events stay unacknowledged"
                    );
                    self.metrics.error("auth_refused", "sending");
                    return Outcome::Stuck;
                }
                Reply::Items(items) => {
                    let mut retry = Vec::new();
                    let mut dead = Vec::new();
                    let mut counts = [0u64; 5];
                    for (d, (st, ty, reason)) in pending.into_iter().zip(items) {
                        match st {
                            200 | 201 => counts[0] += 1,
                            409 if self.create => counts[1] += 1,
                            429 => {
                                counts[2] += 1;
                                retry.push(d);
                            }
                            500..=599 => {
                                counts[4] += 1;
                                retry.push(d);
                            }
                            _ => {
                                counts[3] += 1;
                                dead.push(EsDeadLetter {
                                    event: d.event.to_vec(),
                                    status: st,
                                    error_type: ty,
                                    reason,
                                    index: d.index.to_string(),
                                    ack: d.ack,
                                });
                            }
                        }
                    }
                    for (c, n) in ["2xx", "409", "429", "4xx", "5xx"].iter().zip(counts) {
                        if n > 0 {
                            self.metrics.all().es_items(&self.name, c, n);
                        }
                    }
                    if !dead.is_empty() && matches!(self.dead_letter(dead), Outcome::Stuck) {
                        return Outcome::Stuck;
                    }
                    pending = retry;
                    if !pending.is_empty() {
                        if !self.sleep_backoff(attempt, None) {
                            return Outcome::Stuck;
                        }
                        attempt += 1;
                    }
                }
            }
        }
        Outcome::Done
    }

    fn dead_letter(&mut self, items: Vec<EsDeadLetter>) -> Outcome {
        let Some(dl) = &self.dead_letters else {
            tracing::error!(sink = %self.name, n = items.len(),
                "elasticsearch rejected items and no dead letter is configured; they stay unacknowledged");
            self.metrics.error("no_dead_letter", "sending");
            return Outcome::Stuck;
        };
        match dl(&items) {
            Ok(()) => {
                for i in &items {
                    if let Some(d) = self.dead_per_ack.get_mut(i.ack as usize) {
                        d.0 += 1;
                        d.1 += i.event.len() as u64;
                    }
                }
                Outcome::Done
            }
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "writing elasticsearch dead letters failed");
                self.metrics.error("dead_letter_write", "sending");
                Outcome::Stuck
            }
        }
    }

    fn send_held(&mut self) {
        if self.held.is_empty() && self.held_acks.is_empty() {
            return;
        }
        let docs = std::mem::take(&mut self.held);
        let acks = std::mem::take(&mut self.held_acks);
        self.held_bytes = 0;
        self.oldest = None;
        self.dead_per_ack.clear();
        self.dead_per_ack.resize(acks.len(), (0, 0));
        match self.deliver(docs) {
            Outcome::Done => {
                // The runtime counts each batch as sent when its Ack is delivered, less
                // what went to the dead letter.
                for (ack, &(n, b)) in acks.into_iter().zip(&self.dead_per_ack) {
                    ack.dead_lettered(n, b);
                    ack.delivered();
                }
            }
            Outcome::Stuck => self.stuck.extend(acks),
        }
    }
}

fn event_date(ev: Option<&serde_json::Value>) -> (i64, u32, u32, u32) {
    let ts = ev.and_then(|v| v.get("@timestamp").or_else(|| v.get("timestamp")));
    if let Some(serde_json::Value::String(s)) = ts {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
        };
        if let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10))
            && b.get(4) == Some(&b'-')
            && (1..=12).contains(&m)
            && (1..=31).contains(&d)
        {
            return (i64::from(y), m, d, num(11..13).unwrap_or(0));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil(now)
}

impl Sink for ElasticsearchSink {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        let ack = out.ack();
        let key = ack.token().map(|t| t.stream().key().to_string());
        let mut dead = Vec::new();
        for ev in out.iter() {
            if let Some(d) = self.add(ev.bytes, key.as_deref(), ev.offset) {
                dead.push(d);
            }
        }
        if !dead.is_empty() {
            let (n, bytes) = (
                dead.len() as u64,
                dead.iter().map(|d| d.event.len() as u64).sum(),
            );
            if matches!(self.dead_letter(dead), Outcome::Stuck) {
                self.stuck.push(ack);
                return Ok(Flow::Continue);
            }
            ack.dead_lettered(n, bytes);
        }
        self.held_acks.push(ack);
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if self.held.len() >= self.max_events
            || self.held_bytes >= self.max_bytes
            || oldest.elapsed() >= self.linger
        {
            self.send_held();
        }
        Ok(Flow::Continue)
    }

    fn flush(&mut self) -> Result<()> {
        self.send_held();
        Ok(())
    }

    fn finish(&mut self, _stats: &crate::pipeline::Stats) -> Result<()> {
        self.send_held();
        self.stuck.drain(..).for_each(Ack::failed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_dates() {
        assert_eq!(
            parse_template("logs-{{ a.b }}-%Y.%m.%d").unwrap(),
            vec![
                Seg::Lit("logs-".into()),
                Seg::Field(vec!["a".into(), "b".into()]),
                Seg::Lit("-".into()),
                Seg::Date('Y'),
                Seg::Lit(".".into()),
                Seg::Date('m'),
                Seg::Lit(".".into()),
                Seg::Date('d'),
            ]
        );
        assert!(parse_template("x-%q").is_err());
        assert!(parse_template("x-{{ a").is_err());
        assert_eq!(civil(0), (1970, 1, 1, 0));
        assert_eq!(civil(951_782_400 + 3600 * 5), (2000, 2, 29, 5));
        let v: serde_json::Value = serde_json::json!({"@timestamp": "2024-03-07T10:00:00Z"});
        assert_eq!(event_date(Some(&v)), (2024, 3, 7, 10));
    }
}
