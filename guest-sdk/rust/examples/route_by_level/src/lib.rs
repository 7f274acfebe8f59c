//! Routes errors to the `alerts` output and warnings to `warnings`; every event also goes on
//! unchanged.
#![no_std]

use sluicebox_guest::prelude::*;

/// Adds a route for `ERROR`/`FATAL` and `WARN` levels (any case).
#[map(fields = ["level"])]
fn route_by_level(event: &Event, edits: &mut Edits) {
    let Some(level) = event.str("level") else {
        return;
    };
    if level.eq_ignore_ascii_case("error") || level.eq_ignore_ascii_case("fatal") {
        edits.route("alerts");
    } else if level.eq_ignore_ascii_case("warn") {
        edits.route("warnings");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicebox_guest::testing::{Harness, Record};

    #[test]
    fn routes_by_level() {
        let outcomes = Harness::projected(&["level"]).map_batch(
            route_by_level,
            &[
                r#"{"level":"error"}"#,
                r#"{"level":"WARN"}"#,
                r#"{"level":"INFO"}"#,
                "{}",
            ],
        );
        let routes: Vec<&[Record]> = outcomes.iter().map(|o| &o.records[..]).collect();
        assert_eq!(
            routes,
            [
                &[Record::route("alerts")][..],
                &[Record::route("warnings")],
                &[],
                &[]
            ]
        );
        assert!(outcomes.iter().all(|o| o.verdict == Verdict::Keep));
    }
}
