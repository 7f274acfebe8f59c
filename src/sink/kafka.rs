//! Kafka sink: an idempotent producer (acks=all by default). Each batch's [`Ack`] is held
//! until the broker acknowledged every message of it; only then is it delivered. A message's
//! value is the event's bytes, unchanged.
//!
//! The client (krafka, pinned) stays behind [`Producer`], a thin private type.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Kind, Result};
use crate::sink::{Ack, Flow, Output, Sink};

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
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::new(Kind::Config, format!("{who}: runtime: {e}")))?;
        let producer = rt.block_on(Producer::connect(self)).map_err(|e| {
            bad(
                "brokers",
                format!("cannot connect to {}: {e}", self.brokers.join(",")),
            )
        })?;
        Ok(Box::new(KafkaSink {
            rt,
            producer: Arc::new(producer),
            topic,
            key_field: self.key_field.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(self.max_in_flight)),
            max_in_flight: self.max_in_flight,
            shutdown: cx.shutdown.clone(),
            failed: Arc::new(std::sync::Mutex::new(None)),
            who,
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

    fn render(&self, event: Option<&serde_json::Value>) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&field_text(event?, f)?),
            }
        }
        Some(out)
    }
}

/// The text of a dotted field path in an event: strings as is, other scalars as JSON.
fn field_text(v: &serde_json::Value, path: &str) -> Option<String> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    match cur {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null | serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
            None
        }
        other => Some(other.to_string()),
    }
}

/// The only place krafka's producer appears.
struct Producer {
    inner: krafka::producer::Producer,
}

impl Producer {
    async fn connect(c: &KafkaSinkConfig) -> std::result::Result<Self, krafka::KrafkaError> {
        let kafka = krafka::Kafka::builder(c.brokers.join(","))
            .client_id("sluicebox")
            .connect()
            .await?;
        let inner = kafka
            .producer()
            .acks(krafka::producer::Acks::All)
            .idempotent(true)
            .compression(match c.compression {
                Compression::None => krafka::Compression::None,
                Compression::Gzip => krafka::Compression::Gzip,
                Compression::Snappy => krafka::Compression::Snappy,
                Compression::Lz4 => krafka::Compression::Lz4,
            })
            .linger(Duration::from_millis(5))
            .build()
            .await?;
        Ok(Self { inner })
    }
}

/// How many times the records of a batch the broker did not give an offset are sent again
/// before the batch counts as failed.
const MAX_RESENDS: u32 = 5;

/// Waits until the broker acknowledged every record of a batch with an offset.
///
/// An offset is the only proof that the broker holds a record. krafka also reports success
/// (`DeliveryConfirmation::Deduplicated`, offset -1) when a retried batch is answered
/// `DUPLICATE_SEQUENCE_NUMBER`: the broker says an earlier attempt of that batch was
/// written. Tansu 0.6.0 on S3 says so for batches it does not hold: its produce path
/// records the producer's sequence before it stores the batch, so a broker stopped in
/// between (SIGTERM, measured) refuses the retry as a duplicate of records that were never
/// stored. Taking that answer as delivery lost 7 to 17 of 2,250 events in 4 of 9 restarts
/// of the output broker (`cli/tests/kafka.rs`, `SLUICEBOX_KAFKA_RESTART_OUTPUT=1`). Such
/// records are sent again (new sequence numbers, same partition) until each has an offset:
/// no loss, at the cost of a duplicate where the broker did hold them. A resent record
/// lands after the records enqueued since, so order is kept per batch, not across a resend.
async fn confirm(
    producer: &Producer,
    mut sent: Vec<(krafka::Record, krafka::producer::DeliveryHandle)>,
    who: &str,
) -> std::result::Result<(), String> {
    let mut resends = 0;
    loop {
        let mut again = Vec::new();
        for (mut r, h) in sent {
            let md = h.await.map_err(|e| e.to_string())?;
            if !md.is_success() {
                r.partition = Some(md.partition);
                again.push((r, md.delivery));
            }
        }
        if again.is_empty() {
            return Ok(());
        }
        if resends == MAX_RESENDS {
            return Err(format!(
                "{} records were not acknowledged with an offset after {MAX_RESENDS} resends \
                 (last answer {:?})",
                again.len(),
                again[0].1
            ));
        }
        tracing::warn!(
            "{who}: the broker acknowledged {} records without an offset ({:?}): sending them \
             again",
            again.len(),
            again[0].1
        );
        resends += 1;
        sent = Vec::with_capacity(again.len());
        for (r, _) in again {
            let h = producer
                .inner
                .enqueue(r.clone())
                .await
                .map_err(|e| format!("produce: {e}"))?;
            sent.push((r, h));
        }
    }
}

/// The running sink.
struct KafkaSink {
    rt: tokio::runtime::Runtime,
    producer: Arc<Producer>,
    topic: Template,
    key_field: Option<String>,
    slots: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
    shutdown: crate::source::Shutdown,
    failed: Arc<std::sync::Mutex<Option<String>>>,
    who: String,
}

impl KafkaSink {
    fn check_failed(&self) -> Result<()> {
        match self.failed.lock().map(|f| f.clone()) {
            Ok(Some(e)) => Err(Error::new(Kind::Sink, format!("{}: {e}", self.who))),
            _ => Ok(()),
        }
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, out: &Output<'_>) -> Result<Flow> {
        self.check_failed()?;
        let need_json = !self.topic.is_static() || self.key_field.is_some();
        let mut records = Vec::with_capacity(out.len());
        for ev in out.iter() {
            let parsed = if need_json {
                serde_json::from_slice::<serde_json::Value>(ev.bytes).ok()
            } else {
                None
            };
            let topic = self.topic.render(parsed.as_ref()).ok_or_else(|| {
                Error::new(
                    Kind::Sink,
                    format!(
                        "{}: key `topic`: an event (line {}) lacks a field the template names",
                        self.who, ev.line
                    ),
                )
            })?;
            let mut r = krafka::Record::new(topic, bytes::Bytes::copy_from_slice(ev.bytes));
            if let (Some(f), Some(p)) = (&self.key_field, &parsed)
                && let Some(k) = field_text(p, f)
            {
                r = r.key(k);
            }
            records.push(r);
        }
        let ack: Ack = out.ack();
        let producer = self.producer.clone();
        let slots = self.slots.clone();
        let failed = self.failed.clone();
        let permit = self
            .rt
            .block_on(slots.acquire_owned())
            .map_err(|e| Error::new(Kind::Sink, format!("{}: {e}", self.who)))?;
        // Enqueue in order on this thread, so produce order is batch order. Each record is
        // kept (its value's bytes shared, its topic name copied) until the broker gave it an
        // offset, in case it must be sent again.
        let mut sent = Vec::with_capacity(records.len());
        for r in records {
            match self.rt.block_on(producer.inner.enqueue(r.clone())) {
                Ok(h) => sent.push((r, h)),
                Err(e) => {
                    ack.failed();
                    return Err(Error::new(
                        Kind::Sink,
                        format!("{}: produce: {e}", self.who),
                    ));
                }
            }
        }
        let who = self.who.clone();
        self.rt.spawn(async move {
            let _permit = permit;
            // The producer's delivery timeout bounds each wait.
            match confirm(&producer, sent, &who).await {
                Ok(()) => ack.delivered(),
                Err(e) => {
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert_with(|| format!("delivery failed: {e}"));
                    }
                    ack.failed();
                }
            }
        });
        Ok(Flow::Continue)
    }

    fn flush(&mut self) -> Result<()> {
        // Wait until every batch in flight was acknowledged (or failed).
        let n = self.max_in_flight as u32;
        let slots = self.slots.clone();
        let shutdown = self.shutdown.clone();
        self.rt.block_on(async {
            tokio::select! {
                p = slots.acquire_many(n) => drop(p),
                _ = shutdown.wait() => {}
            }
        });
        self.check_failed()
    }

    fn finish(&mut self, _stats: &crate::pipeline::Stats) -> Result<()> {
        self.flush()?;
        let _ = self.rt.block_on(self.producer.inner.close());
        Ok(())
    }
}
