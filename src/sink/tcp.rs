//! `type = "tcp"` sink: events as NDJSON lines on one TCP connection.
//!
//! Each batch is written whole and flushed; only then are its events acknowledged. That
//! guarantees the bytes were handed to this host's kernel, **not** that the peer read them:
//! TCP has no application-level acknowledgement, so if the peer dies while bytes sit in the
//! socket buffers (ours or its own), those events are lost although acknowledged. Before
//! each write the sink checks that the peer has not closed the connection (a non-blocking
//! peek), so a peer that stopped or restarted cleanly costs nothing; a peer that vanished
//! without closing (a power cut, a dropped network) can lose up to the socket buffers. Use
//! the `http` sink when that matters.
//!
//! When connecting or writing fails, the sink reconnects with backoff (full jitter,
//! `retry_initial_ms` doubling to `retry_max_ms`, counted in `component_retries_total`) and
//! writes the whole batch again, forever; a batch cut off mid-write may therefore leave a
//! partial line at the peer before its full copy. At shutdown the retries stop and the
//! batch stays unacknowledged.
//!
//! Cost: one copy of each batch into a reused block, one `write_all` per batch, on the
//! sink's thread (plain blocking I/O; no runtime).

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;

use crate::config::BuildContext;
use crate::error::Result;
use crate::metrics::ComponentMetrics;
use crate::sink::http::sink_err;
use crate::sink::net::Backoff;
use crate::sink::{Flow, Output, Sink, WriterSink};
use crate::source::Shutdown;

/// Configuration of `type = "tcp"` sinks.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TcpSinkConfig {
    /// `HOST:PORT` to connect to (a name is resolved at each connect). Required.
    pub address: String,
    /// Time allowed to connect, and for one batch's write. Default 30.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// First retry delay. Default 500.
    #[serde(default = "default_backoff_min")]
    pub retry_initial_ms: u64,
    /// Largest retry delay. Default 30000.
    #[serde(default = "default_backoff_max")]
    pub retry_max_ms: u64,
}

fn default_timeout() -> u64 {
    30
}
fn default_backoff_min() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    30_000
}

impl TcpSinkConfig {
    /// Checks the keys and builds the sink (it connects on its first batch).
    ///
    /// # Errors
    /// [`crate::Kind::Config`] naming the key for a bad value.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink + Send>> {
        let n = &cx.name;
        match self.address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return Err(sink_err(
                    n,
                    "address",
                    format!("`{}` is not HOST:PORT", self.address),
                ));
            }
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
        Ok(Box::new(TcpSink {
            address: self.address.clone(),
            timeout: Duration::from_secs(self.timeout_secs),
            backoff: Backoff::new(self.retry_initial_ms, self.retry_max_ms),
            metrics: cx.metrics.component(n, "sink", "tcp"),
            shutdown: cx.shutdown.clone(),
            conn: None,
            render: WriterSink::new(Vec::new()),
        }))
    }
}

struct TcpSink {
    address: String,
    timeout: Duration,
    backoff: Backoff,
    metrics: ComponentMetrics,
    shutdown: Shutdown,
    conn: Option<TcpStream>,
    /// Renders a batch into its block (the same logic as every writer sink).
    render: WriterSink<Vec<u8>>,
}

/// Whether the peer has closed `s` (or it broke): a non-blocking peek reads 0 bytes or fails.
fn closed_by_peer(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let closed = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false, // the peer talks back; ignore it
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    closed || s.set_nonblocking(false).is_err()
}

impl TcpSink {
    fn connect(&self) -> std::io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = self.address.to_socket_addrs()?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    s.set_write_timeout(Some(self.timeout))?;
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Writes `block` whole, reconnecting and retrying until it is flushed. False when the
    /// shutdown stopped it.
    fn write_block(&mut self, block: &[u8]) -> bool {
        self.backoff.reset();
        loop {
            if self.shutdown.is_triggered() {
                return false;
            }
            if self.conn.as_ref().is_some_and(closed_by_peer) {
                self.conn = None;
            }
            let r = match &mut self.conn {
                Some(s) => s.write_all(block).and_then(|()| s.flush()),
                None => match self.connect() {
                    Ok(mut s) => {
                        let r = s.write_all(block).and_then(|()| s.flush());
                        self.conn = Some(s);
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            match r {
                Ok(()) => return true,
                Err(e) => {
                    self.conn = None;
                    self.metrics.error("connection", "sending");
                    tracing::debug!("tcp sink {}: {e}; retrying", self.address);
                    self.metrics.retries.inc();
                    if !self.backoff.sleep(None, &self.shutdown) {
                        return false;
                    }
                }
            }
        }
    }
}

impl Sink for TcpSink {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        let ack = out.ack();
        self.render.write(out)?;
        let block = std::mem::take(self.render.get_mut());
        if self.write_block(&block) {
            ack.delivered();
        } else {
            ack.failed();
        }
        let mut block = block;
        block.clear();
        *self.render.get_mut() = block;
        Ok(Flow::Continue)
    }
}
