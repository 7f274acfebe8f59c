//! A source over any [`std::io::Read`]: standard input, or a file read once from its start.
//! One stream; it ends when the reader does.

use std::io::Read;

use super::{BoxFuture, Source, SourceContext};
use crate::error::{Error, Kind, Result};

/// Reads one byte stream to its end on a blocking thread, framing it in place (no copy).
///
/// Cost: the frame stage's, plus one `spawn_blocking` thread while it runs.
pub struct ReaderSource {
    key: String,
    open: Box<dyn FnOnce() -> std::io::Result<Box<dyn Read + Send>> + Send>,
}

impl std::fmt::Debug for ReaderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderSource")
            .field("key", &self.key)
            .finish()
    }
}

impl ReaderSource {
    /// A source over `reader`, whose stream is named `key`.
    pub fn new(key: impl Into<String>, reader: impl Read + Send + 'static) -> Self {
        Self {
            key: key.into(),
            open: Box::new(move || Ok(Box::new(reader) as Box<dyn Read + Send>)),
        }
    }

    /// Standard input.
    pub fn stdin() -> Self {
        Self {
            key: "stdin".into(),
            open: Box::new(|| Ok(Box::new(std::io::stdin()) as Box<dyn Read + Send>)),
        }
    }

    /// The file at `path`, opened when the source starts and read once.
    pub fn file(path: impl Into<std::path::PathBuf>) -> Self {
        let path = path.into();
        Self {
            key: path.display().to_string(),
            open: Box::new(move || {
                std::fs::File::open(&path).map(|f| Box::new(f) as Box<dyn Read + Send>)
            }),
        }
    }
}

impl Source for ReaderSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let key = self.key.clone();
            tokio::task::spawn_blocking(move || read_all(*self, &cx))
                .await
                .map_err(|e| Error::new(Kind::Input, format!("{key}: reader task failed: {e}")))?
        })
    }
}

fn read_all(src: ReaderSource, cx: &SourceContext) -> Result<()> {
    let mut input = (src.open)().map_err(|e| {
        Error::new(Kind::Input, format!("{}: cannot open: {e}", src.key)).with_source(e)
    })?;
    let stream = cx.stream(src.key.as_str(), None);
    let mut decoder = cx.decoder(0);
    loop {
        if cx.shutdown().is_triggered() {
            return Ok(());
        }
        let mut batch = cx.batch();
        let more = decoder
            .fill(&mut input, &mut batch)
            .map_err(|e| Error::new(Kind::Input, format!("{}: {}", src.key, e.message())))?;
        if !more {
            return Ok(());
        }
        if !cx.blocking_send(&stream, batch, decoder.position()) {
            return Ok(());
        }
    }
}
