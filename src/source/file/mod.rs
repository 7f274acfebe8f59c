//! The file tail source: follows the files matching glob patterns, survives rotation
//! (rename + create, copytruncate, deletion while read) and restarts (checkpoints of the
//! acknowledged offset, F2), and tells files apart by identity (F1, see [`identity`]).
//!
//! One [`crate::ack::Stream`] per file generation; its position is the byte offset in the
//! file. A truncation (the file got shorter, or the 64 bytes before the read position
//! changed) starts a new generation from 0; the lines not read yet are then read from the
//! copy a copytruncate left in the same directory (same head, same bytes before the read
//! position), on the old generation's stream. A checkpointed file renamed in its directory to
//! a name the globs do not match (the kubelet's `0.log` -> `0.log.<timestamp>`) is found
//! again by its inode after a restart and read on from its checkpoint; a file just opened is
//! checkpointed at once, so that holds from its first scan. The reader runs on one blocking
//! thread and reads files round-robin: a file's turn reads 64 KiB chunks until a batch has
//! gone, a short read finds its end for now, or 2 MiB were read, so a busy file cannot starve
//! the others and a backlog goes in full batches.
//!
//! Cost: one open descriptor per followed file (until `rotate_wait_secs` after it was
//! rotated away or deleted), one `stat` per matched path per `glob_interval_ms`, one `fstat`
//! per file per round, and a small checkpoint write (two `fsync`s) per `checkpoint_interval_ms`
//! and per scan that opened a file.

pub mod checkpoint;
pub mod identity;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::{BoxFuture, Source, SourceContext};
use crate::ack::Stream;
use crate::batch::Batch;
use crate::error::{Error, Kind, Result};
use crate::frame::Decoder;

use checkpoint::{Checkpoint, Entry, Store};
use identity::{HEAD_BYTES, Verdict};

/// Bytes asked of a file per read.
const CHUNK: usize = 64 * 1024;
/// Most reads in one file's turn (2 MiB): twice the default `max_batch_bytes`, so a turn
/// normally ends when a batch has gone.
const TURN_CHUNKS: usize = 32;

/// Bytes before the read position kept per file, to recognise its copy after a
/// copytruncate.
const RECENT_BYTES: usize = 64;

/// Where files found at the first start begin.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// At offset 0 (default).
    #[default]
    Beginning,
    /// At their current end: only lines written from now on.
    End,
}

fn default_true() -> bool {
    true
}
fn default_glob_interval() -> u64 {
    1000
}
fn default_rotate_wait() -> u64 {
    30
}
fn default_checkpoint_interval() -> u64 {
    1000
}
fn default_exclude() -> Vec<String> {
    vec!["*.gz".into()]
}

/// `type = "file"`: tails files.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Glob patterns of files to read (required, at least one).
    pub include: Vec<String>,
    /// Glob patterns (matched against the full path, or the file name when the pattern has
    /// no `/`) of files to skip. Default `["*.gz"]` (compressed rotated files).
    #[serde(default = "default_exclude")]
    pub exclude: Vec<String>,
    /// `beginning` (default) or `end`: where files found at the first start (with no
    /// checkpoint) begin. Files found later always start at 0.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Skip files not modified for this many seconds. Default: none.
    #[serde(default)]
    pub ignore_older_secs: Option<u64>,
    /// Follow files as they grow (default true); false reads each file once to its end and
    /// the source finishes.
    #[serde(default = "default_true")]
    pub follow: bool,
    /// How often the globs are expanded again, in ms. Default 1000.
    #[serde(default = "default_glob_interval")]
    pub glob_interval_ms: u64,
    /// How long a rotated-away or deleted file stays open (read to its end) in s. Default 30.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait_secs: u64,
    /// How often the checkpoint is written, in ms. Default 1000.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
}

impl FileSourceConfig {
    /// Checks the config and builds the source. Relative patterns resolve against the config
    /// file's directory.
    ///
    /// # Errors
    /// [`Kind::Config`] naming the key: no `include`, an invalid pattern, a zero interval.
    pub fn build(&self, cx: &crate::config::BuildContext) -> Result<Box<dyn Source>> {
        let name = &cx.name;
        if self.include.is_empty() {
            return Err(Error::new(
                Kind::Config,
                format!("sources.{name}: key `include`: at least one pattern is required"),
            ));
        }
        let include = self
            .include
            .iter()
            .map(|p| {
                let r = cx.resolve(Path::new(p)).display().to_string();
                glob::Pattern::new(&r).map(|_| r).map_err(|e| {
                    Error::new(
                        Kind::Config,
                        format!("sources.{name}: key `include`: `{p}`: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let exclude = self
            .exclude
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| {
                    Error::new(
                        Kind::Config,
                        format!("sources.{name}: key `exclude`: `{p}`: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for (k, v) in [
            ("glob_interval_ms", self.glob_interval_ms),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
        ] {
            if v == 0 {
                return Err(Error::new(
                    Kind::Config,
                    format!("sources.{name}: key `{k}`: must be greater than 0"),
                ));
            }
        }
        Ok(Box::new(FileSource {
            include,
            exclude,
            cfg: self.clone(),
            state_override: None,
            decorate: None,
        }))
    }
}

/// Adds fields to each file's events (used by `kubernetes_logs` for path metadata): given a
/// path, returns the decoder to use for a stream starting at an offset.
pub type DecoderFactory =
    std::sync::Arc<dyn Fn(&Path, &SourceContext, u64) -> Box<dyn Decoder> + Send + Sync>;

/// The file tail source. Build it with [`FileSourceConfig::build`] or [`FileSource::new`].
pub struct FileSource {
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
    cfg: FileSourceConfig,
    state_override: Option<PathBuf>,
    decorate: Option<DecoderFactory>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("include", &self.include)
            .finish()
    }
}

impl FileSource {
    /// A source from a config, with patterns taken as they are (no config directory).
    ///
    /// # Errors
    /// As [`FileSourceConfig::build`].
    pub fn new(cfg: &FileSourceConfig) -> Result<Self> {
        let include = cfg.include.clone();
        let exclude = cfg
            .exclude
            .iter()
            .map(|p| {
                glob::Pattern::new(p)
                    .map_err(|e| Error::config(format!("key `exclude`: `{p}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        for p in &include {
            glob::Pattern::new(p)
                .map_err(|e| Error::config(format!("key `include`: `{p}`: {e}")))?;
        }
        Ok(Self {
            include,
            exclude,
            cfg: cfg.clone(),
            state_override: None,
            decorate: None,
        })
    }

    /// Uses `factory` for each file's decoder instead of the source's codec.
    pub fn with_decoder(mut self, factory: DecoderFactory) -> Self {
        self.decorate = Some(factory);
        self
    }
}

impl Source for FileSource {
    fn run(self: Box<Self>, cx: SourceContext) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let name = cx.name().to_string();
            tokio::task::spawn_blocking(move || Tail::new(*self, cx)?.run())
                .await
                .map_err(|e| {
                    Error::new(Kind::Input, format!("{name}: file reader task failed: {e}"))
                })?
        })
    }
}

/// One followed file generation.
struct Tracked {
    path: PathBuf,
    file: std::fs::File,
    dev: u64,
    ino: u64,
    stream: Stream,
    decoder: Box<dyn Decoder>,
    open: Option<Batch>,
    /// Next byte to read.
    read_pos: u64,
    /// Where the last batch sent ended (the start, before any): a copytruncate's copy is
    /// read from here, since lines framed into the open batch are not sent yet.
    sent: u64,
    generation: u64,
    /// When its path stopped pointing to it (rotated away, deleted).
    gone_since: Option<Instant>,
    /// Read to EOF and finished (follow = false).
    done: bool,
    /// The file's first bytes (up to `HEAD_BYTES`) and the last bytes before `read_pos` (up
    /// to `RECENT_BYTES`), as read: after a copytruncate they find the copy.
    head: Vec<u8>,
    recent: Vec<u8>,
    /// The modification time seen at the last read.
    mtime: Option<SystemTime>,
}

struct Tail {
    src: FileSource,
    cx: SourceContext,
    store: Option<Store>,
    saved: HashMap<(u64, u64), Entry>,
    files: Vec<Tracked>,
    first_scan: bool,
    reported: HashSet<PathBuf>,
    buf: Vec<u8>,
    resets: u64,
    next: usize,
}

impl Tail {
    fn new(src: FileSource, cx: SourceContext) -> Result<Self> {
        let dir = match &src.state_override {
            Some(d) => Some(d.clone()),
            None => cx.state_dir()?,
        };
        let store = dir.map(|d| Store::new(&d));
        let mut saved = HashMap::new();
        if let Some(s) = &store {
            let loaded = s.load();
            for w in &loaded.warnings {
                tracing::warn!(source = cx.name(), "{w}");
                cx.metrics().error("checkpoint_corrupt", "reading");
            }
            for e in loaded.checkpoint.files {
                saved.insert((e.dev, e.ino), e);
            }
        }
        Ok(Self {
            src,
            cx,
            store,
            saved,
            files: Vec::new(),
            first_scan: true,
            reported: HashSet::new(),
            buf: vec![0; CHUNK],
            resets: 0,
            next: 0,
        })
    }

    fn report(&mut self, path: &Path, what: &str) {
        if self.reported.insert(path.to_path_buf()) {
            tracing::warn!(source = self.cx.name(), path = %path.display(), "{what}");
            self.cx.metrics().error("file_skipped", "reading");
        }
    }

    fn excluded(&self, p: &Path) -> bool {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.src.exclude.iter().any(|x| {
            if x.as_str().contains('/') {
                x.matches_path(p)
            } else {
                x.matches(&name)
            }
        })
    }

    /// Expands the globs, opens new files, notices rotated-away and deleted ones. Returns
    /// whether it opened a file.
    fn scan(&mut self) -> bool {
        let before = self.files.len();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let patterns = self.src.include.clone();
        for pat in &patterns {
            let paths = match glob::glob(pat) {
                Ok(p) => p,
                Err(e) => {
                    self.report(Path::new(pat), &format!("bad pattern: {e}"));
                    continue;
                }
            };
            for entry in paths {
                let path = match entry {
                    Ok(p) => p,
                    Err(e) => {
                        let p = e.path().to_path_buf();
                        self.report(&p, &format!("cannot read: {}", e.error()));
                        continue;
                    }
                };
                if self.excluded(&path) {
                    continue;
                }
                let meta = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        self.report(
                            &path,
                            &format!("cannot stat (symlink loop, dangling link?): {e}"),
                        );
                        continue;
                    }
                };
                if !meta.is_file() {
                    self.report(
                        &path,
                        "not a regular file (directory, FIFO, device): skipped",
                    );
                    continue;
                }
                let id = (meta.dev(), meta.ino());
                seen.insert(id);
                if let Some(t) = self.files.iter_mut().find(|t| (t.dev, t.ino) == id) {
                    // Same file, maybe under a new name (rename rotation): keep its offset.
                    if t.path != path && t.gone_since.is_none() {
                        t.path = path;
                    } else if t.path == path {
                        t.gone_since = None;
                    }
                    continue;
                }
                if let Some(old) = self.src.cfg.ignore_older_secs {
                    let age = meta
                        .modified()
                        .ok()
                        .and_then(|m| SystemTime::now().duration_since(m).ok())
                        .unwrap_or_default();
                    if age > Duration::from_secs(old) {
                        continue;
                    }
                }
                self.open(path, meta);
            }
        }
        for t in &mut self.files {
            if !seen.contains(&(t.dev, t.ino)) && t.gone_since.is_none() {
                t.gone_since = Some(Instant::now());
            }
        }
        if self.first_scan {
            self.recover_renamed(&seen);
        }
        self.first_scan = false;
        self.files.len() > before
    }

    /// At the first scan: a checkpointed file the globs no longer match because it was
    /// renamed in its directory (kubelet's `0.log` -> `0.log.20261206-101010`, while the
    /// agent was down or before it had read and delivered the file's end) is found again by
    /// its (device, inode) and read on from the saved offset, under the name it was followed
    /// by, then let go like any rotated-away file. Costs one directory listing per directory
    /// of such entries, once.
    fn recover_renamed(&mut self, seen: &HashSet<(u64, u64)>) {
        let mut dirs: HashMap<PathBuf, Vec<(u64, u64)>> = HashMap::new();
        for (id, e) in &self.saved {
            if let Some(dir) = Path::new(&e.path).parent()
                && !seen.contains(id)
            {
                dirs.entry(dir.to_path_buf()).or_default().push(*id);
            }
        }
        for (dir, ids) in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue; // gone with its directory (a deleted pod): nothing to read
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let id = (meta.dev(), meta.ino());
                if !meta.is_file() || !ids.contains(&id) {
                    continue;
                }
                let path = entry.path();
                if self
                    .saved
                    .get(&id)
                    .is_some_and(|e| Path::new(&e.path) == path)
                {
                    // Not renamed: still at its checkpointed path, so the scan skipped it on
                    // purpose (excluded, no longer included, or older than ignore_older).
                    continue;
                }
                let Some(e) = self.saved.remove(&id) else {
                    continue;
                };
                let Ok(file) = std::fs::File::open(&path) else {
                    continue;
                };
                let opened = file.metadata().map(|m| (m.dev(), m.ino()));
                if opened.ok() != Some(id) {
                    continue; // replaced between the listing and the open
                }
                let Ok(Verdict::Resume(start)) =
                    identity::check(&file, e.head_hash, e.head_len, e.offset, e.marker)
                else {
                    continue; // the inode holds another file now
                };
                tracing::info!(source = self.cx.name(), path = %path.display(),
                    was = %e.path, offset = start,
                    "renamed since the checkpoint: reading the rest of it");
                let mut t = self.tracked(PathBuf::from(&e.path), file, id, start, 0);
                t.gone_since = Some(Instant::now());
                self.files.push(t);
            }
        }
    }

    fn open(&mut self, path: PathBuf, meta: std::fs::Metadata) {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.report(&path, &format!("cannot open: {e}"));
                return;
            }
        };
        // The identity is the open descriptor's: the path may have moved since the stat.
        let meta = file.metadata().unwrap_or(meta);
        let id = (meta.dev(), meta.ino());
        let mut start = 0;
        let mut generation = 0;
        if let Some(e) = self.saved.remove(&id) {
            match identity::check(&file, e.head_hash, e.head_len, e.offset, e.marker) {
                Ok(Verdict::Resume(o)) => start = o,
                Ok(Verdict::NewGeneration) => {
                    // Truncated while we were down (copytruncate): the lines after the
                    // checkpoint are in the copy, if there is one in the directory.
                    let copy = path.parent().and_then(|dir| {
                        self.find_in_dir(dir, e.offset, |f| {
                            matches!(
                                identity::check(f, e.head_hash, e.head_len, e.offset, e.marker),
                                Ok(Verdict::Resume(_))
                            )
                        })
                    });
                    if let Some((cpath, cfile, cid)) = copy {
                        tracing::info!(source = self.cx.name(), path = %path.display(),
                            copy = %cpath.display(), offset = e.offset,
                            "truncated while stopped: reading the rest from its copy");
                        let mut t = self.tracked(cpath, cfile, cid, e.offset, 0);
                        t.gone_since = Some(Instant::now());
                        self.files.push(t);
                    }
                    self.resets += 1;
                    generation = 1;
                    tracing::info!(source = self.cx.name(), path = %path.display(),
                        "file identity changed since the checkpoint: reading it from the start");
                    self.cx.metrics().error("identity_reset", "reading");
                }
                Err(err) => {
                    self.report(&path, &format!("cannot read: {err}"));
                    return;
                }
            }
        } else if self.first_scan && self.src.cfg.read_from == ReadFrom::End {
            start = meta.len();
        }
        self.reported.remove(&path);
        self.files
            .push(self.tracked(path, file, id, start, generation));
    }

    fn tracked(
        &self,
        path: PathBuf,
        file: std::fs::File,
        id: (u64, u64),
        start: u64,
        generation: u64,
    ) -> Tracked {
        let key = if generation == 0 {
            path.display().to_string()
        } else {
            format!("{}#{generation}", path.display())
        };
        let decoder = match &self.src.decorate {
            Some(f) => f(&path, &self.cx, start),
            None => self
                .cx
                .frame()
                .decoder_named(start, &path.display().to_string()),
        };
        // What was read before `start` (a resumed file): its head and the bytes just before.
        let read = |at: u64, len: u64| identity::read_range(&file, at, len).unwrap_or_default();
        let head = read(0, start.min(HEAD_BYTES));
        let recent_from = start.saturating_sub(RECENT_BYTES as u64);
        let recent = read(recent_from, start - recent_from);
        Tracked {
            stream: self.cx.stream(key, Some(start)),
            decoder,
            open: None,
            read_pos: start,
            sent: start,
            generation,
            gone_since: None,
            done: false,
            head,
            recent,
            mtime: None,
            path,
            file,
            dev: id.0,
            ino: id.1,
        }
    }

    /// File `i`'s turn: reads chunks of it until a batch has gone or a short read finds
    /// its end for now, so a file with a backlog sends full batches and each file gets at
    /// most about one batch per round. Returns (bytes read, keep going); false = shutting
    /// down.
    fn read_one(&mut self, i: usize) -> (usize, bool) {
        let mut total = 0;
        let mut first = true;
        loop {
            let (n, go, sent) = self.read_chunk(i, first);
            total += n;
            // A turn also ends after `TURN_CHUNKS` reads (a line longer than the batch
            // bounds, with no newline for gigabytes, completes no batch) and at shutdown.
            if !go
                || sent
                || n < CHUNK
                || total >= TURN_CHUNKS * CHUNK
                || self.cx.shutdown().is_triggered()
            {
                return (total, go);
            }
            first = false;
        }
    }

    /// Reads one chunk of file `i`, first checking (when `check`) whether it was truncated
    /// in place. Returns (bytes read, keep going, a batch went); false = shutting down.
    fn read_chunk(&mut self, i: usize, check: bool) -> (usize, bool, bool) {
        if self.files[i].done {
            return (0, true, false);
        }
        if check && !self.check_truncated(i) {
            return (0, true, false);
        }
        let t = &mut self.files[i];
        let n = match t.file.read_at(&mut self.buf, t.read_pos) {
            Ok(n) => n,
            Err(e) => {
                let p = t.path.clone();
                self.report(&p, &format!("read failed: {e}"));
                return (0, true, false);
            }
        };
        self.read_tail(i, n)
    }

    /// Whether file `i` can be read on: false when it cannot be (its copy after a
    /// truncation could not be opened). Detects a truncation in place and starts the file's
    /// next generation.
    fn check_truncated(&mut self, i: usize) -> bool {
        // Truncated in place (copytruncate): a new generation from 0. Shorter than what was
        // read, or grown again past it with other bytes where our last read ended
        // (truncated and refilled between two reads: one 64-byte pread per read that
        // finds new data).
        // Refilled to exactly the length we had read is caught by the modification time.
        let meta = self.files[i].file.metadata();
        let t = &mut self.files[i];
        let modified = meta.as_ref().ok().and_then(|m| m.modified().ok());
        let changed = modified != t.mtime;
        t.mtime = modified;
        let truncated = match meta {
            Ok(m) if m.len() < t.read_pos => true,
            Ok(m) if (m.len() > t.read_pos || changed) && !t.recent.is_empty() => {
                !holds(&t.file, t.read_pos - t.recent.len() as u64, &t.recent)
            }
            _ => false,
        };
        if truncated {
            self.resets += 1;
            self.cx.metrics().error("file_truncated", "reading");
            // copytruncate: what was written after our last read and before the truncation
            // is only in the copy. Find it, and read it from the last line we sent.
            let from = self.files[i].sent;
            if let Some((path, file, id)) = self.find_copy(i) {
                tracing::info!(source = self.cx.name(), path = %self.files[i].path.display(),
                    copy = %path.display(), offset = from,
                    "truncated in place: reading the rest from its copy");
                let mut copy = self.tracked(path, file, id, from, 0);
                // The copy continues the old stream: the batches in flight acknowledge into
                // it, and its checkpoint never claims what they hold before it is delivered.
                copy.stream = self.files[i].stream.clone();
                copy.gone_since = Some(Instant::now());
                self.files.push(copy);
            } else {
                // No copy: the lines framed into the open batch are all that is left of
                // them, so they go now (with a copy they are read again from it).
                let t = &mut self.files[i];
                if let Some(mut batch) = t.open.take()
                    && t.decoder.decode_chunk(&mut &[][..], &mut batch, true)
                    && !send(&self.cx, t, batch)
                {
                    return false;
                }
            }
            let old = &self.files[i];
            let (path, id, generation) = (old.path.clone(), (old.dev, old.ino), old.generation + 1);
            let Ok(file) = old.file.try_clone() else {
                return false;
            };
            self.files[i] = self.tracked(path, file, id, 0, generation);
        }
        true
    }

    /// Accounts for `n` bytes just read of file `i` into the read buffer and frames them:
    /// complete batches go. Returns (n, keep going, a batch went).
    fn read_tail(&mut self, i: usize, n: usize) -> (usize, bool, bool) {
        let t = &mut self.files[i];
        if t.read_pos < HEAD_BYTES && t.head.len() as u64 == t.read_pos {
            let take = n.min((HEAD_BYTES - t.read_pos) as usize);
            t.head.extend_from_slice(&self.buf[..take]);
        }
        if n >= RECENT_BYTES {
            t.recent.clear();
            t.recent.extend_from_slice(&self.buf[n - RECENT_BYTES..n]);
        } else if n > 0 {
            t.recent.extend_from_slice(&self.buf[..n]);
            let extra = t.recent.len().saturating_sub(RECENT_BYTES);
            t.recent.drain(..extra);
        }
        t.read_pos += n as u64;
        let mut input = &self.buf[..n];
        let mut batch = t.open.take().unwrap_or_else(|| self.cx.batch());
        if n == 0 && !self.src.cfg.follow {
            // The end of a file read once: everything left, in as many batches as it takes.
            t.done = true;
            let mut sent = false;
            while t.decoder.decode_eof(&mut batch) {
                if !send(&self.cx, t, batch) {
                    return (0, false, sent);
                }
                sent = true;
                batch = self.cx.batch();
            }
            return (0, true, sent);
        }
        // Complete batches go; what the decoder keeps (a partial line) waits in `open`. An
        // empty read still decodes: lines carried over from the last batch go now.
        // A full read means more is waiting: the open batch stays open for it (batches fill
        // up to their bounds); a short read is the file's end for now, and what is framed goes.
        let idle = n < CHUNK;
        let mut sent = false;
        while t.decoder.decode_chunk(&mut input, &mut batch, idle) {
            if !send(&self.cx, t, batch) {
                return (n, false, sent);
            }
            sent = true;
            batch = self.cx.batch();
        }
        if n == 0 && t.decoder.flush_idle(&mut batch, Instant::now()) {
            // A dangling partial container log line waited past its timeout.
            if !send(&self.cx, t, batch) {
                return (0, false, sent);
            }
            sent = true;
            batch = self.cx.batch();
        }
        t.open = Some(batch);
        (n, true, sent)
    }

    /// After file `i` was truncated in place: a regular file in its directory, not followed
    /// yet, at least as long as what was read of `i`, that starts with `i`'s head and holds
    /// `i`'s last read bytes just before `read_pos`: the copy a copytruncate made. Costs one
    /// directory listing and two small reads per candidate, once per truncation.
    fn find_copy(&self, i: usize) -> Option<(PathBuf, std::fs::File, (u64, u64))> {
        let t = &self.files[i];
        if t.head.is_empty() {
            return None;
        }
        let recent_at = t.read_pos - t.recent.len() as u64;
        self.find_in_dir(t.path.parent()?, t.read_pos, |f| {
            holds(f, 0, &t.head) && holds(f, recent_at, &t.recent)
        })
    }

    /// A regular file in `dir`, not followed and not in the checkpoint, holding at least
    /// `min_len` bytes, that `matches`.
    fn find_in_dir(
        &self,
        dir: &Path,
        min_len: u64,
        matches: impl Fn(&std::fs::File) -> bool,
    ) -> Option<(PathBuf, std::fs::File, (u64, u64))> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            if !meta.is_file()
                || meta.len() < min_len
                || self.files.iter().any(|f| (f.dev, f.ino) == id)
                || self.saved.contains_key(&id)
            {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            if matches(&file) {
                return Some((path, file, id));
            }
        }
        None
    }

    fn checkpoint(&mut self) {
        let Some(store) = &self.store else { return };
        let mut c = Checkpoint {
            version: checkpoint::VERSION,
            files: Vec::new(),
        };
        for t in &self.files {
            let Some(offset) = t.stream.acked() else {
                continue;
            };
            self.cx.metrics().all().checkpoint_lag(
                self.cx.name(),
                t.stream.key(),
                t.read_pos.saturating_sub(offset),
            );
            let head_len = match t.file.metadata() {
                Ok(m) => m.len().min(HEAD_BYTES),
                Err(_) => continue,
            };
            let (Ok(Some(head_hash)), Ok(Some(marker))) = (
                identity::head_hash(&t.file, head_len),
                identity::marker(&t.file, offset),
            ) else {
                continue; // truncated under us: the next round starts a new generation
            };
            c.files.push(Entry {
                path: t.path.display().to_string(),
                dev: t.dev,
                ino: t.ino,
                head_hash,
                head_len,
                offset,
                marker,
            });
        }
        // Entries of checkpointed files the scans skip (older than `ignore_older_secs`,
        // excluded, no longer included) stay while the file is still at its path: written to
        // again after a later restart, it is read on from there, not from its start. One
        // `stat` per such entry.
        self.saved
            .retain(|id, e| std::fs::metadata(&e.path).is_ok_and(|m| (m.dev(), m.ino()) == *id));
        c.files.extend(self.saved.values().cloned());
        if let Err(e) = store.save(&c) {
            tracing::warn!(
                source = self.cx.name(),
                "{e} (the previous checkpoint stays)"
            );
            self.cx
                .metrics()
                .error("checkpoint_write_failed", "writing");
        }
    }

    /// Closes files rotated away or deleted more than `rotate_wait_secs` ago that were read
    /// to their end and fully acknowledged (or whose wait ran out twice over).
    fn reap(&mut self) {
        let wait = Duration::from_secs(self.src.cfg.rotate_wait_secs);
        self.files.retain(|t| match t.gone_since {
            Some(g) => {
                let at_eof = t
                    .file
                    .metadata()
                    .map(|m| m.len() <= t.read_pos)
                    .unwrap_or(true);
                // Lines framed into the open batch and not sent yet go at the next read.
                let all_sent = t.decoder.position() <= t.sent;
                let waited = g.elapsed();
                !((waited >= wait && at_eof && all_sent && t.stream.is_idle())
                    || waited >= wait * 2)
            }
            None => true,
        });
    }

    /// Waits until every file's batches are acknowledged, at most `limit`; woken by the
    /// acknowledgements themselves (a 10 ms poll here was half of a short read-once run).
    fn wait_idle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        for t in &self.files {
            if crate::runtime::wait_until(t.stream.idle(), Some(until)).is_none() {
                return;
            }
        }
    }

    fn run(mut self) -> Result<()> {
        let glob_every = Duration::from_millis(self.src.cfg.glob_interval_ms);
        let ckpt_every = Duration::from_millis(self.src.cfg.checkpoint_interval_ms);
        // A file just opened is checkpointed at once, not an interval later: once it is in
        // the checkpoint, a restart finds it again even if it was renamed out of the globs'
        // sight meanwhile (`recover_renamed`).
        let mut opened = self.scan();
        let (mut last_glob, mut last_ckpt) = (Instant::now(), Instant::now());
        // Idle rounds sleep 1 ms, then twice as long each round up to 50 ms: a writer that
        // just paused is picked up within a millisecond or two, an idle node costs a round
        // of polls every 50 ms.
        let mut idle = Duration::from_millis(1);
        loop {
            if self.cx.shutdown().is_triggered() {
                break;
            }
            let mut progress = 0;
            let count = self.files.len();
            for k in 0..count {
                let i = (self.next + k) % count;
                let (n, go) = self.read_one(i);
                progress += n;
                if !go {
                    self.wait_idle(Duration::from_secs(2));
                    self.checkpoint();
                    return Ok(());
                }
            }
            if count > 0 {
                self.next = (self.next + 1) % count;
            }
            if !self.src.cfg.follow && self.files.iter().all(|t| t.done) {
                self.wait_idle(Duration::from_secs(30));
                self.checkpoint();
                return Ok(());
            }
            if last_glob.elapsed() >= glob_every {
                opened |= self.scan();
                self.reap();
                last_glob = Instant::now();
            }
            if opened || last_ckpt.elapsed() >= ckpt_every {
                self.checkpoint();
                last_ckpt = Instant::now();
                opened = false;
            }
            if progress == 0 {
                std::thread::sleep(idle);
                idle = (idle * 2).min(Duration::from_millis(50));
            } else {
                idle = Duration::from_millis(1);
            }
        }
        self.wait_idle(Duration::from_secs(2));
        self.checkpoint();
        Ok(())
    }
}

/// Sends file `t`'s completed `batch`, ending at its decoder's position, and records that
/// position as sent. False when the source is shutting down (nothing was sent).
fn send(cx: &SourceContext, t: &mut Tracked, batch: Batch) -> bool {
    let end = t.decoder.position();
    if !cx.blocking_send(&t.stream, batch, end) {
        return false;
    }
    t.sent = end;
    true
}

/// Whether `f` holds exactly `want` at `at` (a short file does not). One pread of up to
/// `HEAD_BYTES` into a stack buffer.
fn holds(f: &std::fs::File, at: u64, want: &[u8]) -> bool {
    let mut buf = [0u8; HEAD_BYTES as usize];
    let Some(b) = buf.get_mut(..want.len()) else {
        return false;
    };
    f.read_exact_at(b, at).is_ok() && b == want
}
