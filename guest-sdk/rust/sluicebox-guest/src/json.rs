//! The little JSON text handling a guest needs: decoding string escapes (the host hands over
//! string bodies as written), encoding them (edits carry JSON text), and formatting integers.
//! Nothing here allocates unless it returns an owned value.

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;

/// U+FFFD, what a lone UTF-16 surrogate escape decodes to (a Rust `str` cannot hold one).
const REPLACEMENT: char = '\u{FFFD}';

/// A backslash escape that JSON does not define (`\x`), or one cut off (`\u12`, a final `\`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidEscape;

/// Decodes the escapes of a JSON string body (the text between the quotes) and passes the
/// decoded bytes to `sink` in chunks; `sink` returns `false` to stop early.
///
/// Returns `Ok(true)` when the whole body was decoded and `Ok(false)` when `sink` stopped it.
/// `\uXXXX` pairs of UTF-16 surrogates combine into one character; a lone surrogate decodes
/// to U+FFFD.
pub(crate) fn unescape_with(
    bytes: &[u8],
    mut sink: impl FnMut(&[u8]) -> bool,
) -> Result<bool, InvalidEscape> {
    let mut run = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            i += 1;
            continue;
        }
        if run < i && !sink(&bytes[run..i]) {
            return Ok(false);
        }
        let (ch, used) = decode_escape(&bytes[i..])?;
        let mut utf8 = [0u8; 4];
        if !sink(ch.encode_utf8(&mut utf8).as_bytes()) {
            return Ok(false);
        }
        i += used;
        run = i;
    }
    if run < bytes.len() && !sink(&bytes[run..]) {
        return Ok(false);
    }
    Ok(true)
}

/// Decodes the escape at the start of `s` (`s[0]` is the backslash): the character and the
/// number of bytes it used.
fn decode_escape(s: &[u8]) -> Result<(char, usize), InvalidEscape> {
    let ch = match s.get(1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => return decode_unicode(s),
        _ => return Err(InvalidEscape),
    };
    Ok((ch, 2))
}

/// Decodes `\uXXXX`, or `\uD83D\uDE00` (a surrogate pair), at the start of `s`.
fn decode_unicode(s: &[u8]) -> Result<(char, usize), InvalidEscape> {
    let hi = s.get(2..).and_then(hex4).ok_or(InvalidEscape)?;
    match hi {
        0xD800..=0xDBFF => {
            let low = s
                .get(6..8)
                .filter(|e| e == b"\\u")
                .and_then(|_| hex4(&s[8..]));
            if let Some(lo @ 0xDC00..=0xDFFF) = low {
                let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return Ok((char::from_u32(code).unwrap_or(REPLACEMENT), 12));
            }
            Ok((REPLACEMENT, 6))
        }
        0xDC00..=0xDFFF => Ok((REPLACEMENT, 6)),
        _ => Ok((char::from_u32(hi).unwrap_or(REPLACEMENT), 6)),
    }
}

/// The value of the 4 hex digits at the start of `s`.
fn hex4(s: &[u8]) -> Option<u32> {
    let mut v = 0;
    for &b in s.get(..4)? {
        v = v * 16 + char::from(b).to_digit(16)?;
    }
    Some(v)
}

/// Decodes a JSON string body into an owned `String`; `None` when an escape is invalid or the
/// result is not UTF-8.
pub(crate) fn unescape(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    unescape_with(bytes, |chunk| {
        out.extend_from_slice(chunk);
        true
    })
    .ok()?;
    String::from_utf8(out).ok()
}

/// A string body as text: borrowed when it has no escapes, decoded otherwise.
pub(crate) fn body_to_str(bytes: &[u8], escaped: bool) -> Option<Cow<'_, str>> {
    if escaped {
        unescape(bytes).map(Cow::Owned)
    } else {
        core::str::from_utf8(bytes).ok().map(Cow::Borrowed)
    }
}

/// Whether a key as written (`escaped` says whether it has escapes) equals `expected`, a key
/// already decoded. Does not allocate.
#[inline]
pub(crate) fn key_matches(key: &[u8], escaped: bool, expected: &[u8]) -> bool {
    if !escaped {
        return sluicebox_abi::bytes_eq(key, expected);
    }
    let mut rest = expected;
    let done = unescape_with(key, |chunk| match rest.strip_prefix(chunk) {
        Some(tail) => {
            rest = tail;
            true
        }
        None => false,
    });
    done == Ok(true) && rest.is_empty()
}

/// Appends `s` to `out` as the body of a JSON string (without the quotes): `"`, `\` and the
/// control characters are escaped, everything else is copied.
pub(crate) fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    for (i, &b) in s.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[run..i]);
        if short.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&s[run..]);
}

/// Appends `s` to `out` as a JSON string, quotes included.
#[inline]
pub(crate) fn write_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    escape_into(s, out);
    out.push(b'"');
}

/// Appends the decimal text of `v` to `out` (no `core::fmt`, which would cost kilobytes of wasm).
pub(crate) fn write_i64(v: i64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = Vec::new();
        escape_into(s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn unescapes_simple_and_unicode_escapes() {
        assert_eq!(
            unescape(br#"a\"b\\c\/d\b\f\n\r\t"#).unwrap(),
            "a\"b\\c/d\u{8}\u{c}\n\r\t"
        );
        assert_eq!(unescape(br"le\u0076el").unwrap(), "level");
        assert_eq!(unescape(br"\u00e9\u4e2d").unwrap(), "é中");
        assert_eq!(unescape("plain é".as_bytes()).unwrap(), "plain é");
    }

    #[test]
    fn unescapes_surrogate_pairs_and_replaces_lone_surrogates() {
        assert_eq!(unescape(br"\ud83d\ude00!").unwrap(), "😀!");
        assert_eq!(unescape(br"\uD83D\uDE00").unwrap(), "😀");
        assert_eq!(unescape(br"x\ud83dy").unwrap(), "x\u{FFFD}y");
        assert_eq!(unescape(br"\ude00").unwrap(), "\u{FFFD}");
        // A high surrogate followed by a non-low escape: the second escape stands on its own.
        assert_eq!(unescape(br"\ud83d\u0041").unwrap(), "\u{FFFD}A");
    }

    #[test]
    fn rejects_invalid_escapes() {
        assert_eq!(unescape(br"\x"), None);
        assert_eq!(unescape(br"abc\"), None);
        assert_eq!(unescape(br"\u12"), None);
        assert_eq!(unescape(br"\u12g4"), None);
    }

    #[test]
    fn matches_escaped_keys_without_allocating() {
        assert!(key_matches(br"le\u0076el", true, b"level"));
        assert!(!key_matches(br"le\u0076el", true, b"levels"));
        assert!(!key_matches(br"le\u0076el", true, b"leve"));
        assert!(key_matches(br"a\.b", false, br"a\.b"));
        assert!(key_matches(br#"a\"b"#, true, br#"a"b"#));
        assert!(!key_matches(br"bad\x", true, b"bad"));
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(esc("plain"), "plain");
        assert_eq!(esc("a\"b\\c\nd\u{1}é"), "a\\\"b\\\\c\\nd\\u0001é");
        assert_eq!(
            unescape(esc("x\u{1f}\u{8}\t\"").as_bytes()).unwrap(),
            "x\u{1f}\u{8}\t\""
        );
    }

    #[test]
    fn formats_integers() {
        for v in [0, 7, -7, 10, 1234567890, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_i64(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), alloc::format!("{v}"));
        }
    }
}
