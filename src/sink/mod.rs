//! Sink stage: where events leave. Modelled on ripgrep's `Sink`: push-based, each call says
//! whether to go on, an error stops the sink without [`Sink::finish`], and optional methods
//! have defaults. The dead letter is a sink too: it receives one JSON object per rejected
//! event.
//!
//! # Acknowledgements
//!
//! Every [`Output`] belongs to a batch whose source waits to hear it was delivered (see
//! [`crate::ack`]). The rules:
//!
//! - A sink that writes synchronously does nothing special: when [`Sink::write`] returns
//!   `Ok`, its events count as delivered ("the write reached the OS"; a sink that wants
//!   fsync does it before returning).
//! - A sink that keeps events in flight (a network request, a bulk body filling up) calls
//!   [`Output::ack`] during `write` and keeps the returned [`Ack`]. The batch is not
//!   acknowledged until the sink calls [`Ack::delivered`]; [`Ack::failed`] (or dropping the
//!   `Ack` unresolved) keeps its positions unacknowledged, so they replay after a restart.
//! - An `Err` from `write` marks the batch failed and stops the sink: every later batch
//!   sent to it stays unacknowledged too. Retrying is the sink's own business, inside
//!   `write` or before it resolves its `Ack`s.
//! - [`Sink::flush`] is called when the sink's queue is idle, before a reload and at
//!   shutdown: send partial batches then.

mod builtin;
pub mod elasticsearch;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod net;
pub mod tcp;

pub use builtin::{CollectSink, NullSink, WriterSink};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::ack::AckToken;
use crate::batch::EventMeta;
use crate::error::Result;
use crate::pipeline::Stats;

/// Whether the pipeline should keep going after a sink call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep sending batches.
    Continue,
    /// Stop reading input; the pipeline calls [`Sink::finish`] and returns normally.
    Stop,
}

/// The events of one batch that leave through a sink, in input order.
///
/// Cost: a borrowed view; iterating is O(1) per event.
pub struct Output<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) events: &'a [EventMeta],
    pub(crate) routes: &'a [String],
    pub(crate) token: Option<&'a AckToken>,
    /// The batch's structural positions (see `EventMeta::s_start`), empty when unknown.
    pub(crate) structurals: &'a [u32],
    /// Where the runtime counts this batch's outcome once the sink's [`Ack`]s are resolved
    /// (none outside the runtime).
    pub(crate) tally: Option<&'a TallySlot>,
}

/// The runtime's per-batch slot for a [`Tally`]: made when a sink first takes an [`Ack`].
///
/// Cost: one `Arc` the first time `Output::ack` is called for the batch.
pub(crate) struct TallySlot {
    pub(crate) cell: std::sync::OnceLock<Arc<Tally>>,
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) metrics: Arc<crate::metrics::ComponentMetrics>,
}

/// How the [`Ack`]s a sink took for one batch came out: counted as sent when the last one is
/// resolved and none failed, as not delivered otherwise. So a sink that accepted a batch
/// and later could not deliver it (refused credentials, shutdown while retrying) does not
/// report it as sent.
///
/// Cost: two atomics per `Ack` clone and resolution.
#[derive(Debug)]
pub(crate) struct Tally {
    outstanding: AtomicUsize,
    failed: AtomicBool,
    events: u64,
    bytes: u64,
    /// Of `events`, how many (and their bytes) went to a dead letter instead.
    dead_events: AtomicU64,
    dead_bytes: AtomicU64,
    metrics: Arc<crate::metrics::ComponentMetrics>,
}

impl Tally {
    fn resolve(&self, delivered: bool) {
        if !delivered {
            self.failed.store(true, Ordering::Relaxed);
        }
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            if self.failed.load(Ordering::Relaxed) {
                self.metrics.discarded_unintentional.inc_by(self.events);
            } else {
                let dead = self.dead_events.load(Ordering::Relaxed).min(self.events);
                let dead_bytes = self.dead_bytes.load(Ordering::Relaxed).min(self.bytes);
                self.metrics.sent_events.inc_by(self.events - dead);
                self.metrics
                    .sent_event_bytes
                    .inc_by(self.bytes - dead_bytes);
                self.metrics.dead_letters.inc_by(dead);
            }
        }
    }
}

/// A sink's hold on the acknowledgement of the batch an [`Output`] came from. While any
/// `Ack` of a batch is unresolved, its source does not advance past it.
///
/// Cost: an `Arc` clone. `Send + Sync`.
#[derive(Debug)]
#[must_use = "dropping an Ack unresolved marks the batch failed"]
pub struct Ack {
    token: Option<AckToken>,
    tally: Option<Arc<Tally>>,
}

impl Ack {
    /// The events were durably delivered.
    pub fn delivered(mut self) {
        self.token = None;
        if let Some(t) = self.tally.take() {
            t.resolve(true);
        }
    }

    /// Notes that `events` of this batch's events (`bytes` of event bytes) went to a dead
    /// letter instead of the destination (a server refused them). Once the batch is
    /// delivered, the sink reports them as dead-lettered, not sent. Call it before
    /// [`Ack::delivered`], and only after the dead letter took them.
    pub fn dead_lettered(&self, events: u64, bytes: u64) {
        if let Some(t) = &self.tally {
            t.dead_events.fetch_add(events, Ordering::Relaxed);
            t.dead_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The events could not be delivered: their positions stay unacknowledged.
    pub fn failed(mut self) {
        if let Some(t) = self.token.take() {
            t.fail();
        }
        if let Some(t) = self.tally.take() {
            t.resolve(false);
        }
    }

    /// The stream and end position of the batch, when its source tracks delivery.
    pub fn token(&self) -> Option<&AckToken> {
        self.token.as_ref()
    }
}

impl Clone for Ack {
    fn clone(&self) -> Self {
        if let Some(t) = &self.tally {
            t.outstanding.fetch_add(1, Ordering::AcqRel);
        }
        Self {
            token: self.token.clone(),
            tally: self.tally.clone(),
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(t) = self.token.take() {
            t.fail();
        }
        if let Some(t) = self.tally.take() {
            t.resolve(false);
        }
    }
}

/// One event in an [`Output`].
#[derive(Clone, Copy, Debug)]
pub struct OutEvent<'a> {
    /// The event's JSON text, without a newline.
    pub bytes: &'a [u8],
    /// 1-based input line it came from.
    pub line: u64,
    /// Byte offset of that input line.
    pub offset: u64,
    /// The output a filter routed it to, if any.
    pub route: Option<&'a str>,
    /// Whether it is byte-for-byte the input line.
    pub unchanged: bool,
    /// Its structural positions from the parse stage (empty when a filter changed it).
    structurals: &'a [u32],
}

impl<'a> OutEvent<'a> {
    /// The value at `path` (`a.b`, with `\.` for a dot in a key: docs/abi.md §10), or `None`.
    ///
    /// Cost: a walk of the positions the parse stage recorded (no parse); for an event a
    /// filter changed (it has none), one scan of its bytes along the path.
    pub fn field(&self, path: &str) -> Option<crate::FieldRef<'a>> {
        if self.structurals.is_empty() {
            return crate::parse::index::lookup_scan(self.bytes, path.as_bytes());
        }
        crate::parse::index::lookup(self.bytes, self.structurals, path.as_bytes())
    }

    /// Asks the CPU to start loading the event's first bytes and structural positions, for
    /// a sink that will read them a few events from now (they were written on another
    /// core). Cost: three prefetch hints; nothing on targets other than x86-64.
    #[inline]
    pub(crate) fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // A prefetch is a hint: it never faults and reads no value, whatever the address.
            for p in [
                self.bytes.as_ptr(),
                self.bytes.as_ptr().wrapping_add(64),
                self.structurals.as_ptr().cast::<u8>(),
            ] {
                // SAFETY: `_mm_prefetch` only hints the cache; it dereferences nothing, and
                // SSE is part of every x86-64 target.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
            }
        }
    }

    /// The first top-level member whose key is one of `keys` (plain keys, no escapes), in
    /// a walk of the members that stops there. Cost: the members before it (usually one
    /// or two: loggers write their timestamp first). A repeated key's first occurrence
    /// wins, unlike [`Self::field`] (last wins); the one caller, the Elasticsearch sink's
    /// index date, does not care: the server refuses a document with a repeated key
    /// whatever index it names.
    ///
    /// An event a filter edited has no structural positions: its bytes are scanned instead
    /// (validating it again to walk its members cost about 570 ns per event).
    pub(crate) fn first_top_level(&self, keys: &[&[u8]]) -> Option<crate::FieldRef<'a>> {
        let bytes = self.bytes;
        if self.structurals.is_empty() {
            let (kind, vs, ve) = crate::parse::index::first_member_scan(bytes, keys)?;
            return Some(crate::parse::index::field_of(bytes, kind, vs, ve));
        }
        let mut found = None;
        crate::parse::index::members(bytes, self.structurals, 0, |m| {
            let key = &bytes[m.key.0..m.key.1];
            if keys.iter().any(|k| crate::parse::index::key_eq(key, k)) {
                found = Some(m);
                return false;
            }
            true
        })?;
        let m = found?;
        Some(crate::parse::index::field_of(
            bytes, m.kind, m.value.0, m.value.1,
        ))
    }
}

#[cfg(test)]
impl<'a> OutEvent<'a> {
    /// An event at line 1, offset 0, with no structural positions (as a filter's edit
    /// leaves it): its fields are found by scanning its bytes.
    pub(crate) fn scanned(bytes: &'a [u8]) -> Self {
        OutEvent {
            bytes,
            line: 1,
            offset: 0,
            route: None,
            unchanged: false,
            structurals: &[],
        }
    }
}

impl<'a> Output<'a> {
    /// Takes a hold on this batch's acknowledgement: it completes only once the returned
    /// [`Ack`] is resolved (see the module docs).
    pub fn ack(&self) -> Ack {
        let tally = self.tally.map(|slot| {
            let mut made = false;
            let t = slot
                .cell
                .get_or_init(|| {
                    made = true;
                    Arc::new(Tally {
                        outstanding: AtomicUsize::new(1),
                        failed: AtomicBool::new(false),
                        events: slot.events,
                        bytes: slot.bytes,
                        dead_events: AtomicU64::new(0),
                        dead_bytes: AtomicU64::new(0),
                        metrics: slot.metrics.clone(),
                    })
                })
                .clone();
            if !made {
                t.outstanding.fetch_add(1, Ordering::AcqRel);
            }
            t
        });
        Ack {
            token: self.token.cloned(),
            tally,
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = OutEvent<'a>> + 'a {
        let (data, routes, all) = (self.data, self.routes, self.structurals);
        self.events.iter().map(move |m| OutEvent {
            structurals: if m.s_len == crate::batch::STALE {
                &[]
            } else {
                all.get(m.s_start as usize..(m.s_start + m.s_len) as usize)
                    .unwrap_or(&[])
            },
            bytes: &data[m.start as usize..(m.start + m.len) as usize],
            line: m.line,
            offset: m.offset,
            route: (m.route as usize)
                .checked_sub(1)
                .and_then(|r| routes.get(r))
                .map(String::as_str),
            unchanged: !m.changed,
        })
    }
}

/// A destination for events.
///
/// Contract:
/// - [`Sink::write`] is called once per batch that has events to leave, in input order.
///   Return [`Flow::Stop`] to end the run early (the pipeline still calls `finish`).
/// - An `Err` from any method stops the run at once; `finish` is then **not** called, and the
///   pipeline returns that error.
/// - [`Sink::finish`] is called exactly once after the last batch of a run that did not
///   fail: flush here. Its default does nothing.
pub trait Sink {
    /// Receives one batch's events.
    ///
    /// # Errors
    /// Any error stops the run.
    fn write(&mut self, out: &Output<'_>) -> Result<Flow>;

    /// Sends whatever the sink holds back (a partial request). Called when the sink's queue
    /// is idle, before a reload and at shutdown. Default: nothing.
    ///
    /// # Errors
    /// Any error stops the sink, as from `write`.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called once at the end of a successful run with the final statistics.
    ///
    /// # Errors
    /// Any error fails the run.
    fn finish(&mut self, _stats: &Stats) -> Result<()> {
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        (**self).write(out)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
    fn finish(&mut self, stats: &Stats) -> Result<()> {
        (**self).finish(stats)
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        (**self).write(out)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
    fn finish(&mut self, stats: &Stats) -> Result<()> {
        (**self).finish(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(bytes: &[u8]) -> OutEvent<'_> {
        OutEvent::scanned(bytes)
    }

    #[test]
    fn first_top_level_takes_the_first_listed_key_at_the_top_only() {
        let keys: &[&[u8]] = &[b"@timestamp", b"timestamp"];
        let raw = |e: &[u8]| ev(e).first_top_level(keys).map(|f| f.raw.to_vec());
        assert_eq!(
            raw(br#"{"timestamp":"a","@timestamp":"b"}"#),
            Some(b"a".to_vec())
        );
        assert_eq!(
            raw(br#"{"x":{"@timestamp":"n"},"@timestamp":"b"}"#),
            Some(b"b".to_vec()),
            "a nested key is not a top-level one"
        );
        assert_eq!(raw(br#"{"x":1,"y":[{"timestamp":2}]}"#), None);
        assert_eq!(
            raw(br#"{"@timestamp":"b","@timestamp":"c"}"#),
            Some(b"b".to_vec())
        );
        assert_eq!(raw(b"not json"), None);
    }

    /// The scan of an edited event (no structural positions) finds what the walk over the
    /// parser's positions finds, on events with escapes, nesting, whitespace and every kind
    /// of value before and at the key; on broken bytes it answers without panicking.
    #[test]
    fn first_top_level_scan_matches_the_structural_walk() {
        let keys: &[&[u8]] = &[b"@timestamp", b"timestamp"];
        let cases: &[&[u8]] = &[
            br#"{"@timestamp":"2026-12-06T10:00:00Z","level":"INFO"}"#,
            br#" { "a" : 1 , "timestamp" : 1765000000 } "#,
            br#"{"a":"x\"}{[","b":{"c":[1,{"timestamp":"no"}],"d":"\\"},"timestamp":"yes"}"#,
            br#"{"t\u0069mestamp":"escaped key","x":1}"#,
            br#"{"a":[],"b":{},"c":null,"d":true,"e":false,"f":-1.5e3,"@timestamp":{"n":1}}"#,
            br#"{"a":"\\\\","timestamp":[1,2]}"#,
            br#"{"a":"\"","timestamp":"q\"uote"}"#,
            br#"{"a":1}"#,
            br#"{}"#,
            b"{\"a\":\"caf\xc3\xa9\",\n\t\"timestamp\":\"2026-01-01\"}",
        ];
        let view = |f: crate::FieldRef<'_>| (f.kind, f.raw.to_vec(), f.start, f.escaped);
        for &c in cases {
            let mut s = Vec::new();
            crate::parse::scalar::validate(c, 4096, &mut s).unwrap();
            let walked = OutEvent {
                structurals: &s,
                ..ev(c)
            };
            let scanned = ev(c);
            let text = String::from_utf8_lossy(c);
            assert_eq!(
                scanned.first_top_level(keys).map(view),
                walked.first_top_level(keys).map(view),
                "{text}"
            );
            for path in ["a", "b.c", "b.d", "timestamp", "@timestamp.n", "x.y", "a.b"] {
                assert_eq!(
                    scanned.field(path).map(view),
                    walked.field(path).map(view),
                    "{path} in {text}"
                );
            }
        }
        // The last of repeated keys wins, on the scan as on the walk; a dot escaped in a key.
        let c = br#"{"k":1,"o":{"k":"x","k":"y"},"k":2,"a.b":{"c":3}}"#;
        let raw = |p: &str| ev(c).field(p).map(|f| f.raw.to_vec());
        assert_eq!(raw("k"), Some(b"2".to_vec()));
        assert_eq!(raw("o.k"), Some(b"y".to_vec()));
        assert_eq!(raw(r"a\.b.c"), Some(b"3".to_vec()));
        assert_eq!(raw("k.x"), None);
        for broken in [
            &b"{"[..],
            br#"{"a"#,
            br#"{"a":"#,
            br#"{"a":"x"#,
            br#"{"a":[1,{"b":"\"#,
            br#"{"a":1,"#,
            br#"{"a" 1}"#,
            b"[1]",
            b"",
            br#"{"a":]]]]}"#,
        ] {
            let _ = ev(broken).first_top_level(keys);
            let _ = ev(broken).field("a.b");
        }
    }

    mod scan_props {
        use super::*;
        use proptest::prelude::*;

        /// A JSON value with keys from a small set (so that paths hit), strings with quotes,
        /// backslashes and non-ASCII, and nesting up to depth 4.
        fn value() -> impl Strategy<Value = serde_json::Value> {
            use serde_json::Value;
            let key =
                prop::sample::select(vec!["a", "b", "timestamp", "@timestamp", "a.b", "k\"q"]);
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                (-1e9f64..1e9).prop_map(Value::from),
                "[a-z\"\\\\/é{}\\[\\],: ]{0,8}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 40, 5, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                        Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                    }),
                ]
            })
        }

        proptest! {
            /// On any object (with or without spaces between tokens), the scan of an edited
            /// event finds what the walk over the parser's positions finds.
            #[test]
            fn scan_answers_as_the_walk(
                members in prop::collection::vec(
                    (prop::sample::select(vec!["a", "b", "timestamp", "@timestamp", "a.b"]), value()),
                    0..6,
                ),
                pretty in any::<bool>(),
                path in prop::sample::select(vec![
                    "a", "b", "timestamp", "@timestamp", "a.b", r"a\.b", "a.a", "b.timestamp", "a.b.a",
                ]),
            ) {
                let obj = serde_json::Value::Object(
                    members.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                );
                let text = if pretty {
                    serde_json::to_vec_pretty(&obj).unwrap()
                } else {
                    serde_json::to_vec(&obj).unwrap()
                };
                let mut s = Vec::new();
                crate::parse::scalar::validate(&text, 4096, &mut s).unwrap();
                let walked = OutEvent { structurals: &s, ..ev(&text) };
                let scanned = ev(&text);
                let view = |f: crate::FieldRef<'_>| (f.kind, f.raw.to_vec(), f.start, f.escaped);
                prop_assert_eq!(scanned.field(path).map(view), walked.field(path).map(view));
                let keys: &[&[u8]] = &[b"@timestamp", b"timestamp"];
                prop_assert_eq!(
                    scanned.first_top_level(keys).map(view),
                    walked.first_top_level(keys).map(view)
                );
            }
        }
    }
}
