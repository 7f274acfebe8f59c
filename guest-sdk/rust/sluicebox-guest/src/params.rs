//! The init parameters: a JSON object whose values are strings, the only JSON a guest parses.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use core::str::FromStr;

use crate::json;

/// The parameters a module was configured with, as given to `#[init]`.
///
/// The host passes a JSON object whose values are strings (`{"n":"10","field":"items"}`);
/// when a key repeats, the last occurrence wins.
///
/// # Examples
///
/// ```
/// use sluicebox_guest::Params;
///
/// let params = Params::parse(r#"{"n": "10", "mode": "fast"}"#).unwrap();
/// assert_eq!(params.get("mode"), Some("fast"));
/// assert_eq!(params.get_parsed::<u32>("n").unwrap(), Some(10));
/// assert_eq!(params.get_parsed::<u32>("missing").unwrap(), None);
/// assert!(params.get_parsed::<u32>("mode").is_err());
/// ```
#[derive(Clone, Default)]
pub struct Params {
    /// Keys and values, decoded, one after the other.
    text: String,
    /// Ranges of `text`: (key, value), in the order given.
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Why parameters were rejected: malformed JSON, a value that is not a string, a value that
/// does not parse, or a missing required key. Converts into the `String` an `#[init]` function
/// returns, so `?` works there.
#[derive(Clone, PartialEq, Eq)]
pub struct ParamError {
    message: String,
}

impl ParamError {
    fn new(parts: &[&str]) -> Self {
        let mut message = String::new();
        for part in parts {
            message.push_str(part);
        }
        Self { message }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl AsRef<str> for ParamError {
    fn as_ref(&self) -> &str {
        &self.message
    }
}

impl From<ParamError> for String {
    fn from(e: ParamError) -> String {
        e.message
    }
}

impl Params {
    /// Parses `{"key":"value",...}`. Empty text (or only whitespace) is an empty object.
    ///
    /// # Errors
    ///
    /// When the text is not such an object: malformed JSON, a value that is not a string, or
    /// anything after the object.
    pub fn parse(text: &str) -> Result<Self, ParamError> {
        Parser {
            s: text.as_bytes(),
            at: 0,
        }
        .parse()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| &self.text[k.clone()] == key)
            .map(|(_, v)| &self.text[v.clone()])
    }

    /// The value of `key` parsed as a `T`, or `None` when the key is absent.
    ///
    /// # Errors
    ///
    /// When the value does not parse; the message names the key and the value.
    pub fn get_parsed<T: FromStr>(&self, key: &str) -> Result<Option<T>, ParamError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ParamError::new(&["parameter `", key, "`: cannot parse `", v, "`"])),
        }
    }

    /// The value of `key` parsed as a `T`.
    ///
    /// # Errors
    ///
    /// When the key is absent or its value does not parse.
    pub fn require<T: FromStr>(&self, key: &str) -> Result<T, ParamError> {
        self.get_parsed(key)?
            .ok_or_else(|| ParamError::new(&["parameter `", key, "` is required"]))
    }

    /// The keys and values, in the order given (duplicates included).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(k, v)| (&self.text[k.clone()], &self.text[v.clone()]))
    }

    /// The number of entries (duplicates included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

struct Parser<'s> {
    s: &'s [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> ParamError {
        ParamError::new(&["invalid parameters: ", what])
    }

    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A string at the cursor, decoded and appended to `text`: its range there.
    fn string(&mut self, text: &mut String) -> Result<Range<usize>, ParamError> {
        let start = self.at;
        let mut i = start;
        loop {
            match self.s.get(i) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => i += 2,
                Some(0..=0x1f) => return Err(self.error("control character in a string")),
                Some(_) => i += 1,
            }
        }
        let body = &self.s[start..i];
        self.at = i + 1;
        let decoded = json::unescape(body).ok_or_else(|| self.error("invalid escape"))?;
        let from = text.len();
        text.push_str(&decoded);
        Ok(from..text.len())
    }

    fn parse(mut self) -> Result<Params, ParamError> {
        let mut params = Params::default();
        self.skip_ws();
        if self.at == self.s.len() {
            return Ok(params);
        }
        if !self.eat(b'{') {
            return Err(self.error("expected a JSON object"));
        }
        if !self.eat(b'}') {
            loop {
                if !self.eat(b'"') {
                    return Err(self.error("expected a key"));
                }
                let key = self.string(&mut params.text)?;
                if !self.eat(b':') {
                    return Err(self.error("expected `:`"));
                }
                if !self.eat(b'"') {
                    return Err(ParamError::new(&[
                        "parameter `",
                        &params.text[key],
                        "` must be a string",
                    ]));
                }
                let value = self.string(&mut params.text)?;
                params.entries.push((key, value));
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return Err(self.error("expected `,` or `}`"));
            }
        }
        self.skip_ws();
        if self.at != self.s.len() {
            return Err(self.error("text after the object"));
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects_of_strings() {
        let p = Params::parse(" { \"a\" : \"1\" , \"b\\u00e9\":\"x\\\"y\" ,\"a\":\"2\"} ").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.get("a"), Some("2"));
        assert_eq!(p.get("bé"), Some("x\"y"));
        assert_eq!(p.get("c"), None);
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [("a", "1"), ("bé", "x\"y"), ("a", "2")]
        );
        assert!(Params::parse("").unwrap().is_empty());
        assert!(Params::parse(" {} ").unwrap().is_empty());
    }

    #[test]
    fn rejects_other_json() {
        for bad in [
            "[]",
            "{",
            "{\"a\"}",
            "{\"a\":1}",
            "{\"a\":\"1\",}",
            "{\"a\":\"1\"} x",
            "{\"a\":\"\\q\"}",
            "{\"a\":\"1\"",
            "{\"a\":\"\n\"}",
        ] {
            assert!(Params::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Params::parse("{\"n\":5}").unwrap_err().message(),
            "parameter `n` must be a string"
        );
    }

    #[test]
    fn parses_values() {
        let p = Params::parse(r#"{"n":"12","bad":"x"}"#).unwrap();
        assert_eq!(p.require::<u8>("n").unwrap(), 12);
        assert_eq!(p.get_parsed::<u8>("none").unwrap(), None);
        assert_eq!(
            String::from(p.require::<u8>("bad").unwrap_err()),
            "parameter `bad`: cannot parse `x`"
        );
        assert_eq!(
            p.require::<u8>("none").unwrap_err().message(),
            "parameter `none` is required"
        );
    }
}
