//! One worker's processing of a batch: parse, then each filter in turn, isolating failures.
//!
//! Failure isolation: when a filter call fails (trap, deadline, memory cap, bad answer), the
//! events are split in halves and each half retried, recursively, until the failing events
//! are alone; those are dead-lettered with the failure's reason, and every other event gets
//! its normal answer. A breaker stops the run after `breaker_threshold` consecutive failed
//! calls with no success between them, so a filter that fails on everything cannot loop.
//!
//! What the host keeps of the parts' answers while it isolates is bounded by
//! [`ISOLATION_KEPT_MAX`] per batch: a module cannot make the host allocate without bound by
//! answering every small part with a huge record stream.

use sluicebox_abi::{self as abi, Verdict};

use crate::batch::{Batch, DeadLetter, Decisions, apply_edits, check_decisions};
use crate::batch::{DecisionError, NO_SLOTS, STALE};
use crate::batch::{EDIT_WORK_PER_BATCH, EDIT_WORK_PER_EVENT};
use crate::error::{Error, Kind, Result};
use crate::filter::Filter;
use crate::parse::index::path_components;
use crate::parse::{Parser, Projection, scalar};
use std::sync::Arc;

use super::PipelineConfig;

pub(crate) struct Stage {
    parser: Parser,
    filters: Vec<Box<dyn Filter>>,
    /// Consecutive failed calls per filter.
    failures: Vec<u32>,
    whole: Decisions,
    part: Decisions,
    ranges: Vec<(usize, usize)>,
    editor: crate::batch::ObjEditor,
    /// The current answer's records, as offsets into its stream (reused across batches).
    recs: Vec<RecordAt>,
    /// Scratch for re-validating an event a RENAME moved deeper.
    depth_check: Vec<u32>,
    top_editor: crate::batch::TopEditor,
    max_depth: usize,
    raw_max: usize,
    breaker: u32,
}

impl Stage {
    pub(crate) fn new(config: &PipelineConfig, filters: Vec<Box<dyn Filter>>) -> Self {
        Self {
            parser: Parser::with_projection(
                config.max_depth,
                config.dead_letter_raw_max,
                Arc::new(Projection::new(
                    filters.iter().flat_map(|f| f.fields().unwrap_or_default()),
                )),
                config.json_engine,
            ),
            failures: vec![0; filters.len()],
            filters,
            whole: Decisions::new(),
            part: Decisions::new(),
            ranges: Vec::new(),
            editor: Default::default(),
            recs: Vec::new(),
            depth_check: Vec::new(),
            top_editor: Default::default(),
            max_depth: config.max_depth,
            raw_max: config.dead_letter_raw_max,
            breaker: config.breaker_threshold,
        }
    }

    /// The name of filter `i`.
    pub(crate) fn filter_name(&self, i: usize) -> &str {
        self.filters[i].name()
    }

    pub(crate) fn into_filters(self) -> Vec<Box<dyn Filter>> {
        self.filters
    }

    /// The parse stage alone (the runtime then runs filters one by one, per graph node).
    pub(crate) fn parse(&mut self, batch: &mut Batch) {
        self.parser.parse_batch(batch);
    }

    /// Runs filter `fi` alone over the batch's live events. `before` names the filter that
    /// ran on them last (its edited events are re-validated first), if any.
    ///
    /// # Errors
    /// [`Kind::FilterBroken`] when the filter's breaker trips; any other error a filter
    /// returns that is not a failure of the call.
    pub(crate) fn run_one(
        &mut self,
        fi: usize,
        before: Option<&str>,
        batch: &mut Batch,
    ) -> Result<()> {
        if batch.events.is_empty() {
            return Ok(());
        }
        if let Some(before) = before {
            batch.refresh_structurals(self.max_depth, before, self.raw_max);
        }
        self.run_filter(fi, batch)?;
        self.apply(fi, batch);
        Ok(())
    }

    /// Parses and filters one framed batch in place.
    pub(crate) fn process(&mut self, batch: &mut Batch) -> Result<()> {
        self.parser.parse_batch(batch);
        for fi in 0..self.filters.len() {
            if batch.events.is_empty() {
                break;
            }
            if fi > 0 {
                let before = self.filters[fi - 1].name();
                batch.refresh_structurals(self.max_depth, before, self.raw_max);
            }
            self.run_filter(fi, batch)?;
            self.apply(fi, batch);
        }
        Ok(())
    }

    /// Gets an answer for every event of the batch from filter `fi` into `self.whole`.
    fn run_filter(&mut self, fi: usize, batch: &mut Batch) -> Result<()> {
        let n = batch.events.len();
        self.whole.reset(n);
        self.ranges.clear();
        self.ranges.push((0, n));
        while let Some((a, b)) = self.ranges.pop() {
            self.part.reset(b - a);
            let filter = &mut self.filters[fi];
            // A panic in a native filter is a failure of this call, isolated like a trap.
            let events = batch.events_range(a..b);
            let part = &mut self.part;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                filter.process(&events, part)
            }))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(Error::filter_failed(format!("the filter panicked: {what}")))
            })
            .and_then(|()| {
                check_decisions(
                    &self.part.verdicts,
                    &self.part.records,
                    b - a,
                    self.max_depth,
                )
                .map_err(|DecisionError(m)| Error::filter_failed(format!("bad result: {m}")))
            });
            match result {
                Ok(()) => {
                    self.failures[fi] = 0;
                    if (a, b) == (0, n) {
                        std::mem::swap(&mut self.whole, &mut self.part);
                    } else if self.whole.records.len() + self.part.records.len()
                        > ISOLATION_KEPT_MAX
                    {
                        // Keeping this part's answer would pass the batch's bound: its
                        // events are dead-lettered instead (the answer is not kept).
                        for i in a..b {
                            self.whole.fail(i, ISOLATION_OVER_BOUND);
                        }
                    } else {
                        merge(&mut self.whole, &self.part, a);
                    }
                }
                Err(e) if e.kind() == Kind::FilterFailed => {
                    batch.stats.filter_failures += 1;
                    self.failures[fi] += 1;
                    if self.failures[fi] >= self.breaker {
                        return Err(Error::new(
                            Kind::FilterBroken,
                            format!(
                                "filter {} failed {} times in a row; last failure: {e}",
                                self.filters[fi].name(),
                                self.failures[fi]
                            ),
                        ));
                    }
                    if b - a == 1 {
                        self.whole
                            .fail(a, &cut_reason(format!("filter failed: {e}")));
                    } else {
                        let mid = a + (b - a) / 2;
                        self.ranges.push((mid, b));
                        self.ranges.push((a, mid));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Applies `self.whole` to the batch: drops, dead letters, edits, replacements, routes.
    fn apply(&mut self, fi: usize, batch: &mut Batch) {
        if self.whole.records.is_empty() && self.whole.verdicts.iter().all(|&v| v == 0) {
            // Every event kept as it is (`Verdict::Keep` is 0), nothing routed.
            return;
        }
        let name = self.filters[fi].name();
        let n = batch.events.len();
        let mut next = std::mem::take(&mut batch.next_events);
        next.clear();
        // The records were checked already: decode them again into a reused list of offsets.
        let stream = &self.whole.records;
        self.recs.clear();
        self.recs.extend(
            crate::batch::records(stream)
                .map_while(|r| r.ok())
                .map(|r| RecordAt::of(stream, &r)),
        );
        let all = &self.recs;
        let mut ri = 0usize;
        // What is left of the host's edit work for this answer.
        let mut work_left = EDIT_WORK_PER_BATCH;
        for i in 0..n {
            let mut m = batch.events[i];
            let begin = ri;
            while ri < all.len() && all[ri].event as usize == i {
                ri += 1;
            }
            let recs = &all[begin..ri];
            let recs = || recs.iter().map(|r| r.record(stream));
            if let Some(r) = recs().rev().find(|r| r.op == abi::OP_ROUTE) {
                m.route = route_id(&mut batch.routes, r.a);
            }
            let verdict = Verdict::from_u8(self.whole.verdicts[i]).unwrap_or(Verdict::Keep);
            match verdict {
                Verdict::Keep => next.push(m),
                Verdict::Drop => batch.stats.filtered += 1,
                Verdict::Fail => {
                    let reason = recs()
                        .find(|r| r.op == abi::OP_FAIL)
                        .map(|r| fail_reason(r.b))
                        .unwrap_or_else(|| "flagged as failed by the filter".into());
                    dead_letter(batch, &m, reason, name, self.raw_max);
                }
                Verdict::Edit => {
                    let ops = recs().filter_map(|r| match r.op {
                        abi::OP_SET => Some(crate::batch::Op::Set(r.a, r.b)),
                        abi::OP_REMOVE => Some(crate::batch::Op::Remove(r.a)),
                        abi::OP_RENAME => Some(crate::batch::Op::Rename(r.a, r.b)),
                        _ => None,
                    });
                    if !recs()
                        .any(|r| matches!(r.op, abi::OP_SET | abi::OP_REMOVE | abi::OP_RENAME))
                    {
                        next.push(m);
                        continue;
                    }
                    let s = &batch.structurals[m.s_start as usize..(m.s_start + m.s_len) as usize];
                    // A RENAME to a deeper path may push the moved value past `max_depth`
                    // (SET values were checked against their path already).
                    // A destination without a `.` is one component: never deeper.
                    let deeper = recs().any(|r| {
                        r.op == abi::OP_RENAME
                            && r.b.contains(&b'.')
                            && path_components(r.b).count() > path_components(r.a).count()
                    });
                    // The edited event is appended to the batch buffer, written once.
                    let start = batch.data.len();
                    let result = apply_edits(
                        &mut self.editor,
                        &mut self.top_editor,
                        &mut batch.data,
                        m.start as usize..(m.start + m.len) as usize,
                        s,
                        m.plain,
                        ops,
                        EDIT_WORK_PER_EVENT.min(work_left),
                    )
                    .and_then(|cost| {
                        work_left -= cost;
                        if !deeper {
                            return Ok(());
                        }
                        let mut s = std::mem::take(&mut self.depth_check);
                        let r = scalar::validate(&batch.data[start..], self.max_depth, &mut s)
                            .map_err(|e| format!("the edited event is not valid: {e}"));
                        self.depth_check = s;
                        r
                    });
                    match result {
                        Ok(()) => {
                            m.start = start as u32;
                            m.len = (batch.data.len() - start) as u32;
                            // A newline after it, outside the event (as after an input
                            // line): edited events written one after another are then one
                            // run of output bytes for a writer sink, not copied one by one.
                            batch.data.push(b'\n');
                            m.s_len = STALE;
                            m.slot_start = NO_SLOTS;
                            m.changed = true;
                            m.plain = false;
                            next.push(m);
                        }
                        Err(reason) => {
                            batch.data.truncate(start);
                            dead_letter(
                                batch,
                                &m,
                                format!("edit failed: {reason}"),
                                name,
                                self.raw_max,
                            )
                        }
                    }
                }
                Verdict::Replace => {
                    let mut k = 0u64;
                    for r in recs().filter(|r| r.op == abi::OP_EMIT) {
                        let mut e = m;
                        e.start = batch.data.len() as u32;
                        e.len = r.b.len() as u32;
                        e.s_len = STALE;
                        e.slot_start = NO_SLOTS;
                        e.changed = true;
                        e.plain = false;
                        batch.data.extend_from_slice(r.b);
                        batch.data.push(b'\n');
                        next.push(e);
                        k += 1;
                    }
                    if k == 0 {
                        batch.stats.filtered += 1;
                    } else {
                        batch.stats.created += k - 1;
                    }
                }
            }
        }
        std::mem::swap(&mut batch.events, &mut next);
        batch.next_events = next;
    }
}

/// Most bytes of the answers the host keeps for one batch while it isolates a failure
/// (the record streams of the parts answered so far, which also bound the bytes of the
/// events they emit): 128 MiB, twice the default cap of one answer. A part whose answer
/// would pass it has its events dead-lettered with [`ISOLATION_OVER_BOUND`]. The host's
/// peak for one filter call during isolation is about this, plus one answer, plus the batch.
pub(crate) const ISOLATION_KEPT_MAX: usize = 128 << 20;

/// The dead-letter reason of events whose part's answer would pass [`ISOLATION_KEPT_MAX`].
const ISOLATION_OVER_BOUND: &str = "filter failed: while isolating a failure in this batch, the \
     answers kept passed 128 MiB (docs/abi.md section 12.2); this event's answer was not kept";

/// Most bytes of any dead-letter reason a filter causes (a `FAIL` record's reason, a failed
/// call's message): 64 KiB, as for status messages.
const REASON_MAX: usize = 64 << 10;

/// A `FAIL` record's reason (checked UTF-8), cut to [`REASON_MAX`] bytes.
fn fail_reason(b: &[u8]) -> String {
    cut_reason(String::from_utf8_lossy(b).into_owned())
}

/// `reason` cut at a character boundary to [`REASON_MAX`] bytes, marked `… (cut)`.
fn cut_reason(reason: String) -> String {
    if reason.len() <= REASON_MAX {
        return reason;
    }
    format!(
        "{}… (cut)",
        &reason[..reason.floor_char_boundary(REASON_MAX)]
    )
}

/// A checked record, as offsets into its record stream.
#[derive(Clone, Copy)]
struct RecordAt {
    event: u32,
    op: u8,
    a: (u32, u32),
    b: (u32, u32),
}

impl RecordAt {
    fn of(stream: &[u8], r: &crate::batch::Record<'_>) -> Self {
        let at = |x: &[u8]| {
            let start = x.as_ptr() as usize - stream.as_ptr() as usize;
            (start as u32, (start + x.len()) as u32)
        };
        Self {
            event: r.event,
            op: r.op,
            a: at(r.a),
            b: at(r.b),
        }
    }

    fn record<'s>(&self, stream: &'s [u8]) -> crate::batch::Record<'s> {
        crate::batch::Record {
            event: self.event,
            op: self.op,
            a: &stream[self.a.0 as usize..self.a.1 as usize],
            b: &stream[self.b.0 as usize..self.b.1 as usize],
        }
    }
}

fn dead_letter(
    batch: &mut Batch,
    m: &crate::batch::EventMeta,
    reason: String,
    filter: &str,
    raw_max: usize,
) {
    let dead = DeadLetter::new(
        reason,
        m.line,
        m.offset,
        Some(filter),
        batch.bytes(m),
        raw_max,
    );
    batch.dead.push(dead);
    batch.stats.dead_lettered += 1;
}

fn route_id(routes: &mut Vec<String>, name: &[u8]) -> u32 {
    let name = String::from_utf8_lossy(name);
    if let Some(i) = routes.iter().position(|r| *r == name) {
        return i as u32 + 1;
    }
    routes.push(name.into_owned());
    routes.len() as u32
}

/// Copies a part's answer (for events `a..`) into the whole batch's answer.
fn merge(whole: &mut Decisions, part: &Decisions, a: usize) {
    whole.verdicts[a..a + part.verdicts.len()].copy_from_slice(&part.verdicts);
    for r in crate::batch::records(&part.records).map_while(|r| r.ok()) {
        whole.push_record(a + r.event as usize, r.op, r.a, r.b);
    }
}
