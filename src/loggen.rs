//! A deterministic generator of realistic log events for demos, benchmarks and tests:
//! timestamps, levels, services, hosts, HTTP fields, user agents and messages, about 350
//! bytes per event, with a mix of levels (about 30% `DEBUG`).
//!
//! Cost: a few hundred nanoseconds per event; no allocation beyond the output buffer.

use std::fmt::Write as _;

/// A small, fast, seeded PRNG (xorshift64*). Not for cryptography.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A random element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const LEVELS: &[&str] = &[
    "DEBUG", "DEBUG", "DEBUG", "INFO", "INFO", "INFO", "INFO", "WARN", "ERROR", "INFO",
];
const SERVICES: &[&str] = &[
    "checkout",
    "auth",
    "search",
    "payments",
    "inventory",
    "gateway",
    "profile",
    "notifications",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH"];
const PATHS: &[&str] = &[
    "/api/v1/orders",
    "/api/v1/users/me",
    "/healthz",
    "/api/v2/search",
    "/api/v1/cart/items",
    "/login",
    "/static/app.js",
];
const STATUS: &[u16] = &[200, 200, 200, 200, 201, 204, 301, 400, 401, 404, 500, 503];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
];
const MESSAGES: &[&str] = &[
    "request completed",
    "cache miss for key user:profile",
    "retrying upstream call after timeout",
    "user alice@example.com logged in from 10.1.2.3",
    "payment authorised",
    "slow query: SELECT * FROM orders WHERE id = $1",
    "connection reset by peer",
    "feature flag \\\"new_checkout\\\" evaluated to true",
];

/// Appends one generated event (a JSON object, no newline) to `out`.
pub fn event(rng: &mut Rng, seq: u64, out: &mut String) {
    let secs = 1_764_000_000 + seq / 10;
    let millis = (seq % 10) * 100 + rng.below(100);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let _ = write!(
        out,
        r#"{{"timestamp":"2026-11-25T{h:02}:{m:02}:{s:02}.{millis:03}Z","level":"{}","service":"{}","host":"node-{:02}.eu-west-1.internal","trace_id":"{:016x}","http":{{"method":"{}","path":"{}","status":{},"duration_ms":{}.{}}},"user_agent":"{}","msg":"{}"}}"#,
        rng.pick(LEVELS),
        rng.pick(SERVICES),
        rng.below(48),
        rng.next_u64(),
        rng.pick(METHODS),
        rng.pick(PATHS),
        rng.pick(STATUS),
        rng.below(2000),
        rng.below(1000),
        rng.pick(AGENTS),
        rng.pick(MESSAGES),
    );
}

/// `n` generated events as NDJSON, seeded by `seed`.
pub fn corpus(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut s = String::with_capacity(n * 360);
    for i in 0..n {
        event(&mut rng, i as u64, &mut s);
        s.push('\n');
    }
    s.into_bytes()
}

/// Generated events as NDJSON until at least `bytes` bytes, seeded by `seed`.
pub fn corpus_bytes(bytes: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut s = String::with_capacity(bytes + 512);
    let mut i = 0u64;
    while s.len() < bytes {
        event(&mut rng, i, &mut s);
        s.push('\n');
        i += 1;
    }
    s.into_bytes()
}

/// The drop_debug filter in hand-written WAT, embedded so the demo runs on a fresh machine.
pub const DROP_DEBUG_WAT: &str = include_str!("../examples/wat/drop_debug.wat");
/// A filter in hand-written WAT that reads nothing and keeps everything.
pub const NOOP_WAT: &str = include_str!("../examples/wat/noop.wat");
