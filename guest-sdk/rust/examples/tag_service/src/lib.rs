//! Tags every event with `"env":"prod"` and renames `msg` to `message`.
#![no_std]

use sluicebox_guest::prelude::*;

/// Sets `env` and, when the event has a `msg`, renames it to `message`.
#[map(fields = ["msg"])]
fn tag_service(event: &Event, edits: &mut Edits) -> Result<(), String> {
    edits.set_str("env", "prod");
    if event.has("msg") {
        edits.rename("msg", "message");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicebox_guest::testing::{Harness, Record};

    #[test]
    fn sets_env_and_renames_msg() {
        let harness = Harness::projected(&["msg"]);
        let out = harness.map(tag_service, r#"{"msg":"hello","n":1}"#);
        assert_eq!(out.verdict, Verdict::Edit);
        assert_eq!(
            out.records,
            [
                Record::set("env", r#""prod""#),
                Record::rename("msg", "message")
            ]
        );
        let out = harness.map(tag_service, r#"{"n":1}"#);
        assert_eq!(out.records, [Record::set("env", r#""prod""#)]);
    }
}
