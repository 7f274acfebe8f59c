//! End-to-end acknowledgements: how a source learns which of its positions were delivered.
//!
//! The unit is the batch a source sends. Each batch carries one [`AckToken`]; every copy of
//! the batch's events that travels on (to each sink of a fan-out, to the dead letter, to a
//! sink that keeps a request in flight) holds a clone of it. When the last clone is dropped,
//! the batch's final [`Status`] (the worst any holder reported) reaches its [`Stream`],
//! which advances its watermark only over a **contiguous** run of delivered batches:
//!
//! - events a filter dropped hold nothing, so they count as delivered;
//! - dead-lettered events are delivered once the dead-letter sink has taken them (it holds a
//!   clone until its write returns);
//! - a batch that any holder marked [`Status::Errored`] (a sink that failed, retries given
//!   up, a shutdown before delivery) never advances the watermark: its positions are
//!   replayed after a restart.
//!
//! Cost: one `Arc` per batch, an atomic per holder, and one short mutex section per batch
//! when it completes. Nothing per event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// How a batch's delivery ended. Ordered: a batch's status is the worst of its holders'.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Status {
    /// Every holder delivered (or had nothing to deliver).
    Delivered,
    /// Some holder could not deliver: the positions stay unacknowledged.
    Errored,
}

impl Status {
    fn from_u8(v: u8) -> Self {
        if v == 0 {
            Status::Delivered
        } else {
            Status::Errored
        }
    }
}

/// The positions of one stream of a source (a file, a partition, a connection) and its
/// watermark: the end position of the longest contiguous run of delivered batches.
///
/// Cost: a mutex and a map holding the batches that completed out of order.
/// `Send + Sync`; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Stream {
    inner: Arc<StreamInner>,
}

struct StreamInner {
    key: Arc<str>,
    state: Mutex<Watermark>,
    changed: tokio::sync::Notify,
}

/// The contiguous-prefix logic on its own, free of threads: batches are numbered `0, 1, 2…`
/// in the order the source sent them; `complete(seq, end, status)` records one; `acked`
/// is the end position of the last batch of the delivered prefix.
///
/// Cost: O(log n) per completion in the number of batches completed out of order.
#[derive(Debug, Clone)]
pub struct Watermark {
    next_seq: u64,
    next_expected: u64,
    acked: Option<u64>,
    pending: BTreeMap<u64, (u64, Status)>,
    blocked: bool,
    delivered: u64,
    errored: u64,
}

impl Watermark {
    /// A watermark with no batch sent yet, whose acknowledged position starts at `start`
    /// (`None`: nothing acknowledged yet).
    pub fn new(start: Option<u64>) -> Self {
        Self {
            next_seq: 0,
            next_expected: 0,
            acked: start,
            pending: BTreeMap::new(),
            blocked: false,
            delivered: 0,
            errored: 0,
        }
    }

    /// Numbers the next batch.
    pub fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Records batch `seq`, which ends at stream position `end`, as completed with
    /// `status`. Returns whether the acknowledged position moved.
    pub fn complete(&mut self, seq: u64, end: u64, status: Status) -> bool {
        match status {
            Status::Delivered => self.delivered += 1,
            Status::Errored => self.errored += 1,
        }
        self.pending.insert(seq, (end, status));
        let mut moved = false;
        while !self.blocked {
            let Some(&(end, status)) = self.pending.get(&self.next_expected) else {
                break;
            };
            if status == Status::Errored {
                // Never skip an undelivered batch: everything after it waits for a replay.
                self.blocked = true;
                break;
            }
            self.pending.remove(&self.next_expected);
            self.next_expected += 1;
            self.acked = Some(end);
            moved = true;
        }
        moved
    }

    /// The end position of the delivered prefix, if any batch (or a restored checkpoint)
    /// gave one.
    pub fn acked(&self) -> Option<u64> {
        self.acked
    }

    /// Batches sent and not yet completed.
    pub fn outstanding(&self) -> u64 {
        self.next_seq - self.delivered - self.errored
    }

    /// Whether an errored batch stopped the watermark for good (until a restart).
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Batches completed delivered and errored so far.
    pub fn completed(&self) -> (u64, u64) {
        (self.delivered, self.errored)
    }

    /// Whether the batch that ends at stream position `end` was delivered: it lies in the
    /// delivered prefix, or completed delivered after it. A batch not completed yet (or
    /// errored) is not. Cost: a walk over the batches completed out of order.
    pub fn is_delivered(&self, end: u64) -> bool {
        self.acked.is_some_and(|a| end <= a)
            || self
                .pending
                .values()
                .any(|&(e, s)| e == end && s == Status::Delivered)
    }

    /// The end positions of the batches completed [`Status::Errored`] so far. An errored
    /// batch is never removed from the watermark's pending map (it blocks everything after
    /// it), so this sees every one of them. A push source that answers per item (see
    /// `source::elasticsearch`) maps them back to the items those batches held.
    ///
    /// Cost: a walk over the batches completed out of order or after the block.
    pub fn errored_ends(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending
            .values()
            .filter(|(_, s)| *s == Status::Errored)
            .map(|&(end, _)| end)
    }
}

impl Stream {
    /// A stream named `key` (a path, `topic/partition`, a peer address) whose acknowledged
    /// position starts at `start` (a restored checkpoint), or at nothing.
    pub fn new(key: impl Into<Arc<str>>, start: Option<u64>) -> Self {
        Self {
            inner: Arc::new(StreamInner {
                key: key.into(),
                state: Mutex::new(Watermark::new(start)),
                changed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The stream's name.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// A token for the next batch of this stream, which ends at stream position `end`.
    /// Batches must be numbered in the order their positions follow each other.
    pub fn token(&self, end: u64) -> AckToken {
        let seq = self.lock().next_seq();
        AckToken(Arc::new(Finalizer {
            status: AtomicU8::new(0),
            stream: self.clone(),
            seq,
            end,
            release: Mutex::new(None),
        }))
    }

    /// The end position of the delivered prefix.
    pub fn acked(&self) -> Option<u64> {
        self.lock().acked()
    }

    /// A copy of the watermark's state.
    pub fn watermark(&self) -> Watermark {
        self.lock().clone()
    }

    /// Waits until the acknowledged position may have moved.
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// Whether every batch sent so far has completed.
    pub fn is_idle(&self) -> bool {
        self.lock().outstanding() == 0
    }

    /// Waits until every batch sent so far has completed (returns at once when none is
    /// outstanding). A push source answers its sender then (see `source::http`).
    pub async fn idle(&self) {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_idle() {
                return;
            }
            changed.await;
        }
    }

    fn complete(&self, seq: u64, end: u64, status: Status) {
        let (moved, idle) = {
            let mut w = self.lock();
            let moved = w.complete(seq, end, status);
            (moved, w.outstanding() == 0)
        };
        if moved || idle || status == Status::Errored {
            self.inner.changed.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watermark> {
        // A panic while holding this lock cannot leave the watermark half-updated in a way
        // that matters more than losing the process; keep going with the inner value.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("key", &self.key())
            .field("watermark", &self.watermark())
            .finish()
    }
}

/// What is released when a batch completes (its in-flight bytes), whatever its status.
pub(crate) type Release = Box<dyn FnOnce() + Send>;

struct Finalizer {
    status: AtomicU8,
    stream: Stream,
    seq: u64,
    end: u64,
    release: Mutex<Option<Release>>,
}

impl Drop for Finalizer {
    fn drop(&mut self) {
        let status = Status::from_u8(self.status.load(Ordering::Acquire));
        self.stream.complete(self.seq, self.end, status);
        if let Some(r) = self.release.get_mut().ok().and_then(Option::take) {
            r();
        }
    }
}

/// One batch's acknowledgement, shared by everything that holds its events. When the last
/// clone is dropped, the batch's status reaches its [`Stream`].
///
/// Cost: an `Arc` clone per holder. `Send + Sync`.
#[derive(Clone)]
pub struct AckToken(Arc<Finalizer>);

impl AckToken {
    /// Marks the batch as not delivered: its positions will not be acknowledged.
    pub fn fail(&self) {
        self.0.status.fetch_max(1, Ordering::AcqRel);
    }

    /// The batch's stream.
    pub fn stream(&self) -> &Stream {
        &self.0.stream
    }

    /// The stream position the batch ends at.
    pub fn end(&self) -> u64 {
        self.0.end
    }

    /// Runs `release` when the batch completes (after its status reached the stream).
    pub(crate) fn on_complete(&self, release: Release) {
        if let Ok(mut r) = self.0.release.lock() {
            *r = Some(release);
        }
    }
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckToken")
            .field("stream", &self.0.stream.key())
            .field("seq", &self.0.seq)
            .field("end", &self.0.end)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_completions_advance_only_over_the_contiguous_prefix() {
        let mut w = Watermark::new(None);
        let s: Vec<u64> = (0..4).map(|_| w.next_seq()).collect();
        assert!(!w.complete(s[1], 20, Status::Delivered));
        assert_eq!(w.acked(), None);
        assert!(w.complete(s[0], 10, Status::Delivered));
        assert_eq!(w.acked(), Some(20));
        assert!(!w.complete(s[3], 40, Status::Delivered));
        assert_eq!(w.acked(), Some(20));
        assert!(w.complete(s[2], 30, Status::Delivered));
        assert_eq!(w.acked(), Some(40));
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn an_errored_batch_blocks_the_watermark_for_good() {
        let mut w = Watermark::new(Some(5));
        let s: Vec<u64> = (0..3).map(|_| w.next_seq()).collect();
        w.complete(s[0], 10, Status::Delivered);
        w.complete(s[1], 20, Status::Errored);
        w.complete(s[2], 30, Status::Delivered);
        assert_eq!(w.acked(), Some(10));
        assert!(w.is_blocked());
        assert_eq!(w.errored_ends().collect::<Vec<_>>(), [20]);
        assert!(w.is_delivered(10) && !w.is_delivered(20) && w.is_delivered(30));
        let mut w = Watermark::new(None);
        let s: Vec<u64> = (0..3).map(|_| w.next_seq()).collect();
        w.complete(s[1], 20, Status::Delivered);
        assert!(!w.is_delivered(10) && w.is_delivered(20) && !w.is_delivered(30));
    }

    #[test]
    fn the_last_holder_reports_the_worst_status() {
        let stream = Stream::new("s", None);
        let a = stream.token(10);
        let b = stream.token(20);
        let a2 = a.clone();
        drop(a);
        assert_eq!(stream.acked(), None, "a clone still holds batch 0");
        a2.fail();
        drop(a2);
        drop(b);
        assert_eq!(
            stream.acked(),
            None,
            "batch 0 errored: nothing after it advances"
        );
        assert!(stream.watermark().is_blocked());
    }

    #[test]
    fn release_runs_when_the_batch_completes() {
        let stream = Stream::new("s", None);
        let t = stream.token(7);
        let hit = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = hit.clone();
        t.on_complete(Box::new(move || h.store(true, Ordering::SeqCst)));
        let t2 = t.clone();
        drop(t);
        assert!(!hit.load(Ordering::SeqCst));
        drop(t2);
        assert!(hit.load(Ordering::SeqCst));
        assert_eq!(stream.acked(), Some(7));
    }
}
