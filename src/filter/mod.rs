//! Filter stage: the [`Filter`] trait that native Rust filters and wasm modules both
//! implement. A filter sees a whole batch and answers with [`Decisions`]: which events
//! survive, and what to change. It never re-encodes events itself.

mod native;
pub mod wasm;

pub use native::{DropWhere, TagService};

use crate::batch::{Decisions, Events};
use crate::error::Result;

/// A batch-level filter.
///
/// The pipeline calls [`Filter::process`] once per batch (or, after a failure, once per part
/// of a batch while it isolates the failing events). `decisions` arrives reset to "keep every
/// event" for `events.len()` events; indexes in it are positions in `events`.
///
/// # Errors
/// Returning an error marks the *whole call* failed: the pipeline then splits the batch and
/// retries the halves until the events that cause the failure are isolated and
/// dead-lettered. To reject a single event, use [`Decisions::fail`] instead.
///
/// Thread safety: a filter is used by one thread at a time; [`Filter::fork`] makes the copy
/// each extra worker uses.
pub trait Filter: Send {
    /// A short name for dead letters and messages.
    fn name(&self) -> &str;

    /// The field paths this filter reads, if it declares them. The parse stage indexes the
    /// union of every filter's declared paths while each event's parse is still hot in cache,
    /// so [`crate::EventRef::field`] on a declared path is a slot read. Default: `None`
    /// (lookups walk the event's structural positions).
    fn fields(&self) -> Option<Vec<String>> {
        None
    }

    /// The routes this filter sends events to (its `ROUTE` records), if it declares them.
    /// A graph whose inputs name another route of this filter is refused. Default: `None`
    /// (any route name is accepted; events routed where nothing reads are dead-lettered).
    fn routes(&self) -> Option<Vec<String>> {
        None
    }

    /// Decides the fate of every event in `events`.
    fn process(&mut self, events: &Events<'_>, decisions: &mut Decisions) -> Result<()>;

    /// An independent copy for another worker thread (state not shared).
    fn fork(&self) -> Result<Box<dyn Filter>>;
}

impl<F: Filter + ?Sized> Filter for Box<F> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn fields(&self) -> Option<Vec<String>> {
        (**self).fields()
    }
    fn routes(&self) -> Option<Vec<String>> {
        (**self).routes()
    }
    fn process(&mut self, events: &Events<'_>, decisions: &mut Decisions) -> Result<()> {
        (**self).process(events, decisions)
    }
    fn fork(&self) -> Result<Box<dyn Filter>> {
        (**self).fork()
    }
}
