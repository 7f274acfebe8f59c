//! `type = "http"` sink: events as NDJSON in the bodies of `POST` requests, in batches.
//!
//! | reply | what happens |
//! |---|---|
//! | 2xx | the batch's events are acknowledged |
//! | 408, 429, 5xx, no reply (connection refused or reset, timeout) | the same body is sent again after a backoff (full jitter, `retry_initial_ms` doubling to `retry_max_ms`, at least the server's `Retry-After`), forever, counted in `component_retries_total` |
//! | any other status (400, 401, 403, 404, 413, …) | the batch's events go to the run's dead letter, each with its origin and the reason `http sink: the server answered <status>` |
//!
//! At shutdown the retries stop and the held events stay unacknowledged, so their sources
//! replay them. A receiver therefore sees every event at least once; duplicates happen when
//! a reply is lost after the server took the body.
//!
//! Memory: at most one request body is held, of at most `batch_max_bytes` (or one event, if
//! an event alone is larger); while it is retried the sink takes nothing more, and the
//! sources feeding it stop at their in-flight budgets.
//!
//! Cost per event: one copy into the body and 24 bytes of bookkeeping; per request, one
//! HTTP/1.1 exchange on a kept-alive connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;

use crate::config::BuildContext;
use crate::error::{Error, Kind, Result};
use crate::metrics::ComponentMetrics;
use crate::runtime::DeadLetterOutlet;
use crate::sink::net::{Backoff, BlockingHttp, retry_after};
use crate::sink::{Ack, Flow, Output, Sink};
use crate::source::Shutdown;
use crate::source::http::SourceAuthConfig;

/// Configuration of `type = "http"` sinks.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Where to `POST` (`http://host:port/path`). Required.
    pub uri: String,
    /// A request is sent once it holds this many events. Default 1000.
    #[serde(default = "default_max_events")]
    pub batch_max_events: usize,
    /// ... or once its body would pass this many bytes. Default 1 MiB.
    #[serde(default = "default_max_bytes")]
    pub batch_max_bytes: usize,
    /// ... or once its oldest event waited this long when the next batch arrives; an idle
    /// queue sends at once. Default 1000.
    #[serde(default = "default_linger")]
    pub linger_ms: u64,
    /// Time allowed for one request and its reply. Default 30.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Extra request headers. Values may be `${ENV}` or `@file:PATH`. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Credentials: `{ token }` (bearer) or `{ user, password }` (basic). Default none.
    #[serde(default)]
    pub auth: Option<SourceAuthConfig>,
    /// TLS for an `https://` uri: extra CA, system roots, client certificate. Default: the
    /// system roots (feature `tls`).
    #[serde(default)]
    pub tls: Option<crate::tls::ClientTlsConfig>,
    /// `none` (default) or `gzip`: the body is compressed once per request (fast level) and
    /// sent with `Content-Encoding: gzip`; retries resend the same compressed bytes.
    #[serde(default)]
    pub compression: Option<String>,
    /// First retry delay. Default 500.
    #[serde(default = "default_backoff_min")]
    pub retry_initial_ms: u64,
    /// Largest retry delay. Default 60000.
    #[serde(default = "default_backoff_max")]
    pub retry_max_ms: u64,
}

impl std::fmt::Debug for HttpSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSinkConfig")
            .field("uri", &self.uri)
            .field("batch_max_events", &self.batch_max_events)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .finish_non_exhaustive()
    }
}

fn default_max_events() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    1 << 20
}
fn default_linger() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    30
}
fn default_backoff_min() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    60_000
}

/// Ceilings of the batch limits (a body is held in memory).
const MAX_EVENTS_CEILING: usize = 1_000_000;
const MAX_BYTES_CEILING: usize = 256 << 20;

pub(crate) fn sink_err(name: &str, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(Kind::Config, format!("sinks.{name}: key `{key}`: {msg}"))
}

impl HttpSinkConfig {
    /// Checks the keys, resolves secrets, and builds the sink (one tokio thread, one
    /// HTTP client).
    ///
    /// # Errors
    /// [`Kind::Config`] naming the key for a bad value.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink + Send>> {
        let n = &cx.name;
        let uri: hyper::Uri = self
            .uri
            .parse()
            .map_err(|e| sink_err(n, "uri", format!("`{}`: {e}", self.uri)))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(sink_err(n, "uri", "must start with http:// or https://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(sink_err(n, "uri", "names no host"));
        }
        if !(1..=MAX_EVENTS_CEILING).contains(&self.batch_max_events) {
            return Err(sink_err(
                n,
                "batch_max_events",
                format!("must be 1..={MAX_EVENTS_CEILING}"),
            ));
        }
        if !(1..=MAX_BYTES_CEILING).contains(&self.batch_max_bytes) {
            return Err(sink_err(
                n,
                "batch_max_bytes",
                format!("must be 1..={MAX_BYTES_CEILING}"),
            ));
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return Err(sink_err(n, "timeout_secs", "must be 1..=3600"));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(sink_err(
                n,
                "retry_initial_ms",
                "must be > 0 and <= retry_max_ms",
            ));
        }
        let gzip = match self.compression.as_deref() {
            None | Some("none") => false,
            Some("gzip") => true,
            Some(c) => {
                return Err(sink_err(
                    n,
                    "compression",
                    format!("`{c}`: use gzip or none"),
                ));
            }
        };
        let mut headers = hyper::HeaderMap::new();
        for (k, v) in &self.headers {
            let key = format!("headers.{k}");
            let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| sink_err(n, &key, "is not a valid header name"))?;
            let v = crate::config::secret(v).map_err(|e| sink_err(n, &key, e.message()))?;
            let mut value = hyper::header::HeaderValue::from_str(&v)
                .map_err(|_| sink_err(n, &key, "is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(a) = &self.auth {
            let (v, _) = crate::source::http::expected_authorization("sinks", n, a)?;
            let mut value = hyper::header::HeaderValue::from_str(&v)
                .map_err(|_| sink_err(n, "auth", "is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        if gzip {
            headers.insert(
                hyper::header::CONTENT_ENCODING,
                hyper::header::HeaderValue::from_static("gzip"),
            );
        }
        Ok(Box::new(HttpSink {
            name: n.clone(),
            uri,
            headers,
            gzip,
            max_events: self.batch_max_events,
            max_bytes: self.batch_max_bytes,
            linger: Duration::from_millis(self.linger_ms),
            timeout: Duration::from_secs(self.timeout_secs),
            backoff: Backoff::new(self.retry_initial_ms, self.retry_max_ms),
            http: BlockingHttp::new(
                "http sink runtime",
                crate::sink::net::client_tls(n, &[&self.uri], self.tls.as_ref(), |p| {
                    cx.resolve(p)
                })?
                .as_ref(),
            )?,
            metrics: cx.metrics.component(n, "sink", "http"),
            shutdown: cx.shutdown.clone(),
            dead: cx.dead_letters.clone(),
            body: Vec::new(),
            events: Vec::new(),
            held: Vec::new(),
            oldest: None,
            stuck: Vec::new(),
        }))
    }
}

/// One event in the held body: where it is, and its origin.
#[derive(Clone, Copy)]
struct Held {
    start: u32,
    len: u32,
    line: u64,
    offset: u64,
}

/// The sink built from [`HttpSinkConfig`].
struct HttpSink {
    name: String,
    uri: hyper::Uri,
    headers: hyper::HeaderMap,
    /// Compress each request's body (`compression = "gzip"`).
    gzip: bool,
    max_events: usize,
    max_bytes: usize,
    linger: Duration,
    timeout: Duration,
    backoff: Backoff,
    http: BlockingHttp,
    metrics: ComponentMetrics,
    shutdown: Shutdown,
    dead: DeadLetterOutlet,
    body: Vec<u8>,
    events: Vec<Held>,
    /// Each source batch's hold, with the range of `events` that came from it.
    held: Vec<(Ack, usize, usize)>,
    oldest: Option<Instant>,
    /// Holds given up on at shutdown: failed at `finish`.
    stuck: Vec<Ack>,
}

/// How one request ended.
enum Sent {
    Delivered,
    Rejected(u16),
    Stopped,
}

impl HttpSink {
    fn send_once(
        &self,
        body: &Bytes,
    ) -> std::result::Result<(u16, Option<Duration>), &'static str> {
        let mut req = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/x-ndjson");
        if let Some(h) = req.headers_mut() {
            for (k, v) in &self.headers {
                h.insert(k, v.clone());
            }
        }
        let req = req.body(Full::new(body.clone())).map_err(|_| "request")?;
        match self.http.send(req, self.timeout) {
            Ok(r) => Ok((r.status, retry_after(&r.headers))),
            Err(e) => Err(e.as_str()),
        }
    }

    fn deliver(&mut self, body: Bytes) -> Sent {
        self.backoff.reset();
        loop {
            if self.shutdown.is_triggered() {
                return Sent::Stopped;
            }
            let hint = match self.send_once(&body) {
                Ok((200..=299, _)) => return Sent::Delivered,
                Ok((st @ (408 | 429 | 500..=599), hint)) => {
                    self.metrics
                        .error(if st == 429 { "http_429" } else { "http_5xx" }, "sending");
                    hint
                }
                Ok((st, _)) => return Sent::Rejected(st),
                Err(what) => {
                    self.metrics.error(what, "sending");
                    None
                }
            };
            self.metrics.retries.inc();
            if !self.backoff.sleep(hint, &self.shutdown) {
                return Sent::Stopped;
            }
        }
    }

    fn send_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        self.oldest = None;
        let body = Bytes::from(std::mem::take(&mut self.body));
        let wire = if self.gzip {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            // Writing into a Vec cannot fail.
            let _ = std::io::Write::write_all(&mut e, &body);
            Bytes::from(e.finish().unwrap_or_default())
        } else {
            body.clone()
        };
        match self.deliver(wire) {
            Sent::Delivered => held.into_iter().for_each(|(a, _, _)| a.delivered()),
            Sent::Stopped => self.stuck.extend(held.into_iter().map(|(a, _, _)| a)),
            Sent::Rejected(status) => {
                self.metrics.error("http_rejected", "sending");
                let reason = format!("http sink: the server answered {status}");
                tracing::warn!(sink = %self.name, status, n = self.events.len(),
                    "the server refused a request; its events go to the dead letter");
                for (ack, a, b) in held {
                    let evs = self.events[a..b].iter().map(|e| {
                        let s = e.start as usize;
                        (&body[s..s + e.len as usize], e.line, e.offset)
                    });
                    let bytes: u64 = self.events[a..b].iter().map(|e| u64::from(e.len)).sum();
                    if self.dead.send(&self.name, &reason, evs, ack.token()) {
                        ack.dead_lettered((b - a) as u64, bytes);
                        ack.delivered();
                    } else {
                        tracing::error!(sink = %self.name,
                            "no dead letter took the refused events; they stay unacknowledged");
                        ack.failed();
                    }
                }
            }
        }
        self.events.clear();
    }
}

impl Sink for HttpSink {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        let ack = out.ack();
        let mut first = self.events.len();
        for ev in out.iter() {
            let grow = ev.bytes.len() + 1;
            if !self.events.is_empty()
                && (self.events.len() >= self.max_events || self.body.len() + grow > self.max_bytes)
            {
                if self.events.len() > first {
                    self.held.push((ack.clone(), first, self.events.len()));
                }
                self.send_held();
                first = 0;
            }
            self.events.push(Held {
                start: self.body.len() as u32,
                len: ev.bytes.len() as u32,
                line: ev.line,
                offset: ev.offset,
            });
            self.body.extend_from_slice(ev.bytes);
            self.body.push(b'\n');
        }
        if self.events.len() > first {
            self.held.push((ack, first, self.events.len()));
        } else {
            ack.delivered();
        }
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if self.events.len() >= self.max_events
            || self.body.len() >= self.max_bytes
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

impl Drop for HttpSink {
    fn drop(&mut self) {
        // A sink stopped by an error: what it holds stays unacknowledged.
        self.held.drain(..).for_each(|(a, _, _)| a.failed());
        self.stuck.drain(..).for_each(Ack::failed);
    }
}
