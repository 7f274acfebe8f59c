//! Per-component metrics, with Vector's metric names and labels (`component_id`,
//! `component_kind`, `component_type`) so existing dashboards work, plus sluicebox's own.
//! Rendered as Prometheus/OpenMetrics text by [`Metrics::render`] (the `/metrics` endpoint).
//!
//! Counters are updated once per batch by the stage that handled it, never per event.
//! The library installs no global recorder: each running topology owns its [`Metrics`].
//!
//! Cost: each component caches its counter handles; an update is an atomic add.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component_id: String,
    component_kind: String,
    component_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiscardLabels {
    component_id: String,
    component_kind: String,
    component_type: String,
    intentional: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    component_id: String,
    component_kind: String,
    component_type: String,
    error_type: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    component_id: String,
    stream: String,
}

/// One Kafka partition of a component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    component_id: String,
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    component_id: String,
    status_class: String,
}

fn commit_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(1e-3, 2.0, 15))
}

fn call_histogram() -> Histogram {
    // 1 µs to about 1 s.
    Histogram::new(exponential_buckets(1e-6, 4.0, 11))
}

/// Every metric family of a run.
struct Families {
    received_events: Family<ComponentLabels, Counter>,
    received_event_bytes: Family<ComponentLabels, Counter>,
    received_bytes: Family<ComponentLabels, Counter>,
    sent_events: Family<ComponentLabels, Counter>,
    sent_event_bytes: Family<ComponentLabels, Counter>,
    discarded: Family<DiscardLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    dead_letters: Family<ComponentLabels, Counter>,
    buffer_bytes: Family<ComponentLabels, Gauge>,
    buffer_events: Family<ComponentLabels, Gauge>,
    wasm_calls: Family<ComponentLabels, Counter>,
    wasm_traps: Family<ComponentLabels, Counter>,
    wasm_call_seconds: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    checkpoint_lag: Family<StreamLabels, Gauge>,
    retries: Family<ComponentLabels, Counter>,
    up: Family<ComponentLabels, Gauge>,
    es_items: Family<ClassLabels, Counter>,
    encode_seconds: Family<ComponentLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    parse_seconds: Family<ComponentLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    kafka_lag: Family<PartitionLabels, Gauge>,
    kafka_committed: Family<PartitionLabels, Gauge>,
    kafka_commit_seconds: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    created: Family<ComponentLabels, Counter>,
    reloads: Counter,
    reload_failures: Counter,
}

/// The metrics of one running topology (a [`crate::Pipeline`] keeps one set across its
/// runs, which nothing reads). Cheap to clone (an `Arc`); `Send + Sync`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

struct MetricsInner {
    registry: Mutex<Registry>,
    f: Families,
    /// `(id, kind, type)` of every component asked for.
    components: Mutex<Vec<(String, String, String)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all families registered.
    pub fn new() -> Self {
        let f = Families {
            received_events: Family::default(),
            received_event_bytes: Family::default(),
            received_bytes: Family::default(),
            sent_events: Family::default(),
            sent_event_bytes: Family::default(),
            discarded: Family::default(),
            errors: Family::default(),
            dead_letters: Family::default(),
            buffer_bytes: Family::default(),
            buffer_events: Family::default(),
            wasm_calls: Family::default(),
            wasm_traps: Family::default(),
            wasm_call_seconds: Family::new_with_constructor(call_histogram),
            checkpoint_lag: Family::default(),
            retries: Family::default(),
            up: Family::default(),
            es_items: Family::default(),
            encode_seconds: Family::default(),
            parse_seconds: Family::default(),
            kafka_lag: Family::default(),
            kafka_committed: Family::default(),
            kafka_commit_seconds: Family::new_with_constructor(commit_histogram),
            created: Family::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
        };
        let mut r = Registry::default();
        r.register(
            "component_received_events",
            "Events a component received",
            f.received_events.clone(),
        );
        r.register(
            "component_received_event_bytes",
            "Bytes of the events a component received",
            f.received_event_bytes.clone(),
        );
        r.register(
            "component_received_bytes",
            "Raw bytes a source read",
            f.received_bytes.clone(),
        );
        r.register(
            "component_sent_events",
            "Events a component sent on (sinks: after successful delivery)",
            f.sent_events.clone(),
        );
        r.register(
            "component_sent_event_bytes",
            "Bytes of the events a component sent on",
            f.sent_event_bytes.clone(),
        );
        r.register(
            "component_discarded_events",
            "Events a component discarded (intentional: a filter dropped them)",
            f.discarded.clone(),
        );
        r.register(
            "component_errors",
            "Errors of a component",
            f.errors.clone(),
        );
        r.register(
            "dlq_events",
            "Events a component sent to the dead letter",
            f.dead_letters.clone(),
        );
        r.register(
            "buffer_byte_size",
            "Bytes in flight (sources: sent and not yet acknowledged)",
            f.buffer_bytes.clone(),
        );
        r.register(
            "buffer_events",
            "Events waiting in a sink's queue",
            f.buffer_events.clone(),
        );
        r.register(
            "wasm_filter_calls",
            "Calls of a filter (one per batch or isolated part)",
            f.wasm_calls.clone(),
        );
        r.register(
            "wasm_filter_traps",
            "Failed filter calls (trap, deadline, memory cap, bad answer)",
            f.wasm_traps.clone(),
        );
        r.register(
            "wasm_filter_call_seconds",
            "Time a filter spent per batch",
            f.wasm_call_seconds.clone(),
        );
        r.register(
            "source_checkpoint_lag_bytes",
            "Stream positions read but not yet acknowledged",
            f.checkpoint_lag.clone(),
        );
        r.register(
            "component_retries",
            "Requests or items a sink retried",
            f.retries.clone(),
        );
        r.register(
            "component_up",
            "1 while a component runs, 0 once it stopped or failed",
            f.up.clone(),
        );
        r.register(
            "sink_es_items",
            "Elasticsearch bulk items by status class",
            f.es_items.clone(),
        );
        r.register(
            "sink_encode_seconds",
            "Seconds a sink spent turning events into requests and reading the replies, not waiting on the network",
            f.encode_seconds.clone(),
        );
        r.register(
            "source_parse_seconds",
            "Seconds the workers spent validating a source's events (the parse stage), filters not included",
            f.parse_seconds.clone(),
        );
        r.register(
            "kafka_consumer_lag_messages",
            "Messages of a partition past the delivered prefix: high watermark (as last fetched) minus the offset to commit",
            f.kafka_lag.clone(),
        );
        r.register(
            "kafka_consumer_committed_offset",
            "The offset a kafka source last committed for a partition (the end of its delivered prefix)",
            f.kafka_committed.clone(),
        );
        r.register(
            "kafka_consumer_commit_seconds",
            "Time of an offset commit request (periodic, on revoke, at shutdown), failed ones included",
            f.kafka_commit_seconds.clone(),
        );
        r.register(
            "component_created_events",
            "Extra events a flat-map filter made (an event replaced by k events adds k - 1)",
            f.created.clone(),
        );
        r.register(
            "config_reloads",
            "Successful configuration reloads",
            f.reloads.clone(),
        );
        r.register(
            "config_reload_failures",
            "Configuration reloads that failed and were rolled back",
            f.reload_failures.clone(),
        );
        Self {
            inner: Arc::new(MetricsInner {
                registry: Mutex::new(r),
                f,
                components: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The handles of component `id` of `kind` (`source`, `transform`, `sink`) and type
    /// (`file`, `wasm`, `elasticsearch`, …).
    pub fn component(&self, id: &str, kind: &str, ty: &str) -> ComponentMetrics {
        let l = ComponentLabels {
            component_id: id.into(),
            component_kind: kind.into(),
            component_type: ty.into(),
        };
        {
            let mut c = self
                .inner
                .components
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let key = (id.to_string(), kind.to_string(), ty.to_string());
            if !c.contains(&key) {
                c.push(key);
            }
        }
        let f = &self.inner.f;
        let discarded = |yes: bool| {
            f.discarded.get_or_create_owned(&DiscardLabels {
                component_id: id.into(),
                component_kind: kind.into(),
                component_type: ty.into(),
                intentional: yes.to_string(),
            })
        };
        ComponentMetrics {
            metrics: self.clone(),
            labels: l.clone(),
            received_events: f.received_events.get_or_create_owned(&l),
            received_event_bytes: f.received_event_bytes.get_or_create_owned(&l),
            received_bytes: f.received_bytes.get_or_create_owned(&l),
            sent_events: f.sent_events.get_or_create_owned(&l),
            sent_event_bytes: f.sent_event_bytes.get_or_create_owned(&l),
            discarded_intentional: discarded(true),
            discarded_unintentional: discarded(false),
            dead_letters: f.dead_letters.get_or_create_owned(&l),
            buffer_bytes: f.buffer_bytes.get_or_create_owned(&l),
            buffer_events: f.buffer_events.get_or_create_owned(&l),
            wasm_calls: f.wasm_calls.get_or_create_owned(&l),
            wasm_traps: f.wasm_traps.get_or_create_owned(&l),
            wasm_call_seconds: f.wasm_call_seconds.get_or_create_owned(&l),
            retries: f.retries.get_or_create_owned(&l),
            encode_seconds: f.encode_seconds.get_or_create_owned(&l),
            parse_seconds: f.parse_seconds.get_or_create_owned(&l),
            up: f.up.get_or_create_owned(&l),
            created: f.created.get_or_create_owned(&l),
        }
    }

    /// Every component asked for so far, as `(id, kind, handles)`.
    pub fn components(&self) -> Vec<(String, String, ComponentMetrics)> {
        let list = self
            .inner
            .components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        list.into_iter()
            .map(|(id, kind, ty)| {
                let m = self.component(&id, &kind, &ty);
                (id, kind, m)
            })
            .collect()
    }

    /// Counts a finished reload (`ok`) or one that was rolled back.
    pub fn reload(&self, ok: bool) {
        if ok {
            self.inner.f.reloads.inc();
        } else {
            self.inner.f.reload_failures.inc();
        }
    }

    /// Sets the acknowledgement lag of a source's stream, in positions.
    pub fn checkpoint_lag(&self, component: &str, stream: &str, lag: u64) {
        self.inner
            .f
            .checkpoint_lag
            .get_or_create(&StreamLabels {
                component_id: component.into(),
                stream: stream.into(),
            })
            .set(lag.min(i64::MAX as u64) as i64);
    }

    /// Counts Elasticsearch bulk items of a status class (`2xx`, `409`, `429`, `4xx`,
    /// `5xx`).
    pub fn es_items(&self, component: &str, class: &str, n: u64) {
        self.inner
            .f
            .es_items
            .get_or_create(&ClassLabels {
                component_id: component.into(),
                status_class: class.into(),
            })
            .inc_by(n);
    }

    /// Sets a Kafka partition's consumer lag and last committed offset (either may be
    /// unknown yet).
    pub fn kafka_partition(
        &self,
        component: &str,
        topic: &str,
        partition: i32,
        lag: Option<u64>,
        committed: Option<u64>,
    ) {
        let l = PartitionLabels {
            component_id: component.into(),
            topic: topic.into(),
            partition: partition.to_string(),
        };
        if let Some(lag) = lag {
            self.inner
                .f
                .kafka_lag
                .get_or_create(&l)
                .set(lag.min(i64::MAX as u64) as i64);
        }
        if let Some(c) = committed {
            self.inner
                .f
                .kafka_committed
                .get_or_create(&l)
                .set(c.min(i64::MAX as u64) as i64);
        }
    }

    /// Removes a Kafka partition's series (the partition was revoked or lost).
    pub fn kafka_partition_gone(&self, component: &str, topic: &str, partition: i32) {
        let l = PartitionLabels {
            component_id: component.into(),
            topic: topic.into(),
            partition: partition.to_string(),
        };
        self.inner.f.kafka_lag.remove(&l);
        self.inner.f.kafka_committed.remove(&l);
    }

    /// Records the duration of one Kafka offset commit of source `component` (of type
    /// `kafka`).
    pub fn kafka_commit(&self, component: &str, seconds: f64) {
        self.inner
            .f
            .kafka_commit_seconds
            .get_or_create(&ComponentLabels {
                component_id: component.into(),
                component_kind: "source".into(),
                component_type: "kafka".into(),
            })
            .observe(seconds);
    }

    /// The metrics as OpenMetrics text (which Prometheus scrapes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// One component's metric handles. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ComponentMetrics {
    metrics: Metrics,
    labels: ComponentLabels,
    /// `component_received_events_total`.
    pub received_events: Counter,
    /// `component_received_event_bytes_total`.
    pub received_event_bytes: Counter,
    /// `component_received_bytes_total` (sources: raw bytes read).
    pub received_bytes: Counter,
    /// `component_sent_events_total`.
    pub sent_events: Counter,
    /// `component_sent_event_bytes_total`.
    pub sent_event_bytes: Counter,
    /// `component_discarded_events_total{intentional="true"}`.
    pub discarded_intentional: Counter,
    /// `component_discarded_events_total{intentional="false"}`.
    pub discarded_unintentional: Counter,
    /// `dlq_events_total`.
    pub dead_letters: Counter,
    /// `buffer_byte_size`.
    pub buffer_bytes: Gauge,
    /// `buffer_events`.
    pub buffer_events: Gauge,
    /// `wasm_filter_calls_total`.
    pub wasm_calls: Counter,
    /// `wasm_filter_traps_total`.
    pub wasm_traps: Counter,
    /// `wasm_filter_call_seconds`.
    pub wasm_call_seconds: Histogram,
    /// `component_retries_total`.
    pub retries: Counter,
    /// `sink_encode_seconds_total` (sinks that build requests: elasticsearch).
    pub encode_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `source_parse_seconds_total` (sources: the workers' parse stage, two clock reads per
    /// batch).
    pub parse_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `component_up`.
    pub up: Gauge,
    /// `component_created_events_total`.
    pub created: Counter,
}

impl ComponentMetrics {
    /// Counts an error of this component (`error_type` and `stage` are from a small fixed
    /// set, never free text).
    pub fn error(&self, error_type: &str, stage: &str) {
        self.metrics
            .inner
            .f
            .errors
            .get_or_create(&ErrorLabels {
                component_id: self.labels.component_id.clone(),
                component_kind: self.labels.component_kind.clone(),
                component_type: self.labels.component_type.clone(),
                error_type: error_type.into(),
                stage: stage.into(),
            })
            .inc();
    }

    /// The run's metrics this component belongs to.
    pub fn all(&self) -> &Metrics {
        &self.metrics
    }

    /// The component's id.
    pub fn id(&self) -> &str {
        &self.labels.component_id
    }
}
