//! Elasticsearch `_bulk` sink.
//!
//! Events go into the bulk body byte for byte (no re-serialization); each is preceded by an
//! action line (`create` by default, `index` on request) naming the index and, by default, an
//! id derived from the event's origin (stream key and byte offset), so a replay after a crash
//! answers 409 instead of duplicating documents.
//!
//! Delivery: the sink builds request bodies on its own thread; each full one is sent (and
//! retried) by a `Sender`, on that thread when `max_in_flight = 1` (the default), else on
//! one of `max_in_flight` sender threads, so that many requests are in flight at once and
//! their replies come back in any order. A request never holds more than `batch_max_events`
//! events or `batch_max_bytes` of body (a single larger event goes alone). A batch's
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
use crate::parse::index::FieldKind;
use crate::sink::net::{Backoff, BlockingHttp, base64, retry_after};
use crate::sink::{Ack, Flow, OutEvent, Output, Sink};
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
    /// Requests in flight at once, 1..=64 (one sender thread each when > 1). Default 1.
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
    /// File (JSON lines, fsynced) for rejected items, instead of the run's dead letter.
    /// Default: none — rejected items go to the run's `[dead_letter]` (with the sink's name,
    /// the status and Elasticsearch's reason), or, with no dead letter to take them (a
    /// [`crate::runtime::Topology`] without one), stay unacknowledged: never dropped
    /// silently. A [`DeadLetters`] callback set on the sink takes precedence over both.
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
    /// The stream the event came from (a file, a request, a partition), when known.
    pub stream: Option<String>,
    /// The event's byte offset in that stream.
    pub offset: u64,
    /// The event's line in that stream (0 when unknown).
    pub line: u64,
    /// Index of its batch's Ack in the request in flight (`u32::MAX`: refused before sending).
    ack: u32,
}

impl EsDeadLetter {
    /// An event refused before it was sent (no index, no id).
    fn refused(e: &OutEvent<'_>, stream: Option<&str>, error_type: &str, reason: &str) -> Self {
        Self {
            event: e.bytes.to_vec(),
            status: 0,
            error_type: error_type.into(),
            reason: reason.into(),
            index: String::new(),
            stream: stream.map(str::to_string),
            offset: e.offset,
            line: e.line,
            ack: u32::MAX,
        }
    }

    /// One JSON object (the dead-letter line format).
    pub fn to_json(&self) -> String {
        let event = match serde_json::from_slice::<serde_json::Value>(&self.event) {
            Ok(v) => v,
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(&self.event).into()),
        };
        serde_json::json!({
            "event": event, "status": self.status, "error_type": self.error_type,
            "reason": self.reason, "index": self.index, "sink": "elasticsearch",
            "stream": self.stream, "offset": self.offset,
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
    /// Literal text, already escaped as JSON string content.
    Lit(String),
    Date(char),
    /// A field path (`a.b`, docs/abi.md §10).
    Field(String),
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
                segs.push(Seg::Lit(json_str(&std::mem::take(&mut lit))));
            }
            segs.push(Seg::Field(path.to_string()));
            rest = &r[end + 2..];
        } else if c == '%' {
            let d = rest[1..].chars().next().ok_or("`%` at the end")?;
            if !matches!(d, 'Y' | 'm' | 'd' | 'H') {
                return Err(format!("unsupported `%{d}` (use %Y %m %d %H)"));
            }
            if !lit.is_empty() {
                segs.push(Seg::Lit(json_str(&std::mem::take(&mut lit))));
            }
            segs.push(Seg::Date(d));
            rest = &rest[1 + d.len_utf8()..];
        } else {
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !lit.is_empty() {
        segs.push(Seg::Lit(json_str(&lit)));
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

#[derive(Debug, Clone, PartialEq)]
enum IdMode {
    Origin,
    Auto,
    /// A field path (`a.b`).
    Field(String),
}

/// One item held for a request: where its action and event lines are in the request's
/// text (`action\nevent\n`), and its origin.
#[derive(Clone, Copy)]
struct Doc {
    start: usize,
    /// Length of the action line, without its newline.
    action: u32,
    /// Length of the event, without its newline.
    event: u32,
    /// Index of its batch's [`Ack`] among those held for the same request.
    ack: u32,
    /// The event's byte offset in its stream.
    offset: u64,
    /// The event's line in its stream.
    line: u64,
}

impl Doc {
    fn end(&self) -> usize {
        self.start + self.action as usize + self.event as usize + 2
    }
    fn action<'t>(&self, text: &'t [u8]) -> &'t [u8] {
        &text[self.start..self.start + self.action as usize]
    }
    fn event<'t>(&self, text: &'t [u8]) -> &'t [u8] {
        let at = self.start + self.action as usize + 1;
        &text[at..at + self.event as usize]
    }
}

/// The Elasticsearch sink built from [`ElasticsearchSinkConfig`]: builds request bodies on
/// the sink's thread and hands each full one to its `Sender`, on this thread
/// (`max_in_flight = 1`) or on one of `max_in_flight` sender threads.
pub struct ElasticsearchSink {
    index: IndexName,
    id: IdMode,
    max_bytes: usize,
    max_events: usize,
    linger: Duration,
    max_in_flight: usize,
    /// Sends (and retries) a request; cloned into each sender thread.
    sender: Sender,
    /// The sender threads, started with the first request when `max_in_flight > 1`.
    pool: Option<Pool>,
    held: Vec<Doc>,
    /// The held items' action and event lines, back to back: the next request's body.
    held_text: Vec<u8>,
    held_acks: Vec<Ack>,
    /// The origin id's hash input for the batch being added: stream key, a 0 byte, then the
    /// event's offset (8 bytes, little-endian), rewritten per event.
    id_input: Vec<u8>,
    oldest: Option<Instant>,
}

/// Sends one request at a time and sees it through (retries, 413 splits, per-item
/// outcomes, dead letters), then resolves its batches' Acks. The settings and clients are
/// shared; the per-request state is its own, so each sender thread has a clone.
struct Sender {
    name: String,
    endpoints: Arc<Vec<String>>,
    create: bool,
    auth_header: Option<String>,
    gzip: bool,
    timeout: Duration,
    retry: (u64, u64),
    backoff: Backoff,
    /// Round-robin over `endpoints`, shared by the sender threads.
    rr: Arc<std::sync::atomic::AtomicUsize>,
    http: Arc<BlockingHttp>,
    metrics: ComponentMetrics,
    shutdown: Shutdown,
    dead_letters: Option<DeadLetters>,
    /// The run's dead letter, used when `dead_letters` is unset.
    outlet: crate::runtime::DeadLetterOutlet,
    /// Set by the first 401/403: the sink stops sending (every later request is given up
    /// at once, unacknowledged) until it is restarted with credentials that work.
    refused: Arc<std::sync::atomic::AtomicBool>,
    /// Per Ack of the request in flight: its token, which the dead letter holds until it
    /// has written the event.
    tokens: Vec<Option<crate::ack::AckToken>>,
    /// Per Ack of the request in flight: events (and bytes) dead-lettered.
    dead_per_ack: Vec<(u64, u64)>,
    /// Per Ack of the request in flight: its stream, for dead letters.
    streams: Vec<Option<Arc<str>>>,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        Sender {
            name: self.name.clone(),
            endpoints: self.endpoints.clone(),
            create: self.create,
            auth_header: self.auth_header.clone(),
            gzip: self.gzip,
            timeout: self.timeout,
            retry: self.retry,
            backoff: Backoff::new(self.retry.0, self.retry.1),
            rr: self.rr.clone(),
            http: self.http.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            dead_letters: self.dead_letters.clone(),
            outlet: self.outlet.clone(),
            refused: self.refused.clone(),
            tokens: Vec::new(),
            dead_per_ack: Vec::new(),
            streams: Vec::new(),
        }
    }
}

/// One request handed to a sender thread: its body, items and batches' Acks.
type Job = (Bytes, Vec<Doc>, Vec<Ack>);

/// `max_in_flight` sender threads taking requests from a rendezvous channel: a request
/// waits on the sink's thread until a sender is free, so at most `max_in_flight` are in
/// flight and the sink's queue holds the rest back.
struct Pool {
    tx: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
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
            p => IdMode::Field(p.to_string()),
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
        if !(1..=64).contains(&self.max_in_flight) {
            return Err(cfg_err(n, "max_in_flight", "must be 1..=64"));
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
        Ok(ElasticsearchSink {
            index: IndexName::new(segs, fallback),
            id,
            max_bytes: self.batch_max_bytes,
            max_events: self.batch_max_events,
            linger: Duration::from_millis(self.linger_ms),
            max_in_flight: self.max_in_flight,
            sender: Sender {
                name: n.clone(),
                endpoints: Arc::new(endpoints),
                create,
                auth_header,
                gzip,
                timeout: Duration::from_millis(self.request_timeout_ms),
                retry: (self.retry_initial_ms, self.retry_max_ms),
                backoff: Backoff::new(self.retry_initial_ms, self.retry_max_ms),
                rr: Arc::default(),
                http: Arc::new(http),
                metrics: cx.metrics.component(n, "sink", "elasticsearch"),
                shutdown: cx.shutdown.clone(),
                dead_letters,
                outlet: cx.dead_letters.clone(),
                refused: Arc::default(),
                tokens: Vec::new(),
                dead_per_ack: Vec::new(),
                streams: Vec::new(),
            },
            pool: None,
            held: Vec::new(),
            held_text: Vec::new(),
            id_input: Vec::new(),
            held_acks: Vec::new(),
            oldest: None,
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
    /// Every item succeeded (2xx), read without a parse.
    AllOk,
    /// Per-item statuses with error type and reason.
    Items(Vec<(u16, String, String)>),
}

impl ElasticsearchSink {
    /// Sends rejected items to `dl` instead of `dead_letter_path` (the runtime's dead-letter
    /// sink, for instance). Cost: one call per request that had rejections.
    pub fn with_dead_letters(mut self, dl: DeadLetters) -> Self {
        self.sender.dead_letters = Some(dl);
        self
    }

    /// Queues one event (its action line, then its bytes); returns an item to dead-letter at
    /// once if it has no index or id.
    fn add(&mut self, e: &OutEvent<'_>, key: Option<&str>) -> Option<EsDeadLetter> {
        let start = self.held_text.len();
        let t = &mut self.held_text;
        t.extend_from_slice(if self.sender.create {
            b"{\"create\":{\"_index\":\""
        } else {
            b"{\"index\":{\"_index\":\""
        });
        if !self.index.render(e, t) {
            t.truncate(start);
            return Some(EsDeadLetter::refused(
                e,
                key,
                "index_field_missing",
                "a `{{ field }}` of `index` is missing and no fallback_index",
            ));
        }
        t.push(b'"');
        match (&self.id, key) {
            (IdMode::Origin, Some(k)) => {
                t.extend_from_slice(b",\"_id\":\"");
                push_hex(t, origin_id(&mut self.id_input, k, e.offset));
                t.push(b'"');
            }
            (IdMode::Origin | IdMode::Auto, _) => {}
            (IdMode::Field(p), _) => match e.field(p) {
                Some(f) if matches!(f.kind, FieldKind::String | FieldKind::Number) => {
                    // A string's raw bytes are JSON string content already (escapes kept).
                    t.extend_from_slice(b",\"_id\":\"");
                    t.extend_from_slice(f.raw);
                    t.push(b'"');
                }
                _ => {
                    t.truncate(start);
                    return Some(EsDeadLetter::refused(
                        e,
                        key,
                        "id_field_missing",
                        "the `id` field is missing or not a string/number",
                    ));
                }
            },
        }
        t.extend_from_slice(b"}}\n");
        let action = (t.len() - start - 1) as u32;
        t.extend_from_slice(e.bytes);
        t.push(b'\n');
        self.held.push(Doc {
            start,
            action,
            event: e.bytes.len() as u32,
            ack: self.held_acks.len() as u32,
            offset: e.offset,
            line: e.line,
        });
        None
    }
}

impl Sender {
    /// The request body for `docs`: a slice of `text` (no copy) when they lie back to back,
    /// else their lines copied; gzipped when asked.
    fn body(&self, text: &Bytes, docs: &[Doc]) -> Bytes {
        let (Some(first), Some(last)) = (docs.first(), docs.last()) else {
            return Bytes::new();
        };
        let whole = docs.windows(2).all(|w| w[0].end() == w[1].start);
        if !self.gzip && whole {
            return text.slice(first.start..last.end());
        }
        let mut e = if self.gzip {
            Some(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::fast(),
            ))
        } else {
            None
        };
        let mut b = Vec::new();
        let mut put = |bytes: &[u8]| match &mut e {
            // Writing into a Vec cannot fail.
            Some(e) => {
                let _ = e.write_all(bytes);
            }
            None => b.extend_from_slice(bytes),
        };
        if whole {
            put(&text[first.start..last.end()]);
        } else {
            for d in docs {
                put(&text[d.start..d.end()]);
            }
        }
        match e {
            Some(e) => e.finish().unwrap_or_default().into(),
            None => b.into(),
        }
    }

    fn send_once(&mut self, text: &Bytes, docs: &[Doc]) -> Reply {
        let rr = self.rr.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ep = &self.endpoints[rr % self.endpoints.len()];
        let uri = format!("{ep}/_bulk?filter_path=errors,items.*.error,items.*.status");
        let mut req = hyper::Request::post(uri).header("content-type", "application/x-ndjson");
        if self.gzip {
            req = req.header("content-encoding", "gzip");
        }
        if let Some(a) = &self.auth_header {
            req = req.header("authorization", a.as_str());
        }
        let t0 = Instant::now();
        let body = self.body(text, docs);
        self.metrics
            .encode_seconds
            .inc_by(t0.elapsed().as_secs_f64());
        let req = match req.body(Full::new(body)) {
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
        let t0 = Instant::now();
        let reply = self.read_reply(&body, docs.len());
        self.metrics
            .encode_seconds
            .inc_by(t0.elapsed().as_secs_f64());
        reply
    }

    /// The per-item outcomes of a 200 reply, or a retry when it cannot be read or has the
    /// wrong number of items.
    fn read_reply(&self, body: &[u8], n: usize) -> Reply {
        if all_succeeded(body, n) {
            return Reply::AllOk;
        }
        let Ok(reply) = serde_json::from_slice::<BulkReply>(body) else {
            self.metrics.error("unparsable_reply", "receiving");
            return Reply::Retry(None);
        };
        let out: Vec<(u16, String, String)> = reply
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|BulkItem(r)| {
                let (ty, reason) = match &r.error {
                    None => (String::new(), String::new()),
                    Some(serde_json::Value::String(s)) => (String::new(), s.clone()),
                    Some(e) => {
                        let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
                        (s("type").to_string(), s("reason").to_string())
                    }
                };
                (r.status, ty, reason)
            })
            .collect();
        if out.len() != n {
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

    fn deliver(&mut self, text: &Bytes, docs: Vec<Doc>) -> Outcome {
        let mut pending = docs;
        let mut attempt = 0u32;
        while !pending.is_empty() {
            if self.shutdown.is_triggered()
                || self.refused.load(std::sync::atomic::Ordering::SeqCst)
            {
                return Outcome::Stuck;
            }
            match self.send_once(text, &pending) {
                Reply::Retry(hint) => {
                    if !self.sleep_backoff(attempt, hint) {
                        return Outcome::Stuck;
                    }
                    attempt += 1;
                }
                Reply::TooLarge => {
                    if pending.len() == 1 {
                        let d = self.rejected(
                            text,
                            &pending[0],
                            413,
                            "request_entity_too_large".into(),
                            "a single event is larger than the server accepts".into(),
                        );
                        return self.dead_letter(vec![d], None);
                    }
                    let right = pending.split_off(pending.len() / 2);
                    if let Outcome::Stuck = self.deliver(text, std::mem::take(&mut pending)) {
                        return Outcome::Stuck;
                    }
                    pending = right;
                    attempt = 0;
                }
                Reply::Refused(st) => {
                    if self.refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        return Outcome::Stuck;
                    }
                    tracing::error!(
                        sink = %self.name, status = st,
                        "elasticsearch refused the credentials; events stay unacknowledged"
                    );
                    self.metrics.error("auth_refused", "sending");
                    // Stopped until a restart: `/healthz` names it.
                    self.metrics.up.set(0);
                    return Outcome::Stuck;
                }
                Reply::AllOk => {
                    let n = pending.len() as u64;
                    self.metrics.all().es_items(&self.name, "2xx", n);
                    pending.clear();
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
                                dead.push(self.rejected(text, &d, st, ty, reason));
                            }
                        }
                    }
                    for (c, n) in ["2xx", "409", "429", "4xx", "5xx"].iter().zip(counts) {
                        if n > 0 {
                            self.metrics.all().es_items(&self.name, c, n);
                        }
                    }
                    if !dead.is_empty() && matches!(self.dead_letter(dead, None), Outcome::Stuck) {
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

    /// The dead letter of an item the cluster refused.
    fn rejected(
        &self,
        text: &[u8],
        d: &Doc,
        status: u16,
        error_type: String,
        reason: String,
    ) -> EsDeadLetter {
        let index = serde_json::from_slice::<serde_json::Value>(d.action(text))
            .ok()
            .and_then(|v| {
                v.as_object()?
                    .values()
                    .next()?
                    .get("_index")?
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        EsDeadLetter {
            event: d.event(text).to_vec(),
            status,
            error_type,
            reason,
            index,
            stream: self
                .streams
                .get(d.ack as usize)
                .cloned()
                .flatten()
                .map(|s| s.to_string()),
            offset: d.offset,
            line: d.line,
            ack: d.ack,
        }
    }

    /// Hands rejected `items` to the sink's callback or file, else to the run's dead
    /// letter; `current` is the token of the batch being added (for items refused before
    /// sending). `Done` once every item is taken (the dead letter holds its batch's token
    /// until it has written it); `Stuck` when nothing can take them.
    fn dead_letter(
        &mut self,
        items: Vec<EsDeadLetter>,
        current: Option<&crate::ack::AckToken>,
    ) -> Outcome {
        let taken = match &self.dead_letters {
            Some(dl) => dl(&items).map_err(|e| {
                tracing::error!(sink = %self.name, error = %e, "writing elasticsearch dead letters failed");
                self.metrics.error("dead_letter_write", "sending");
            }),
            None => items
                .iter()
                .all(|i| {
                    let token = if i.ack == u32::MAX {
                        current
                    } else {
                        self.tokens.get(i.ack as usize).and_then(Option::as_ref)
                    };
                    let reason = if i.status == 0 {
                        format!("elasticsearch: {}: {}", i.error_type, i.reason)
                    } else {
                        format!(
                            "elasticsearch refused the item: {} {}: {} (index {:?})",
                            i.status, i.error_type, i.reason, i.index
                        )
                    };
                    self.outlet.send(
                        &self.name,
                        &reason,
                        std::iter::once((&i.event[..], i.line, i.offset)),
                        token,
                    )
                })
                .then_some(())
                .ok_or_else(|| {
                    tracing::error!(sink = %self.name, n = items.len(),
                        "elasticsearch rejected items and no dead letter takes them; they stay unacknowledged");
                    self.metrics.error("no_dead_letter", "sending");
                }),
        };
        if taken.is_err() {
            return Outcome::Stuck;
        }
        for i in &items {
            if let Some(d) = self.dead_per_ack.get_mut(i.ack as usize) {
                d.0 += 1;
                d.1 += i.event.len() as u64;
            }
        }
        Outcome::Done
    }

    /// Sees one request through, then resolves its batches' Acks (delivered, less what
    /// went to the dead letter) or fails them (given up on). Returns the body's arena when
    /// nothing else holds it, for reuse.
    fn complete(&mut self, text: Bytes, docs: Vec<Doc>, acks: Vec<Ack>) -> Option<Vec<u8>> {
        self.streams.clear();
        self.streams.extend(
            acks.iter()
                .map(|a| a.token().map(|t| Arc::<str>::from(t.stream().key()))),
        );
        self.tokens.clear();
        self.tokens.extend(acks.iter().map(|a| a.token().cloned()));
        self.dead_per_ack.clear();
        self.dead_per_ack.resize(acks.len(), (0, 0));
        let outcome = self.deliver(&text, docs);
        // The dead letter holds its own clones; ours would hold the positions back.
        self.tokens.clear();
        match outcome {
            Outcome::Done => {
                // The runtime counts each batch as sent when its Ack is delivered, less
                // what went to the dead letter.
                for (ack, &(n, b)) in acks.into_iter().zip(&self.dead_per_ack) {
                    ack.dead_lettered(n, b);
                    ack.delivered();
                }
            }
            // Given up on (credentials refused, no dead letter, shutdown): the batches fail
            // now, unacknowledged, as a stopped sink's do; a push source answers "retry".
            Outcome::Stuck => acks.into_iter().for_each(Ack::failed),
        }
        text.try_into_mut().ok().map(|arena| {
            let mut arena = Vec::from(arena);
            arena.clear();
            arena
        })
    }
}

impl ElasticsearchSink {
    /// Hands the held items to a sender as one request.
    fn send_held(&mut self) {
        if self.held.is_empty() && self.held_acks.is_empty() {
            return;
        }
        let docs = std::mem::take(&mut self.held);
        let acks = std::mem::take(&mut self.held_acks);
        let text = Bytes::from(std::mem::take(&mut self.held_text));
        self.oldest = None;
        if self.max_in_flight == 1 {
            // Keep the arena's pages for the next request (a fresh multi-MiB buffer per
            // request costs an mmap, page faults and a munmap).
            if let Some(arena) = self.sender.complete(text, docs, acks) {
                self.held_text = arena;
            }
            return;
        }
        let pool = self.pool.get_or_insert_with(|| {
            let (tx, rx) = crossbeam_channel::bounded::<Job>(0);
            let threads = (0..self.max_in_flight)
                .filter_map(|k| {
                    let rx = rx.clone();
                    let mut sender = self.sender.clone();
                    std::thread::Builder::new()
                        .name(format!("sluicebox-es-{k}"))
                        .spawn(move || {
                            for (text, docs, acks) in rx {
                                sender.complete(text, docs, acks);
                            }
                        })
                        .ok()
                })
                .collect();
            Pool {
                tx: Some(tx),
                threads,
            }
        });
        let job = (text, docs, acks);
        let refused = match &pool.tx {
            Some(tx) => tx.send(job).err().map(|e| e.into_inner()),
            None => Some(job),
        };
        // No sender thread could start: send it here.
        if let Some((text, docs, acks)) = refused {
            self.sender.complete(text, docs, acks);
        }
    }

    /// Waits for the requests in flight on the sender threads.
    fn drain_pool(&mut self) {
        if let Some(mut pool) = self.pool.take() {
            drop(pool.tx.take());
            for t in pool.threads {
                let _ = t.join();
            }
        }
    }
}

/// (year, month, day, hour) of the event's `@timestamp` or `timestamp` (an RFC 3339
/// string; the first of the two among the top-level members), or of now (UTC).
fn event_date(e: &OutEvent<'_>) -> (i64, u32, u32, u32) {
    let ts = e.first_top_level(&[b"@timestamp", b"timestamp"]);
    if let Some(f) = ts.filter(|f| f.kind == FieldKind::String)
        && let Some(d) = parse_date(f.raw)
    {
        return d;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil(now)
}

/// `YYYY-MM-DD[THH[:MM[:SS[.fff]]][Z|±HH[:]MM]]` → (year, month, day, hour) in UTC: a
/// time with an offset is moved to UTC (so one instant names one index whatever zone wrote
/// it, as Logstash and Beats do); a time without one is taken as UTC; a date alone is hour 0.
fn parse_date(b: &[u8]) -> Option<Hour> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = b.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-') || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let Some(h) = num(11..13).filter(|h| *h < 24) else {
        return Some((i64::from(y), m, d, 0));
    };
    // Past the hour: minutes, seconds and a fraction, then the offset.
    let minutes = if b.get(13) == Some(&b':') {
        num(14..16).unwrap_or(0)
    } else {
        0
    };
    let mut i = 13;
    while i < b.len() && (b[i].is_ascii_digit() || matches!(b[i], b':' | b'.' | b',')) {
        i += 1;
    }
    let offset_minutes: i64 = match b.get(i) {
        Some(&sign @ (b'+' | b'-')) => {
            let oh = num(i + 1..i + 3)?;
            let at = if b.get(i + 3) == Some(&b':') {
                i + 4
            } else {
                i + 3
            };
            let om = num(at..at + 2).unwrap_or(0);
            let o = i64::from(oh * 60 + om);
            if sign == b'-' { -o } else { o }
        }
        _ => 0,
    };
    if offset_minutes == 0 {
        return Some((i64::from(y), m, d, h));
    }
    let utc = days_from_civil(i64::from(y), m, d) * 86_400
        + i64::from(h) * 3600
        + i64::from(minutes) * 60
        - offset_minutes * 60;
    // Before 1970 (or a date that overflows): keep the written hour.
    u64::try_from(utc)
        .ok()
        .map(civil)
        .or(Some((i64::from(y), m, d, h)))
}

/// Days from 1970-01-01 to the civil date (the inverse of the day part of [`civil`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day, hour), UTC.
type Hour = (i64, u32, u32, u32);

/// The `index` template and its fallback. A template of literals and dates alone keeps the
/// name it rendered last: a run of events of one hour pays a date read, a compare and a copy.
struct IndexName {
    segs: Vec<Seg>,
    fallback: Option<Vec<Seg>>,
    /// `segs` has no `{{ field }}`.
    dates_only: bool,
    /// `segs` has a date part (else, with `dates_only`, the name is one literal).
    dated: bool,
    /// The last name rendered from `segs` when `dates_only`, with its date.
    last: Option<(Hour, Vec<u8>)>,
}

impl IndexName {
    fn new(segs: Vec<Seg>, fallback: Option<Vec<Seg>>) -> Self {
        IndexName {
            dates_only: segs.iter().all(|s| !matches!(s, Seg::Field(_))),
            dated: segs.iter().any(|s| matches!(s, Seg::Date(_))),
            segs,
            fallback,
            last: None,
        }
    }

    /// Appends the index name for `e` (JSON string content) to `out`; false when neither the
    /// template nor the fallback names one (a `{{ field }}` missing or not a string or number).
    fn render(&mut self, e: &OutEvent<'_>, out: &mut Vec<u8>) -> bool {
        let at = out.len();
        if self.dates_only {
            // A template of literals alone has one name.
            let d = if self.dated {
                event_date(e)
            } else {
                (0, 0, 0, 0)
            };
            match &mut self.last {
                Some((last, name)) if *last == d => out.extend_from_slice(name),
                last => {
                    render(&self.segs, e, &mut Some(d), out);
                    *last = Some((d, out[at..].to_vec()));
                }
            }
            return true;
        }
        let mut date = None;
        if render(&self.segs, e, &mut date, out) {
            return true;
        }
        out.truncate(at);
        match &self.fallback {
            Some(f) => render(f, e, &mut date, out),
            None => false,
        }
    }
}

/// Appends the index `segs` name for `e` (JSON string content) to `out`; false when a
/// `{{ field }}` is missing or not a string or number.
fn render(
    segs: &[Seg],
    e: &OutEvent<'_>,
    date: &mut Option<(i64, u32, u32, u32)>,
    out: &mut Vec<u8>,
) -> bool {
    for s in segs {
        match s {
            Seg::Lit(l) => out.extend_from_slice(l.as_bytes()),
            Seg::Field(p) => match e.field(p) {
                // A string's raw bytes are JSON string content already (escapes kept).
                Some(f) if matches!(f.kind, FieldKind::String | FieldKind::Number) => {
                    out.extend_from_slice(f.raw);
                }
                _ => return false,
            },
            Seg::Date(c) => {
                let (y, m, d, h) = *date.get_or_insert_with(|| event_date(e));
                match c {
                    'Y' => push_digits(out, y.clamp(0, 9999) as u32, 4),
                    'm' => push_digits(out, m, 2),
                    'd' => push_digits(out, d, 2),
                    _ => push_digits(out, h, 2),
                }
            }
        }
    }
    true
}

/// `n`'s last `width` (at most 4) decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, n: u32, width: u32) {
    let mut buf = [b'0'; 4];
    let w = (width as usize).min(4);
    let mut n = n;
    for d in buf[..w].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[..w]);
}

/// `s` as JSON string content (see [`push_json_str`]).
fn json_str(s: &str) -> String {
    let mut v = Vec::with_capacity(s.len());
    push_json_str(&mut v, s);
    // Escapes are ASCII, the rest is `s`'s own UTF-8.
    String::from_utf8(v).unwrap_or_default()
}

/// The origin id of the event at `offset` of stream `key`: xxh3-128 of the key, a 0 byte
/// and the offset (8 bytes, little-endian). `buf` keeps the key's part between calls, so a
/// batch of one stream pays one short one-shot hash per event.
fn origin_id(buf: &mut Vec<u8>, key: &str, offset: u64) -> u128 {
    if buf.len() != key.len() + 9 || !buf.starts_with(key.as_bytes()) {
        buf.clear();
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(&[0; 9]);
    }
    let n = buf.len();
    buf[n - 8..].copy_from_slice(&offset.to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(buf)
}

/// `v` as 32 lowercase hex digits, most significant first.
/// Cost: 16 lookups of a two-digit table, one 32-byte append.
fn push_hex(out: &mut Vec<u8>, v: u128) {
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        t
    };
    let mut digits = [0u8; 32];
    for (pair, b) in digits.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
    out.extend_from_slice(&digits);
}

/// Appends `s` as JSON string content (quotes, backslashes and control characters escaped).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    for &c in s.as_bytes() {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(b"0123456789abcdef"[usize::from(c >> 4)]);
                out.push(b"0123456789abcdef"[usize::from(c & 0xf)]);
            }
            _ => out.push(c),
        }
    }
}

/// Whether every one of `n` (at least one) items succeeded, read without a general parse:
/// exactly `{"errors":false,"items":[{"ACTION":{"status":2XX}},…]}` (the shape the
/// request's `filter_path` asks for, with a leading `"took":N,` allowed). When not, the
/// caller parses the reply fully.
/// Cost: one pass over the reply, no allocation.
fn all_succeeded(body: &[u8], n: usize) -> bool {
    all_succeeded_count(body) == Some(n)
}

/// The number of items of an all-success reply (see [`all_succeeded`]), else `None`.
fn all_succeeded_count(body: &[u8]) -> Option<usize> {
    // A server that ignores `filter_path` (or an older one) puts `"took":N,` first.
    let mut rest = body.strip_prefix(b"{")?;
    if let Some(r) = rest.strip_prefix(b"\"took\":") {
        rest = r.trim_ascii_start();
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = rest[digits..].strip_prefix(b",")?;
    }
    let mut rest = rest.strip_prefix(b"\"errors\":false,\"items\":[")?;
    let mut count = 0;
    loop {
        // {"ACTION":{"status":
        let r = rest.strip_prefix(b"{\"")?;
        let end = r.iter().position(|&c| c == b'"')?;
        if !matches!(&r[..end], b"create" | b"index") {
            return None;
        }
        let r = r[end..].strip_prefix(b"\":{\"status\":")?;
        let (&[a, b, c], r) = r.split_first_chunk::<3>()?;
        if a != b'2' || !b.is_ascii_digit() || !c.is_ascii_digit() {
            return None;
        }
        count += 1;
        rest = r.strip_prefix(b"}}")?;
        match rest.split_first() {
            Some((b',', r)) => rest = r,
            Some((b']', r)) if r == b"}" => break,
            _ => return None,
        }
    }
    Some(count)
}

/// The reply of `_bulk` (with `filter_path`): one item per action, in order.
#[derive(Deserialize)]
struct BulkReply {
    #[serde(default)]
    items: Option<Vec<BulkItem>>,
}

/// One item: `{ "<action>": { "status": …, "error": … } }`.
struct BulkItem(ItemResult);

#[derive(Deserialize)]
struct ItemResult {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for BulkItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BulkItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a bulk item: an object with one action")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<BulkItem, A::Error> {
                let Some((serde::de::IgnoredAny, r)) = m.next_entry::<_, ItemResult>()? else {
                    return Err(serde::de::Error::custom("an empty bulk item"));
                };
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(BulkItem(r))
            }
        }
        d.deserialize_map(V)
    }
}

impl Sink for ElasticsearchSink {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        let mut t0 = Instant::now();
        let mut encoding = Duration::ZERO;
        let ack = out.ack();
        let key = ack.token().map(|t| t.stream().key().to_string());
        let mut dead = Vec::new();
        // The events' bytes and positions come from another core: ask for the ones a few
        // events ahead while this one is added.
        let mut ahead = out.iter().skip(8);
        for ev in out.iter() {
            if let Some(next) = ahead.next() {
                next.prefetch();
            }
            if let Some(d) = self.add(&ev, key.as_deref()) {
                dead.push(d);
            }
            // A request never holds more than the limits (but one event): a full one goes
            // now, holding its part of this batch with an Ack of its own.
            if self.held.len() >= self.max_events || self.held_text.len() >= self.max_bytes {
                self.held_acks.push(out.ack());
                encoding += t0.elapsed();
                self.send_held();
                t0 = Instant::now();
            }
        }
        if !dead.is_empty() {
            let (n, bytes) = (
                dead.len() as u64,
                dead.iter().map(|d| d.event.len() as u64).sum(),
            );
            if matches!(self.sender.dead_letter(dead, ack.token()), Outcome::Stuck) {
                // The batch stays unacknowledged (its Ack fails now); its other events are
                // already in the held request, so a hold of their own takes this Ack's place
                // there, keeping every held item's Ack index right.
                self.held_acks.push(out.ack());
                ack.failed();
                return Ok(Flow::Continue);
            }
            ack.dead_lettered(n, bytes);
        }
        self.held_acks.push(ack);
        encoding += t0.elapsed();
        self.sender
            .metrics
            .encode_seconds
            .inc_by(encoding.as_secs_f64());
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if self.held.len() >= self.max_events
            || self.held_text.len() >= self.max_bytes
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
        self.drain_pool();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name kept for a template of dates alone changes with the event's date, and a
    /// template with a field falls back per event.
    #[test]
    fn index_names_follow_each_events_date_and_fields() {
        let name = |template: &str, fallback: Option<&str>| {
            IndexName::new(
                parse_template(template).unwrap(),
                fallback.map(|f| parse_template(f).unwrap()),
            )
        };
        let render = |n: &mut IndexName, bytes: &'static [u8]| {
            let mut out = b"x".to_vec();
            n.render(&OutEvent::scanned(bytes), &mut out)
                .then(|| out[1..].to_vec())
        };
        let mut hourly = name("logs-%Y.%m.%d-%H", None);
        for (e, want) in [
            (
                &br#"{"@timestamp":"2026-12-06T10:59:59Z"}"#[..],
                "logs-2026.12.06-10",
            ),
            (
                br#"{"@timestamp":"2026-12-06T10:00:00Z"}"#,
                "logs-2026.12.06-10",
            ),
            (
                br#"{"@timestamp":"2026-12-06T11:00:00Z"}"#,
                "logs-2026.12.06-11",
            ),
            (br#"{"timestamp":"1999-01-31","x":1}"#, "logs-1999.01.31-00"),
            (
                br#"{"@timestamp":"2026-12-06T11:00:00Z"}"#,
                "logs-2026.12.06-11",
            ),
        ] {
            assert_eq!(render(&mut hourly, e), Some(want.as_bytes().to_vec()));
        }
        let mut plain = name("logs", None);
        assert_eq!(render(&mut plain, b"{}"), Some(b"logs".to_vec()));
        assert_eq!(render(&mut plain, b"{}"), Some(b"logs".to_vec()));
        let mut by_ns = name("k-{{ ns }}-%Y", Some("other-%Y"));
        let e = br#"{"@timestamp":"2026-01-01T00:00:00Z","ns":"a"}"#;
        assert_eq!(render(&mut by_ns, e), Some(b"k-a-2026".to_vec()));
        let e = br#"{"@timestamp":"2025-01-01T00:00:00Z","ns":{}}"#;
        assert_eq!(render(&mut by_ns, e), Some(b"other-2025".to_vec()));
        assert_eq!(render(&mut name("{{ ns }}", None), b"{}"), None);
    }

    #[test]
    fn templates_and_dates() {
        assert_eq!(
            parse_template("logs-{{ a.b }}-%Y.%m.%d").unwrap(),
            vec![
                Seg::Lit("logs-".into()),
                Seg::Field("a.b".into()),
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
        assert_eq!(parse_date(b"2024-03-07T10:00:00Z"), Some((2024, 3, 7, 10)));
        assert_eq!(parse_date(b"2024-03-07"), Some((2024, 3, 7, 0)));
        // Offsets move the time to UTC: one instant, one index.
        for (t, want) in [
            (&b"2026-12-01T23:30:00-05:00"[..], (2026, 12, 2, 4)),
            (b"2026-12-02T04:30:00Z", (2026, 12, 2, 4)),
            (b"2026-12-02T04:30:00.123456789+00:00", (2026, 12, 2, 4)),
            (b"2026-12-01T10:00:00+14:00", (2026, 11, 30, 20)),
            (b"2026-12-01T10:00:00.5+0530", (2026, 12, 1, 4)),
            (b"2024-02-29T23:59:59-00:01", (2024, 3, 1, 0)),
            (b"2024-12-31T22:00:00-03:00", (2025, 1, 1, 1)),
            (b"2024-03-07T10:15", (2024, 3, 7, 10)),
            (b"2024-03-07T10", (2024, 3, 7, 10)),
            (b"1970-01-01T00:30:00+01:00", (1970, 1, 1, 0)),
        ] {
            assert_eq!(parse_date(t), Some(want), "{}", String::from_utf8_lossy(t));
        }
        for days in [0, 1, 59, 60, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d, _) = civil(days * 86_400);
            assert_eq!(days_from_civil(y, m, d), days as i64, "{y}-{m}-{d}");
        }
        assert_eq!(parse_date(b"2024-13-07"), None);
        assert_eq!(parse_date(b"20x4-03-07"), None);
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"b\\c\n");
        assert_eq!(out, b"a\\\"b\\\\c\\u000a");
        out.clear();
        push_hex(&mut out, 0xabc);
        assert_eq!(out, b"00000000000000000000000000000abc");
        for v in [
            0,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            1 << 127,
        ] {
            out.clear();
            push_hex(&mut out, v);
            assert_eq!(out, format!("{v:032x}").as_bytes());
        }
        out.clear();
        push_digits(&mut out, 7, 2);
        assert_eq!(out, b"07");
        out.clear();
        push_digits(&mut out, 2026, 4);
        push_digits(&mut out, 12345, 4);
        assert_eq!(out, b"20262345");
        assert_eq!(
            parse_template("a\"b\\{{ x }}").unwrap()[0],
            Seg::Lit("a\\\"b\\\\".into()),
            "literals are kept escaped"
        );
    }

    #[test]
    fn origin_ids_hash_key_zero_and_offset_whatever_came_before() {
        let streamed = |k: &str, off: u64| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(k.as_bytes());
            h.update(&[0]);
            h.update(&off.to_le_bytes());
            h.digest128()
        };
        let mut buf = Vec::new();
        for (k, off) in [
            ("file:/a", 0),
            ("file:/a", 4096),
            ("file:/b", 4096), // same length, other key
            ("kafka:t/1", 7),
            ("", 1),
            ("file:/a", u64::MAX),
        ] {
            assert_eq!(origin_id(&mut buf, k, off), streamed(k, off), "{k} {off}");
        }
    }

    #[test]
    fn an_all_success_reply_is_read_without_a_parse_and_anything_else_is_not() {
        let ok =
            br#"{"errors":false,"items":[{"create":{"status":201}},{"index":{"status":200}}]}"#;
        assert!(all_succeeded(ok, 2));
        let took = br#"{"took":17,"errors":false,"items":[{"create":{"status":201}}]}"#;
        assert!(all_succeeded(took, 1));
        for (body, n) in [
            (&ok[..], 1),                                                   // count
            (&ok[..], 3),                                                   // count
            (br#"{"errors":true,"items":[{"create":{"status":201}}]}"#, 1), // errors
            (
                br#"{"errors":false,"items":[{"create":{"status":409}}]}"#,
                1,
            ), // not 2xx
            (
                br#"{"errors":false,"items":[{"create":{"status":201,"x":1}}]}"#,
                1,
            ), // more
            (
                br#"{"errors":false,"items":[{"delete":{"status":200}}]}"#,
                1,
            ), // action
            (
                br#"{"errors":false,"items":[{"create":{"status":2x1}}]}"#,
                1,
            ), // digits
            (
                br#"{"errors":false,"items":[{"create":{"status":201}}]} "#,
                1,
            ), // trailing
            (br#"{"errors":false,"items":[{"create":{"status":201}}"#, 1),  // cut
            (br#"{"errors":false,"items":[]}"#, 0),                         // empty
            (br#"{"took":1,"errors":false,"items":[]}"#, 0),
            (
                br#"{"took":,"errors":false,"items":[{"create":{"status":201}}]}"#,
                1,
            ),
        ] {
            assert!(
                !all_succeeded(body, n),
                "{} / {n}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn bulk_replies_parse_one_item_per_action() {
        let r: BulkReply = serde_json::from_slice(
            br#"{"errors":true,"items":[{"create":{"status":201}},{"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}},{"create":{"status":429,"error":"busy"}}]}"#,
        )
        .unwrap();
        let items = r.items.unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].0.status, 400);
        assert_eq!(
            items[1].0.error.as_ref().unwrap()["type"],
            "mapper_parsing_exception"
        );
        assert!(serde_json::from_slice::<BulkReply>(br#"{"items":[{}]}"#).is_err());
        assert!(
            serde_json::from_slice::<BulkReply>(br#"{"items":[{"create":{"status":201}}"#).is_err()
        );
    }
}
