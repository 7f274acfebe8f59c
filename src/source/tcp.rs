//! `type = "tcp"`: NDJSON lines over TCP. One [`crate::ack::Stream`] per connection, named
//! `tcp:<peer address>#<connection number>`; an event's origin is that stream and its byte
//! offset in the connection.
//!
//! TCP carries no acknowledgements back to the sender: the source's acknowledgements only
//! move its metrics, and a sender learns nothing of delivery (use the `http` source for
//! at-least-once). Backpressure is real, though: while the source's in-flight budget is used
//! up it stops reading, and the kernel's window then holds the senders back.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::{BoxFuture, Source, SourceContext};
use crate::config::BuildContext;
use crate::error::{Error, Kind, Result};

/// Configuration of `type = "tcp"` sources.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TcpSourceConfig {
    /// `IP:PORT` to listen on. Required.
    pub address: String,
    /// Longest line; longer lines are dead-lettered (their first bytes kept). Default: the
    /// `[runtime]` `max_line_bytes` (1 MiB).
    #[serde(default)]
    pub max_line_bytes: Option<usize>,
    /// Connections served at once; further ones wait in the listen backlog. Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    256
}

/// The most a `max_line_bytes` may be.
pub(crate) const LINE_CEILING: usize = 64 << 20;

pub(crate) fn cfg_err(name: &str, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(Kind::Config, format!("sources.{name}: key `{key}`: {msg}"))
}

/// Binds `address` now, so a bad address or a port in use fails the build (and `validate`)
/// with the key named.
pub(crate) fn bind(name: &str, address: &str) -> Result<std::net::TcpListener> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|e| cfg_err(name, "address", format!("`{address}` is not IP:PORT ({e})")))?;
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| cfg_err(name, "address", format!("cannot listen on {addr}: {e}")))?;
    l.set_nonblocking(true)
        .map_err(|e| cfg_err(name, "address", format!("{addr}: {e}")))?;
    Ok(l)
}

impl TcpSourceConfig {
    /// Checks the keys and binds the listener.
    ///
    /// # Errors
    /// [`Kind::Config`] naming the key: a bad address, a port in use, a zero limit.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>> {
        let n = &cx.name;
        if self.max_connections == 0 || self.max_connections > 65_536 {
            return Err(cfg_err(n, "max_connections", "must be 1..=65536"));
        }
        if let Some(m) = self.max_line_bytes
            && !(1..=LINE_CEILING).contains(&m)
        {
            return Err(cfg_err(
                n,
                "max_line_bytes",
                format!("must be 1..={LINE_CEILING}"),
            ));
        }
        let listener = bind(n, &self.address)?;
        Ok(Box::new(TcpSource {
            listener,
            max_line_bytes: self.max_line_bytes,
            max_connections: self.max_connections,
        }))
    }
}

/// Accepts connections and frames each into batches.
///
/// Cost: one tokio task per connection and one 64 KiB read buffer each; the events are
/// copied once from it into the batch.
#[derive(Debug)]
pub struct TcpSource {
    listener: std::net::TcpListener,
    max_line_bytes: Option<usize>,
    max_connections: usize,
}

impl TcpSource {
    /// The address it listens on (useful with port 0).
    ///
    /// # Errors
    /// When the socket cannot tell.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Source for TcpSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::from_std(self.listener).map_err(|e| {
                Error::new(Kind::Input, format!("{}: listening: {e}", cx.name())).with_source(e)
            })?;
            let slots = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
            let mut tasks = tokio::task::JoinSet::new();
            let mut conn_no = 0u64;
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
                            // Out of file descriptors and the like: count, breathe, go on.
                            cx.metrics().error("accept", "receiving");
                            tracing::warn!(source = cx.name(), "accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = cx.shutdown().wait() => break,
                };
                conn_no += 1;
                let cx = cx.clone();
                let max_line = self.max_line_bytes;
                tasks.spawn(async move {
                    let key = format!("tcp:{peer}#{conn_no}");
                    if let Err(e) = serve(sock, &key, max_line, &cx).await {
                        cx.metrics().error("connection", "receiving");
                        tracing::debug!(source = cx.name(), stream = %key, "connection ended: {e}");
                    }
                    drop(permit);
                });
                // Reap finished connections so the set does not grow.
                while tasks.try_join_next().is_some() {}
            }
            // Shutdown: each connection sends what it framed and stops.
            while tasks.join_next().await.is_some() {}
            Ok(())
        })
    }
}

/// Reads one connection to its end (or to shutdown), sending a batch whenever one is full
/// or the connection goes quiet.
async fn serve(
    mut sock: tokio::net::TcpStream,
    key: &str,
    max_line: Option<usize>,
    cx: &SourceContext,
) -> std::io::Result<()> {
    let stream = cx.stream(key, None);
    let mut decoder = match max_line {
        None => cx.decoder(0),
        Some(m) => {
            let p = &cx.frame().pipeline;
            let framer = crate::frame::Framer::new(
                p.max_batch_events,
                p.max_batch_bytes,
                m,
                p.dead_letter_raw_max,
            )
            .flush_when_idle(true);
            cx.frame().codec.decoder(framer)
        }
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut batch = cx.batch();
    loop {
        let n = tokio::select! {
            r = sock.read(&mut buf) => r?,
            _ = cx.shutdown().wait() => 0,
        };
        if n == 0 {
            break;
        }
        let mut input = &buf[..n];
        while decoder.decode(&mut input, &mut batch) {
            let full = std::mem::replace(&mut batch, cx.batch());
            if !cx.send(&stream, full, decoder.position()).await {
                return Ok(());
            }
        }
    }
    // End of the connection: a last line without a newline is an event too.
    if decoder.decode_eof(&mut batch) {
        cx.send(&stream, batch, decoder.position()).await;
    }
    Ok(())
}
