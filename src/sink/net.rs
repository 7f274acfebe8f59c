//! Plumbing shared by the network sinks (`elasticsearch`, `http`, `tcp`): retry backoff with
//! full jitter that honours `Retry-After` and stops at shutdown, an HTTP/1 client on a
//! one-thread tokio runtime for sinks that run on a plain thread (plain HTTP, or HTTPS with the
//! `tls` feature), and Basic auth encoding.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};
use crate::source::Shutdown;
use crate::tls::{ClientTls, ClientTlsConfig};

/// Exponential backoff with full jitter: the delay of attempt `n` is uniform in
/// `[0, min(max, initial * 2^n)]`, raised to the server's `Retry-After` hint (capped at `max`).
///
/// Cost: a xorshift step per delay; the sleep polls the shutdown every 50 ms.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff from `initial_ms` up to `max_ms` (both at least 1).
    pub fn new(initial_ms: u64, max_ms: u64) -> Self {
        Self {
            initial_ms: initial_ms.max(1),
            max_ms: max_ms.max(initial_ms).max(1),
            attempt: 0,
            rng: 0x9e37_79b9_7f4a_7c15
                ^ SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
        }
    }

    /// Starts over (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt, given the server's hint.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let cap = self
            .max_ms
            .min(self.initial_ms.saturating_mul(1u64 << self.attempt.min(20)));
        self.attempt = self.attempt.saturating_add(1);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mut d = Duration::from_millis(self.rng % cap.saturating_add(1));
        if let Some(h) = hint {
            d = d.max(h.min(Duration::from_millis(self.max_ms)));
        }
        d
    }

    /// Sleeps the next delay on this thread. Returns false (at once) when `shutdown` fires.
    pub fn sleep(&mut self, hint: Option<Duration>, shutdown: &Shutdown) -> bool {
        let until = Instant::now() + self.next_delay(hint);
        loop {
            if shutdown.is_triggered() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not parsed: the backoff applies then).
pub fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Standard base64 with padding (for `Authorization: Basic`).
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An HTTP reply: status, headers, the whole body.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Why a request got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Connecting or sending failed.
    Connection,
    /// The reply's body broke off.
    Body,
    /// No complete reply within the timeout.
    Timeout,
}

impl SendError {
    /// The `error_type` label of `component_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            SendError::Connection => "connection",
            SendError::Body => "body",
            SendError::Timeout => "timeout",
        }
    }
}

/// The TLS settings of a sink that sends to `urls`, from its `tls` table: `None` when no URL
/// is `https://` (a `tls` table is then an error: it would silently not be used), the table's
/// settings, or the system roots when an `https://` URL has no table.
///
/// # Errors
/// [`crate::Kind::Config`] naming `sinks.NAME` and the key under `tls`.
pub fn client_tls(
    name: &str,
    urls: &[&str],
    table: Option<&ClientTlsConfig>,
    resolve: impl Fn(&std::path::Path) -> std::path::PathBuf,
) -> Result<Option<ClientTls>> {
    let https = urls.iter().any(|u| {
        u.get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
    });
    let err = |e: crate::tls::TlsError| {
        Error::new(
            crate::Kind::Config,
            format!("sinks.{name}: key `{}`: {}", e.key, e.message),
        )
    };
    match (https, table) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(Error::new(
            crate::Kind::Config,
            format!("sinks.{name}: key `tls`: is set, but no URL starts with https://"),
        )),
        (true, t) => t
            .cloned()
            .unwrap_or_default()
            .build(resolve)
            .map(Some)
            .map_err(err),
    }
}

/// The connection pool, plain or (feature `tls`) plain-or-TLS by the URL's scheme.
enum Pool {
    Plain(Client<HttpConnector, Full<Bytes>>),
    #[cfg(feature = "tls")]
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
}

/// An HTTP/1 client with its own one-thread tokio runtime, for a sink that runs on its
/// own (blocking) thread.
///
/// Cost: one tokio worker thread and a pool of keep-alive connections; with TLS, one
/// handshake per new connection.
pub struct BlockingHttp {
    rt: tokio::runtime::Runtime,
    pool: Pool,
}

impl BlockingHttp {
    /// The client and its runtime; `what` names the sink in the error. With `tls`, `https://`
    /// URLs are sent over TLS with those settings (and `http://` ones in plain text).
    ///
    /// # Errors
    /// [`crate::Kind::Sink`] when the runtime cannot start.
    pub fn new(what: &'static str, tls: Option<&ClientTls>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::sink(what, e))?;
        let builder = Client::builder(TokioExecutor::new());
        let pool = match tls {
            None => Pool::Plain(builder.build_http()),
            #[cfg(feature = "tls")]
            Some(tls) => Pool::Tls(
                builder.build(
                    hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config((*tls.rustls()).clone())
                        .https_or_http()
                        .enable_http1()
                        .build(),
                ),
            ),
            // Without the feature a ClientTls cannot be built (its build refuses).
            #[cfg(not(feature = "tls"))]
            Some(_) => Pool::Plain(builder.build_http()),
        };
        Ok(Self { rt, pool })
    }

    /// Sends `req` and reads the whole reply, within `timeout`.
    ///
    /// # Errors
    /// Which step failed.
    pub fn send(
        &self,
        req: hyper::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> std::result::Result<Reply, SendError> {
        let pending = match &self.pool {
            Pool::Plain(c) => c.request(req),
            #[cfg(feature = "tls")]
            Pool::Tls(c) => c.request(req),
        };
        self.rt
            .block_on(async move {
                tokio::time::timeout(timeout, async move {
                    let resp = pending.await.map_err(|e| {
                        // The cause (refused, unknown issuer, ...) is what an operator needs.
                        let mut why = e.to_string();
                        let mut src = std::error::Error::source(&e);
                        while let Some(s) = src {
                            why = format!("{why}: {s}");
                            src = s.source();
                        }
                        tracing::warn!("request failed: {why}");
                        SendError::Connection
                    })?;
                    let status = resp.status().as_u16();
                    let (parts, body) = resp.into_parts();
                    let body = body.collect().await.map_err(|_| SendError::Body)?;
                    Ok(Reply {
                        status,
                        headers: parts.headers,
                        body: body.to_bytes(),
                    })
                })
                .await
            })
            .unwrap_or(Err(SendError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_backoff_bounds() {
        assert_eq!(base64(b"elastic:changeme"), "ZWxhc3RpYzpjaGFuZ2VtZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        let mut b = Backoff::new(100, 1000);
        for n in 0..30 {
            let d = b.next_delay(None);
            assert!(d <= Duration::from_millis(1000), "attempt {n}: {d:?}");
        }
        assert!(b.next_delay(Some(Duration::from_secs(5))) == Duration::from_millis(1000));
        let mut b = Backoff::new(100, 10_000);
        assert!(b.next_delay(Some(Duration::from_secs(2))) >= Duration::from_secs(2));
    }
}
