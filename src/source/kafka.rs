//! Kafka source: a classic consumer-group member. Each assigned partition is one
//! [`Stream`] whose position is the Kafka offset; a batch ends at (last message offset + 1).
//! The offset committed for a partition is the stream's acknowledged position (the
//! contiguous delivered prefix), never the read position: committed every
//! `commit_interval_ms` and at shutdown.
//!
//! The client (krafka, pinned) stays behind [`Client`], a thin private type, so it can be
//! replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::ack::Stream;
use crate::error::{Error, Kind, Result};
use crate::source::{BoxFuture, Source, SourceContext};

/// Where a group with no committed offset starts reading a partition.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced after the member joined (the default).
    #[default]
    Latest,
}

fn default_session() -> u64 {
    10_000
}
fn default_heartbeat() -> u64 {
    3_000
}
fn default_commit() -> u64 {
    5_000
}

/// Configuration of a `kafka` source.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port` (required, at least one).
    pub brokers: Vec<String>,
    /// Topics to subscribe to (required, at least one).
    pub topics: Vec<String>,
    /// Consumer group id (required).
    pub group_id: String,
    /// `earliest` or `latest` (default `latest`): where to start without a committed offset.
    #[serde(default)]
    pub start_from: StartFrom,
    /// Group session timeout in ms (default 10000).
    #[serde(default = "default_session")]
    pub session_timeout_ms: u64,
    /// Heartbeat interval in ms (default 3000).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_ms: u64,
    /// How often delivered offsets are committed, in ms (default 5000).
    #[serde(default = "default_commit")]
    pub commit_interval_ms: u64,
    /// Top-level field that receives the message key (default: none). See [`MessageFields`]
    /// for the representation.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Top-level field that receives the message timestamp, in milliseconds since the epoch
    /// (default: none).
    #[serde(default)]
    pub timestamp_field: Option<String>,
    /// Top-level field that receives the message headers as an object (default: none).
    #[serde(default)]
    pub headers_field: Option<String>,
}

impl KafkaSourceConfig {
    /// Checks the config and builds the source. Connecting happens when it runs.
    ///
    /// # Errors
    /// [`Kind::Config`] naming the key when a value is invalid.
    pub fn build(&self, cx: &crate::config::BuildContext) -> Result<Box<dyn Source>> {
        let bad = |key: &str, why: &str| {
            Err(Error::new(
                Kind::Config,
                format!("sources.{}: key `{key}`: {why}", cx.name),
            ))
        };
        if self.brokers.is_empty() || self.brokers.iter().any(|b| !valid_broker(b)) {
            return bad("brokers", "expected one or more `host:port`");
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return bad("topics", "expected one or more topic names");
        }
        if self.group_id.is_empty() {
            return bad("group_id", "must not be empty");
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.session_timeout_ms
        {
            return bad(
                "heartbeat_interval_ms",
                "must be above 0 and below session_timeout_ms",
            );
        }
        if self.commit_interval_ms == 0 {
            return bad("commit_interval_ms", "must be above 0");
        }
        let named = [
            ("key_field", &self.key_field),
            ("timestamp_field", &self.timestamp_field),
            ("headers_field", &self.headers_field),
        ];
        for (i, (key, name)) in named.iter().enumerate() {
            let Some(name) = name else { continue };
            if name.is_empty() {
                return bad(key, "must not be empty");
            }
            if named[..i]
                .iter()
                .any(|(_, other)| other.as_ref() == Some(name))
            {
                return bad(key, "names the same field as another `*_field` key");
            }
        }
        Ok(Box::new(KafkaSource {
            config: self.clone(),
            name: cx.name.clone(),
            fields: MessageFields {
                key: self.key_field.clone(),
                timestamp: self.timestamp_field.clone(),
                headers: self.headers_field.clone(),
            },
        }))
    }
}

pub(crate) fn valid_broker(b: &str) -> bool {
    match b.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// The running source.
struct KafkaSource {
    config: KafkaSourceConfig,
    name: String,
    fields: MessageFields,
}

/// What the source needs from a Kafka client: the only place krafka's consumer appears.
struct Client {
    consumer: Arc<krafka::consumer::Consumer>,
}

/// Commits what was delivered of the partitions a rebalance takes away, after waiting up
/// to half the session timeout for their batches in flight, and forgets their streams (a
/// partition assigned again starts a fresh stream at the committed offset).
struct OnRevoke {
    book: Arc<Mutex<CommitBook>>,
    metrics: crate::metrics::Metrics,
    name: String,
    consumer: Arc<OnceLock<Weak<krafka::consumer::Consumer>>>,
    drain: Duration,
}

impl OnRevoke {
    fn forget(&self, keys: &[(Arc<str>, i32)]) {
        lock(&self.book).forget(keys);
        for (t, p) in keys {
            self.metrics.kafka_partition_gone(&self.name, t, *p);
        }
    }
}

fn keys(parts: &[krafka::consumer::TopicPartition]) -> Vec<(Arc<str>, i32)> {
    parts
        .iter()
        .map(|tp| (Arc::from(tp.topic.as_str()), tp.partition))
        .collect()
}

impl krafka::consumer::ConsumerRebalanceListener for OnRevoke {
    async fn on_partitions_assigned(&self, _parts: &[krafka::consumer::TopicPartition]) {}

    async fn on_partitions_revoked(&self, parts: &[krafka::consumer::TopicPartition]) {
        let keys = keys(parts);
        let deadline = Instant::now() + self.drain;
        while !lock(&self.book).is_idle_for(&keys) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let due = lock(&self.book).due_for(&keys);
        if let Some(c) = self.consumer.get().and_then(Weak::upgrade)
            && !due.is_empty()
        {
            let t = Instant::now();
            let r = Client::commit_with(&c, &due).await;
            self.metrics
                .kafka_commit(&self.name, t.elapsed().as_secs_f64());
            if let Err(e) = r {
                tracing::warn!("kafka: commit on revoke failed (the new owner replays): {e}");
            }
        }
        self.forget(&keys);
    }

    async fn on_partitions_lost(&self, parts: &[krafka::consumer::TopicPartition]) {
        // Another member may own them already: no commit.
        self.forget(&keys(parts));
    }
}

fn lock(book: &Mutex<CommitBook>) -> std::sync::MutexGuard<'_, CommitBook> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

/// A partition: topic and number.
type PartKey = (Arc<str>, i32);

/// One fetched message: partition key, offset, value, and what [`MessageFields`] may copy
/// into its events.
struct Message {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    value: Option<bytes::Bytes>,
    key: Option<bytes::Bytes>,
    timestamp: i64,
    headers: Vec<(String, Option<bytes::Bytes>)>,
}

/// The message metadata a source copies into each of its events (`key_field`,
/// `timestamp_field`, `headers_field`), as top-level fields inserted at the front of the
/// object:
/// - the key: a JSON string when it is UTF-8, `{"base64":"…"}` (standard alphabet, padded)
///   when it is not, `null` when the message has none;
/// - the timestamp: an integer, milliseconds since the epoch (the producer's create time,
///   or the broker's append time on a topic configured so);
/// - the headers: an object in wire order, each value as the key's representation; a
///   header name that occurs several times maps to an array of its values, in order.
///
/// Cost: nothing when no field is asked for (the event stays the message's bytes); else
/// one copy of each event, like the `text` codec. An event that is not a JSON object is
/// left as it is (the parser dead-letters it).
#[derive(Debug, Clone, Default)]
struct MessageFields {
    key: Option<String>,
    timestamp: Option<String>,
    headers: Option<String>,
}

impl MessageFields {
    fn any(&self) -> bool {
        self.key.is_some() || self.timestamp.is_some() || self.headers.is_some()
    }

    /// The members to insert for message `m`, as JSON text without braces.
    fn members(&self, m: &Message, out: &mut Vec<u8>) {
        out.clear();
        let name = |out: &mut Vec<u8>, n: &str| {
            if !out.is_empty() {
                out.push(b',');
            }
            json_string(n.as_bytes(), out);
            out.push(b':');
        };
        if let Some(f) = &self.key {
            name(out, f);
            json_bytes(m.key.as_deref(), out);
        }
        if let Some(f) = &self.timestamp {
            name(out, f);
            out.extend_from_slice(m.timestamp.to_string().as_bytes());
        }
        if let Some(f) = &self.headers {
            name(out, f);
            out.push(b'{');
            let mut done: Vec<&str> = Vec::new();
            for (k, _) in &m.headers {
                if done.contains(&k.as_str()) {
                    continue;
                }
                done.push(k);
                if done.len() > 1 {
                    out.push(b',');
                }
                json_string(k.as_bytes(), out);
                out.push(b':');
                let values: Vec<_> = m.headers.iter().filter(|(h, _)| h == k).collect();
                if values.len() == 1 {
                    json_bytes(values[0].1.as_deref(), out);
                } else {
                    out.push(b'[');
                    for (i, (_, v)) in values.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        json_bytes(v.as_deref(), out);
                    }
                    out.push(b']');
                }
            }
            out.push(b'}');
        }
    }

    /// Inserts each message's members into its events: `ranges` gives, in order, the end
    /// index of each earlier message's events with its members; the events after the last
    /// range get `rest`.
    fn apply(batch: &mut crate::batch::Batch, ranges: &[(usize, Vec<u8>)], rest: &[u8]) {
        if batch.events.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut batch.events);
        let mut start = 0;
        let n = events.len();
        let tail = [(n, rest.to_vec())];
        for (end, members) in ranges.iter().chain(&tail) {
            let end = (*end).min(n);
            for e in &mut events[start.min(end)..end] {
                insert_members(&mut batch.data, e, members);
            }
            start = end;
        }
        batch
            .data
            .resize(batch.data.len() + crate::batch::PADDING, 0);
        batch.events = events;
    }
}

/// Appends a copy of event `e` with `members` inserted after its `{` to `data`, and points
/// `e` at it. An event that is not an object is left alone.
fn insert_members(data: &mut Vec<u8>, e: &mut crate::batch::EventMeta, members: &[u8]) {
    let (a, b) = (e.start as usize, (e.start + e.len) as usize);
    let ev = &data[a..b];
    let Some(open) = ev.iter().position(|c| !c.is_ascii_whitespace()) else {
        return;
    };
    if ev[open] != b'{' {
        return;
    }
    let rest = &ev[open + 1..];
    let empty = rest
        .iter()
        .find(|c| !c.is_ascii_whitespace())
        .is_none_or(|&c| c == b'}');
    let mut new = Vec::with_capacity(ev.len() + members.len() + 2);
    new.push(b'{');
    new.extend_from_slice(members);
    if !empty {
        new.push(b',');
    }
    new.extend_from_slice(rest);
    let start = data.len();
    data.extend_from_slice(&new);
    e.start = start as u32;
    e.len = new.len() as u32;
    e.plain = false;
}

/// Appends `v` as JSON: a string when UTF-8, `{"base64":"…"}` when not, `null` when absent.
fn json_bytes(v: Option<&[u8]>, out: &mut Vec<u8>) {
    match v {
        None => out.extend_from_slice(b"null"),
        Some(b) if std::str::from_utf8(b).is_ok() => json_string(b, out),
        Some(b) => {
            out.extend_from_slice(b"{\"base64\":\"");
            base64(b, out);
            out.extend_from_slice(b"\"}");
        }
    }
}

/// Appends UTF-8 `s` as a JSON string.
fn json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    crate::frame::escape_text(s, out);
    out.push(b'"');
}

/// Appends standard, padded base64 of `b`.
fn base64(b: &[u8], out: &mut Vec<u8>) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63]);
        out.push(A[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63]
        } else {
            b'='
        });
    }
}

impl Client {
    async fn connect(
        c: &KafkaSourceConfig,
        book: Arc<Mutex<CommitBook>>,
        cx: &SourceContext,
    ) -> std::result::Result<Self, krafka::KrafkaError> {
        let handle = Arc::new(OnceLock::new());
        let listener = OnRevoke {
            book,
            metrics: cx.metrics().all().clone(),
            name: cx.name().to_string(),
            consumer: handle.clone(),
            drain: Duration::from_millis(c.session_timeout_ms / 2),
        };
        let kafka = krafka::Kafka::builder(c.brokers.join(","))
            .client_id("sluicebox")
            .connect()
            .await?;
        let consumer = kafka
            .consumer(c.group_id.clone())
            .auto_offset_reset(match c.start_from {
                StartFrom::Earliest => krafka::consumer::AutoOffsetReset::Earliest,
                StartFrom::Latest => krafka::consumer::AutoOffsetReset::Latest,
            })
            .enable_auto_commit(false)
            .session_timeout(Duration::from_millis(c.session_timeout_ms))
            .heartbeat_interval(Duration::from_millis(c.heartbeat_interval_ms))
            .rebalance_listener(listener)
            .build()
            .await?;
        let consumer = Arc::new(consumer);
        let _ = handle.set(Arc::downgrade(&consumer));
        consumer.subscribe(c.topics.iter()).await?;
        Ok(Self { consumer })
    }

    async fn poll(&self, wait: Duration) -> std::result::Result<Vec<Message>, krafka::KrafkaError> {
        Ok(self
            .consumer
            .poll(wait)
            .await?
            .into_iter()
            .map(|r| Message {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                value: r.value,
                key: r.key,
                timestamp: r.timestamp,
                headers: r.headers,
            })
            .collect())
    }

    async fn commit(
        &self,
        offsets: &[((Arc<str>, i32), u64)],
    ) -> std::result::Result<(), krafka::KrafkaError> {
        Self::commit_with(&self.consumer, offsets).await
    }

    async fn commit_with(
        consumer: &krafka::consumer::Consumer,
        offsets: &[((Arc<str>, i32), u64)],
    ) -> std::result::Result<(), krafka::KrafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let map: HashMap<_, _> = offsets
            .iter()
            .map(|((t, p), o)| {
                (
                    krafka::consumer::TopicPartition::new(t.to_string(), *p),
                    krafka::consumer::OffsetAndMetadata::new(*o as i64),
                )
            })
            .collect();
        consumer.commit_offsets(&map).await
    }

    /// The high watermark of each assigned partition, as the last fetch reported it (no
    /// request is sent).
    async fn high_watermarks(&self) -> HashMap<(String, i32), i64> {
        self.consumer
            .lag()
            .await
            .into_iter()
            .filter_map(|(tp, l)| Some(((tp.topic, tp.partition), l.high_watermark?)))
            .collect()
    }

    async fn seek(&self, topic: &str, partition: i32, offset: u64) {
        if let Err(e) = self.consumer.seek(topic, partition, offset as i64).await {
            tracing::warn!("kafka: seek {topic}/{partition} to {offset}: {e}");
        }
    }

    async fn close(&self) {
        let _ = self.consumer.close().await;
    }
}

/// Per-partition commit bookkeeping around the streams' watermarks: what was last
/// committed, and what to commit next (the acknowledged prefix, when it moved).
#[derive(Default, Debug)]
pub struct CommitBook {
    parts: HashMap<(Arc<str>, i32), (Stream, Option<u64>)>,
    /// Per partition, the offset after the last message sent (where reading must go on).
    next: HashMap<(Arc<str>, i32), u64>,
}

impl CommitBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream of partition `(topic, partition)`, created at first sight with its
    /// acknowledged position at `first_offset` (nothing before it is ours to commit).
    pub fn stream(&mut self, topic: &Arc<str>, partition: i32, first_offset: u64) -> &Stream {
        &self
            .parts
            .entry((topic.clone(), partition))
            .or_insert_with(|| {
                let s = Stream::new(format!("{topic}/{partition}"), Some(first_offset));
                (s, Some(first_offset))
            })
            .0
    }

    /// Offsets to commit now: for each partition whose acknowledged position moved past
    /// the last commit, that position.
    pub fn due(&self) -> Vec<((Arc<str>, i32), u64)> {
        self.parts
            .iter()
            .filter_map(|(k, (s, last))| match (s.acked(), *last) {
                (Some(a), Some(l)) if a > l => Some((k.clone(), a)),
                (Some(a), None) => Some((k.clone(), a)),
                _ => None,
            })
            .collect()
    }

    /// Records that `offsets` were committed.
    pub fn committed(&mut self, offsets: &[((Arc<str>, i32), u64)]) {
        for (k, o) in offsets {
            if let Some(e) = self.parts.get_mut(k) {
                e.1 = Some(e.1.map_or(*o, |l| l.max(*o)));
            }
        }
    }

    /// The last committed offset of a partition.
    pub fn last_committed(&self, topic: &str, partition: i32) -> Option<u64> {
        self.parts
            .iter()
            .find(|((t, p), _)| &**t == topic && *p == partition)
            .and_then(|(_, (_, l))| *l)
    }

    /// [`CommitBook::due`] restricted to `keys`.
    pub fn due_for(&self, keys: &[(Arc<str>, i32)]) -> Vec<((Arc<str>, i32), u64)> {
        self.due()
            .into_iter()
            .filter(|(k, _)| keys.contains(k))
            .collect()
    }

    /// Whether the batches sent of partitions `keys` have all completed.
    pub fn is_idle_for(&self, keys: &[(Arc<str>, i32)]) -> bool {
        keys.iter()
            .all(|k| self.parts.get(k).is_none_or(|(s, _)| s.is_idle()))
    }

    /// Forgets partitions `keys` (revoked or lost).
    pub fn forget(&mut self, keys: &[(Arc<str>, i32)]) {
        for k in keys {
            self.parts.remove(k);
            self.next.remove(k);
        }
    }

    /// The offset after the last message sent of a partition, if it was read since it was
    /// assigned.
    pub fn next_offset(&self, key: &PartKey) -> Option<u64> {
        self.next.get(key).copied()
    }

    /// Records that the messages of a partition were sent up to `next` (exclusive).
    pub fn sent_up_to(&mut self, key: &PartKey, next: u64) {
        if self.parts.contains_key(key) {
            self.next.insert(key.clone(), next);
        }
    }

    /// Each partition's acknowledged position and last committed offset.
    pub fn positions(&self) -> Vec<(PartKey, Option<u64>, Option<u64>)> {
        self.parts
            .iter()
            .map(|(k, (s, last))| (k.clone(), s.acked(), *last))
            .collect()
    }

    /// Whether every partition's sent batches have completed.
    pub fn is_idle(&self) -> bool {
        self.parts.values().all(|(s, _)| s.is_idle())
    }
}

/// What to do with one poll's messages of a partition (see [`GapGuard::check`]).
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Send them (those already sent were taken out).
    Send,
    /// Nothing new: every message was sent before.
    Skip,
    /// The client skipped offsets: seek to `from` and read again; `returned` is the offset
    /// it handed instead.
    ReadAgain { from: u64, returned: u64 },
}

/// Keeps each partition's reading contiguous with what was sent. A message below the next
/// expected offset was sent already (a replay after a seek) and is taken out. A first
/// message above it means the client skipped offsets (seen after a broker restart): read
/// again from the expected offset, unless the client returns the same jump twice in a row,
/// which is a real hole (a compacted range, transaction markers) and is accepted.
///
/// Cost: a retain over the poll's messages, and a map entry per partition with an open gap.
#[derive(Debug, Default)]
struct GapGuard {
    /// Per partition, the last jump seen: (expected, returned).
    gaps: HashMap<PartKey, (u64, u64)>,
}

impl GapGuard {
    /// Decides about `msgs`, the messages of partition `key` in offset order, given the
    /// offset after the last message sent (`None` before the first since the assignment).
    fn check(&mut self, key: &PartKey, next: Option<u64>, msgs: &mut Vec<Message>) -> Step {
        if let Some(next) = next {
            msgs.retain(|m| m.offset >= 0 && m.offset as u64 >= next);
            let Some(first) = msgs.first().map(|m| m.offset as u64) else {
                return Step::Skip;
            };
            if first > next && self.gaps.get(key) != Some(&(next, first)) {
                self.gaps.insert(key.clone(), (next, first));
                return Step::ReadAgain {
                    from: next,
                    returned: first,
                };
            }
        }
        if msgs.is_empty() {
            return Step::Skip;
        }
        self.gaps.remove(key);
        Step::Send
    }
}

impl Source for KafkaSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let c = self.config;
            let fields = self.fields;
            let who = format!("sources.{}", self.name);
            let book = Arc::new(Mutex::new(CommitBook::new()));
            let client = Client::connect(&c, book.clone(), &cx).await.map_err(|e| {
                Error::new(
                    Kind::Config,
                    format!(
                        "{who}: key `brokers` ({}): cannot join group: {e}",
                        c.brokers.join(",")
                    ),
                )
            })?;
            let commit_every = Duration::from_millis(c.commit_interval_ms);
            let mut last_commit = Instant::now();
            let mut failures = 0u32;
            let mut guard = GapGuard::default();
            loop {
                if cx.shutdown().is_triggered() {
                    break;
                }
                let msgs = tokio::select! {
                    r = client.poll(Duration::from_millis(200)) => r,
                    _ = cx.shutdown().wait() => break,
                };
                let msgs = match msgs {
                    Ok(m) => {
                        failures = 0;
                        m
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > 50 {
                            client.close().await;
                            return Err(Error::new(Kind::Input, format!("{who}: poll: {e}")));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Group the messages by partition, keeping their order.
                let mut groups: Vec<(PartKey, Vec<Message>)> = Vec::new();
                for m in msgs {
                    let k = (m.topic.clone(), m.partition);
                    match groups.iter_mut().find(|(g, _)| *g == k) {
                        Some((_, v)) => v.push(m),
                        None => groups.push((k, vec![m])),
                    }
                }
                for ((topic, part), mut msgs) in groups {
                    let key = (topic.clone(), part);
                    let next = lock(&book).next_offset(&key);
                    match guard.check(&key, next, &mut msgs) {
                        Step::Send => {}
                        Step::Skip => continue,
                        Step::ReadAgain { from, returned } => {
                            cx.metrics().error("kafka_offset_gap", "receiving");
                            tracing::warn!(
                                source = cx.name(),
                                "{who}: {topic}/{part}: the client returned offset {returned} \
                                 where {from} was next; reading again from {from}"
                            );
                            client.seek(&topic, part, from).await;
                            continue;
                        }
                    }
                    let first = msgs[0].offset.max(0) as u64;
                    let end = msgs.last().map_or(first, |m| m.offset as u64 + 1);
                    let stream = lock(&book).stream(&topic, part, first).clone();
                    if !send_partition(&cx, &stream, &msgs, &fields).await {
                        break;
                    }
                    lock(&book).sent_up_to(&key, end);
                }
                if last_commit.elapsed() >= commit_every {
                    commit(&client, &book, &who, &cx).await;
                    last_commit = Instant::now();
                }
            }
            // Shutdown: give in-flight batches up to session/2 to complete, then commit.
            let deadline = Instant::now() + Duration::from_millis(c.session_timeout_ms / 2);
            while !lock(&book).is_idle() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            commit(&client, &book, &who, &cx).await;
            client.close().await;
            Ok(())
        })
    }
}

/// Commits what is due, timing the request, then updates the partitions' lag and
/// committed-offset gauges.
async fn commit(client: &Client, book: &Mutex<CommitBook>, who: &str, cx: &SourceContext) {
    let due = lock(book).due();
    let metrics = cx.metrics().all();
    if !due.is_empty() {
        let t = Instant::now();
        let r = client.commit(&due).await;
        metrics.kafka_commit(cx.name(), t.elapsed().as_secs_f64());
        match r {
            Ok(()) => lock(book).committed(&due),
            Err(e) => {
                cx.metrics().error("kafka_commit_failed", "sending");
                tracing::warn!(source = cx.name(), "{who}: offset commit failed: {e}");
            }
        }
    }
    let hw = client.high_watermarks().await;
    for ((topic, part), acked, last) in lock(book).positions() {
        // Tansu under-reports the high watermark: never a negative lag.
        let lag = hw
            .get(&(topic.to_string(), part))
            .zip(acked)
            .map(|(&h, a)| (h.max(0) as u64).saturating_sub(a));
        metrics.kafka_partition(cx.name(), &topic, part, lag, last);
    }
}

/// Frames one poll's messages of one partition and sends them. Every batch ends at the
/// offset of the first message not wholly in it (a batch closed inside message `i` ends at
/// `i`, so that message is replayed rather than skipped). Returns false on shutdown.
async fn send_partition(
    cx: &SourceContext,
    stream: &Stream,
    msgs: &[Message],
    fields: &MessageFields,
) -> bool {
    let mut decoder = cx.decoder(0);
    let mut batch = cx.batch();
    // With `*_field` keys: the members of each earlier message of the open batch, with the
    // end of its events. They are inserted when the batch completes, after the codec (a
    // `text` decoder wraps lines only then).
    let mut pending: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut members = Vec::new();
    for m in msgs {
        let Some(v) = &m.value else { continue };
        if fields.any() {
            fields.members(m, &mut members);
        }
        let mut input: &[u8] = v;
        let mut nl: &[u8] = if v.ends_with(b"\n") { b"" } else { b"\n" };
        for part in [&mut input, &mut nl] {
            while decoder.decode(part, &mut batch) {
                let mut full = std::mem::replace(&mut batch, cx.batch());
                if fields.any() {
                    MessageFields::apply(&mut full, &pending, &members);
                    pending.clear();
                }
                if !cx.send(stream, full, m.offset as u64).await {
                    return false;
                }
            }
        }
        if fields.any() {
            pending.push((batch.events.len(), std::mem::take(&mut members)));
        }
    }
    let end = msgs.last().map_or(0, |m| m.offset as u64 + 1);
    decoder.decode_eof(&mut batch);
    if fields.any() {
        MessageFields::apply(&mut batch, &pending, &[]);
    }
    // Always send the last batch, even empty, so the watermark covers every message.
    cx.send(stream, batch, end).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the committed offset must be: the start, moved over every batch (in send order)
    /// up to the first one not delivered.
    fn reference(start: u64, ends: &[u64], done: &[Option<bool>]) -> u64 {
        let mut at = start;
        for (e, d) in ends.iter().zip(done) {
            match d {
                Some(true) => at = *e,
                _ => break,
            }
        }
        at
    }

    proptest! {
        #[test]
        fn committed_is_the_contiguous_delivered_prefix(
            start in 0u64..1000,
            steps in proptest::collection::vec((0u64..3, 0usize..64, any::<bool>(), 0u8..10), 1..60),
        ) {
            let mut book = CommitBook::new();
            let topic: Arc<str> = "t".into();
            let stream = book.stream(&topic, 0, start).clone();
            // Batch ends are non-decreasing (a batch split inside a message ends where the
            // previous one did).
            let mut ends = Vec::new();
            let mut at = start;
            let mut tokens = Vec::new();
            for (adv, ..) in &steps {
                at += adv;
                ends.push(at);
                tokens.push(Some(stream.token(at)));
            }
            let mut done = vec![None; ends.len()];
            let mut last_committed = start;
            for (_, pick, ok, commit_now) in &steps {
                // Complete a random still-open batch, delivered or failed.
                let open: Vec<usize> = (0..tokens.len()).filter(|i| tokens[*i].is_some()).collect();
                if let Some(&i) = open.get(pick % open.len().max(1)) {
                    let t = tokens[i].take().unwrap();
                    if !ok {
                        t.fail();
                    }
                    drop(t);
                    done[i] = Some(*ok);
                }
                if *commit_now < 4 {
                    let due = book.due();
                    book.committed(&due);
                    let c = book.last_committed("t", 0).unwrap();
                    prop_assert!(c >= last_committed, "commits never go back");
                    prop_assert_eq!(c, reference(start, &ends, &done));
                    last_committed = c;
                }
            }
            let due = book.due();
            book.committed(&due);
            prop_assert_eq!(book.last_committed("t", 0).unwrap(), reference(start, &ends, &done));
        }
    }

    fn msgs(offsets: &[i64]) -> Vec<Message> {
        offsets
            .iter()
            .map(|&offset| Message {
                topic: "t".into(),
                partition: 0,
                offset,
                value: Some(bytes::Bytes::from_static(b"{}")),
                key: None,
                timestamp: 0,
                headers: Vec::new(),
            })
            .collect()
    }

    fn offsets(m: &[Message]) -> Vec<i64> {
        m.iter().map(|m| m.offset).collect()
    }

    /// The offset-gap safeguard: a replay is trimmed to what was not sent, a jump ahead is
    /// read again from the expected offset, and only the same jump seen twice in a row is
    /// taken as a real hole (compaction, transaction markers).
    #[test]
    fn gap_guard_reads_skipped_offsets_again_once() {
        let mut g = GapGuard::default();
        let k: PartKey = ("t".into(), 0);
        let other: PartKey = ("t".into(), 1);

        // Before anything was sent since the assignment: whatever the client hands.
        let mut m = msgs(&[7, 8]);
        assert_eq!(g.check(&k, None, &mut m), Step::Send);
        assert_eq!(offsets(&m), [7, 8]);

        // Contiguous: sent as is.
        let mut m = msgs(&[9, 10]);
        assert_eq!(g.check(&k, Some(9), &mut m), Step::Send);
        assert_eq!(offsets(&m), [9, 10]);

        // A replay after a seek: what was sent already is taken out, the rest goes on.
        let mut m = msgs(&[8, 9, 10, 11, 12]);
        assert_eq!(g.check(&k, Some(11), &mut m), Step::Send);
        assert_eq!(offsets(&m), [11, 12]);
        let mut m = msgs(&[9, 10]);
        assert_eq!(g.check(&k, Some(11), &mut m), Step::Skip, "all sent before");

        // The client skips 13..15: read again from 13, and send nothing of this poll.
        let mut m = msgs(&[16, 17]);
        assert_eq!(
            g.check(&k, Some(13), &mut m),
            Step::ReadAgain {
                from: 13,
                returned: 16
            }
        );
        // Another partition's jumps are its own.
        let mut m = msgs(&[5]);
        assert_eq!(
            g.check(&other, Some(3), &mut m),
            Step::ReadAgain {
                from: 3,
                returned: 5
            }
        );
        // Read again, the messages are there: sent, and the gap is forgotten.
        let mut m = msgs(&[13, 14, 15, 16]);
        assert_eq!(g.check(&k, Some(13), &mut m), Step::Send);
        assert_eq!(offsets(&m), [13, 14, 15, 16]);
        // So the same jump later is questioned again...
        let mut m = msgs(&[20]);
        assert_eq!(
            g.check(&k, Some(17), &mut m),
            Step::ReadAgain {
                from: 17,
                returned: 20
            }
        );
        // ...and a real hole (the same jump twice in a row) is accepted.
        let mut m = msgs(&[20, 21]);
        assert_eq!(g.check(&k, Some(17), &mut m), Step::Send);
        assert_eq!(offsets(&m), [20, 21]);
        // A different jump after an accepted one is questioned again.
        let mut m = msgs(&[30]);
        assert_eq!(
            g.check(&k, Some(22), &mut m),
            Step::ReadAgain {
                from: 22,
                returned: 30
            }
        );
        let mut m = msgs(&[31]);
        assert_eq!(
            g.check(&k, Some(22), &mut m),
            Step::ReadAgain {
                from: 22,
                returned: 31
            },
            "not the jump seen before"
        );
        // Negative offsets (none known) are never sent once reading has a position.
        let mut m = msgs(&[-1]);
        assert_eq!(g.check(&k, Some(22), &mut m), Step::Skip);
    }

    #[test]
    fn bytes_as_json() {
        let enc = |v: Option<&[u8]>| {
            let mut out = Vec::new();
            json_bytes(v, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(enc(None), "null");
        assert_eq!(enc(Some(b"a\"b\n")), r#""a\"b\n""#);
        assert_eq!(enc(Some(b"\xff")), r#"{"base64":"/w=="}"#);
        assert_eq!(enc(Some(b"\xff\x00")), r#"{"base64":"/wA="}"#);
        assert_eq!(enc(Some(b"\xff\x00\x01\x02")), r#"{"base64":"/wABAg=="}"#);
    }

    #[test]
    fn next_offsets_follow_the_assignment() {
        let mut book = CommitBook::new();
        let t: Arc<str> = "t".into();
        let k = (t.clone(), 0);
        book.sent_up_to(&k, 5);
        assert_eq!(book.next_offset(&k), None, "not assigned: nothing recorded");
        let _ = book.stream(&t, 0, 3);
        book.sent_up_to(&k, 5);
        assert_eq!(book.next_offset(&k), Some(5));
        book.forget(std::slice::from_ref(&k));
        assert_eq!(
            book.next_offset(&k),
            None,
            "a revoked partition starts afresh"
        );
    }

    #[test]
    fn config_defaults() {
        let c: KafkaSourceConfig =
            toml::from_str("brokers = [\"a:1\"]\ntopics = [\"t\"]\ngroup_id = \"g\"").unwrap();
        assert_eq!(c.start_from, StartFrom::Latest);
        assert_eq!(c.commit_interval_ms, 5000);
        assert!(
            toml::from_str::<KafkaSourceConfig>(
                "brokers = []\ntopics = []\ngroup_id = \"g\"\nbogus = 1"
            )
            .is_err()
        );
    }
}
