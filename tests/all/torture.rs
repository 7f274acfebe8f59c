//! Shared machinery of the kill -9 torture tests (`tail::kill9_torture` and
//! `kubernetes::kubernetes_kill9_torture`): a seeded random sequence, a child process that
//! runs a source into an fsyncing file until it is SIGKILLed, and the [`Ledger`] of what the
//! writer put in which file, which judges the output at the end.
//!
//! The ledger's rules:
//! - A file is deleted only when the reader has it open at that moment (checked in
//!   `/proc/<child>/fd`: it must drain it), or when every line it holds was delivered
//!   already. Otherwise the deletion is postponed: deleting lines no reader ever had a chance
//!   to open would be the writer's loss, not ours. A rotation to a name the reader does not
//!   follow is postponed until the reader recorded the file in its checkpoint (or delivered
//!   all of it: [`Ledger::rename_if_recorded`]).
//! - A line is excused when missing only if every file that held it was deleted while open
//!   and the reader was killed while it still held it open (the kill took the only way to
//!   those bytes). A reader that let a deleted file go must have delivered all of it.
//! - A duplicate after a restart is explained only if some file holding the line had no
//!   checkpoint entry at the kill, or an entry whose offset is at or before the line: a
//!   restart never re-reads what the checkpoint on disk covered. A duplicate within one run
//!   is explained only for a line held by two files (a copytruncate's copy).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluicebox::source::file::checkpoint::Store;
use sluicebox::source::file::identity::{self, Verdict};
use sluicebox::{Flow, Output, Sink};

/// The environment variable that puts the test binary in child mode (its value: the
/// torture's directory).
pub const CHILD_ENV: &str = "SLUICEBOX_TORTURE_CHILD";

/// How many kills: `SLUICEBOX_TORTURE_ROUNDS`, else `default`.
pub fn rounds(default: u32) -> u32 {
    std::env::var("SLUICEBOX_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A seeded pseudo-random sequence (a 64-bit LCG). The seed comes from
/// `SLUICEBOX_TORTURE_SEED`, else the clock; it is printed, and replays the choices (not
/// the timing) of a run.
pub struct Rng {
    state: u64,
    /// The seed this sequence started from.
    pub seed: u64,
}

impl Rng {
    /// A sequence from `SLUICEBOX_TORTURE_SEED` or the clock.
    pub fn new() -> Self {
        let seed = std::env::var("SLUICEBOX_TORTURE_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        Self { state: seed, seed }
    }

    /// A number in `0..m` (`m` > 0).
    pub fn below(&mut self, m: u64) -> u64 {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.state >> 33) % m
    }
}

/// Appends each event as a line and fsyncs before returning (delivered = on disk).
pub struct FileSink(pub std::fs::File);

impl Sink for FileSink {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let mut buf = Vec::new();
        for e in out.iter() {
            buf.extend_from_slice(e.bytes);
            buf.push(b'\n');
        }
        self.0
            .write_all(&buf)
            .map_err(|e| sluicebox::Error::sink("torture sink", e))?;
        self.0
            .sync_data()
            .map_err(|e| sluicebox::Error::sink("torture sink", e))?;
        Ok(Flow::Continue)
    }
}

/// The output file the children append to.
pub fn out_path(dir: &Path) -> PathBuf {
    dir.join("out.ndjson")
}

/// One run of the test binary in child mode, running the test function `test` (a source
/// into a [`FileSink`]) until it is SIGKILLed; its stderr goes to `<dir>/child-<n>.err`.
/// Dropping it kills it.
pub struct Child {
    proc: std::process::Child,
    /// Which run this is (0 for the first).
    pub number: u32,
}

impl Child {
    /// Starts run `number` of `test` over `dir`.
    pub fn spawn(test: &str, dir: &Path, number: u32) -> Self {
        let err = std::fs::File::create(dir.join(format!("child-{number}.err"))).unwrap();
        let proc = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Self { proc, number }
    }

    /// The (device, inode) of every file the child has open.
    pub fn open_files(&self) -> HashSet<(u64, u64)> {
        let fds = format!("/proc/{}/fd", self.proc.id());
        let Ok(entries) = std::fs::read_dir(fds) else {
            return HashSet::new();
        };
        entries
            .flatten()
            // Follows the descriptor's link: works for deleted files too.
            .filter_map(|e| std::fs::metadata(e.path()).ok())
            .filter(|m| m.is_file())
            .map(|m| (m.dev(), m.ino()))
            .collect()
    }

    /// Whether the child has exited (crashed: it only ever stops by a kill).
    pub fn exited(&mut self) -> bool {
        !matches!(self.proc.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL on unix.
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// The lines of the children's stderr that report a panic.
pub fn panics(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("child-") && name.ends_with(".err") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            found.extend(
                text.lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("{name}: {l}")),
            );
        }
    }
    found
}

/// With `SLUICEBOX_TORTURE_KEEP` set and the run `failed`: keeps the torture's directory
/// (pods or logs, output, checkpoint, children's stderr) with the ledger in `ledger.txt`,
/// and prints where.
pub fn keep_on_failure(failed: bool, dir: tempfile::TempDir, ledger: &Ledger) {
    if failed && std::env::var_os("SLUICEBOX_TORTURE_KEEP").is_some() {
        ledger.dump(&dir.path().join("ledger.txt"));
        eprintln!("kept {}", dir.keep().display());
    }
}

/// Why a file is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gone {
    /// Not gone.
    No,
    /// Deleted when all its lines were delivered.
    Delivered,
    /// Deleted while child `n` had it open.
    OpenBy(u32),
    /// Deleted while open, and the child was killed still holding it: what it had not
    /// delivered is lost with the kill, and excused.
    KilledHolding,
    /// Deleted while open, and the child let it go before its kill: it must have delivered
    /// all of it.
    Released,
}

/// One file the writer made.
struct Held {
    path: PathBuf,
    id: (u64, u64),
    lines: Vec<u32>,
    len: u64,
    gone: Gone,
}

/// One child's share of the output, and the checkpoint it started from: file (index into
/// the ledger's files) -> acknowledged offset.
struct Segment {
    start: usize,
    covered: HashMap<usize, u64>,
}

/// Reads the line number an output line carries (`None`: a torn or garbled line).
type IdOf = Box<dyn Fn(&str) -> Option<u32>>;

/// What the writer did and what the readers delivered; see the module docs for the rules.
pub struct Ledger {
    out: PathBuf,
    state: PathBuf,
    id_of: IdOf,
    files: Vec<Held>,
    by_path: HashMap<PathBuf, usize>,
    /// Per line: the offset of its first byte in the files that hold it.
    at: Vec<u64>,
    /// Lines two files held (a copytruncate's original and its copy): one run may read
    /// both.
    held_twice: HashSet<u32>,
    /// Output lines in order (line numbers), and how much of the output was read.
    delivered: Vec<u32>,
    counts: Vec<u32>,
    read_to: u64,
    unparsed: Vec<String>,
    segments: Vec<Segment>,
    /// Files deleted.
    pub deleted: u32,
    /// Deletions postponed (the reader had not opened a file not delivered yet).
    pub postponed: u32,
    /// Renames postponed by [`Ledger::rename_if_recorded`].
    pub postponed_renames: u32,
}

/// The verdict of a torture run.
#[derive(Debug)]
pub struct Outcome {
    /// Lines written.
    pub lines: u32,
    /// Lines missing that the readers had to deliver.
    pub lost: Vec<u32>,
    /// Lines missing because the only files holding them were deleted and the reader was
    /// killed before it had drained them.
    pub excused: u32,
    /// Extra copies delivered, in all.
    pub duplicates: u32,
    /// The most duplicates one restart caused.
    pub max_per_restart: u32,
    /// Duplicates within one run (only lines held by two files may have them).
    pub within_run: u32,
    /// Duplicates no rule explains: (run, line).
    pub unexplained: Vec<(usize, u32)>,
    /// Output lines whose line number could not be read (a torn or garbled event).
    pub unparsed: Vec<String>,
}

impl Ledger {
    /// A ledger of a torture in `dir`, whose source keeps its checkpoint in `state` and
    /// whose output lines name their line number through `id_of`.
    pub fn new(dir: &Path, state: &Path, id_of: impl Fn(&str) -> Option<u32> + 'static) -> Self {
        Self {
            out: out_path(dir),
            state: state.to_path_buf(),
            id_of: Box::new(id_of),
            files: Vec::new(),
            by_path: HashMap::new(),
            at: Vec::new(),
            held_twice: HashSet::new(),
            delivered: Vec::new(),
            counts: Vec::new(),
            read_to: 0,
            unparsed: Vec::new(),
            segments: vec![Segment {
                start: 0,
                covered: HashMap::new(),
            }],
            deleted: 0,
            postponed: 0,
            postponed_renames: 0,
        }
    }

    /// Lines written so far (they are numbered 0..).
    pub fn lines(&self) -> u32 {
        self.at.len() as u32
    }

    /// Appends `chunks` to `path` in one write (creating it). A chunk `(Some(n), bytes)`
    /// starts line `n` (the next number); `(None, bytes)` continues one started earlier in
    /// the same file (the end of a split message).
    pub fn append(&mut self, path: &Path, chunks: &[(Option<u32>, Vec<u8>)]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        let m = f.metadata().unwrap();
        let id = (m.dev(), m.ino());
        let i = match self.by_path.get(path) {
            Some(&i) if self.files[i].id == id => i,
            _ => {
                self.files.push(Held {
                    path: path.to_path_buf(),
                    id,
                    lines: Vec::new(),
                    len: m.len(),
                    gone: Gone::No,
                });
                self.by_path
                    .insert(path.to_path_buf(), self.files.len() - 1);
                self.files.len() - 1
            }
        };
        let mut buf = Vec::new();
        let held = &mut self.files[i];
        for (n, bytes) in chunks {
            if let Some(n) = n {
                assert_eq!(*n as usize, self.at.len(), "lines are numbered in order");
                self.at.push(held.len + buf.len() as u64);
                held.lines.push(*n);
            }
            buf.extend_from_slice(bytes);
        }
        f.write_all(&buf).unwrap();
        held.len += buf.len() as u64;
    }

    /// Renames `from` to `to` (rotation).
    pub fn rename(&mut self, from: &Path, to: &Path) {
        std::fs::rename(from, to).unwrap();
        if let Some(i) = self.by_path.remove(from) {
            self.files[i].path = to.to_path_buf();
            self.by_path.insert(to.to_path_buf(), i);
        }
    }

    /// Renames `from` to `to` when every line in it was delivered, or when the reader
    /// recorded it in the checkpoint on disk; false when postponed. For a rotation to a name
    /// the reader's globs do not match: only a file in the checkpoint can be found again
    /// after a restart, and a file renamed out of sight before any reader recorded it is the
    /// writer's loss (the source checkpoints a file as soon as it opens it: the window is
    /// that write).
    pub fn rename_if_recorded(&mut self, from: &Path, to: &Path, child: &Child) -> bool {
        let recorded = |l: &Self| {
            let Some(&i) = l.by_path.get(from) else {
                return true;
            };
            let id = l.files[i].id;
            Store::new(&l.state)
                .load()
                .checkpoint
                .files
                .iter()
                .any(|e| (e.dev, e.ino) == id)
        };
        let ok = match self.deletable(from, child) {
            Some(Gone::Delivered) => true,
            Some(_) => recorded(self),
            None => false,
        };
        if !ok {
            self.postponed_renames += 1;
            return false;
        }
        self.rename(from, to);
        true
    }

    /// Copies `path` to `copy` and truncates `path` (logrotate's copytruncate; the writer
    /// waits meanwhile): the lines are the copy's now.
    pub fn copytruncate(&mut self, path: &Path, copy: &Path) {
        std::fs::copy(path, copy).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let Some(&i) = self.by_path.get(path) else {
            return;
        };
        let m = std::fs::metadata(copy).unwrap();
        let lines = std::mem::take(&mut self.files[i].lines);
        self.held_twice.extend(lines.iter().copied());
        let len = std::mem::replace(&mut self.files[i].len, 0);
        self.files.push(Held {
            path: copy.to_path_buf(),
            id: (m.dev(), m.ino()),
            lines,
            len,
            gone: Gone::No,
        });
        self.by_path
            .insert(copy.to_path_buf(), self.files.len() - 1);
    }

    /// How `path` may be deleted now: `None` when the reader has not opened it and some of
    /// its lines are not delivered yet (postponed).
    fn deletable(&mut self, path: &Path, child: &Child) -> Option<Gone> {
        let Some(&i) = self.by_path.get(path) else {
            return Some(Gone::Delivered); // not a file of ours (a compressed copy)
        };
        self.refresh();
        let h = &self.files[i];
        if h.lines.iter().all(|&n| self.counts[n as usize] > 0) {
            Some(Gone::Delivered)
        } else if child.open_files().contains(&h.id) {
            Some(Gone::OpenBy(child.number))
        } else {
            None
        }
    }

    /// Deletes `path` when the rules allow it (see the module docs); false when postponed.
    pub fn delete(&mut self, path: &Path, child: &Child) -> bool {
        let Some(gone) = self.deletable(path, child) else {
            self.postponed += 1;
            return false;
        };
        std::fs::remove_file(path).unwrap();
        if let Some(i) = self.by_path.remove(path) {
            self.files[i].gone = gone;
        }
        self.deleted += 1;
        true
    }

    /// Deletes directory `dir` and everything in it (a pod that went away), when every file
    /// of ours in it may be deleted; false when postponed.
    pub fn delete_dir(&mut self, dir: &Path, child: &Child) -> bool {
        let inside: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        let mut fates = Vec::new();
        for p in inside {
            match self.deletable(&p, child) {
                Some(g) => fates.push((p, g)),
                None => {
                    self.postponed += 1;
                    return false;
                }
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
        for (p, g) in fates {
            if let Some(i) = self.by_path.remove(&p) {
                self.files[i].gone = g;
            }
            self.deleted += 1;
        }
        true
    }

    /// SIGKILLs `child`, notes which deleted files it still held, and which checkpoint the
    /// next run starts from.
    pub fn kill(&mut self, child: Child) {
        let open = child.open_files();
        for h in &mut self.files {
            if h.gone == Gone::OpenBy(child.number) {
                h.gone = if open.contains(&h.id) {
                    Gone::KilledHolding
                } else {
                    Gone::Released
                };
            }
        }
        drop(child);
        self.refresh();
        let mut covered = HashMap::new();
        for e in Store::new(&self.state).load().checkpoint.files {
            let Some(i) = self
                .files
                .iter()
                .position(|h| h.gone == Gone::No && h.id == (e.dev, e.ino))
            else {
                continue;
            };
            let Ok(f) = std::fs::File::open(&self.files[i].path) else {
                continue;
            };
            if let Ok(Verdict::Resume(o)) =
                identity::check(&f, e.head_hash, e.head_len, e.offset, e.marker)
            {
                covered.insert(i, o);
            }
        }
        self.segments.push(Segment {
            start: self.delivered.len(),
            covered,
        });
    }

    /// Reads the output delivered since the last call (whole lines only).
    fn refresh(&mut self) {
        self.counts.resize(self.at.len(), 0);
        let Ok(mut f) = std::fs::File::open(&self.out) else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.read_to)).is_err() {
            return;
        }
        let mut text = Vec::new();
        if f.read_to_end(&mut text).is_err() {
            return;
        }
        let Some(end) = text.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        self.read_to += end as u64 + 1;
        for line in text[..end].split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            match (self.id_of)(&line).filter(|&n| (n as usize) < self.at.len()) {
                Some(n) => {
                    self.counts[n as usize] += 1;
                    self.delivered.push(n);
                }
                None => self
                    .unparsed
                    .push(format!("run {}: {line}", self.segments.len() - 1)),
            }
        }
    }

    /// Lines missing, split into (must have been delivered, excused).
    fn missing(&self, homes: &[Vec<usize>]) -> (Vec<u32>, u32) {
        let mut lost = Vec::new();
        let mut excused = 0;
        for (n, h) in homes.iter().enumerate() {
            if self.counts[n] > 0 {
                continue;
            }
            if !h.is_empty() && h.iter().all(|&i| self.files[i].gone == Gone::KilledHolding) {
                excused += 1;
            } else {
                lost.push(n as u32);
            }
        }
        (lost, excused)
    }

    fn homes(&self) -> Vec<Vec<usize>> {
        let mut homes = vec![Vec::new(); self.at.len()];
        for (i, h) in self.files.iter().enumerate() {
            for &n in &h.lines {
                homes[n as usize].push(i);
            }
        }
        homes
    }

    /// Waits (up to `limit`) until every line the readers must deliver arrived, then judges
    /// the output.
    pub fn settle(&mut self, limit: Duration) -> Outcome {
        let homes = self.homes();
        let until = Instant::now() + limit;
        loop {
            self.refresh();
            if self.missing(&homes).0.is_empty() || Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (lost, excused) = self.missing(&homes);
        let mut seen = vec![0u32; self.at.len()];
        let (mut duplicates, mut within_run, mut max_per_restart) = (0, 0, 0);
        let mut unexplained = Vec::new();
        for (k, seg) in self.segments.iter().enumerate() {
            let end = self
                .segments
                .get(k + 1)
                .map_or(self.delivered.len(), |s| s.start);
            let mut this_run = vec![false; self.at.len()];
            let mut restart_dups = 0;
            for &n in &self.delivered[seg.start..end] {
                let i = n as usize;
                if seen[i] > 0 {
                    duplicates += 1;
                    let explained = if this_run[i] {
                        within_run += 1;
                        self.held_twice.contains(&n)
                    } else {
                        restart_dups += 1;
                        homes[i]
                            .iter()
                            .any(|h| seg.covered.get(h).is_none_or(|&o| self.at[i] >= o))
                    };
                    if !explained {
                        unexplained.push((k, n));
                    }
                }
                seen[i] += 1;
                this_run[i] = true;
            }
            max_per_restart = max_per_restart.max(restart_dups);
        }
        Outcome {
            lines: self.lines(),
            lost,
            excused,
            duplicates,
            max_per_restart,
            within_run,
            unexplained,
            unparsed: self.unparsed.clone(),
        }
    }

    /// Checkpoint entries that name no file present now (a deleted file's entry left
    /// behind), once `limit` passed or there are none.
    pub fn stale_checkpoint_entries(&self, limit: Duration) -> usize {
        let until = Instant::now() + limit;
        loop {
            let present: HashSet<(u64, u64)> = self
                .files
                .iter()
                .filter(|h| h.gone == Gone::No)
                .map(|h| h.id)
                .collect();
            let stale = Store::new(&self.state)
                .load()
                .checkpoint
                .files
                .iter()
                .filter(|e| !present.contains(&(e.dev, e.ino)))
                .count();
            if stale == 0 || Instant::now() > until {
                return stale;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes what the ledger knows to `path` (to explain a failure): every file with its
    /// lines' offsets and fate, and each run's starting checkpoint.
    pub fn dump(&self, path: &Path) {
        let mut t = String::new();
        for (i, h) in self.files.iter().enumerate() {
            t.push_str(&format!(
                "file {i} {} {:?} {:?} len {}\n",
                h.path.display(),
                h.id,
                h.gone,
                h.len
            ));
            for &n in &h.lines {
                t.push_str(&format!("  line {n} at {}\n", self.at[n as usize]));
            }
        }
        for (k, s) in self.segments.iter().enumerate() {
            t.push_str(&format!("run {k} from output line {}\n", s.start));
            for (i, o) in &s.covered {
                t.push_str(&format!("  covered file {i} to {o}\n"));
            }
        }
        std::fs::write(path, t).unwrap();
    }

    /// Where line `n` is now (for a loss report): the files holding it and their fate.
    pub fn whereabouts(&self, n: u32) -> Vec<String> {
        self.files
            .iter()
            .filter(|h| h.lines.contains(&n))
            .map(|h| {
                format!(
                    "{} ({:?}, offset {})",
                    h.path.display(),
                    h.gone,
                    self.at[n as usize]
                )
            })
            .collect()
    }
}
