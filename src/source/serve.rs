//! HTTP/1.1 serving shared by the push sources (`http`, `elasticsearch`): the accept loop
//! with its connection cap and clean shutdown, bounded body reading (size and time limits,
//! gzip), the constant-time credentials check, and the wait for a request's events to be
//! acknowledged before the answer.
//!
//! Each source keeps its own routes and answer shapes; what is here knows nothing of either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response};

use super::SourceContext;
use crate::ack::{Stream, Watermark};
use crate::error::{Error, Kind, Result};

/// The answer type of every push source.
pub(crate) type Reply = Response<Full<Bytes>>;

/// One push source's request handling: called for every request of every connection.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Answers `req`, the `n`th request the source has received (counted from 1), which
    /// came from `peer`.
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        n: u64,
        cx: &SourceContext,
    ) -> impl Future<Output = Reply> + Send;
}

/// Serves HTTP/1.1 on `listener` until the source's shutdown fires: at most
/// `max_connections` connections at once (further ones wait in the listen backlog), each
/// allowed `header_timeout` to finish the TLS handshake (with `tls`) and then to send a
/// request's headers. At shutdown, idle connections close and requests in progress get
/// their answer before this returns.
///
/// # Errors
/// [`Kind::Input`] when the listener cannot be registered with the runtime.
pub(crate) async fn serve<H: Handler>(
    listener: std::net::TcpListener,
    cx: SourceContext,
    max_connections: usize,
    header_timeout: Duration,
    handler: Arc<H>,
    tls: Option<crate::tls::ServerTls>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
        Error::new(Kind::Input, format!("{}: listening: {e}", cx.name())).with_source(e)
    })?;
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let requests = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = cx.shutdown().wait() => break,
        };
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    cx.metrics().error("accept", "receiving");
                    tracing::warn!(source = cx.name(), "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = cx.shutdown().wait() => break,
        };
        let (cx, handler, requests) = (cx.clone(), handler.clone(), requests.clone());
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                None => serve_connection(sock, peer, cx, header_timeout, handler, requests).await,
                Some(tls) => {
                    if let Some(sock) = handshake(&tls, sock, peer, &cx, header_timeout).await {
                        serve_connection(sock, peer, cx, header_timeout, handler, requests).await;
                    }
                }
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Shutdown: idle connections close, requests in progress get their answer.
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The server side of a TLS handshake within `timeout`; a failure is counted
/// (`component_errors_total{error_type="tls_handshake"}`) and closes the connection.
#[cfg(feature = "tls")]
async fn handshake(
    tls: &crate::tls::ServerTls,
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    cx: &SourceContext,
    timeout: Duration,
) -> Option<crate::tls::Accepted> {
    match tokio::time::timeout(timeout, tls.accept(sock)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            cx.metrics().error("tls_handshake", "receiving");
            tracing::debug!(source = cx.name(), %peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            cx.metrics().error("tls_handshake", "receiving");
            tracing::debug!(source = cx.name(), %peer, "TLS handshake timed out");
            None
        }
    }
}

/// Without the `tls` feature no [`crate::tls::ServerTls`] can be built: never called.
#[cfg(not(feature = "tls"))]
async fn handshake(
    _tls: &crate::tls::ServerTls,
    _sock: tokio::net::TcpStream,
    _peer: SocketAddr,
    _cx: &SourceContext,
    _timeout: Duration,
) -> Option<tokio::net::TcpStream> {
    None
}

async fn serve_connection<H: Handler, S>(
    sock: S,
    peer: SocketAddr,
    cx: SourceContext,
    header_timeout: Duration,
    handler: Arc<H>,
    requests: Arc<AtomicU64>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = cx.shutdown().clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (cx, handler) = (cx.clone(), handler.clone());
        let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
        async move { Ok::<_, std::convert::Infallible>(handler.handle(req, peer, n, &cx).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Why a request body was not taken. Nothing of such a body entered the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Larger than the limit (declared, received, or once decompressed).
    TooLarge,
    /// Not received within the time allowed.
    Timeout,
    /// The connection broke off mid-body.
    Broken,
    /// A `gzip` body that does not decompress.
    BadGzip,
}

impl BodyError {
    /// The `error_type` label of `component_errors_total` for this failure.
    pub(crate) fn metric(self) -> &'static str {
        match self {
            BodyError::TooLarge => "body_too_large",
            BodyError::Timeout => "body_timeout",
            BodyError::Broken => "body_broken",
            BodyError::BadGzip => "body_bad_gzip",
        }
    }
}

/// Whether the request's `Content-Length` already says the body is over `max`.
pub(crate) fn declared_too_large(headers: &HeaderMap, max: usize) -> bool {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|d| d > max as u64)
}

/// Reads the whole body, at most `max` bytes, within `timeout`.
///
/// # Errors
/// [`BodyError::TooLarge`], [`BodyError::Timeout`] or [`BodyError::Broken`].
pub(crate) async fn read_body(
    mut body: Incoming,
    max: usize,
    timeout: Duration,
) -> std::result::Result<Vec<u8>, BodyError> {
    let mut buf = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(BodyError::TooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::Timeout),
    }
}

/// Whether a request's body is gzip (`Content-Encoding: gzip` or `x-gzip`), or plain (none,
/// or `identity`); `Err` with the header's value for any other encoding (answer 415).
pub(crate) fn gzip_encoded(headers: &HeaderMap) -> std::result::Result<bool, String> {
    match headers.get(hyper::header::CONTENT_ENCODING) {
        None => Ok(false),
        Some(v) => {
            let v = v.as_bytes();
            if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") {
                Ok(true)
            } else if v.eq_ignore_ascii_case(b"identity") {
                Ok(false)
            } else {
                Err(String::from_utf8_lossy(v).into_owned())
            }
        }
    }
}

/// Decompresses a gzip body (several members allowed, as `gzip -c a b` writes), refusing
/// to grow past `max` bytes, so a small bomb cannot take the memory.
///
/// # Errors
/// [`BodyError::TooLarge`] past `max`, [`BodyError::BadGzip`] for a corrupt stream.
pub(crate) fn gunzip(body: &[u8], max: usize) -> std::result::Result<Vec<u8>, BodyError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| BodyError::BadGzip)?;
    if out.len() > max {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

/// Whether the request carries the `Authorization` value `expected` (`<scheme>
/// <credentials>`): the scheme compared without regard to case (RFC 9110 section 11.1),
/// the credentials exactly and in constant time (see [`super::http::constant_time_eq`]).
pub(crate) fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let given = headers
        .get(hyper::header::AUTHORIZATION)
        .map_or(&[][..], |v| v.as_bytes());
    let split = |v: &[u8]| -> (Vec<u8>, Vec<u8>) {
        match v.iter().position(|&c| c == b' ') {
            Some(i) => (v[..i].to_ascii_lowercase(), v[i..].to_vec()),
            None => (Vec::new(), v.to_vec()),
        }
    };
    let ((gs, gc), (es, ec)) = (split(given), split(expected.as_bytes()));
    // Both halves are always compared, so the time taken does not tell which one differed.
    let scheme = gs == es;
    super::http::constant_time_eq(&gc, &ec) & scheme
}

/// Waits until every batch sent on `stream` so far was delivered, dead-lettered or given
/// up on, and returns the final watermark: what a push source answers from. After the
/// shutdown it waits at most [`SourceContext::ack_grace`] more; the batches still unresolved
/// then count as not delivered (the sender is told to retry), so a sink that holds its
/// acknowledgements cannot keep a sender's connection, and the drain, waiting.
pub(crate) async fn settle(stream: &Stream, cx: &SourceContext) -> Watermark {
    let grace = cx.ack_grace();
    tokio::select! {
        () = stream.idle() => {}
        () = async {
            cx.shutdown().wait().await;
            tokio::time::sleep(grace).await;
        } => {}
    }
    stream.watermark()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_scheme_is_compared_without_case_and_the_credentials_exactly() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(hyper::header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        let want = "Basic dTpw";
        for ok in ["Basic dTpw", "basic dTpw", "BASIC dTpw"] {
            assert!(authorized(&h(ok), want), "{ok}");
        }
        for bad in [
            "Basic dTpX",
            "Basic dtpw",
            "Bearer dTpw",
            "BasicdTpw",
            "Basic  dTpw",
            "",
        ] {
            assert!(!authorized(&h(bad), want), "{bad:?}");
        }
        assert!(!authorized(&HeaderMap::new(), want));
        assert!(authorized(&h("apikey abc"), "ApiKey abc"));
    }

    #[test]
    fn gunzip_round_trips_and_stops_at_the_limit() {
        use std::io::Write as _;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&[b'a'; 10_000]).unwrap();
        let gz = z.finish().unwrap();
        assert_eq!(gunzip(&gz, 10_000).unwrap().len(), 10_000);
        assert_eq!(gunzip(&gz, 9_999), Err(BodyError::TooLarge));
        assert_eq!(gunzip(b"not gzip", 100), Err(BodyError::BadGzip));
    }
}
