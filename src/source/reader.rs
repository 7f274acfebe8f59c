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

/// An input read by position (bytes in memory, a regular file): with several workers,
/// [`crate::Pipeline::run_at`] has each read and frame its own byte range of it, so that
/// reading scales with the workers instead of taking turns.
///
/// Cost: one positioned read (`pread` for a file, a copy for memory) per 64 KiB framed.
pub trait ReadAt: Sync {
    /// The input's size now: it sizes the ranges. The input ends where a read returns 0
    /// bytes (past the size, one byte is read to see whether there is more: a file that
    /// grew, or one whose size says 0, as under /proc).
    ///
    /// # Errors
    /// When the size cannot be read.
    fn size(&self) -> std::io::Result<u64>;

    /// Reads into `buf` from byte `offset`: how many bytes were read, 0 at or past the end.
    ///
    /// # Errors
    /// When the read fails.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
}

impl ReadAt for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - from);
        buf[..n].copy_from_slice(&self[from..from + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> std::io::Result<u64> {
        self.as_slice().size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

#[cfg(unix)]
impl ReadAt for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        // Interrupted reads are retried by the caller (`read_at_checked`).
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> std::io::Result<u64> {
        (**self).size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        (**self).read_at(buf, offset)
    }
}

/// A [`ReadAt`] read from its start as a stream, up to the size it has when the read gets
/// there. Cost: a positioned read per `read` call.
pub struct AtReader<'a> {
    src: &'a dyn ReadAt,
    pos: u64,
}

impl<'a> AtReader<'a> {
    /// A stream over `src` from its first byte.
    pub fn new(src: &'a dyn ReadAt) -> Self {
        Self { src, pos: 0 }
    }
}

impl Read for AtReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = read_at_checked(self.src, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// [`ReadAt::read_at`], retried when interrupted, with a count that cannot be true (more
/// than the buffer holds, or past the largest offset) turned into an error: framing bytes
/// the buffer held from before would pass them off as input.
pub(crate) fn read_at_checked(
    src: &dyn ReadAt,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<usize> {
    loop {
        match src.read_at(buf, offset) {
            Ok(n) if n <= buf.len() && offset.checked_add(n as u64).is_some() => return Ok(n),
            Ok(n) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the input said it read {n} bytes into {} at offset {offset}",
                        buf.len()
                    ),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
