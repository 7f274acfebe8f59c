//! The one error type of the library: a [`Kind`] to match on, a message a person can act on,
//! and the underlying cause when there is one.
//!
//! Errors here are about the *run* (unreadable input, a module that will not load, a broken
//! filter). Problems with single events are not errors: those events are dead-lettered with
//! a reason and the run goes on.

use std::fmt;

/// What went wrong, coarsely, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Reading the input failed.
    Input,
    /// Writing to a sink failed.
    Sink,
    /// A configuration value is out of range or inconsistent.
    Config,
    /// A filter module could not be loaded: bad bytes, wrong ABI version, missing exports,
    /// unknown imports.
    ModuleLoad,
    /// A filter module refused its parameters or failed to instantiate.
    ModuleInit,
    /// A filter failed on one batch (trap, deadline, memory cap, bad result). The pipeline
    /// isolates the events that cause this; callers see it only from [`crate::Filter`] calls.
    FilterFailed,
    /// A filter failed so often in a row that the breaker stopped the run.
    FilterBroken,
}

/// The error type of every fallible call in this crate.
///
/// Cost: one allocation for the message. `Send + Sync + 'static`.
pub struct Error {
    kind: Kind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a human-readable `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(Kind::Config, message)
    }

    pub(crate) fn input(e: std::io::Error) -> Self {
        Self::new(Kind::Input, format!("reading input: {e}")).with_source(e)
    }

    /// A sink error wrapping an I/O error; for [`crate::Sink`] implementors.
    pub fn sink(context: &str, e: std::io::Error) -> Self {
        Self::new(Kind::Sink, format!("{context}: {e}")).with_source(e)
    }

    pub(crate) fn filter_failed(message: impl Into<String>) -> Self {
        Self::new(Kind::FilterFailed, message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    /// The message, through [`printable`]: an error may quote bytes a filter module chose
    /// (a rejection message, an import name, a line of WAT), and whatever prints it (a
    /// terminal, a log) must not receive line breaks or escape sequences from a module.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(&self.message))
    }
}

/// `text` with every control character (line breaks, carriage returns, tabs, ESC and so
/// every terminal escape sequence, NUL, DEL, C1 codes such as CSI `\u{9b}`) written as a Rust
/// escape such as `\n` or `\u{1b}`, so that text a filter module controls can neither start
/// a line of its own on stderr (forging a `sluicebox: received=…` summary) nor drive the
/// terminal. Every byte a module controls that reaches a terminal or a log goes through
/// this one function: guest log lines, WASI output, and every [`Error`] (its `Display`).
///
/// Idempotent (an escape contains no control character), so text escaped once may be
/// escaped again. Borrows when there is nothing to escape. Cost: one scan; one allocation
/// only when something is escaped.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_every_control_character_and_is_idempotent() {
        assert_eq!(printable("plain text, é"), "plain text, é");
        let nasty = "a\nsluicebox: received=999\r\u{1b}[31m\u{7}\0\u{9b}\u{7f}\t";
        let once = printable(nasty);
        assert_eq!(
            once,
            "a\\nsluicebox: received=999\\r\\u{1b}[31m\\u{7}\\u{0}\\u{9b}\\u{7f}\\t"
        );
        assert!(!once.chars().any(char::is_control));
        assert_eq!(printable(&once), once);
        let e = Error::new(Kind::ModuleInit, nasty);
        assert!(!e.to_string().chars().any(char::is_control));
        assert_eq!(e.message(), nasty, "the raw message stays available");
    }
}
