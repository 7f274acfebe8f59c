//! Native Rust filters: the baselines that wasm modules are measured against, and examples
//! of the [`Filter`] trait.

use super::Filter;
use crate::batch::{Decisions, Events};
use crate::error::Result;

/// Drops every event whose field at `path` is the string `value` (e.g. `level` = `DEBUG`).
///
/// Cost per event: one field lookup; no allocation.
#[derive(Clone, Debug)]
pub struct DropWhere {
    name: String,
    path: String,
    value: String,
}

impl DropWhere {
    /// Drops events where `path` equals the string `value`.
    pub fn new(path: impl Into<String>, value: impl Into<String>) -> Self {
        let (path, value) = (path.into(), value.into());
        Self {
            name: format!("native:drop_where({path}={value})"),
            path,
            value,
        }
    }

    /// The `drop_debug` filter: drops events whose `level` is `DEBUG`.
    pub fn drop_debug() -> Self {
        Self::new("level", "DEBUG")
    }
}

impl Filter for DropWhere {
    fn name(&self) -> &str {
        &self.name
    }

    fn fields(&self) -> Option<Vec<String>> {
        Some(vec![self.path.clone()])
    }

    fn process(&mut self, events: &Events<'_>, decisions: &mut Decisions) -> Result<()> {
        for (i, e) in events.iter().enumerate() {
            if e.field(&self.path).is_some_and(|f| f.is_str(&self.value)) {
                decisions.drop(i);
            }
        }
        Ok(())
    }

    fn fork(&self) -> Result<Box<dyn Filter>> {
        Ok(Box::new(self.clone()))
    }
}

/// The `tag_service` map: sets `"env":"prod"` and renames `msg` to `message`.
///
/// Cost per event: two edit records; the pipeline splices them into the event.
#[derive(Clone, Debug, Default)]
pub struct TagService;

impl Filter for TagService {
    fn name(&self) -> &str {
        "native:tag_service"
    }

    fn fields(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }

    fn process(&mut self, events: &Events<'_>, decisions: &mut Decisions) -> Result<()> {
        for i in 0..events.len() {
            decisions.set(i, "env", "\"prod\"");
            decisions.rename(i, "msg", "message");
        }
        Ok(())
    }

    fn fork(&self) -> Result<Box<dyn Filter>> {
        Ok(Box::new(self.clone()))
    }
}
