//! One worker thread's work on a batch: parse it once, run it down its source's plan (each
//! transform on its own copy where the graph forks), and hand the results to the router:
//! one delivery per sink edge, and the dead letters of every step.

use std::sync::Arc;

use crate::batch::{Batch, DeadLetter, EventMeta};
use crate::error::Result;
use crate::filter::Filter;
use crate::metrics::ComponentMetrics;
use crate::pipeline::{PipelineConfig, Stage};

use super::graph::{PlanEdge, PlanTarget, SourcePlan};

/// Which events of a shared batch a sink takes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Select {
    /// Every live event.
    All,
    /// Only the events routed to this batch-local route id (`EventMeta::route`).
    Route(u32),
}

/// A batch shared by the sinks that take (some of) its events. When the last holder drops
/// it, the batch goes back to the pool and its acknowledgement token is released.
pub(crate) struct Shared {
    pub(crate) batch: Batch,
    pool: crossbeam_channel::Sender<Batch>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut b = std::mem::take(&mut self.batch);
        let token = b.token.take();
        b.clear();
        // A full pool: the batch is simply freed.
        let _ = self.pool.try_send(b);
        drop(token);
    }
}

/// Events for one sink.
pub(crate) struct Delivery {
    pub(crate) sink: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) select: Select,
}

/// Dead letters rendered as NDJSON, for the dead-letter sink, with the batch's token.
pub(crate) struct DeadBatch {
    pub(crate) text: Vec<u8>,
    pub(crate) metas: Vec<EventMeta>,
    pub(crate) token: Option<crate::ack::AckToken>,
    pub(crate) count: u64,
    /// The first few letters themselves (at most [`crate::pipeline::REPORT_DEAD_LETTERS`] of
    /// each component's), for a run that keeps them in its report instead of writing them.
    pub(crate) first: Vec<DeadLetter>,
}

/// What a worker hands the router for one source batch.
pub(crate) struct Processed {
    pub(crate) source: usize,
    pub(crate) seq: u64,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) dead: Option<DeadBatch>,
    /// A fatal error of a component (a filter's breaker tripped).
    pub(crate) error: Option<(String, crate::Error)>,
    /// Bytes of the source's budget the batch holds until the caller has written it (the
    /// caller-driven mode; 0 when its acknowledgement gives them back).
    pub(crate) held: u64,
}

/// A worker's state for one source: the parser and its own instances of the plan's filters.
pub(crate) struct SourceRunner {
    pub(crate) plan: Arc<SourcePlan>,
    config: PipelineConfig,
    stage: Stage,
    /// Names of the transforms per plan node.
    names: Vec<Arc<str>>,
    source_name: Arc<str>,
    source_metrics: ComponentMetrics,
    node_metrics: Vec<ComponentMetrics>,
    pool: crossbeam_channel::Sender<Batch>,
    /// A graph's plan or a single chain's (see [`Shape`]).
    shape: Shape,
}

/// What the plan is, for what the single chain of [`crate::Pipeline::run`] keeps as it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A graph: dead letters name their `component`, `source` and `stream`, then give the
    /// letter's own fields; each transform sees its input's events unrouted.
    #[default]
    Graph,
    /// One chain of filters: dead letters are the letter's own fields (`reason`, `line`,
    /// `offset`, `filter`, `raw`: user tests compare them line by line); a route an earlier
    /// filter set stays on the event through the later ones, up to the sink; an edited
    /// event checked again names the filter that edited it.
    Chain,
}

/// A new filter instance for plan node `node` of a worker's source runner `runner`, built
/// off the worker thread (see [`super::Swapper`]).
pub(crate) struct Swap {
    pub(crate) runner: usize,
    pub(crate) node: usize,
    pub(crate) filter: Box<dyn Filter>,
}

/// The runtime's view of a transform: its name and its filter prototype (forked per worker
/// and per plan node; or lent to the one runner of the caller-driven mode, once).
pub(crate) struct TransformProto {
    pub(crate) name: Arc<str>,
    pub(crate) filter: Option<Box<dyn Filter>>,
    pub(crate) metrics: ComponentMetrics,
}

impl SourceRunner {
    /// A runner of `plan` for the source named `source.0`; `lend`: it takes the
    /// prototypes' filters themselves instead of forks (each at most once).
    pub(crate) fn new(
        config: &PipelineConfig,
        plan: Arc<SourcePlan>,
        transforms: &mut [TransformProto],
        source: (Arc<str>, ComponentMetrics),
        pool: crossbeam_channel::Sender<Batch>,
        shape: Shape,
        lend: bool,
    ) -> Result<Self> {
        let (source_name, source_metrics) = source;
        let mut filters = Vec::with_capacity(plan.nodes.len());
        let mut names = Vec::with_capacity(plan.nodes.len());
        let mut node_metrics = Vec::with_capacity(plan.nodes.len());
        for n in &plan.nodes {
            let t = &mut transforms[n.transform];
            let filter = if lend {
                t.filter.take()
            } else {
                t.filter.as_ref().map(|f| f.fork()).transpose()?
            };
            filters.push(filter.ok_or_else(|| {
                crate::Error::config(format!("transform {}: its filter was lent twice", t.name))
            })?);
            names.push(t.name.clone());
            node_metrics.push(t.metrics.clone());
        }
        Ok(Self {
            stage: Stage::new(config, filters),
            config: config.clone(),
            plan,
            names,
            source_name,
            source_metrics,
            node_metrics,
            pool,
            shape,
        })
    }

    /// The runner's filters, in plan node order (a lent chain's, back to its owner).
    pub(crate) fn into_filters(self) -> Vec<Box<dyn Filter>> {
        self.stage.into_filters()
    }

    /// Puts new filters in place of plan nodes' filters, between two batches: the batches
    /// this runner processed before ran on the old instances, every later one runs on the
    /// new. Costs a new parse stage (the declared fields may have changed).
    pub(crate) fn swap(&mut self, swaps: impl IntoIterator<Item = (usize, Box<dyn Filter>)>) {
        let old = std::mem::replace(&mut self.stage, Stage::new(&self.config, Vec::new()));
        let mut filters = old.into_filters();
        for (node, filter) in swaps {
            if let Some(slot) = filters.get_mut(node) {
                *slot = filter;
            }
        }
        self.stage = Stage::new(&self.config, filters);
    }

    /// Runs one batch from the source down the plan.
    pub(crate) fn process(&mut self, source: usize, mut batch: Batch) -> Processed {
        let seq = batch.seq;
        let mut out = Processed {
            source,
            seq,
            deliveries: Vec::new(),
            dead: None,
            error: None,
            held: 0,
        };
        let mut dead = DeadBatch {
            text: Vec::new(),
            metas: Vec::new(),
            token: batch.token.clone(),
            count: 0,
            first: Vec::new(),
        };
        let framed = batch.stats.received;
        let started = std::time::Instant::now();
        self.stage.parse(&mut batch);
        let m = &self.source_metrics;
        m.parse_seconds.inc_by(started.elapsed().as_secs_f64());
        m.received_events.inc_by(framed);
        m.received_bytes.inc_by(batch.stats.bytes_in);
        m.dead_letters.inc_by(batch.dead.len() as u64);
        m.sent_events.inc_by(batch.events.len() as u64);
        m.sent_event_bytes.inc_by(event_bytes(&batch));
        let name = self.source_name.clone();
        render_dead(
            &mut dead,
            &mut batch.dead,
            (&name, &name, self.shape),
            batch.token.as_ref(),
        );
        let roots = self.plan.roots.clone();
        if let Err(e) = self.fan_out(&roots, batch, None, &mut out, &mut dead) {
            out.error = Some(e);
        }
        if dead.count > 0 {
            out.dead = Some(dead);
        }
        out
    }

    /// Sends `batch` (the output of plan node `from`, or of the source) along `edges`:
    /// sinks share it, each transform child gets its own copy of the events it selects.
    fn fan_out(
        &mut self,
        edges: &[PlanEdge],
        batch: Batch,
        from: Option<usize>,
        out: &mut Processed,
        dead: &mut DeadBatch,
    ) -> std::result::Result<(), (String, crate::Error)> {
        let sinks: Vec<(usize, Option<&str>)> = edges
            .iter()
            .filter_map(|e| match e.to {
                PlanTarget::Sink(k) => Some((k, e.route.as_deref())),
                PlanTarget::Node(_) => None,
            })
            .collect();
        let nodes: Vec<(usize, Option<&str>)> = edges
            .iter()
            .filter_map(|e| match e.to {
                PlanTarget::Node(n) => Some((n, e.route.as_deref())),
                PlanTarget::Sink(_) => None,
            })
            .collect();
        let mut pending: Vec<(usize, Batch)> = Vec::with_capacity(nodes.len());
        let last = nodes.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, &(n, route)) in nodes.iter().enumerate() {
            // The last transform child takes the batch itself unless sinks share it.
            let mut copy = if i == last && sinks.is_empty() {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            copy.dead.clear();
            if self.shape == Shape::Graph || route.is_some() {
                select_in_place(&mut copy, route);
            }
            pending.push((n, copy));
        }
        if let Some(batch) = batch.filter(|_| !sinks.is_empty()) {
            let shared = Arc::new(Shared {
                batch,
                pool: self.pool.clone(),
            });
            for (k, route) in sinks {
                let select = match route {
                    None => Select::All,
                    Some(r) => match route_id(&shared.batch, r) {
                        Some(id) => Select::Route(id),
                        None => continue,
                    },
                };
                out.deliveries.push(Delivery {
                    sink: k,
                    shared: shared.clone(),
                    select,
                });
            }
        }
        for (n, b) in pending {
            self.run_node(n, b, from, out, dead)?;
        }
        Ok(())
    }

    fn run_node(
        &mut self,
        n: usize,
        mut batch: Batch,
        parent: Option<usize>,
        out: &mut Processed,
        dead: &mut DeadBatch,
    ) -> std::result::Result<(), (String, crate::Error)> {
        let before = batch.stats;
        let received = batch.events.len() as u64;
        let m = self.node_metrics[n].clone();
        let m = &m;
        m.received_events.inc_by(received);
        m.received_event_bytes.inc_by(event_bytes(&batch));
        let prev: Option<Arc<str>> = parent.map(|p| match self.shape {
            Shape::Graph => self.names[p].clone(),
            Shape::Chain => Arc::from(self.stage.filter_name(p)),
        });
        let started = std::time::Instant::now();
        let r = self.stage.run_one(n, prev.as_deref(), &mut batch);
        m.wasm_call_seconds.observe(started.elapsed().as_secs_f64());
        m.wasm_calls.inc();
        let s = batch.stats;
        m.wasm_traps
            .inc_by(s.filter_failures - before.filter_failures);
        m.discarded_intentional.inc_by(s.filtered - before.filtered);
        m.dead_letters
            .inc_by(s.dead_lettered - before.dead_lettered);
        m.created.inc_by(s.created - before.created);
        if let Err(e) = r {
            m.error("filter_broken", "processing");
            batch.abandon();
            return Err((self.names[n].to_string(), e));
        }
        let name = self.names[n].clone();
        render_dead(
            dead,
            &mut batch.dead,
            (&name, &self.source_name, self.shape),
            batch.token.as_ref(),
        );
        let edges = self.plan.nodes[n].out.clone();
        // What was sent on is counted after unread routes are dead-lettered.
        let before_unread = batch.events.len();
        let out_edges = edges;
        let count_sent = |b: &Batch, m: &ComponentMetrics| {
            m.sent_events.inc_by(b.events.len() as u64);
            m.sent_event_bytes.inc_by(event_bytes(b));
        };
        let mut b = batch;
        self.dead_letter_unread(&out_edges, &mut b, n, dead);
        let unread = before_unread - b.events.len();
        if unread > 0 {
            m.dead_letters.inc_by(unread as u64);
        }
        count_sent(&b, m);
        self.fan_out(&out_edges, b, Some(n), out, dead)
    }

    /// Dead-letters the events of plan node `node`'s output that no edge reads (routed, or
    /// left unrouted, where nothing listens): an event never vanishes because of the
    /// graph's shape.
    fn dead_letter_unread(
        &mut self,
        edges: &[PlanEdge],
        batch: &mut Batch,
        node: usize,
        dead: &mut DeadBatch,
    ) {
        if edges.iter().any(|e| e.route.is_none()) {
            return;
        }
        let read: Vec<u32> = edges
            .iter()
            .filter_map(|e| e.route.as_deref().and_then(|r| route_id(batch, r)))
            .collect();
        let name = self.names[node].clone();
        let mut letters = Vec::new();
        let raw_max = 64 << 10;
        let routes = batch.routes.clone();
        let data = std::mem::take(&mut batch.data);
        batch.events.retain(|m| {
            if read.contains(&m.route) {
                return true;
            }
            let reason = match (m.route as usize)
                .checked_sub(1)
                .and_then(|r| routes.get(r))
            {
                Some(r) => format!("routed to {name}.{r}, which no component reads"),
                None => format!("not routed by {name}, and no component reads its unrouted events"),
            };
            letters.push(DeadLetter::new(
                reason,
                m.line,
                m.offset,
                Some(&name),
                &data[m.start as usize..(m.start + m.len) as usize],
                raw_max,
            ));
            false
        });
        batch.data = data;
        batch.stats.dead_lettered += letters.len() as u64;
        let token = batch.token.clone();
        render_dead(
            dead,
            &mut letters,
            (&name, &self.source_name, self.shape),
            token.as_ref(),
        );
    }
}

/// The batch-local id of route `name` (`EventMeta::route`), if any event was routed there.
fn route_id(batch: &Batch, name: &str) -> Option<u32> {
    batch
        .routes
        .iter()
        .position(|r| r == name)
        .map(|i| i as u32 + 1)
}

/// Keeps only the events `route` selects, and clears their routes for the next transform.
fn select_in_place(batch: &mut Batch, route: Option<&str>) {
    if let Some(r) = route {
        let id = route_id(batch, r);
        batch.events.retain(|m| Some(m.route) == id);
    }
    for m in &mut batch.events {
        m.route = 0;
    }
    batch.routes.clear();
}

fn event_bytes(batch: &Batch) -> u64 {
    batch.events.iter().map(|m| u64::from(m.len)).sum()
}

/// Appends `letters` to the dead-letter batch as NDJSON objects; in [`Shape::Graph`],
/// naming the component that rejected them (`who.0`) and the source (`who.1`) and stream they
/// came from; in [`Shape::Chain`], the letter's own fields alone.
fn render_dead(
    dead: &mut DeadBatch,
    letters: &mut Vec<DeadLetter>,
    who: (&str, &str, Shape),
    token: Option<&crate::ack::AckToken>,
) {
    if letters.is_empty() {
        return;
    }
    let (component, source, shape) = who;
    letters.sort_by_key(|d| d.line);
    // The first few of each call: together they hold the batch's first few in line order.
    let kept = dead.first.len();
    let stream = token.map(|t| t.stream().key().to_string());
    for d in letters.drain(..) {
        let start = dead.text.len();
        if shape == Shape::Graph {
            dead.text.extend_from_slice(b"{\"component\":");
            json_str(component, &mut dead.text);
            dead.text.extend_from_slice(b",\"source\":");
            json_str(source, &mut dead.text);
            if let Some(s) = &stream {
                dead.text.extend_from_slice(b",\"stream\":");
                json_str(s, &mut dead.text);
            }
            dead.text.push(b',');
            let at = dead.text.len();
            d.to_json(&mut dead.text);
            // to_json wrote a whole object: drop its opening brace.
            dead.text.remove(at);
        } else {
            d.to_json(&mut dead.text);
        }
        dead.metas.push(EventMeta {
            start: start as u32,
            len: (dead.text.len() - start) as u32,
            line: d.line,
            offset: d.offset,
            changed: true,
            ..Default::default()
        });
        dead.count += 1;
        if dead.first.len() - kept < crate::pipeline::REPORT_DEAD_LETTERS {
            dead.first.push(d);
        }
    }
}

fn json_str(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
