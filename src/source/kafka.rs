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
        Ok(Box::new(KafkaSource {
            config: self.clone(),
            name: cx.name.clone(),
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
    consumer: Arc<OnceLock<Weak<krafka::consumer::Consumer>>>,
    drain: Duration,
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
            && let Err(e) = Client::commit_with(&c, &due).await
        {
            tracing::warn!("kafka: commit on revoke failed (the new owner replays): {e}");
        }
        lock(&self.book).forget(&keys);
    }

    async fn on_partitions_lost(&self, parts: &[krafka::consumer::TopicPartition]) {
        // Another member may own them already: no commit.
        lock(&self.book).forget(&keys(parts));
    }
}

fn lock(book: &Mutex<CommitBook>) -> std::sync::MutexGuard<'_, CommitBook> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

/// A partition: topic and number.
type PartKey = (Arc<str>, i32);

/// One fetched message: partition key, offset, value.
struct Message {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    value: Option<bytes::Bytes>,
}

impl Client {
    async fn connect(
        c: &KafkaSourceConfig,
        book: Arc<Mutex<CommitBook>>,
    ) -> std::result::Result<Self, krafka::KrafkaError> {
        let handle = Arc::new(OnceLock::new());
        let listener = OnRevoke {
            book,
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

    async fn close(&self) {
        let _ = self.consumer.close().await;
    }
}

/// Per-partition commit bookkeeping around the streams' watermarks: what was last
/// committed, and what to commit next (the acknowledged prefix, when it moved).
#[derive(Default, Debug)]
pub struct CommitBook {
    parts: HashMap<(Arc<str>, i32), (Stream, Option<u64>)>,
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
        }
    }

    /// Whether every partition's sent batches have completed.
    pub fn is_idle(&self) -> bool {
        self.parts.values().all(|(s, _)| s.is_idle())
    }
}

impl Source for KafkaSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let c = self.config;
            let who = format!("sources.{}", self.name);
            let book = Arc::new(Mutex::new(CommitBook::new()));
            let client = Client::connect(&c, book.clone()).await.map_err(|e| {
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
                for ((topic, part), msgs) in groups {
                    let first = msgs[0].offset.max(0) as u64;
                    let stream = lock(&book).stream(&topic, part, first).clone();
                    if !send_partition(&cx, &stream, &msgs).await {
                        break;
                    }
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

async fn commit(client: &Client, book: &Mutex<CommitBook>, who: &str, cx: &SourceContext) {
    let due = lock(book).due();
    match client.commit(&due).await {
        Ok(()) => lock(book).committed(&due),
        Err(e) => tracing::warn!(source = cx.name(), "{who}: offset commit failed: {e}"),
    }
}

/// Frames one poll's messages of one partition and sends them. Every batch ends at the
/// offset of the first message not wholly in it (a batch closed inside message `i` ends at
/// `i`, so that message is replayed rather than skipped). Returns false on shutdown.
async fn send_partition(cx: &SourceContext, stream: &Stream, msgs: &[Message]) -> bool {
    let mut decoder = cx.decoder(0);
    let mut batch = cx.batch();
    for m in msgs {
        let Some(v) = &m.value else { continue };
        let mut input: &[u8] = v;
        while decoder.decode(&mut input, &mut batch) {
            let full = std::mem::replace(&mut batch, cx.batch());
            if !cx.send(stream, full, m.offset as u64).await {
                return false;
            }
        }
        if !v.ends_with(b"\n") {
            let mut nl: &[u8] = b"\n";
            while decoder.decode(&mut nl, &mut batch) {
                let full = std::mem::replace(&mut batch, cx.batch());
                if !cx.send(stream, full, m.offset as u64).await {
                    return false;
                }
            }
        }
    }
    let end = msgs.last().map_or(0, |m| m.offset as u64 + 1);
    decoder.decode_eof(&mut batch);
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
