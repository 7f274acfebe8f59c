//! Masks secrets: `password`, `token` and `user.email` become `"[REDACTED]"` when present.
#![no_std]

use sluicebox_guest::prelude::*;

const SECRETS: [&str; 3] = ["password", "token", "user.email"];

/// Overwrites each secret the event has.
#[map(fields = ["password", "token", "user.email"])]
fn redact(event: &Event, edits: &mut Edits) -> Result<(), String> {
    for path in SECRETS {
        if event.has(path) {
            edits.set_str(path, "[REDACTED]");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicebox_guest::testing::{Harness, Record};

    #[test]
    fn masks_present_secrets_only() {
        let h = Harness::projected(&SECRETS);
        let out = h.map(
            redact,
            r#"{"password":"hunter2","user":{"email":"a@b","id":7}}"#,
        );
        assert_eq!(
            out.records,
            [
                Record::set("password", r#""[REDACTED]""#),
                Record::set("user.email", r#""[REDACTED]""#)
            ]
        );
        assert_eq!(h.map(redact, r#"{"msg":"hi"}"#).verdict, Verdict::Keep);
    }
}
