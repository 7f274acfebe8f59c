//! `type = "elasticsearch"`: an Elasticsearch `_bulk` endpoint, so that shippers built for
//! Elasticsearch (Filebeat, Fluent Bit's `es` output, Logstash, Vector, the official
//! clients) send to sluicebox unchanged.
//!
//! # What is served
//!
//! | request | answer |
//! |---|---|
//! | `POST`/`PUT` `/_bulk`, `/{index}/_bulk` | the bulk, answered per item once its events are acknowledged |
//! | `GET` / `HEAD` `/` | an Elasticsearch 8 info body (`version.number` from `version`), `X-Elastic-Product: Elasticsearch` |
//! | `GET /_license`, `GET /_xpack` | an active basic license (Logstash and Beats check it) |
//! | `PUT`/`POST` `/_index_template/…`, `/_template/…`, `/_component_template/…`, `/_ilm/…`, `/_ingest/…` | `{"acknowledged":true}`: setup that shippers do at start is accepted and ignored |
//! | `GET`/`HEAD` of those | 404 `resource_not_found_exception` (nothing is stored) |
//! | anything else | 400 `no handler found for uri […] and method […]`, as Elasticsearch says |
//!
//! Every answer carries `X-Elastic-Product: Elasticsearch`, which the official 8.x clients
//! require.
//!
//! # The bulk
//!
//! Each request is one [`crate::ack::Stream`], named `elasticsearch:<peer>#<request number>`.
//! Its body (after `Content-Encoding: gzip`, if any) is checked whole before anything is
//! sent, by [`parse_bulk`], a pure function:
//!
//! - What Elasticsearch refuses as a whole request is refused whole, with its error type
//!   and a `reason` in its wording, status 400, and nothing enters the pipeline: an action
//!   line that is not JSON (`x_content_parse_exception`), not an object, with an unknown
//!   action or parameter (`illegal_argument_exception`), an action with no index
//!   (`action_request_validation_exception`), a body not ending in a newline, an empty body.
//! - What Elasticsearch answers per item is answered per item, status 400: a source line
//!   that is not JSON, or not an object, or nested deeper than `[runtime]` `max_depth`
//!   (`mapper_parsing_exception`, `failed to parse`, with a `caused_by`), a document longer
//!   than `max_line_bytes` (`illegal_argument_exception`), and `update` and `delete`, which
//!   a pass-through cannot honour (`illegal_argument_exception`: the endpoint is
//!   append-only). Each such item is also **dead-lettered** (the source line, or the action
//!   line of an `update`/`delete`, with its line and byte offset in the body), so it is
//!   counted: `received = emitted + filtered + dead_lettered`.
//! - `index` and `create` items become events: the source line, byte for byte, with the
//!   action's metadata appended as one more member, `"<metadata_field>":{"_index":…,
//!   "_id":…,"_op_type":…}` (`_id` only when the action gave one). A sink or filter reads
//!   it as a field path (`index = "{{ @metadata._index }}"` in the `elasticsearch` sink);
//!   `metadata_field = ""` leaves the documents untouched. Each event's origin is the
//!   request's stream and the byte offset of its source line.
//!
//! The answer comes only when every batch sent for the request was delivered by every
//! sink that reads it, dropped on purpose by a filter, or dead-lettered (or given up on):
//!
//! | item | status | body |
//! |---|---|---|
//! | delivered or filtered | 201 | `result: "created"`, `_id` (the action's, or the id the `elasticsearch` sink's `id = "origin"` gives the event) |
//! | a sink could not deliver it (or the source stopped first) | 429 | `es_rejected_execution_exception` |
//! | malformed, `update`, `delete` | 400 | as above |
//!
//! 429 is what every shipper retries per item: Filebeat (429 and 5xx), Logstash (all but
//! 400/404/409), Fluent Bit (any error, the chunk), and the Python client's
//! `streaming_bulk(max_retries=…)` (429 only, by default). The unit of acknowledgement is
//! the batch, so when one batch of a large request fails, each of its items answers 429.
//!
//! Query parameters (`refresh`, `pipeline`, `filter_path`, …) are accepted and ignored:
//! the reply always holds every field.
//!
//! # Security
//!
//! Binds `127.0.0.1:9200` unless `address` says otherwise. `auth` may require basic auth,
//! an API key (`Authorization: ApiKey <base64 id:key>`), or either; the comparison is in
//! constant time, the secrets come from `${ENV}` or `@file:` and are never logged. A
//! refused request gets 401 with Elasticsearch's `security_exception` body and
//! `WWW-Authenticate`. With `tls` it serves HTTPS (feature `tls`).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{SourceAuthConfig, auth_secret, expected_authorization};
use super::serve::{
    BodyError, Handler, Reply, authorized, declared_too_large, gunzip, gzip_encoded, read_body,
    serve, settle,
};
use super::tcp::{bind, cfg_err};
use super::{BoxFuture, Source, SourceContext};
use crate::batch::{Batch, DeadLetter, EventMeta, NO_SLOTS, PADDING};
use crate::config::BuildContext;
use crate::error::Result;

/// Configuration of `type = "elasticsearch"` sources. Every key has a default.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSourceConfig {
    /// `IP:PORT` to listen on. Default `127.0.0.1:9200`.
    #[serde(default = "default_address")]
    pub address: String,
    /// Largest request body, compressed or not (Elasticsearch's own
    /// `http.max_content_length`); larger ones get 413. Default 100 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Connections served at once; further ones wait in the listen backlog. Default 32.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time allowed to receive one request's headers, and then its body. Default 30.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// The member each event gets with its action's `_index`, `_id` and `_op_type`.
    /// Default `@metadata`; `""` adds nothing.
    #[serde(default = "default_metadata_field")]
    pub metadata_field: String,
    /// The `version.number` answered on `GET /` (shippers compare it with their own).
    /// Default `8.17.0`.
    #[serde(default = "default_version")]
    pub version: String,
    /// The `cluster_name` answered on `GET /`. Default `sluicebox`.
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// Credentials the requests must carry. Default: none.
    #[serde(default)]
    pub auth: Option<EsSourceAuthConfig>,
    /// Serve HTTPS: `{ crt_file, key_file, client_ca_file }` (see [`crate::tls`]); needs the
    /// `tls` feature (the `sluicebox` binary has it). Default: plain HTTP.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTlsConfig>,
}

impl std::fmt::Debug for ElasticsearchSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchSourceConfig")
            .field("address", &self.address)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("metadata_field", &self.metadata_field)
            .field("version", &self.version)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// `auth` of the `elasticsearch` source: `{ user, password }` (basic auth), `{ api_key }`
/// (the base64 `id:key` a client sends as `Authorization: ApiKey …`), or all three (either
/// is accepted). Values may be `${ENV_VAR}` or `@file:PATH`; they are never logged.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct EsSourceAuthConfig {
    /// Basic auth user.
    #[serde(default)]
    pub user: Option<String>,
    /// Basic auth password.
    #[serde(default)]
    pub password: Option<String>,
    /// API key, as the client sends it.
    #[serde(default)]
    pub api_key: Option<String>,
}

impl std::fmt::Debug for EsSourceAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EsSourceAuthConfig { <redacted> }")
    }
}

fn default_address() -> String {
    "127.0.0.1:9200".into()
}
fn default_max_body() -> usize {
    100 << 20
}
fn default_max_connections() -> usize {
    32
}
fn default_body_timeout() -> u64 {
    30
}
fn default_metadata_field() -> String {
    "@metadata".into()
}
fn default_version() -> String {
    "8.17.0".into()
}
fn default_cluster_name() -> String {
    "sluicebox".into()
}

/// The largest `max_body_bytes` accepted (bodies are held whole while they arrive).
const BODY_CEILING: usize = 1 << 30;

impl ElasticsearchSourceConfig {
    /// Checks the keys, resolves the credentials and binds the listener.
    ///
    /// # Errors
    /// [`crate::Kind::Config`] naming the key: a bad address, a port in use, a zero or huge
    /// limit, a metadata field that is not a plain key, unset credentials, `tls`.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>> {
        let n = &cx.name;
        let tls = self
            .tls
            .as_ref()
            .map(|t| t.build(|p| cx.resolve(p)))
            .transpose()
            .map_err(|e| cfg_err(n, e.key, e.message))?;
        if !(1..=BODY_CEILING).contains(&self.max_body_bytes) {
            return Err(cfg_err(
                n,
                "max_body_bytes",
                format!("must be 1..={BODY_CEILING}"),
            ));
        }
        if self.max_connections == 0 || self.max_connections > 65_536 {
            return Err(cfg_err(n, "max_connections", "must be 1..=65536"));
        }
        if !(1..=3600).contains(&self.body_timeout_secs) {
            return Err(cfg_err(n, "body_timeout_secs", "must be 1..=3600"));
        }
        if self
            .metadata_field
            .bytes()
            .any(|b| b < 0x20 || matches!(b, b'"' | b'\\' | b'.'))
        {
            return Err(cfg_err(
                n,
                "metadata_field",
                "must be a plain top-level key (no `.`, `\"`, `\\` or control characters)",
            ));
        }
        if self.version.split('.').count() != 3
            || !self
                .version
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(cfg_err(n, "version", "must be MAJOR.MINOR.PATCH"));
        }
        let auth = match &self.auth {
            None => Vec::new(),
            Some(a) => {
                let mut v = Vec::new();
                if a.user.is_some() || a.password.is_some() {
                    let basic = SourceAuthConfig {
                        token: None,
                        user: a.user.clone(),
                        password: a.password.clone(),
                    };
                    v.push(expected_authorization("sources", n, &basic)?.0);
                }
                if let Some(k) = &a.api_key {
                    v.push(format!(
                        "ApiKey {}",
                        auth_secret("sources", n, "api_key", k)?
                    ));
                }
                if v.is_empty() {
                    return Err(cfg_err(
                        n,
                        "auth",
                        "give `user` and `password`, or `api_key`",
                    ));
                }
                v
            }
        };
        let listener = bind(n, &self.address)?;
        Ok(Box::new(ElasticsearchSource {
            listener,
            tls,
            endpoint: Arc::new(Endpoint {
                max_body: self.max_body_bytes,
                timeout: Duration::from_secs(self.body_timeout_secs),
                auth,
                metadata_field: self.metadata_field.clone(),
                info: info_body(&self.version, &self.cluster_name),
            }),
            max_connections: self.max_connections,
        }))
    }
}

/// Serves the `_bulk` API and the startup probes of shippers, and frames each bulk's
/// documents into batches.
///
/// Cost: one tokio task per connection; a body is held whole (decompressed, at most
/// `max_body_bytes`) while it is checked, then its documents are copied once into batches,
/// which count against the source's in-flight budget until acknowledged; one small
/// record per item until the answer.
pub struct ElasticsearchSource {
    listener: std::net::TcpListener,
    tls: Option<crate::tls::ServerTls>,
    endpoint: Arc<Endpoint>,
    max_connections: usize,
}

impl std::fmt::Debug for ElasticsearchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchSource")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Source for ElasticsearchSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let timeout = self.endpoint.timeout;
            serve(
                self.listener,
                cx,
                self.max_connections,
                timeout,
                self.endpoint,
                self.tls,
            )
            .await
        })
    }
}

/// What every request of one `elasticsearch` source is answered from; shared by its
/// connections through an `Arc`.
struct Endpoint {
    max_body: usize,
    timeout: Duration,
    /// The accepted `Authorization` values (none: no auth).
    auth: Vec<String>,
    metadata_field: String,
    /// The `GET /` body.
    info: String,
}

fn info_body(version: &str, cluster: &str) -> String {
    json!({
        "name": "sluicebox",
        "cluster_name": cluster,
        "cluster_uuid": "sluicebox-ingest-endpoint",
        "version": {
            "number": version,
            "build_flavor": "default",
            "build_type": "sluicebox",
            "build_hash": "sluicebox",
            "build_date": "2025-01-01T00:00:00.000Z",
            "build_snapshot": false,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
            "sluicebox": env!("CARGO_PKG_VERSION"),
        },
        "tagline": "You Know, for Search",
    })
    .to_string()
}

/// A JSON answer with the headers every Elasticsearch reply has.
fn reply(status: StatusCode, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-elastic-product",
        hyper::header::HeaderValue::from_static("Elasticsearch"),
    );
    r
}

/// Elasticsearch's error body: `{"error":{"root_cause":[…],"type","reason"},"status"}`.
fn es_error(status: StatusCode, kind: &str, reason: &str) -> Reply {
    let cause = json!({ "type": kind, "reason": reason });
    reply(
        status,
        json!({
            "error": { "root_cause": [cause], "type": kind, "reason": reason },
            "status": status.as_u16(),
        })
        .to_string(),
    )
}

/// Elasticsearch's short error body, `{"error":"…","status":N}` (unknown routes, methods,
/// content types).
fn es_plain_error(status: StatusCode, reason: &str) -> Reply {
    reply(
        status,
        json!({ "error": reason, "status": status.as_u16() }).to_string(),
    )
}

fn body_error(e: BodyError, max: usize) -> Reply {
    match e {
        BodyError::TooLarge => es_plain_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than max_body_bytes ({max})"),
        ),
        BodyError::Timeout => es_plain_error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        ),
        BodyError::Broken => es_plain_error(StatusCode::BAD_REQUEST, "the body broke off"),
        BodyError::BadGzip => es_error(
            StatusCode::BAD_REQUEST,
            "parse_exception",
            "the gzip body does not decompress",
        ),
    }
}

fn unauthorized(path: &str, given: bool) -> Reply {
    let reason = if given {
        format!("unable to authenticate with provided credentials for REST request [{path}]")
    } else {
        format!("missing authentication credentials for REST request [{path}]")
    };
    let mut r = es_error(StatusCode::UNAUTHORIZED, "security_exception", &reason);
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"security\" charset=\"UTF-8\""),
    );
    r.headers_mut().append(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("ApiKey"),
    );
    r
}

/// Whether a `Content-Type` names JSON or NDJSON, in any of the spellings shippers use
/// (`application/json`, `application/x-ndjson`, `application/vnd.elasticsearch+json;
/// compatible-with=8`, …). A missing one is accepted.
fn acceptable_content_type(v: &[u8]) -> bool {
    let v = String::from_utf8_lossy(v).to_ascii_lowercase();
    let mime = v.split(';').next().unwrap_or("").trim();
    matches!(
        mime,
        "application/json"
            | "application/x-ndjson"
            | "application/vnd.elasticsearch+json"
            | "application/vnd.elasticsearch+x-ndjson"
    )
}

impl Handler for Endpoint {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        n: u64,
        cx: &SourceContext,
    ) -> Reply {
        let path = req.uri().path().to_string();
        if !self.auth.is_empty() {
            let mut ok = false;
            for a in &self.auth {
                // Every value is compared, so the time does not say which one matched.
                ok |= authorized(req.headers(), a);
            }
            if !ok {
                cx.metrics().error("auth_refused", "receiving");
                let given = req.headers().contains_key(hyper::header::AUTHORIZATION);
                return unauthorized(&path, given);
            }
        }
        let method = req.method().clone();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let no_handler = || {
            es_plain_error(
                StatusCode::BAD_REQUEST,
                &format!("no handler found for uri [{path}] and method [{method}]"),
            )
        };
        match segs.as_slice() {
            [""] => match method {
                Method::GET | Method::HEAD => reply(StatusCode::OK, self.info.clone()),
                _ => wrong_method(&path, &method, "GET, HEAD"),
            },
            ["_bulk"] | [_, "_bulk"] => {
                if method != Method::POST && method != Method::PUT {
                    return wrong_method(&path, &method, "POST, PUT");
                }
                let index = (segs.len() == 2).then(|| segs[0].to_string());
                self.bulk(req, peer, n, cx, index.as_deref()).await
            }
            ["_license"] if method == Method::GET => reply(StatusCode::OK, license_body()),
            ["_xpack"] if method == Method::GET => reply(
                StatusCode::OK,
                json!({
                    "build": { "hash": "sluicebox", "date": "2025-01-01T00:00:00.000Z" },
                    "license": license(),
                    "features": {},
                    "tagline": "You know, for X",
                })
                .to_string(),
            ),
            [first, ..]
                if matches!(
                    *first,
                    "_index_template" | "_template" | "_component_template" | "_ilm" | "_ingest"
                ) =>
            {
                match method {
                    Method::PUT | Method::POST => {
                        tracing::info!(
                            source = cx.name(),
                            "accepted and ignored shipper setup: {method} {path}"
                        );
                        reply(StatusCode::OK, r#"{"acknowledged":true}"#.into())
                    }
                    Method::GET | Method::HEAD => es_error(
                        StatusCode::NOT_FOUND,
                        "resource_not_found_exception",
                        &format!(
                            "[{path}] not found: this endpoint keeps no templates or policies"
                        ),
                    ),
                    _ => no_handler(),
                }
            }
            _ => no_handler(),
        }
    }
}

fn wrong_method(path: &str, method: &Method, allowed: &str) -> Reply {
    es_plain_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!(
            "Incorrect HTTP method for uri [{path}] and method [{method}], allowed: [{allowed}]"
        ),
    )
}

fn license() -> Value {
    json!({
        "status": "active",
        "uid": "sluicebox",
        "type": "basic",
        "mode": "basic",
        "issue_date_in_millis": 0,
        "max_nodes": 1000,
        "issued_to": "sluicebox",
        "issuer": "sluicebox",
        "start_date_in_millis": -1,
    })
}

fn license_body() -> String {
    json!({ "license": license() }).to_string()
}

impl Endpoint {
    async fn bulk(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        n: u64,
        cx: &SourceContext,
        path_index: Option<&str>,
    ) -> Reply {
        let started = Instant::now();
        if cx.shutdown().is_triggered() {
            return es_plain_error(StatusCode::SERVICE_UNAVAILABLE, "the source is stopping");
        }
        if let Some(ct) = req.headers().get(hyper::header::CONTENT_TYPE)
            && !acceptable_content_type(ct.as_bytes())
        {
            cx.metrics().error("content_type", "receiving");
            return es_plain_error(
                StatusCode::NOT_ACCEPTABLE,
                &format!(
                    "Content-Type header [{}] is not supported",
                    String::from_utf8_lossy(ct.as_bytes())
                ),
            );
        }
        let gzip = match gzip_encoded(req.headers()) {
            Ok(gzip) => gzip,
            Err(other) => {
                cx.metrics().error("content_encoding", "receiving");
                return es_plain_error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!("Content-Encoding [{other}] is not supported (use gzip)"),
                );
            }
        };
        if declared_too_large(req.headers(), self.max_body) {
            cx.metrics()
                .error(BodyError::TooLarge.metric(), "receiving");
            return body_error(BodyError::TooLarge, self.max_body);
        }
        let mut body = match read_body(req.into_body(), self.max_body, self.timeout).await {
            Ok(b) => b,
            Err(e) => {
                cx.metrics().error(e.metric(), "receiving");
                return body_error(e, self.max_body);
            }
        };
        if gzip {
            body = match gunzip(&body, self.max_body) {
                Ok(b) => b,
                Err(e) => {
                    cx.metrics().error(e.metric(), "receiving");
                    return body_error(e, self.max_body);
                }
            };
        }
        let p = &cx.frame().pipeline;
        let limits = Limits {
            max_depth: p.max_depth,
            max_doc_bytes: p.max_line_bytes,
        };
        let items = match parse_bulk(&body, path_index, limits) {
            Ok(items) => items,
            Err(e) => {
                cx.metrics().error("bad_request", "receiving");
                return es_error(StatusCode::BAD_REQUEST, e.kind, &e.reason);
            }
        };
        let stream = cx.stream(format!("elasticsearch:{peer}#{n}"), None);
        let sent = self.send_items(&body, &items, &stream, cx).await;
        drop(body);
        // Answer only once everything sent was delivered, dead-lettered or given up on.
        let w = settle(&stream, cx).await;
        let outcome = |batch: Option<usize>| -> Delivery {
            match batch {
                Some(b) if b < sent.ends.len() && w.is_delivered(sent.ends[b]) => Delivery::Done,
                _ => Delivery::Failed,
            }
        };
        let key = stream.key();
        let mut out = Vec::with_capacity(items.len());
        let mut any_error = false;
        for (i, (item, &batch)) in items.iter().zip(&sent.batch_of).enumerate() {
            let mut head = serde_json::Map::new();
            head.insert("_index".into(), item.index.clone().into());
            let status = match (&item.problem, item.op) {
                (Some(p), _) => {
                    head.insert(
                        "_id".into(),
                        item.id.clone().map_or(Value::Null, Value::from),
                    );
                    head.insert("status".into(), 400.into());
                    head.insert("error".into(), p.to_json());
                    400
                }
                (None, _) => {
                    let id = item
                        .id
                        .clone()
                        .unwrap_or_else(|| origin_id(key, item.doc_offset()));
                    head.insert("_id".into(), id.into());
                    match outcome(batch) {
                        Delivery::Done => {
                            head.insert("_version".into(), 1.into());
                            head.insert("result".into(), "created".into());
                            head.insert(
                                "_shards".into(),
                                json!({"total": 1, "successful": 1, "failed": 0}),
                            );
                            head.insert("_seq_no".into(), i.into());
                            head.insert("_primary_term".into(), 1.into());
                            head.insert("status".into(), 201.into());
                            201
                        }
                        Delivery::Failed => {
                            head.insert("status".into(), 429.into());
                            head.insert(
                                "error".into(),
                                json!({
                                    "type": "es_rejected_execution_exception",
                                    "reason": "sluicebox could not deliver the document downstream; retry it",
                                }),
                            );
                            429
                        }
                    }
                }
            };
            any_error |= status >= 300;
            let mut o = serde_json::Map::new();
            o.insert(item.op.name().into(), Value::Object(head));
            out.push(Value::Object(o));
        }
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        reply(
            StatusCode::OK,
            json!({ "errors": any_error, "took": took, "items": out }).to_string(),
        )
    }

    /// Frames the items into batches and sends them. Returns, per item, the index of the
    /// batch that holds it (`None`: not sent, the source is stopping), and each sent batch's
    /// end position.
    async fn send_items(
        &self,
        body: &[u8],
        items: &[BulkItem],
        stream: &crate::ack::Stream,
        cx: &SourceContext,
    ) -> Sent {
        let p = &cx.frame().pipeline;
        let (max_events, max_bytes, raw_max) =
            (p.max_batch_events, p.max_batch_bytes, p.dead_letter_raw_max);
        let mut sent = Sent {
            batch_of: Vec::with_capacity(items.len()),
            ends: Vec::new(),
        };
        let mut batch = new_batch(cx);
        let mut start = 0u64;
        let mut stopped = false;
        for (i, item) in items.iter().enumerate() {
            if stopped {
                sent.batch_of.push(None);
                continue;
            }
            sent.batch_of.push(Some(sent.ends.len()));
            self.push_item(body, item, &mut batch, raw_max);
            let full = batch.events.len() >= max_events || batch.data.len() >= max_bytes;
            let last = i + 1 == items.len();
            if full || last {
                let end = if last {
                    body.len() as u64
                } else {
                    item.end as u64
                };
                batch.stats.bytes_in = end - start;
                batch.data.resize(batch.data.len() + PADDING, 0);
                let full_batch = std::mem::replace(&mut batch, new_batch(cx));
                if cx.send(stream, full_batch, end).await {
                    sent.ends.push(end);
                    start = end;
                } else {
                    stopped = true;
                    // The items of the batch that was not sent are not delivered.
                    for b in sent.batch_of.iter_mut().rev() {
                        if *b != Some(sent.ends.len()) {
                            break;
                        }
                        *b = None;
                    }
                }
            }
        }
        sent
    }

    /// Adds one item to `batch`: an event for a good `index`/`create`, a dead letter
    /// otherwise.
    fn push_item(&self, body: &[u8], item: &BulkItem, batch: &mut Batch, raw_max: usize) {
        batch.stats.received += 1;
        if let Some(problem) = &item.problem {
            let (line, offset, raw) = match &item.source {
                Some(s) if item.op.has_source() && problem.on_source => {
                    (s.line, s.range.start as u64, &body[s.range.clone()])
                }
                _ => (
                    item.line,
                    item.action.start as u64,
                    &body[item.action.clone()],
                ),
            };
            batch.dead.push(DeadLetter::new(
                format!("elasticsearch bulk item: {}", problem.summary()),
                line,
                offset,
                None,
                raw,
                raw_max,
            ));
            batch.stats.dead_lettered += 1;
            return;
        }
        let Some(src) = &item.source else { return };
        let doc = &body[src.range.clone()];
        let start = batch.data.len();
        if self.metadata_field.is_empty() {
            batch.data.extend_from_slice(doc);
        } else {
            append_metadata(doc, &self.metadata_field, item, &mut batch.data);
        }
        let len = batch.data.len() - start;
        batch.data.push(b'\n');
        batch.events.push(EventMeta {
            start: start as u32,
            len: len as u32,
            s_start: 0,
            s_len: 0,
            line: src.line,
            offset: src.range.start as u64,
            route: 0,
            changed: false,
            plain: false,
            slot_start: NO_SLOTS,
        });
    }
}

fn new_batch(cx: &SourceContext) -> Batch {
    let mut b = cx.batch();
    b.clear();
    b
}

/// Where each item of a request went.
struct Sent {
    /// Per item: the index of its batch in `ends`, or `None` when it was not sent.
    batch_of: Vec<Option<usize>>,
    /// Per sent batch: its end position.
    ends: Vec<u64>,
}

enum Delivery {
    Done,
    Failed,
}

/// The id the `elasticsearch` sink's `id = "origin"` gives an event of stream `key` at
/// byte `offset`: the same id is answered for an item sent without one.
fn origin_id(key: &str, offset: u64) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(&offset.to_le_bytes());
    format!("{:032x}", h.digest128())
}

/// Appends `doc` (a valid JSON object) to `out` with one more member,
/// `"<field>":{"_index":…,"_id":…,"_op_type":…}`, before its closing brace.
fn append_metadata(doc: &[u8], field: &str, item: &BulkItem, out: &mut Vec<u8>) {
    let close = doc.iter().rposition(|&b| b == b'}').unwrap_or(doc.len());
    let open = doc.iter().position(|&b| b == b'{').unwrap_or(0);
    let empty = doc[open + 1..close]
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    out.extend_from_slice(&doc[..close]);
    if !empty {
        out.push(b',');
    }
    let mut meta = serde_json::Map::new();
    meta.insert("_index".into(), item.index.clone().into());
    if let Some(id) = &item.id {
        meta.insert("_id".into(), id.clone().into());
    }
    meta.insert("_op_type".into(), item.op.name().into());
    // Writing JSON values into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, field);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, &meta);
    out.extend_from_slice(&doc[close..]);
}

/// The four bulk actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpType {
    /// `index`: takes a source line; becomes an event.
    Index,
    /// `create`: takes a source line; becomes an event.
    Create,
    /// `update`: takes a source line; answered 400 (not supported by a pass-through).
    Update,
    /// `delete`: no source line; answered 400 (not supported by a pass-through).
    Delete,
}

impl OpType {
    /// The action's name in a bulk body.
    pub fn name(self) -> &'static str {
        match self {
            OpType::Index => "index",
            OpType::Create => "create",
            OpType::Update => "update",
            OpType::Delete => "delete",
        }
    }

    fn has_source(self) -> bool {
        self != OpType::Delete
    }
}

/// Bounds [`parse_bulk`] checks each document against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of a document (`[runtime]` `max_depth`).
    pub max_depth: usize,
    /// Longest document (`[runtime]` `max_line_bytes`).
    pub max_doc_bytes: usize,
}

/// A source line: where it is in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// Its bytes in the body (no newline, no trailing `\r`).
    pub range: Range<usize>,
    /// Its 1-based line number.
    pub line: u64,
}

/// Why one item is answered with an error, in Elasticsearch's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// `error.type`.
    pub kind: &'static str,
    /// `error.reason`.
    pub reason: String,
    /// `error.caused_by`: type and reason.
    pub caused_by: Option<(&'static str, String)>,
    /// Whether the source line (not the action) is at fault.
    on_source: bool,
}

impl ItemError {
    fn to_json(&self) -> Value {
        let mut v = json!({ "type": self.kind, "reason": self.reason });
        if let Some((t, r)) = &self.caused_by {
            v["caused_by"] = json!({ "type": t, "reason": r });
        }
        v
    }

    fn summary(&self) -> String {
        match &self.caused_by {
            Some((t, r)) => format!("{}: {}: {t}: {r}", self.kind, self.reason),
            None => format!("{}: {}", self.kind, self.reason),
        }
    }
}

/// One action of a bulk body, with its source line if it takes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkItem {
    /// The action.
    pub op: OpType,
    /// Its `_index`, or the one of the path (`/{index}/_bulk`).
    pub index: String,
    /// Its `_id`, if it gave one.
    pub id: Option<String>,
    /// The 1-based line of the action.
    pub line: u64,
    /// The action line's bytes in the body.
    pub action: Range<usize>,
    /// The source line (`index`, `create`, `update`).
    pub source: Option<SourceLine>,
    /// Why the item is answered with an error, if it is.
    pub problem: Option<ItemError>,
    /// The body offset just past the item's last line (its newline included).
    end: usize,
}

impl BulkItem {
    fn doc_offset(&self) -> u64 {
        self.source
            .as_ref()
            .map_or(self.action.start, |s| s.range.start) as u64
    }
}

/// Why a whole bulk request is refused (status 400), in Elasticsearch's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkError {
    /// `error.type`.
    pub kind: &'static str,
    /// `error.reason`.
    pub reason: String,
}

fn whole(kind: &'static str, reason: String) -> BulkError {
    BulkError { kind, reason }
}

/// The parameters Elasticsearch 8 accepts in an action's metadata.
const KNOWN_PARAMS: &[&str] = &[
    "_index",
    "_id",
    "routing",
    "version",
    "version_type",
    "if_seq_no",
    "if_primary_term",
    "pipeline",
    "op_type",
    "require_alias",
    "require_data_stream",
    "dynamic_templates",
    "retry_on_conflict",
    "_source",
    "list_executed_pipelines",
];

fn token(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "START_OBJECT",
        Value::Array(_) => "START_ARRAY",
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_BOOLEAN",
        Value::Null => "VALUE_NULL",
    }
}

/// Lines of a body: (line number, byte range without the newline and a trailing `\r`,
/// offset just past the newline).
fn lines(body: &[u8]) -> impl Iterator<Item = (u64, Range<usize>, usize)> + '_ {
    let mut pos = 0usize;
    let mut no = 0u64;
    std::iter::from_fn(move || {
        if pos >= body.len() {
            return None;
        }
        no += 1;
        let nl = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i);
        let mut end = nl;
        if end > pos && body[end - 1] == b'\r' {
            end -= 1;
        }
        let r = (no, pos..end, (nl + 1).min(body.len()));
        pos = nl + 1;
        Some(r)
    })
}

fn is_blank(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r'))
}

/// Parses a `_bulk` body into its items, checking it as Elasticsearch does: the errors
/// Elasticsearch gives for the whole request are an `Err`; those it gives per item are in
/// each [`BulkItem::problem`]. `path_index` is the `{index}` of `/{index}/_bulk`. Blank
/// lines between items are skipped. Pure: no I/O, no state.
///
/// # Errors
/// [`BulkError`] with Elasticsearch's error type: `parse_exception` (empty body),
/// `illegal_argument_exception` (no final newline, a malformed action line, an unknown
/// action or parameter, an action without its source line), `x_content_parse_exception`
/// (an action line that is not JSON), `action_request_validation_exception` (no action, no
/// index).
pub fn parse_bulk(
    body: &[u8],
    path_index: Option<&str>,
    limits: Limits,
) -> std::result::Result<Vec<BulkItem>, BulkError> {
    if is_blank_body(body) {
        return Err(whole("parse_exception", "request body is required".into()));
    }
    if body.last() != Some(&b'\n') {
        return Err(whole(
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]".into(),
        ));
    }
    let mut items = Vec::new();
    let mut structurals = Vec::new();
    let mut it = lines(body);
    while let Some((no, range, after)) = it.next() {
        if is_blank(&body[range.clone()]) {
            continue;
        }
        let (op, index, id) = parse_action(&body[range.clone()], no, path_index)?;
        let mut item = BulkItem {
            op,
            index,
            id,
            line: no,
            action: range,
            source: None,
            problem: None,
            end: after,
        };
        if op.has_source() {
            let Some((sno, srange, safter)) = it.next() else {
                return Err(whole(
                    "illegal_argument_exception",
                    format!(
                        "Malformed action/metadata line [{no}]: the [{}] action has no source line",
                        op.name()
                    ),
                ));
            };
            item.end = safter;
            item.problem = check_source(&body[srange.clone()], limits, &mut structurals);
            item.source = Some(SourceLine {
                range: srange,
                line: sno,
            });
        }
        if item.problem.is_none()
            && let Some(id) = item.id.as_ref().filter(|id| id.len() > MAX_ID_BYTES)
        {
            // Elasticsearch refuses such an item, so the sink could not store it either.
            item.problem = Some(ItemError {
                kind: "action_request_validation_exception",
                reason: format!(
                    "Validation Failed: 1: id [{id}] is too long, must be no longer than \
                     {MAX_ID_BYTES} bytes but was: {};",
                    id.len()
                ),
                caused_by: None,
                on_source: false,
            });
        }
        if item.problem.is_none() && matches!(op, OpType::Update | OpType::Delete) {
            item.problem = Some(ItemError {
                kind: "illegal_argument_exception",
                reason: format!(
                    "[{}] is not supported: this endpoint is append-only (sluicebox passes documents on; use index or create)",
                    op.name()
                ),
                caused_by: None,
                on_source: false,
            });
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(whole(
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;".into(),
        ));
    }
    Ok(items)
}

/// The longest `_id` Elasticsearch takes, in bytes of UTF-8.
const MAX_ID_BYTES: usize = 512;

fn is_blank_body(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Parses one action line.
fn parse_action(
    line: &[u8],
    no: u64,
    path_index: Option<&str>,
) -> std::result::Result<(OpType, String, Option<String>), BulkError> {
    let malformed = |m: String| {
        whole(
            "illegal_argument_exception",
            format!("Malformed action/metadata line [{no}], {m}"),
        )
    };
    let v: Value = serde_json::from_slice(line).map_err(|e| {
        whole(
            "x_content_parse_exception",
            format!("[{no}:{}] {e}", e.column()),
        )
    })?;
    let Value::Object(outer) = v else {
        return Err(malformed(format!(
            "expected START_OBJECT or END_OBJECT but found [{}]",
            token(&v)
        )));
    };
    let mut members = outer.into_iter();
    let Some((action, meta)) = members.next() else {
        return Err(malformed(
            "expected FIELD_NAME but found [END_OBJECT]".into(),
        ));
    };
    if members.next().is_some() {
        return Err(malformed(
            "expected END_OBJECT but found [FIELD_NAME]".into(),
        ));
    }
    let op = match action.as_str() {
        "index" => OpType::Index,
        "create" => OpType::Create,
        "update" => OpType::Update,
        "delete" => OpType::Delete,
        other => {
            return Err(malformed(format!(
                "expected field [create], [delete], [index] or [update] but found [{other}]"
            )));
        }
    };
    let Value::Object(meta) = meta else {
        return Err(malformed(format!(
            "expected START_OBJECT but found [{}]",
            token(&meta)
        )));
    };
    let mut index = path_index.map(str::to_string);
    let mut id = None;
    for (k, v) in &meta {
        if !KNOWN_PARAMS.contains(&k.as_str()) {
            return Err(whole(
                "illegal_argument_exception",
                format!("Action/metadata line [{no}] contains an unknown parameter [{k}]"),
            ));
        }
        let simple = match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        match k.as_str() {
            "_index" | "_id" => {
                let Some(s) = simple else {
                    return Err(malformed(format!(
                        "expected a simple value for field [{k}] but found [{}]",
                        token(v)
                    )));
                };
                if k == "_index" {
                    index = Some(s);
                } else {
                    id = Some(s);
                }
            }
            _ => {}
        }
    }
    let Some(index) = index else {
        return Err(whole(
            "action_request_validation_exception",
            "Validation Failed: 1: index is missing;".into(),
        ));
    };
    Ok((op, index, id))
}

/// Checks a source line as the parse stage will (so that an event sent is an event the
/// pipeline accepts): valid JSON, an object, not too deep, not too long.
fn check_source(doc: &[u8], limits: Limits, structurals: &mut Vec<u32>) -> Option<ItemError> {
    if doc.len() > limits.max_doc_bytes {
        return Some(ItemError {
            kind: "illegal_argument_exception",
            reason: format!(
                "the document is {} bytes, more than max_line_bytes ({})",
                doc.len(),
                limits.max_doc_bytes
            ),
            caused_by: None,
            on_source: true,
        });
    }
    let parse_error = |cause: &'static str, m: String| ItemError {
        kind: "mapper_parsing_exception",
        reason: "failed to parse".into(),
        caused_by: Some((cause, m)),
        on_source: true,
    };
    if let Err(e) = crate::parse::scalar::validate(doc, limits.max_depth, structurals) {
        return Some(parse_error("x_content_parse_exception", e.to_string()));
    }
    match structurals.first().map(|&p| doc[p as usize]) {
        Some(b'{') => None,
        _ => Some(parse_error(
            "not_x_content_exception",
            "Malformed content, must start with an object".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_depth: 64,
        max_doc_bytes: 1 << 20,
    };

    fn ok(body: &str, path: Option<&str>) -> Vec<BulkItem> {
        parse_bulk(body.as_bytes(), path, L).unwrap()
    }

    fn err(body: &str) -> BulkError {
        parse_bulk(body.as_bytes(), None, L).unwrap_err()
    }

    #[test]
    fn an_id_longer_than_512_bytes_is_refused_per_item() {
        let long = "\u{e9}".repeat(257); // 514 bytes of UTF-8
        let body = format!(
            "{{\"create\":{{\"_index\":\"a\",\"_id\":\"{long}\"}}}}\n{{\"x\":1}}\n\
             {{\"create\":{{\"_index\":\"a\",\"_id\":\"{}\"}}}}\n{{\"x\":2}}\n",
            "i".repeat(512)
        );
        let items = ok(&body, None);
        let p = items[0].problem.as_ref().expect("refused");
        assert_eq!(p.kind, "action_request_validation_exception");
        assert!(p.reason.ends_with("but was: 514;"), "{}", p.reason);
        assert_eq!(items[1].problem, None, "512 bytes is allowed");
    }

    #[test]
    fn pairs_and_lone_deletes_are_items_in_order() {
        let body = "{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"x\":1}\n\
                    {\"create\":{}}\r\n{\"y\":2}\r\n\
                    {\"delete\":{\"_index\":\"c\",\"_id\":7}}\n\
                    \n\
                    {\"update\":{\"_id\":\"2\"}}\n{\"doc\":{\"z\":3}}\n";
        let items = ok(body, Some("dflt"));
        let ops: Vec<_> = items
            .iter()
            .map(|i| (i.op, i.index.as_str(), i.id.clone()))
            .collect();
        assert_eq!(
            ops,
            [
                (OpType::Index, "a", Some("1".into())),
                (OpType::Create, "dflt", None),
                (OpType::Delete, "c", Some("7".into())),
                (OpType::Update, "dflt", Some("2".into())),
            ]
        );
        let src = |i: usize| {
            let s = items[i].source.as_ref().unwrap();
            (&body[s.range.clone()], s.line)
        };
        assert_eq!(src(0), ("{\"x\":1}", 2));
        assert_eq!(
            src(1),
            ("{\"y\":2}", 4),
            "the \\r is not part of the document"
        );
        assert!(items[2].source.is_none());
        assert!(items[0].problem.is_none() && items[1].problem.is_none());
        assert_eq!(
            items[2].problem.as_ref().unwrap().kind,
            "illegal_argument_exception"
        );
        assert_eq!(
            items[3].problem.as_ref().unwrap().kind,
            "illegal_argument_exception"
        );
        assert_eq!(items[3].line, 7);
    }

    #[test]
    fn bad_source_lines_are_answered_per_item() {
        let body = "{\"index\":{\"_index\":\"a\"}}\n{\"x\":\n\
                    {\"index\":{\"_index\":\"a\"}}\n[1,2]\n\
                    {\"index\":{\"_index\":\"a\"}}\n{\"fine\":true}\n";
        let items = ok(body, None);
        assert_eq!(items.len(), 3);
        let p = items[0].problem.as_ref().unwrap();
        assert_eq!(p.kind, "mapper_parsing_exception");
        assert_eq!(p.reason, "failed to parse");
        assert_eq!(p.caused_by.as_ref().unwrap().0, "x_content_parse_exception");
        let p = items[1].problem.as_ref().unwrap();
        assert_eq!(p.caused_by.as_ref().unwrap().0, "not_x_content_exception");
        assert!(items[2].problem.is_none());
        let deep = format!(
            "{{\"index\":{{\"_index\":\"a\"}}}}\n{}{}\n",
            "{\"a\":".repeat(70),
            "}".repeat(70)
        );
        assert!(
            ok(&deep, None)[0].problem.is_some(),
            "deeper than max_depth"
        );
    }

    #[test]
    fn whole_request_errors_match_elasticsearch() {
        assert_eq!(err("").kind, "parse_exception");
        assert_eq!(err("  \n").kind, "parse_exception");
        let e = err("{\"index\":{\"_index\":\"a\"}}\n{\"x\":1}");
        assert!(e.reason.contains("terminated by a newline"), "{e:?}");
        let e = err("{\"frobnicate\":{\"_index\":\"a\"}}\n{}\n");
        assert_eq!(e.kind, "illegal_argument_exception");
        assert_eq!(
            e.reason,
            "Malformed action/metadata line [1], expected field [create], [delete], [index] or [update] but found [frobnicate]"
        );
        let e = err("\"index\"\n");
        assert_eq!(
            e.reason,
            "Malformed action/metadata line [1], expected START_OBJECT or END_OBJECT but found [VALUE_STRING]"
        );
        let e = err("{not json\n");
        assert_eq!(e.kind, "x_content_parse_exception");
        let e = err("{\"index\":{\"_index\":\"a\",\"_type\":\"doc\"}}\n{}\n");
        assert_eq!(
            e.reason,
            "Action/metadata line [1] contains an unknown parameter [_type]"
        );
        let e = err("{\"index\":{\"_id\":\"1\"}}\n{}\n");
        assert_eq!(e.kind, "action_request_validation_exception");
        let e = err("{\"index\":{\"_index\":{\"a\":1}}}\n{}\n");
        assert!(
            e.reason
                .contains("expected a simple value for field [_index]"),
            "{e:?}"
        );
        let e = err("{\"index\":{\"_index\":\"a\"}}\n");
        assert!(e.reason.contains("has no source line"), "{e:?}");
        let e = err("{}\n");
        assert!(e.reason.contains("expected FIELD_NAME"), "{e:?}");
    }

    #[test]
    fn metadata_is_appended_as_the_last_member() {
        let item = |id: Option<&str>| BulkItem {
            op: OpType::Create,
            index: "logs-\"x\"".into(),
            id: id.map(str::to_string),
            line: 1,
            action: 0..0,
            source: None,
            problem: None,
            end: 0,
        };
        let mut out = Vec::new();
        append_metadata(b"{\"a\":1} ", "@metadata", &item(Some("7")), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":1,"@metadata":{"_id":"7","_index":"logs-\"x\"","_op_type":"create"}} "#
        );
        let mut out = Vec::new();
        append_metadata(b"{ }", "m", &item(None), &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["m"]["_index"], "logs-\"x\"");
        assert!(v["m"].get("_id").is_none());
    }

    #[test]
    fn content_types_of_the_shippers_are_accepted() {
        for ct in [
            "application/json",
            "application/x-ndjson",
            "application/json; charset=UTF-8",
            "application/vnd.elasticsearch+x-ndjson; compatible-with=8",
            "Application/X-NDJSON",
        ] {
            assert!(acceptable_content_type(ct.as_bytes()), "{ct}");
        }
        assert!(!acceptable_content_type(b"text/plain"));
    }
}
