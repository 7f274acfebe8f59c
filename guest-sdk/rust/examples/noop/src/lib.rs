//! Keeps every event and reads no field, so the host builds no index: the cheapest filter, and
//! the baseline of the ABI's per-batch cost.
#![no_std]

use sluicebox_guest::prelude::*;

/// Keeps the event.
#[filter(fields = [])]
fn noop(_event: &Event) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicebox_guest::testing::Harness;

    #[test]
    fn keeps_everything() {
        let outcomes =
            Harness::projected(&[]).filter_batch(noop, &["{}", r#"{"a":[1,{"b":null}]}"#]);
        assert!(
            outcomes
                .iter()
                .all(|o| o.verdict == Verdict::Keep && o.records.is_empty())
        );
    }
}
