//! Docker `json-file` log lines: `{"log":"<text>\n","stream":"stdout","time":"<RFC 3339>"}`
//! (other members, such as `attrs`, are ignored). Docker splits a line longer than 16 KiB
//! into several records; every record but the last has a `log` that does not end in `\n`.
//!
//! Cost: one `serde_json` pass over the record; `log` is borrowed unless it has escapes
//! (then one copy, unescaped).

use std::borrow::Cow;

use serde::Deserialize;

use super::container::{Line, StreamKind};

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// Parses one json-file record (without its newline). The message is `log` without its
/// final `\n`; a record whose `log` has no final `\n` is partial.
///
/// # Errors
/// The reason when the line is not a record: not JSON, a missing or non-string `log`,
/// `stream` or `time`, or an unknown stream.
pub(crate) fn parse(line: &[u8]) -> Result<Line<'_>, String> {
    let r: Record<'_> = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let stream = match &*r.stream {
        "stdout" => StreamKind::Stdout,
        "stderr" => StreamKind::Stderr,
        other => return Err(format!("unknown stream {other:?}")),
    };
    if r.time.is_empty() {
        return Err("`time` is empty".into());
    }
    let (message, partial) = match r.log {
        Cow::Borrowed(s) => match s.strip_suffix('\n') {
            Some(m) => (Cow::Borrowed(m.as_bytes()), false),
            None => (Cow::Borrowed(s.as_bytes()), true),
        },
        Cow::Owned(mut s) => {
            let partial = !s.ends_with('\n');
            if !partial {
                s.pop();
            }
            (Cow::Owned(s.into_bytes()), partial)
        }
    };
    let time = match r.time {
        Cow::Borrowed(t) => t.as_bytes(),
        // A time with escapes is not a timestamp any runtime writes.
        Cow::Owned(_) => return Err("`time` has escapes".into()),
    };
    Ok(Line {
        time,
        stream,
        partial,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_full_and_partial() {
        let l = parse(
            br#"{"log":"GET /healthz 200\n","stream":"stdout","time":"2026-12-05T10:00:00.000000001Z"}"#,
        )
        .unwrap();
        assert_eq!(&*l.message, b"GET /healthz 200");
        assert!(!l.partial);
        assert_eq!(l.time, b"2026-12-05T10:00:00.000000001Z");

        let l =
            parse(br#"{"log":"say \"hi\"\ttab","stream":"stderr","time":"t","attrs":{"a":"b"}}"#)
                .unwrap();
        assert_eq!(&*l.message, b"say \"hi\"\ttab");
        assert!(l.partial);
        assert_eq!(l.stream, StreamKind::Stderr);
    }

    #[test]
    fn malformed_records_have_a_reason() {
        for (line, why) in [
            (&b"not json"[..], "expected ident"),
            (br#"{"stream":"stdout","time":"t"}"#, "missing field `log`"),
            (br#"{"log":1,"stream":"stdout","time":"t"}"#, "invalid type"),
            (
                br#"{"log":"x\n","stream":"stdin","time":"t"}"#,
                "unknown stream",
            ),
            (
                br#"{"log":"x\n","stream":"stdout","time":""}"#,
                "`time` is empty",
            ),
            (
                br#"{"log":"x\n","stream":"stdout","time":"t"} trailing"#,
                "trailing characters",
            ),
        ] {
            let e = parse(line).err().unwrap();
            assert!(e.contains(why), "{e}");
        }
    }
}
