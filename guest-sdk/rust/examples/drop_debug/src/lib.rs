//! Drops events whose `level` is exactly the string `DEBUG`.
#![no_std]

use sluicebox_guest::prelude::*;

/// Keeps the event unless its `level` is `"DEBUG"`.
#[filter(fields = ["level"])]
fn drop_debug(event: &Event) -> bool {
    !event
        .get("level")
        .is_some_and(|level| level.str_eq("DEBUG"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicebox_guest::testing::{Harness, TestEvent};

    #[test]
    fn drops_debug_only() {
        let keep = |json| drop_debug(&TestEvent::projected(json, &["level"]).event());
        assert!(!keep(r#"{"level":"DEBUG","msg":"x"}"#));
        assert!(!keep(r#"{"level":"DEBU\u0047"}"#));
        assert!(keep(r#"{"level":"INFO"}"#));
        assert!(keep(r#"{"level":"debug"}"#));
        assert!(keep(r#"{"level":"DEBUG2"}"#));
        assert!(keep(r#"{"level":["DEBUG"]}"#));
        assert!(keep(r#"{"msg":"no level"}"#));
        assert!(keep(r#"{"nested":{"level":"DEBUG"}}"#));
    }

    #[test]
    fn runs_as_a_batch() {
        let verdicts: Vec<Verdict> = Harness::projected(&["level"])
            .filter_batch(
                drop_debug,
                &[r#"{"level":"DEBUG"}"#, r#"{"level":"WARN"}"#, "{}"],
            )
            .into_iter()
            .map(|o| o.verdict)
            .collect();
        assert_eq!(verdicts, [Verdict::Drop, Verdict::Keep, Verdict::Keep]);
    }
}
