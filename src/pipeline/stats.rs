//! Run counters. Counted per batch, summed per run; never per event on a shared atomic.

use std::time::Duration;

/// What happened to the events of a run. Cheap to copy.
///
/// The conservation law, checked by [`Stats::is_balanced`] after every run:
/// `received + created == emitted + filtered + dead_lettered`, where `created` counts only the
/// extra events a flat-map filter made (an event replaced by `k >= 1` events adds `k - 1`).
/// Without flat-map filters `created` is 0 and the law reads `received == emitted + filtered +
/// dead_lettered`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Non-blank input lines: each is one event.
    pub received: u64,
    /// Blank or whitespace-only lines, skipped and not counted as events.
    pub skipped: u64,
    /// Events written to the output sink.
    pub emitted: u64,
    /// Events a filter dropped on purpose.
    pub filtered: u64,
    /// Events sent to the dead letter, each with a reason and its position.
    pub dead_lettered: u64,
    /// Extra events made by flat-map filters.
    pub created: u64,
    /// Events written unchanged, byte for byte (a subset of `emitted`).
    pub unchanged: u64,
    /// Bytes read from the input.
    pub bytes_in: u64,
    /// Bytes written to the output sink, newlines included.
    pub bytes_out: u64,
    /// Batches processed.
    pub batches: u64,
    /// Filter calls that failed (trap, deadline, memory cap, bad result) and were isolated.
    pub filter_failures: u64,
}

impl Stats {
    /// `received + created == emitted + filtered + dead_lettered`.
    pub fn is_balanced(&self) -> bool {
        self.received + self.created == self.emitted + self.filtered + self.dead_lettered
    }

    pub(crate) fn add(&mut self, o: &Stats) {
        self.received += o.received;
        self.skipped += o.skipped;
        self.emitted += o.emitted;
        self.filtered += o.filtered;
        self.dead_lettered += o.dead_lettered;
        self.created += o.created;
        self.unchanged += o.unchanged;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.batches += o.batches;
        self.filter_failures += o.filter_failures;
    }

    /// One line for humans: counts and input throughput over `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        format!(
            "received={} emitted={} filtered={} dead_lettered={} skipped={}{}{} in {:.3}s: {:.1} MB/s, {:.0} events/s",
            self.received,
            self.emitted,
            self.filtered,
            self.dead_lettered,
            self.skipped,
            if self.created > 0 {
                format!(" created={}", self.created)
            } else {
                String::new()
            },
            // Failed filter calls (traps, deadlines, bad answers; each retried on halves)
            // are not events, but a user must see them: a filter that keeps trapping costs
            // time and restarts its instance every time.
            if self.filter_failures > 0 {
                format!(" filter_failures={}", self.filter_failures)
            } else {
                String::new()
            },
            secs,
            self.bytes_in as f64 / secs / 1e6,
            self.received as f64 / secs,
        )
    }
}
