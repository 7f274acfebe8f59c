//! `type = "http"`: NDJSON in the bodies of `POST` requests, answered only once the
//! request's events are acknowledged, so a sender that retries on errors gets
//! at-least-once delivery.
//!
//! Each request is one [`crate::ack::Stream`], named `http:<peer address>#<request number>`;
//! its events' origins are that stream and their line and byte offset in the body, which is
//! also what a malformed line's dead letter names. The answers:
//!
//! | status | when | the sender should |
//! |---|---|---|
//! | 200 `{"received":N}` | every event was delivered to every sink that reads it, filtered, or dead-lettered | move on |
//! | 503 | a sink could not deliver (retries given up, shutdown), or the source is stopping | retry |
//! | 413 | the body is larger than `max_body_bytes`, before or after gzip (nothing was taken) | split the body |
//! | 401 | `auth` is set and the request's `Authorization` does not match | fix credentials |
//! | 400 | `Content-Encoding: gzip` and the body does not decompress | fix the client |
//! | 404 / 405 / 415 | another path, a method other than `POST`, a `Content-Encoding` other than gzip or identity | fix the client |
//! | 408 | the body did not arrive within `body_timeout_secs` (nothing was taken) | retry |
//!
//! A body is read whole before any of it is framed: a client that disconnects mid-body has
//! sent nothing into the pipeline, and a 413 takes nothing either.
//!
//! With `tls = { crt_file, key_file }` it serves HTTPS (feature `tls`, which the `sluicebox`
//! binary has); `client_ca_file` also requires client certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use super::serve::{
    BodyError, Handler, authorized, declared_too_large, gunzip, gzip_encoded, read_body, serve,
    settle,
};
use super::tcp::{bind, cfg_err};
use super::{BoxFuture, Source, SourceContext};
use crate::config::BuildContext;
use crate::error::{Error, Kind, Result};

/// Configuration of `type = "http"` sources.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// `IP:PORT` to listen on. Required.
    pub address: String,
    /// The path requests are `POST`ed to; others get 404. Default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest request body; larger ones get 413. Default 10 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Connections served at once; further ones wait in the listen backlog. Default 128.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time allowed to receive one request's headers, and then its body. Default 30.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Credentials the requests must carry. Default: none (anyone who reaches the port
    /// may send).
    #[serde(default)]
    pub auth: Option<SourceAuthConfig>,
    /// Serve HTTPS: `{ crt_file, key_file, client_ca_file }` (see [`crate::tls`]); needs the
    /// `tls` feature (the `sluicebox` binary has it). Default: plain HTTP.
    #[serde(default)]
    pub tls: Option<crate::tls::ServerTlsConfig>,
}

impl std::fmt::Debug for HttpSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSourceConfig")
            .field("address", &self.address)
            .field("path", &self.path)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// `auth` of the `http` source: `{ token = "…" }` (bearer) or `{ user = "…", password = "…" }`
/// (basic). Values may be `${ENV_VAR}` or `@file:PATH` (see [`crate::config::secret`]); they
/// are never logged.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SourceAuthConfig {
    /// Bearer token: requests carry `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
    /// Basic auth user.
    #[serde(default)]
    pub user: Option<String>,
    /// Basic auth password.
    #[serde(default)]
    pub password: Option<String>,
}

fn default_path() -> String {
    "/".into()
}
fn default_max_body() -> usize {
    10 << 20
}
fn default_max_connections() -> usize {
    128
}
fn default_body_timeout() -> u64 {
    30
}

/// The largest `max_body_bytes` accepted (bodies are held whole while they arrive).
const BODY_CEILING: usize = 1 << 30;

/// Resolves the credential `value` of key `auth.<key>` of component `table.name` through
/// [`crate::config::secret`] (`${ENV}`, `@file:PATH`); an empty one is refused.
///
/// # Errors
/// [`Kind::Config`] naming the key: an unset variable, an unreadable file, an empty value.
pub(crate) fn auth_secret(table: &str, name: &str, key: &str, value: &str) -> Result<String> {
    let err = |m: String| {
        Error::new(
            Kind::Config,
            format!("{table}.{name}: key `auth.{key}`: {m}"),
        )
    };
    let s = crate::config::secret(value).map_err(|e| err(e.message().to_string()))?;
    if s.is_empty() {
        return Err(err("is empty".into()));
    }
    Ok(s)
}

/// The `Authorization` value a request must carry, built from [`SourceAuthConfig`].
pub(crate) fn expected_authorization(
    table: &str,
    name: &str,
    auth: &SourceAuthConfig,
) -> Result<(String, &'static str)> {
    let err = |key: &str, m: String| {
        Error::new(
            Kind::Config,
            format!("{table}.{name}: key `auth.{key}`: {m}"),
        )
    };
    let secret = |key: &str, v: &str| auth_secret(table, name, key, v);
    match (&auth.token, &auth.user, &auth.password) {
        (Some(t), None, None) => Ok((format!("Bearer {}", secret("token", t)?), "Bearer")),
        (None, Some(u), Some(p)) => {
            let u = secret("user", u)?;
            if u.contains(':') {
                return Err(err("user", "may not contain `:`".into()));
            }
            let p = secret("password", p)?;
            Ok((
                format!(
                    "Basic {}",
                    crate::sink::net::base64(format!("{u}:{p}").as_bytes())
                ),
                "Basic",
            ))
        }
        _ => Err(Error::new(
            Kind::Config,
            format!("{table}.{name}: key `auth`: give `token`, or `user` and `password`"),
        )),
    }
}

impl HttpSourceConfig {
    /// Checks the keys, resolves the credentials and binds the listener.
    ///
    /// # Errors
    /// [`Kind::Config`] naming the key: a bad address, a port in use, a zero or huge limit,
    /// a bad path, unset credentials, `tls`.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>> {
        let n = &cx.name;
        let tls = self
            .tls
            .as_ref()
            .map(|t| t.build(|p| cx.resolve(p)))
            .transpose()
            .map_err(|e| cfg_err(n, e.key, e.message))?;
        if !self.path.starts_with('/') {
            return Err(cfg_err(n, "path", "must start with `/`"));
        }
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
        let auth = match &self.auth {
            Some(a) => Some(expected_authorization("sources", n, a)?),
            None => None,
        };
        let listener = bind(n, &self.address)?;
        Ok(Box::new(HttpSource {
            listener,
            tls,
            settings: Arc::new(Settings {
                path: self.path.clone(),
                max_body: self.max_body_bytes,
                timeout: Duration::from_secs(self.body_timeout_secs),
                auth,
            }),
            max_connections: self.max_connections,
        }))
    }
}

/// What every request of one `http` source is checked against; shared by its connections
/// through an `Arc`.
struct Settings {
    path: String,
    max_body: usize,
    timeout: Duration,
    /// The whole expected `Authorization` value, and the scheme for `WWW-Authenticate`.
    auth: Option<(String, &'static str)>,
}

/// Serves HTTP/1.1 and frames each request body into batches.
///
/// Cost: one tokio task per connection; a body is held whole while it arrives (so at most
/// `max_connections × max_body_bytes` bytes of bodies at once), then copied once into
/// batches, which count against the source's in-flight budget until acknowledged.
pub struct HttpSource {
    listener: std::net::TcpListener,
    tls: Option<crate::tls::ServerTls>,
    settings: Arc<Settings>,
    max_connections: usize,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// Compares `given` with `expected` in time that depends only on `expected`'s length.
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        diff |= usize::from(std::hint::black_box(g ^ e));
    }
    std::hint::black_box(diff) == 0
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(status, serde_json::json!({ "error": msg }).to_string())
}

impl Source for HttpSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let timeout = self.settings.timeout;
            serve(
                self.listener,
                cx,
                self.max_connections,
                timeout,
                self.settings,
                self.tls,
            )
            .await
        })
    }
}

fn body_error(e: BodyError, max: usize) -> Response<Full<Bytes>> {
    match e {
        BodyError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than max_body_bytes ({max})"),
        ),
        BodyError::Timeout => error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        ),
        BodyError::Broken => error(StatusCode::BAD_REQUEST, "the body broke off"),
        BodyError::BadGzip => error(StatusCode::BAD_REQUEST, "the gzip body does not decompress"),
    }
}

impl Handler for Settings {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        n: u64,
        cx: &SourceContext,
    ) -> Response<Full<Bytes>> {
        handle(req, peer, n, cx, self).await
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    n: u64,
    cx: &SourceContext,
    s: &Settings,
) -> Response<Full<Bytes>> {
    if cx.shutdown().is_triggered() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the source is stopping");
    }
    if req.uri().path() != s.path {
        return error(StatusCode::NOT_FOUND, "no such path");
    }
    if req.method() != hyper::Method::POST {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return r;
    }
    if let Some((expected, scheme)) = &s.auth
        && !authorized(req.headers(), expected)
    {
        cx.metrics().error("auth_refused", "receiving");
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
        if let Ok(v) =
            hyper::header::HeaderValue::from_str(&format!("{scheme} realm=\"sluicebox\""))
        {
            r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, v);
        }
        return r;
    }
    let gzip = match gzip_encoded(req.headers()) {
        Ok(gzip) => gzip,
        Err(other) => {
            cx.metrics().error("content_encoding", "receiving");
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Content-Encoding {other:?} is not supported (use gzip or none)"),
            );
        }
    };
    if declared_too_large(req.headers(), s.max_body) {
        cx.metrics().error("body_too_large", "receiving");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than max_body_bytes ({})", s.max_body),
        );
    }
    let mut body = match read_body(req.into_body(), s.max_body, s.timeout).await {
        Ok(b) => b,
        Err(e) => {
            cx.metrics().error(e.metric(), "receiving");
            return body_error(e, s.max_body);
        }
    };
    if gzip {
        // Decompressed, the body still obeys max_body_bytes (a small bomb gets 413).
        body = match gunzip(&body, s.max_body) {
            Ok(b) => b,
            Err(e) => {
                cx.metrics().error(e.metric(), "receiving");
                return body_error(e, s.max_body);
            }
        };
    }
    let stream = cx.stream(format!("http:{peer}#{n}"), None);
    let mut decoder = cx.decoder(0);
    let mut batch = cx.batch();
    let mut received = 0u64;
    let mut input = &body[..];
    let mut sent_all = true;
    while decoder.decode(&mut input, &mut batch) {
        let full = std::mem::replace(&mut batch, cx.batch());
        received += full.stats.received;
        if !cx.send(&stream, full, decoder.position()).await {
            sent_all = false;
            break;
        }
    }
    drop(body);
    if sent_all && decoder.decode_eof(&mut batch) {
        received += batch.stats.received;
        sent_all = cx.send(&stream, batch, decoder.position()).await;
    }
    // Answer only once everything sent was delivered, dead-lettered or given up on.
    let w = settle(&stream, cx).await;
    let errored = w.completed().1 + w.outstanding();
    if !sent_all {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the source is stopping; retry",
        );
    }
    if errored > 0 {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "a sink could not deliver the events; retry",
        );
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
        return r;
    }
    reply(StatusCode::OK, format!("{{\"received\":{received}}}"))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abcd", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
