//! CRI log lines, as containerd and CRI-O write them under `/var/log/pods`:
//! `<RFC 3339 time> <stdout|stderr> <tags> <message>`, where the first tag is `F` (the
//! message ends a line) or `P` (a partial line the runtime split, 16 KiB by default;
//! the next `P`/`F` lines of the same stream continue it). Further tags are `:`-separated
//! and ignored. The message is raw bytes up to the end of the line, with no escaping.
//!
//! Cost: a scan of the header (a few dozen bytes); the message is borrowed, not copied.

use super::container::{Line, StreamKind};

/// Parses one CRI line (without its newline).
///
/// # Errors
/// A short, fixed reason when the line is not CRI: a missing field, a time that is not
/// RFC 3339-shaped, an unknown stream, or a first tag other than `P` or `F`.
pub(crate) fn parse(line: &[u8]) -> Result<Line<'_>, &'static str> {
    let mut rest = line;
    let time = field(&mut rest).ok_or("no space after the time")?;
    if !looks_like_rfc3339(time) {
        return Err("the time is not an RFC 3339 timestamp");
    }
    let stream = match field(&mut rest).ok_or("no space after the stream")? {
        b"stdout" => StreamKind::Stdout,
        b"stderr" => StreamKind::Stderr,
        _ => return Err("the stream is neither stdout nor stderr"),
    };
    // The tags field ends the header; an empty message may or may not keep its space.
    let (tags, message) = match memchr::memchr(b' ', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let first = tags.split(|&b| b == b':').next().unwrap_or_default();
    let partial = match first {
        b"F" => false,
        b"P" => true,
        _ => return Err("the first tag is neither F nor P"),
    };
    Ok(Line {
        time,
        stream,
        partial,
        message: std::borrow::Cow::Borrowed(message),
    })
}

/// Takes the bytes up to the next space (which must exist and not be first).
fn field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let i = memchr::memchr(b' ', rest)?;
    if i == 0 {
        return None;
    }
    let f = &rest[..i];
    *rest = &rest[i + 1..];
    Some(f)
}

/// `YYYY-MM-DDTHH:MM:SS` followed by fraction and zone characters only. Not a full
/// validation (the month is not checked against 1..=12): enough to tell a CRI line from
/// anything else, and to make the time safe to copy into JSON unescaped.
fn looks_like_rfc3339(t: &[u8]) -> bool {
    const SHAPE: &[u8; 19] = b"dddd-dd-ddTdd:dd:dd";
    t.len() >= SHAPE.len()
        && t.len() <= 40
        && SHAPE.iter().zip(t).all(|(&s, &c)| match s {
            b'd' => c.is_ascii_digit(),
            b'T' => c == b'T' || c == b't',
            _ => c == s,
        })
        && t[SHAPE.len()..]
            .iter()
            .all(|&c| c.is_ascii_digit() || matches!(c, b'.' | b'Z' | b'z' | b'+' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_partial_and_empty_lines() {
        let l = parse(b"2026-12-05T10:00:00.123456789Z stdout F {\"level\":\"INFO\"}").unwrap();
        assert_eq!(l.time, b"2026-12-05T10:00:00.123456789Z");
        assert_eq!(l.stream, StreamKind::Stdout);
        assert!(!l.partial);
        assert_eq!(&*l.message, b"{\"level\":\"INFO\"}");

        let l = parse(b"2026-12-05T10:00:00.5+01:00 stderr P:x part one ").unwrap();
        assert_eq!(l.stream, StreamKind::Stderr);
        assert!(l.partial);
        assert_eq!(&*l.message, b"part one ");

        for empty in [
            &b"2026-12-05T10:00:00Z stdout F"[..],
            b"2026-12-05T10:00:00Z stdout F ",
        ] {
            let l = parse(empty).unwrap();
            assert_eq!(&*l.message, b"");
        }
    }

    #[test]
    fn malformed_lines_have_a_reason() {
        for (line, why) in [
            (&b""[..], "no space after the time"),
            (b"hello world", "the time is not an RFC 3339 timestamp"),
            (
                b"2026-12-05 10:00:00 stdout F x",
                "the time is not an RFC 3339 timestamp",
            ),
            (b"2026-12-05T10:00:00Z", "no space after the time"),
            (
                b"2026-12-05T10:00:00Z stdin F x",
                "the stream is neither stdout nor stderr",
            ),
            (b"2026-12-05T10:00:00Z stdout", "no space after the stream"),
            (
                b"2026-12-05T10:00:00Z stdout X x",
                "the first tag is neither F nor P",
            ),
            (
                b"2026-12-05T10:00:00Z  stdout F x",
                "no space after the stream",
            ),
            (
                b"{\"log\": \"x\\n\"}",
                "the time is not an RFC 3339 timestamp",
            ),
        ] {
            assert_eq!(
                parse(line).err(),
                Some(why),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
