//! Parses access-log messages, `"GET /path 404 ..."`, into `http.method`, `http.path` and
//! `http.status`. A message of another shape is left as it is; a status that is not a number
//! dead-letters the event.
#![no_std]

use sluicebox_guest::prelude::*;

/// Splits `message` into its first three words.
#[map(fields = ["message"])]
fn dissect(event: &Event, edits: &mut Edits) -> Result<(), String> {
    let Some(message) = event.str("message") else {
        return Ok(());
    };
    let mut words = message.split_ascii_whitespace();
    let (Some(method), Some(path), Some(status)) = (words.next(), words.next(), words.next())
    else {
        return Ok(());
    };
    let status: i64 = status
        .parse()
        .map_err(|_| format!("status `{status}` is not a number"))?;
    edits
        .set_str("http.method", method)
        .set_str("http.path", path)
        .set_i64("http.status", status);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicebox_guest::testing::{Harness, Record};

    #[test]
    fn splits_access_logs() {
        let h = Harness::projected(&["message"]);
        let out = h.map(dissect, r#"{"message":"GET /a\"b 404 12ms"}"#);
        assert_eq!(
            out.records,
            [
                Record::set("http.method", r#""GET""#),
                Record::set("http.path", r#""/a\"b""#),
                Record::set("http.status", "404"),
            ]
        );
        assert_eq!(
            h.map(dissect, r#"{"message":"hello"}"#).verdict,
            Verdict::Keep
        );
        let out = h.map(dissect, r#"{"message":"GET / OK"}"#);
        assert_eq!(out.verdict, Verdict::Fail);
        assert_eq!(out.records, [Record::fail("status `OK` is not a number")]);
    }
}
