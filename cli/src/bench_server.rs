//! A local HTTP server for `sluicebox bench` that answers every request at once with
//! success, so a network sink's own cost (batching, encoding the request, parsing the
//! reply, acknowledging) can be measured without a real server's time in it.
//!
//! `POST …/_bulk` gets Elasticsearch's reply shape with one `{"create":{"status":201}}` item
//! per action line (the body may be gzip); any other request gets 200 `{}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// The server: a listener thread and a thread per connection, alive for the process.
///
/// Cost: the reply of a bulk request is built per request (about 26 bytes per item); the
/// body is counted with one pass of memchr (after inflating, when gzip).
pub(crate) struct InstantServer {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl InstantServer {
    /// Binds a free port on 127.0.0.1 and starts answering.
    pub(crate) fn start() -> std::io::Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", l.local_addr()?);
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                for c in l.incoming().flatten() {
                    let _ = std::thread::Builder::new()
                        .name("bench-server-conn".into())
                        .spawn(move || serve(c));
                }
            })?;
        Ok(Self { url })
    }
}

/// Answers requests on one kept-alive connection until the client closes it.
fn serve(c: TcpStream) {
    let _ = c.set_nodelay(true);
    let Ok(mut w) = c.try_clone() else { return };
    let mut r = BufReader::with_capacity(1 << 16, c);
    let mut body = Vec::new();
    let mut inflated = Vec::new();
    let mut line = String::new();
    loop {
        // Request line and headers.
        let mut len = 0usize;
        let mut gzip = false;
        let mut bulk = false;
        let mut first = true;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if first {
                bulk = l
                    .split(' ')
                    .nth(1)
                    .is_some_and(|p| p.split('?').next().is_some_and(|p| p.ends_with("/_bulk")));
                first = false;
                continue;
            }
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("content-encoding") {
                    gzip = v.eq_ignore_ascii_case("gzip");
                }
            }
        }
        body.resize(len, 0);
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let reply = if bulk {
            let text: &[u8] = if gzip {
                inflated.clear();
                if flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut inflated)
                    .is_err()
                {
                    return;
                }
                &inflated
            } else {
                &body
            };
            // Every action of the sinks under test (create, index) has a document line.
            let lines = memchr::memchr_iter(b'\n', text).count();
            let items = lines / 2;
            let mut s = String::with_capacity(40 + items * 27);
            s.push_str("{\"took\":0,\"errors\":false,\"items\":[");
            for i in 0..items {
                if i > 0 {
                    s.push(',');
                }
                s.push_str("{\"create\":{\"status\":201}}");
            }
            s.push_str("]}");
            s
        } else {
            "{}".to_string()
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        // One write: a head and body in two segments would wait on the client's delayed ACK.
        let mut whole = head.into_bytes();
        whole.extend_from_slice(reply.as_bytes());
        if w.write_all(&whole).is_err() {
            return;
        }
    }
}
