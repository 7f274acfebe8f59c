//! Kafka sink: an idempotent producer (acks=all by default). Each batch's [`Ack`] is held
//! until the broker acknowledged every message of it with an offset; only then is it
//! delivered. A message's value is the event's bytes, unchanged.
//!
//! | the client reports | what happens |
//! |---|---|
//! | an offset for every record | the batch is acknowledged |
//! | success without an offset (`DUPLICATE_SEQUENCE_NUMBER`) | those records are sent again at once, up to 5 times |
//! | a transient failure: the delivery timeout passed (broker away), network, request timeout, a retriable broker code | the records without an offset are sent again after a backoff (full jitter, `retry_initial_ms` doubling to `retry_max_ms`), for as long as it takes, counted in `component_retries_total` and `component_errors_total{error_type}` |
//! | the producer cannot go on (fenced, closed, unknown producer id) | a new producer is built (a new connection and producer id), then the same |
//! | a permanent refusal (authentication, authorization, unknown topic, compression) | the sink stops with an error naming the setting; the batch stays unacknowledged |
//!
//! Before a batch is sent, an event that cannot become a record goes to the run's dead
//! letter with the reason and its origin, and its neighbours go on: one whose `topic`
//! template names a field it lacks (`topic_field_missing`), one whose field makes a name
//! Kafka refuses (`topic_invalid`: 1 to 249 of `a-z A-Z 0-9 . _ -`), one naming a topic the
//! cluster does not have (`topic_unknown`, asked once per name), and one larger than
//! `max_message_bytes` (`message_too_large`: the broker would refuse it, and its refusal
//! would stop the sink). When no dead letter takes them, the batch stays unacknowledged
//! (replayed after a restart) and `component_errors_total{error_type="no_dead_letter"}`
//! counts it.
//!
//! While a batch is retried it keeps its `max_in_flight` slot, so at most `max_in_flight`
//! batches wait; then `write` blocks, the sink's queue fills and the sources feeding it stop
//! at their in-flight budgets. At shutdown the retries stop and the held batches stay
//! unacknowledged: their sources replay them. A retried record lands after the records
//! queued since, so order is kept within an attempt, not across a retry; a record the broker
//! stored without its answer reaching us comes twice.
//!
//! The client (krafka, pinned) stays behind [`Producer`], a thin private type.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Kind, Result};
use crate::metrics::ComponentMetrics;
use crate::sink::net::Backoff;
use crate::sink::{Ack, Flow, Output, Sink};
use crate::source::Shutdown;

/// Compression of produced batches.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default).
    #[default]
    Lz4,
}

/// How many replicas must acknowledge a write.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// The leader only (`1`).
    One,
    /// All in-sync replicas (the default; required by the idempotent producer).
    #[default]
    All,
}

fn default_in_flight() -> usize {
    5
}
fn default_delivery_timeout() -> u64 {
    120_000
}
fn default_request_timeout() -> u64 {
    30_000
}
fn default_retry_initial() -> u64 {
    500
}
fn default_retry_max() -> u64 {
    60_000
}

/// How long a batch waits for more records before it is sent.
const LINGER: Duration = Duration::from_millis(5);
/// The longest timeout or backoff accepted, in ms: Kafka's are 32-bit.
const MAX_TIMEOUT_MS: u64 = i32::MAX as u64;

/// Configuration of a `kafka` sink.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port` (required).
    pub brokers: Vec<String>,
    /// Topic (required); `{{ field }}` takes (part of) the name from an event's field.
    pub topic: String,
    /// Event field whose value is the message key (default: no key).
    #[serde(default)]
    pub key_field: Option<String>,
    /// `none`, `gzip`, `snappy` or `lz4` (default `lz4`).
    #[serde(default)]
    pub compression: Compression,
    /// `all` (default) or `one`.
    #[serde(default)]
    pub acks: Acks,
    /// Batches awaiting the broker's acknowledgement at once (default 5).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// How long the client tries to deliver a record before it reports a failure, which the
    /// sink then retries (default 120000; at least `request_timeout_ms` + 5).
    #[serde(default = "default_delivery_timeout")]
    pub delivery_timeout_ms: u64,
    /// How long one request to the broker may wait for its answer (default 30000).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// First delay before a failed delivery is retried (default 500).
    #[serde(default = "default_retry_initial")]
    pub retry_initial_ms: u64,
    /// Largest delay between two retries (default 60000).
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
    /// An event larger than this many bytes is dead-lettered instead of sent (default
    /// 1000000, the broker's usual `message.max.bytes` less the record's overhead).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
}

fn default_max_message() -> usize {
    1_000_000
}

impl KafkaSinkConfig {
    /// Checks the config, connects and builds the sink.
    ///
    /// # Errors
    /// [`Kind::Config`] naming the key when a value is invalid or the brokers cannot be
    /// reached.
    pub fn build(&self, cx: &crate::config::BuildContext) -> Result<Box<dyn Sink + Send>> {
        let who = format!("sinks.{}", cx.name);
        let bad =
            |key: &str, why: String| Error::new(Kind::Config, format!("{who}: key `{key}`: {why}"));
        if self.brokers.is_empty()
            || self
                .brokers
                .iter()
                .any(|b| !crate::source::kafka::valid_broker(b))
        {
            return Err(bad("brokers", "expected one or more `host:port`".into()));
        }
        let topic = Template::parse(&self.topic).map_err(|e| bad("topic", e))?;
        if topic.is_static() && !valid_topic(&self.topic) {
            return Err(bad(
                "topic",
                format!(
                    "{:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)",
                    self.topic
                ),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(bad("max_in_flight", "must be above 0".into()));
        }
        if self.acks == Acks::One {
            // The idempotent producer needs acks=all.
            return Err(bad(
                "acks",
                "`one` is not supported with the idempotent producer; use `all`".into(),
            ));
        }
        // Kafka's own timeouts are 32-bit milliseconds (about 24.8 days); nothing longer
        // means anything to a broker, and the arithmetic below stays in range.
        for (key, ms) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("delivery_timeout_ms", self.delivery_timeout_ms),
            ("retry_initial_ms", self.retry_initial_ms),
            ("retry_max_ms", self.retry_max_ms),
        ] {
            if ms > MAX_TIMEOUT_MS {
                return Err(bad(
                    key,
                    format!("{ms} is above the most Kafka allows ({MAX_TIMEOUT_MS} ms)"),
                ));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err(bad("request_timeout_ms", "must be above 0".into()));
        }
        // krafka refuses a record above its max_request_size (100 MiB) itself.
        if !(1..=100 << 20).contains(&self.max_message_bytes) {
            return Err(bad(
                "max_message_bytes",
                "must be between 1 and 104857600 (100 MiB)".into(),
            ));
        }
        let request_timeout = Duration::from_millis(self.request_timeout_ms);
        let delivery_timeout = Duration::from_millis(self.delivery_timeout_ms);
        if delivery_timeout < request_timeout + LINGER {
            return Err(bad(
                "delivery_timeout_ms",
                format!(
                    "must be at least request_timeout_ms + {} ({})",
                    LINGER.as_millis(),
                    self.request_timeout_ms
                        .saturating_add(LINGER.as_millis() as u64)
                ),
            ));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(bad(
                "retry_max_ms",
                "retry_initial_ms must be above 0 and retry_max_ms at least retry_initial_ms"
                    .into(),
            ));
        }
        let settings = Settings {
            brokers: self.brokers.join(","),
            compression: self.compression,
            request_timeout,
            delivery_timeout,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::new(Kind::Config, format!("{who}: runtime: {e}")))?;
        let producer = rt.block_on(Producer::connect(&settings)).map_err(|e| {
            bad(
                "brokers",
                format!("cannot connect to {}: {e}", settings.brokers),
            )
        })?;
        let courier = Courier {
            link: Link {
                settings,
                current: Mutex::new(Arc::new(producer)),
                rebuilding: tokio::sync::Mutex::new(()),
            },
            retry: (self.retry_initial_ms, self.retry_max_ms),
            metrics: cx.metrics.component(&cx.name, "sink", "kafka"),
            shutdown: cx.shutdown.clone(),
            who: who.clone(),
            down: AtomicBool::new(false),
        };
        Ok(Box::new(KafkaSink {
            rt,
            courier: Arc::new(courier),
            topic,
            key_field: self.key_field.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(self.max_in_flight)),
            max_in_flight: self.max_in_flight,
            max_message: self.max_message_bytes,
            topics: std::collections::HashMap::new(),
            failed: Arc::new(Mutex::new(None)),
            name: cx.name.clone(),
            outlet: cx.dead_letters.clone(),
        }))
    }
}

/// A topic name with `{{ field }}` parts.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Field(String),
}

#[derive(Debug, Clone)]
struct Template(Vec<Part>);

impl Template {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            let Some(j) = rest[i..].find("}}") else {
                return Err(format!("unclosed `{{{{` in {s:?}"));
            };
            let field = rest[i + 2..i + j].trim();
            if field.is_empty() {
                return Err(format!("empty `{{{{ }}}}` in {s:?}"));
            }
            parts.push(Part::Field(field.to_string()));
            rest = &rest[i + j + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(parts))
    }

    fn is_static(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Part::Text(_)))
    }

    fn render(&self, event: &crate::sink::OutEvent<'_>) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&field_text(event, f)?),
            }
        }
        Some(out)
    }
}

/// An event's bytes, line and offset, as the dead letter takes them.
type Origin<'a> = (&'a [u8], u64, u64);

/// Why an event cannot become a record (it goes to the dead letter instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unsendable {
    /// Larger than `max_message_bytes`.
    TooLarge,
    /// A field of the `topic` template is missing (or null, an object, an array).
    NoTopic,
    /// The `topic` template makes a name Kafka refuses.
    BadTopic,
    /// The `topic` template names a topic the cluster does not have.
    NoSuchTopic,
}

/// How long the cluster's answer that a topic does not exist (or its silence) is trusted
/// before it is asked again: the topic may have been created, or the broker come back.
const TOPIC_RECHECK: Duration = Duration::from_secs(30);
/// How long the sink waits for the cluster to say whether a topic exists.
const TOPIC_CHECK: Duration = Duration::from_secs(5);
/// Topic names remembered; past this the memory starts again (a template with a field of
/// unbounded values).
const TOPICS_KEPT: usize = 10_000;

/// What the sink knows of a topic a template named.
#[derive(Debug, Clone, Copy)]
enum TopicState {
    Exists,
    /// The cluster said it has no such topic, at this moment.
    Missing(std::time::Instant),
    /// The cluster could not be asked (the broker away) at this moment: taken as existing,
    /// so the records wait in the producer's retries, and not asked again per event.
    Undecided(std::time::Instant),
}

/// Whether Kafka accepts `t` as a topic name: 1 to 249 of `a-z A-Z 0-9 . _ -`, and not
/// `.` or `..`.
fn valid_topic(t: &str) -> bool {
    (1..=249).contains(&t.len())
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The text of the field at `path` (docs/abi.md section 10) of an event: a string decoded,
/// a number or boolean as written; `None` when it is missing, null, an object or an array.
/// Cost: a walk of the event's positions (a scan of its bytes when a filter edited it).
fn field_text(ev: &crate::sink::OutEvent<'_>, path: &str) -> Option<String> {
    use crate::FieldKind as F;
    let f = ev.field(path)?;
    match f.kind {
        F::String => f.as_str().map(std::borrow::Cow::into_owned),
        F::Number | F::True | F::False => Some(String::from_utf8_lossy(f.raw).into_owned()),
        _ => None,
    }
}

/// What a producer is built from, kept to build another.
#[derive(Debug, Clone)]
struct Settings {
    brokers: String,
    compression: Compression,
    request_timeout: Duration,
    delivery_timeout: Duration,
}

/// The only place krafka's producer appears.
struct Producer {
    inner: krafka::producer::Producer,
    /// For asking whether a topic a template named exists.
    admin: krafka::admin::AdminClient,
}

impl Producer {
    async fn connect(s: &Settings) -> std::result::Result<Self, krafka::KrafkaError> {
        let kafka = krafka::Kafka::builder(s.brokers.clone())
            .client_id("sluicebox")
            // The client requires a request's clock to cover its connection's.
            .connect_timeout(s.request_timeout.min(Duration::from_secs(10)))
            .request_timeout(s.request_timeout)
            .connect()
            .await?;
        let admin = kafka.admin();
        let inner = kafka
            .producer()
            .acks(krafka::producer::Acks::All)
            .idempotent(true)
            .compression(match s.compression {
                Compression::None => krafka::Compression::None,
                Compression::Gzip => krafka::Compression::Gzip,
                Compression::Snappy => krafka::Compression::Snappy,
                Compression::Lz4 => krafka::Compression::Lz4,
            })
            .linger(LINGER)
            .delivery_timeout(s.delivery_timeout)
            // Waits for metadata or buffer memory end within a request's time (a timeout the
            // sink retries), so a broker that is away never holds the sink's thread long.
            .max_block(s.request_timeout)
            .build()
            .await?;
        Ok(Self { inner, admin })
    }
}

/// The producer in use, and a new one in its place when the client says it cannot go on.
///
/// Cost: a mutex taken per batch to clone an `Arc`; a rebuild opens new connections and
/// gets a new producer id (the old producer sends what it had queued in the background).
struct Link {
    settings: Settings,
    current: Mutex<Arc<Producer>>,
    /// Held while a producer is built, so that batches failing together build one.
    rebuilding: tokio::sync::Mutex<()>,
}

impl Link {
    fn get(&self) -> Arc<Producer> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces `broken` with a new producer, unless another batch already did.
    async fn rebuild(
        &self,
        broken: &Arc<Producer>,
    ) -> std::result::Result<(), krafka::KrafkaError> {
        let _one = self.rebuilding.lock().await;
        if !Arc::ptr_eq(&self.get(), broken) {
            return Ok(());
        }
        let fresh = Arc::new(Producer::connect(&self.settings).await?);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// What the sink does about an error of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remedy {
    /// The broker or the network may come back: send again after a backoff.
    Retry,
    /// This producer cannot go on (fenced, closed, forgotten by the broker): build another,
    /// then send again.
    Rebuild,
    /// Sending again cannot help: stop, naming the setting to look at (if one is to blame).
    Stop(Option<&'static str>),
}

/// The remedy for `e`, and the `error_type` label it is counted under.
fn remedy(e: &krafka::KrafkaError) -> (Remedy, &'static str) {
    use krafka::KrafkaError as K;
    use krafka::error::ErrorCode as C;
    match e {
        K::Network(_) => (Remedy::Retry, "connection"),
        K::Timeout { .. } => (Remedy::Retry, "timeout"),
        K::DeliveryTimeout { .. } => (Remedy::Retry, "delivery_timeout"),
        // The client moves to the next epoch itself; the records go again.
        K::OutOfOrderSequence { .. } => (Remedy::Retry, "out_of_order_sequence"),
        K::Protocol { .. } if e.is_retriable() => (Remedy::Retry, "protocol"),
        K::Auth { .. } => (Remedy::Stop(Some("brokers")), "auth_refused"),
        K::UnknownTopic { .. } => (Remedy::Stop(Some("topic")), "unknown_topic"),
        K::Compression { .. } => (Remedy::Stop(Some("compression")), "compression"),
        K::Fenced { .. } | K::Closed { .. } | K::IllegalState { .. } => {
            (Remedy::Rebuild, "producer_rebuilt")
        }
        K::Broker { code, .. } => match code {
            C::TopicAuthorizationFailed | C::InvalidTopic => {
                (Remedy::Stop(Some("topic")), "topic_refused")
            }
            // Only an enqueue that waited its whole budget for the topic's metadata reports
            // it: the broker answers, and has no such topic.
            C::UnknownTopicOrPartition => (Remedy::Stop(Some("topic")), "unknown_topic"),
            C::ClusterAuthorizationFailed | C::SaslAuthenticationFailed => {
                (Remedy::Stop(Some("brokers")), "auth_refused")
            }
            C::UnsupportedCompressionType => (Remedy::Stop(Some("compression")), "compression"),
            C::ProducerFenced | C::InvalidProducerEpoch | C::UnknownProducerId => {
                (Remedy::Rebuild, "producer_rebuilt")
            }
            c if c.is_retriable() => (Remedy::Retry, "broker_retriable"),
            _ => (Remedy::Stop(None), "broker_refused"),
        },
        _ => (Remedy::Stop(None), "client_refused"),
    }
}

/// How the sending of one batch ended.
#[derive(Debug)]
enum Outcome {
    /// Every record has an offset.
    Delivered,
    /// The shutdown came first: the batch stays unacknowledged.
    Stopped,
    /// Refused for good (the message says why and which setting).
    Failed(String),
}

/// How many times the records of a batch the broker did not give an offset are sent again
/// (at once) before the batch counts as failed.
const MAX_RESENDS: u32 = 5;

/// A batch's records on their way: each with the handle of its latest attempt, or none when
/// it could not be queued.
type Pending = Vec<(krafka::Record, Option<krafka::producer::DeliveryHandle>)>;

/// Sees each batch through to an offset per record: waits for the client's answers, sends
/// again what has none, backs off, rebuilds the producer. Shared by the sink's tasks.
///
/// Cost: per batch, a copy of each record (the value's bytes shared, the topic name
/// copied) until it has an offset; per failed attempt, one backoff and the records queued
/// again.
struct Courier {
    link: Link,
    /// `retry_initial_ms`, `retry_max_ms`.
    retry: (u64, u64),
    metrics: ComponentMetrics,
    shutdown: Shutdown,
    who: String,
    /// Whether the last attempt of some batch failed and none was delivered since: at
    /// shutdown, new batches are then given up at once instead of waiting out a delivery
    /// timeout each.
    down: AtomicBool,
}

impl Courier {
    /// The error that stops the sink for `e`, naming the setting to look at.
    fn refusal(&self, key: Option<&str>, e: &krafka::KrafkaError) -> String {
        match key {
            Some(key) => format!("key `{key}`: the broker refused: {e}"),
            None => format!("the broker refused a record: {e}"),
        }
    }

    /// Resolves once the shutdown fired while deliveries are failing: new batches are then
    /// given up (left unacknowledged) rather than wait for a broker that is away.
    async fn given_up(&self) {
        self.shutdown.wait().await;
        while !self.down.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sleeps `d`; false when the shutdown comes first.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => !self.shutdown.is_triggered(),
            () = self.shutdown.wait() => false,
        }
    }

    /// Waits until every record of `pending` (queued on `producer`; `carried` is the error
    /// that stopped the queueing, if one did) has an offset, sending again what has none.
    ///
    /// An offset is the only proof that the broker holds a record. krafka also reports
    /// success (`DeliveryConfirmation::Deduplicated`, offset -1) when a retried batch is
    /// answered `DUPLICATE_SEQUENCE_NUMBER`: the broker says an earlier attempt of that batch
    /// was written. Tansu 0.6.0 on S3 says so for batches it does not hold: its produce path
    /// records the producer's sequence before it stores the batch, so a broker stopped in
    /// between (SIGTERM, measured) refuses the retry as a duplicate of records that were
    /// never stored. Taking that answer as delivery lost 7 to 17 of 2,250 events in 4 of 9
    /// restarts of the output broker (`cli/tests/kafka.rs`,
    /// `SLUICEBOX_KAFKA_RESTART_OUTPUT=1`). Such records are sent again at once (new sequence
    /// numbers, same partition) until each has an offset: no loss, at the cost of a
    /// duplicate where the broker did hold them.
    ///
    /// A failed attempt (the delivery timeout passed while the broker was away, a
    /// connection refused, ...) is retried after a backoff for as long as it takes; only a
    /// refusal that no retry can change, or the shutdown, ends the wait without delivery.
    async fn deliver(
        &self,
        mut producer: Arc<Producer>,
        mut pending: Pending,
        mut carried: Option<krafka::KrafkaError>,
    ) -> Outcome {
        let mut backoff = Backoff::new(self.retry.0, self.retry.1);
        let mut resends = 0;
        loop {
            let mut again = Vec::new();
            let mut no_offset = None;
            let mut trouble = carried.take();
            for (mut r, h) in pending {
                let Some(h) = h else {
                    again.push(r);
                    continue;
                };
                match h.await {
                    Ok(md) if md.is_success() => {}
                    Ok(md) => {
                        r.partition = Some(md.partition);
                        no_offset.get_or_insert(md.delivery);
                        again.push(r);
                    }
                    Err(e) => {
                        if let (Remedy::Stop(key), label) = remedy(&e) {
                            self.metrics.error(label, "sending");
                            return Outcome::Failed(self.refusal(key, &e));
                        }
                        trouble.get_or_insert(e);
                        again.push(r);
                    }
                }
            }
            if again.is_empty() {
                self.down.store(false, Ordering::Relaxed);
                return Outcome::Delivered;
            }
            if self.shutdown.is_triggered() {
                return Outcome::Stopped;
            }
            match &trouble {
                None => {
                    // Every record was answered; some without an offset.
                    if resends == MAX_RESENDS {
                        self.metrics.error("no_offset", "sending");
                        return Outcome::Failed(format!(
                            "{} records were not acknowledged with an offset after \
                             {MAX_RESENDS} resends (last answer {no_offset:?})",
                            again.len()
                        ));
                    }
                    resends += 1;
                    self.metrics.retries.inc();
                    tracing::warn!(
                        "{}: the broker acknowledged {} records without an offset \
                         ({no_offset:?}): sending them again",
                        self.who,
                        again.len()
                    );
                }
                Some(e) => {
                    self.down.store(true, Ordering::Relaxed);
                    let (what, label) = remedy(e);
                    self.metrics.error(label, "sending");
                    self.metrics.retries.inc();
                    let delay = backoff.next_delay(None);
                    tracing::warn!(
                        "{}: {} records not delivered ({e}); sending them again in {delay:?}",
                        self.who,
                        again.len()
                    );
                    if !self.sleep(delay).await {
                        return Outcome::Stopped;
                    }
                    if what == Remedy::Rebuild {
                        let built = tokio::select! {
                            r = self.link.rebuild(&producer) => r,
                            () = self.shutdown.wait() => return Outcome::Stopped,
                        };
                        if let Err(e) = built {
                            if let (Remedy::Stop(key), label) = remedy(&e) {
                                self.metrics.error(label, "sending");
                                return Outcome::Failed(self.refusal(key, &e));
                            }
                            // The broker is away: try again after the next backoff.
                            pending = again.into_iter().map(|r| (r, None)).collect();
                            carried = Some(krafka::KrafkaError::closed(format!(
                                "a new producer could not connect: {e}"
                            )));
                            continue;
                        }
                    }
                }
            }
            producer = self.link.get();
            pending = Vec::with_capacity(again.len());
            let mut rest = again.into_iter();
            for r in rest.by_ref() {
                match producer.inner.enqueue(r.clone()).await {
                    Ok(h) => pending.push((r, Some(h))),
                    Err(e) => {
                        if let (Remedy::Stop(key), label) = remedy(&e) {
                            self.metrics.error(label, "sending");
                            return Outcome::Failed(self.refusal(key, &e));
                        }
                        pending.push((r, None));
                        carried = Some(e);
                        break;
                    }
                }
            }
            pending.extend(rest.map(|r| (r, None)));
        }
    }
}

/// The running sink.
struct KafkaSink {
    rt: tokio::runtime::Runtime,
    courier: Arc<Courier>,
    topic: Template,
    key_field: Option<String>,
    slots: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
    /// `max_message_bytes`.
    max_message: usize,
    /// Topics a template named, and whether the cluster has them.
    topics: std::collections::HashMap<String, TopicState>,
    /// The refusal that stopped the sink, from a delivery task.
    failed: Arc<Mutex<Option<String>>>,
    name: String,
    /// The run's dead letter, for events that cannot become records.
    outlet: crate::runtime::DeadLetterOutlet,
}

impl KafkaSink {
    /// Whether the cluster has `topic` (a name a template made), asking it once per name
    /// (a missing one, or one it could not answer for, again after [`TOPIC_RECHECK`]). When
    /// the cluster cannot be asked (the broker is away), the answer is yes: the records then
    /// wait in the producer's retries like any other, instead of going to the dead letter.
    ///
    /// Cost: a map lookup; one metadata request (at most [`TOPIC_CHECK`]) per name and
    /// [`TOPIC_RECHECK`].
    fn topic_exists(&mut self, topic: &str) -> bool {
        match self.topics.get(topic) {
            Some(TopicState::Exists) => return true,
            Some(TopicState::Missing(at)) if at.elapsed() < TOPIC_RECHECK => return false,
            Some(TopicState::Undecided(at)) if at.elapsed() < TOPIC_RECHECK => return true,
            _ => {}
        }
        let producer = self.courier.link.get();
        let asked = self.rt.block_on(async {
            let options = krafka::admin::DescribeTopicsOptions::default().timeout(TOPIC_CHECK);
            tokio::time::timeout(
                TOPIC_CHECK,
                producer.admin.describe_topics([topic], options),
            )
            .await
        });
        let now = std::time::Instant::now();
        let state = match asked {
            Ok(Ok(answers)) => match answers.get(topic) {
                Some(Ok(_)) => TopicState::Exists,
                Some(Err(krafka::KrafkaError::Broker {
                    code: krafka::error::ErrorCode::UnknownTopicOrPartition,
                    ..
                })) => TopicState::Missing(now),
                // No answer for it, or another error: not decided here.
                _ => TopicState::Undecided(now),
            },
            _ => TopicState::Undecided(now),
        };
        if self.topics.len() >= TOPICS_KEPT {
            self.topics.clear();
        }
        self.topics.insert(topic.to_string(), state);
        !matches!(state, TopicState::Missing(_))
    }

    /// Hands the events that cannot become records to the run's dead letter, each with its
    /// reason, and notes them on `ack`; false when it refused them (no dead letter, or it
    /// stopped), and the batch must stay unacknowledged.
    fn dead_letter(&self, ack: &Ack, dead: &[(Unsendable, Origin<'_>)]) -> bool {
        for what in [
            Unsendable::TooLarge,
            Unsendable::NoTopic,
            Unsendable::BadTopic,
            Unsendable::NoSuchTopic,
        ] {
            let events: Vec<Origin<'_>> = dead
                .iter()
                .filter(|(w, _)| *w == what)
                .map(|&(_, o)| o)
                .collect();
            if events.is_empty() {
                continue;
            }
            let why = match what {
                Unsendable::TooLarge => format!(
                    "kafka: message_too_large: the event is larger than max_message_bytes ({})",
                    self.max_message
                ),
                Unsendable::NoTopic => "kafka: topic_field_missing: the event lacks a field the \
                     `topic` template names, or it is null, an object or an array"
                    .into(),
                Unsendable::BadTopic => "kafka: topic_invalid: the `topic` template makes a name \
                     Kafka refuses (1 to 249 of a-z A-Z 0-9 . _ -)"
                    .into(),
                Unsendable::NoSuchTopic => "kafka: topic_unknown: the `topic` template names a \
                     topic the cluster does not have"
                    .into(),
            };
            let why = why.as_str();
            if !self
                .outlet
                .send(&self.name, why, events.iter().copied(), ack.token())
            {
                tracing::error!(
                    "{}: {} events cannot be sent ({why}) and no dead letter takes them; \
                     their batch stays unacknowledged",
                    self.courier.who,
                    events.len()
                );
                self.courier.metrics.error("no_dead_letter", "sending");
                return false;
            }
            let bytes = events.iter().map(|e| e.0.len() as u64).sum();
            ack.dead_lettered(events.len() as u64, bytes);
        }
        true
    }

    fn check_failed(&self) -> Result<()> {
        match self.failed.lock().map(|f| f.clone()) {
            Ok(Some(e)) => Err(Error::new(Kind::Sink, format!("{}: {e}", self.courier.who))),
            _ => Ok(()),
        }
    }

    /// Waits until no batch is in flight, or the shutdown.
    fn wait_idle(&self) {
        let n = self.max_in_flight as u32;
        let slots = self.slots.clone();
        let shutdown = self.courier.shutdown.clone();
        self.rt.block_on(async {
            tokio::select! {
                p = slots.acquire_many(n) => drop(p),
                () = shutdown.wait() => {}
            }
        });
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        self.check_failed()?;
        let courier = self.courier.clone();
        let who = &courier.who;
        let mut records = Vec::with_capacity(out.len());
        // Events that cannot become records, with the reason.
        let mut dead = Vec::new();
        for ev in out.iter() {
            let origin = (ev.bytes, ev.line, ev.offset);
            if ev.bytes.len() > self.max_message {
                dead.push((Unsendable::TooLarge, origin));
                continue;
            }
            let Some(topic) = self.topic.render(&ev) else {
                dead.push((Unsendable::NoTopic, origin));
                continue;
            };
            if !self.topic.is_static() && !valid_topic(&topic) {
                dead.push((Unsendable::BadTopic, origin));
                continue;
            }
            if !self.topic.is_static() && !self.topic_exists(&topic) {
                dead.push((Unsendable::NoSuchTopic, origin));
                continue;
            }
            let mut r = krafka::Record::new(topic, bytes::Bytes::copy_from_slice(ev.bytes));
            if let Some(f) = &self.key_field
                && let Some(k) = field_text(&ev, f)
            {
                r = r.key(k);
            }
            records.push(r);
        }
        let ack: Ack = out.ack();
        if !self.dead_letter(&ack, &dead) {
            ack.failed();
            return Ok(Flow::Continue);
        }
        if records.is_empty() {
            ack.delivered();
            return Ok(Flow::Continue);
        }
        if self.courier.shutdown.is_triggered() && self.courier.down.load(Ordering::Relaxed) {
            // Stopping while the broker is away: the batch stays unacknowledged (replayed
            // after a restart) rather than hold the drain for a delivery timeout.
            ack.failed();
            return Ok(Flow::Continue);
        }
        // A slot per batch in flight, kept while it is retried: the bound on what waits.
        // Given up like the above when the shutdown comes while waiting.
        let slots = self.slots.clone();
        let permit = self.rt.block_on(async {
            tokio::select! {
                p = slots.acquire_owned() => Some(p),
                () = self.courier.given_up() => None,
            }
        });
        let Some(permit) = permit else {
            ack.failed();
            return Ok(Flow::Continue);
        };
        let permit = permit.map_err(|e| Error::new(Kind::Sink, format!("{who}: {e}")))?;
        // Enqueue in order on this thread, so produce order is batch order. Each record is
        // kept (its value's bytes shared, its topic name copied) until the broker gave it an
        // offset, in case it must be sent again.
        let producer = self.courier.link.get();
        let mut pending = Vec::with_capacity(records.len());
        let mut carried = None;
        let mut rest = records.into_iter();
        for r in rest.by_ref() {
            let queued = self.rt.block_on(async {
                tokio::select! {
                    q = producer.inner.enqueue(r.clone()) => Some(q),
                    () = self.courier.given_up() => None,
                }
            });
            let Some(queued) = queued else {
                // Enqueue is cancel safe: nothing of this record was queued.
                ack.failed();
                return Ok(Flow::Continue);
            };
            match queued {
                Ok(h) => pending.push((r, Some(h))),
                Err(e) => {
                    if let (Remedy::Stop(key), label) = remedy(&e) {
                        self.courier.metrics.error(label, "sending");
                        ack.failed();
                        return Err(Error::new(
                            Kind::Sink,
                            format!("{who}: {}", self.courier.refusal(key, &e)),
                        ));
                    }
                    // The delivery task retries these.
                    pending.push((r, None));
                    carried = Some(e);
                    break;
                }
            }
        }
        pending.extend(rest.map(|r| (r, None)));
        let courier = self.courier.clone();
        let failed = self.failed.clone();
        self.rt.spawn(async move {
            let _permit = permit;
            match courier.deliver(producer, pending, carried).await {
                Outcome::Delivered => ack.delivered(),
                Outcome::Stopped => ack.failed(),
                Outcome::Failed(e) => {
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(e);
                    }
                    ack.failed();
                }
            }
        });
        Ok(Flow::Continue)
    }

    fn flush(&mut self) -> Result<()> {
        // Wait until every batch in flight was acknowledged (or failed).
        self.wait_idle();
        self.check_failed()
    }

    fn finish(&mut self, _stats: &crate::pipeline::Stats) -> Result<()> {
        self.wait_idle();
        // After a shutdown, batches may still be in flight: the close sends what is queued,
        // and the tasks end (those waiting to retry stop at once, their batches
        // unacknowledged); waiting for their slots lets the delivered ones resolve before
        // the runtime goes.
        let producer = self.courier.link.get();
        let n = self.max_in_flight as u32;
        let slots = self.slots.clone();
        self.rt.block_on(async move {
            let _ = producer.inner.close().await;
            drop(slots.acquire_many(n).await);
        });
        self.check_failed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krafka::KrafkaError as K;
    use krafka::error::ErrorCode as C;

    #[test]
    fn transient_failures_retry_and_refusals_name_the_setting() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let retry = [
            K::network(io),
            K::timeout("produce"),
            K::delivery_timeout(true, "not acknowledged within delivery_timeout"),
            K::broker(C::NotLeaderForPartition, "moved"),
            K::broker(C::RequestTimedOut, "slow"),
        ];
        for e in &retry {
            assert_eq!(remedy(e).0, Remedy::Retry, "{e}");
        }
        for e in [
            K::fenced("another producer"),
            K::closed("closed"),
            K::broker(C::InvalidProducerEpoch, "epoch"),
            K::broker(C::UnknownProducerId, "forgotten"),
        ] {
            assert_eq!(remedy(&e).0, Remedy::Rebuild, "{e}");
        }
        for (e, key) in [
            (K::auth("SASL failed"), Some("brokers")),
            (
                K::broker(C::ClusterAuthorizationFailed, "no"),
                Some("brokers"),
            ),
            (K::unknown_topic("nope"), Some("topic")),
            (K::broker(C::UnknownTopicOrPartition, "nope"), Some("topic")),
            (K::broker(C::TopicAuthorizationFailed, "no"), Some("topic")),
            (
                K::broker(C::UnsupportedCompressionType, "zstd"),
                Some("compression"),
            ),
            (K::broker(C::MessageTooLarge, "big"), None),
            (K::config("bad"), None),
        ] {
            assert_eq!(remedy(&e).0, Remedy::Stop(key), "{e}");
        }
    }

    #[test]
    fn field_text_decodes_strings_and_keeps_scalars_as_written() {
        let bytes =
            br#"{"s":"a\u00e9\"b","n":1.5e3,"t":true,"z":null,"o":{"k":"v"},"a":[1],"d.e":"dot"}"#;
        let ev = crate::sink::OutEvent::scanned(bytes);
        let text = |p: &str| field_text(&ev, p);
        assert_eq!(text("s").as_deref(), Some("a\u{e9}\"b"));
        assert_eq!(text("n").as_deref(), Some("1.5e3"));
        assert_eq!(text("t").as_deref(), Some("true"));
        assert_eq!(text("o.k").as_deref(), Some("v"));
        assert_eq!(text(r"d\.e").as_deref(), Some("dot"));
        for none in ["z", "o", "a", "missing", "s.x"] {
            assert_eq!(text(none), None, "{none}");
        }
        let t = Template::parse("logs-{{ o.k }}-{{ t }}").unwrap();
        assert_eq!(t.render(&ev).as_deref(), Some("logs-v-true"));
        assert_eq!(Template::parse("x-{{ z }}").unwrap().render(&ev), None);
    }

    #[test]
    fn topic_names_kafka_accepts() {
        for ok in ["out", "a.b_c-D9", &"t".repeat(249)] {
            assert!(valid_topic(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "caf\u{e9}",
            &"t".repeat(250),
            "a\nb",
        ] {
            assert!(!valid_topic(bad), "{bad:?}");
        }
    }

    #[test]
    fn timeouts_are_checked_at_build() {
        let tmp = std::env::temp_dir();
        let cx = crate::config::BuildContext::new(
            "k",
            &tmp,
            &tmp,
            crate::metrics::Metrics::new(),
            Shutdown::new(),
        );
        let c: KafkaSinkConfig = toml::from_str(
            "brokers = [\"127.0.0.1:1\"]\ntopic = \"t\"\nrequest_timeout_ms = 1000\n\
             delivery_timeout_ms = 1000",
        )
        .unwrap();
        let e = c.build(&cx).err().expect("too short").to_string();
        assert!(
            e.contains("sinks.k") && e.contains("`delivery_timeout_ms`"),
            "{e}"
        );
        let c: KafkaSinkConfig = toml::from_str(
            "brokers = [\"127.0.0.1:1\"]\ntopic = \"t\"\nretry_initial_ms = 10\nretry_max_ms = 5",
        )
        .unwrap();
        let e = c.build(&cx).err().expect("max below initial").to_string();
        assert!(e.contains("`retry_max_ms`"), "{e}");
        for key in [
            "request_timeout_ms",
            "delivery_timeout_ms",
            "retry_initial_ms",
            "retry_max_ms",
        ] {
            let c: KafkaSinkConfig = toml::from_str(&format!(
                "brokers = [\"127.0.0.1:1\"]\ntopic = \"t\"\n{key} = {}",
                i64::MAX
            ))
            .unwrap();
            let e = c.build(&cx).err().expect("out of range").to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
        for (key, line) in [
            ("max_message_bytes", "topic = \"t\"\nmax_message_bytes = 0"),
            (
                "max_message_bytes",
                "topic = \"t\"\nmax_message_bytes = 104857601",
            ),
            ("topic", "topic = \"a b\""),
        ] {
            let c: KafkaSinkConfig =
                toml::from_str(&format!("brokers = [\"127.0.0.1:1\"]\n{line}")).unwrap();
            let e = c.build(&cx).err().expect(line).to_string();
            assert!(e.contains(&format!("`{key}`")), "{line}: {e}");
        }
    }
}
