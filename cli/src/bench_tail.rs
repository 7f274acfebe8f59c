//! `tail.*` scenarios of `sluicebox bench`: the corpus split over 100 files, through the
//! file source → a wasm filter → a file sink. `tail.read_once_100` reads the finished files
//! once; `tail.follow_100` follows the files while a writer appends to them (the time runs
//! from the start until the sink has taken every kept event); `tail.follow_100_no_ckpt` is the
//! same with checkpoints written once an hour, so that the difference to `tail.follow_100`
//! is what checkpointing costs at the default interval (1 s).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluicebox::config::Config;

use crate::Fail;

/// Files the corpus is spread over.
pub(crate) const FILES: usize = 100;

/// How a round runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The files are written whole before the run, and read once.
    ReadOnce,
    /// The files are appended to while the source follows them; `checkpoint_ms` as given.
    Follow { checkpoint_ms: u64 },
}

/// One tail scenario: its scratch directory, the corpus's lines per file, and what the
/// sink must end up with.
pub(crate) struct TailBench {
    dir: PathBuf,
    module: PathBuf,
    /// Each file's lines; shared with the writer thread (a clone would copy the corpus
    /// inside the timed window).
    chunks: std::sync::Arc<Vec<Vec<u8>>>,
    kept: u64,
    mode: Mode,
}

impl TailBench {
    /// Splits `corpus` (NDJSON) line by line over [`FILES`] files; `module` is the filter
    /// (drop_debug: it keeps the lines without `"level":"DEBUG"`).
    pub(crate) fn new(corpus: &[u8], module: &Path, dir: &Path, mode: Mode) -> Self {
        let mut chunks = vec![Vec::new(); FILES];
        let mut kept = 0u64;
        for (i, line) in corpus
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let c = &mut chunks[i % FILES];
            c.extend_from_slice(line);
            c.push(b'\n');
            if !contains(line, b"\"level\":\"DEBUG\"") {
                kept += 1;
            }
        }
        Self {
            dir: dir.to_path_buf(),
            module: module.to_path_buf(),
            chunks: std::sync::Arc::new(chunks),
            kept,
            mode,
        }
    }

    /// One round; returns its seconds (setup and the final drain excluded for `Follow`).
    pub(crate) fn run_once(&mut self) -> Result<f64, Fail> {
        let io = |what: &str, e: std::io::Error| Fail::usage(format!("tail bench: {what}: {e}"));
        let _ = std::fs::remove_dir_all(&self.dir);
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| io("mkdir", e))?;
        let paths: Vec<PathBuf> = (0..FILES)
            .map(|i| logs.join(format!("f{i:03}.log")))
            .collect();
        for (p, c) in paths.iter().zip(self.chunks.iter()) {
            let body: &[u8] = if self.mode == Mode::ReadOnce { c } else { b"" };
            std::fs::write(p, body).map_err(|e| io("write", e))?;
        }
        let (follow, ckpt) = match self.mode {
            Mode::ReadOnce => (false, 1000),
            Mode::Follow { checkpoint_ms } => (true, checkpoint_ms),
        };
        let text = format!(
            "data_dir = {state:?}\n[api]\nenabled = false\n\
             [sources.files]\ntype = \"file\"\ninclude = [{glob:?}]\nfollow = {follow}\n\
             checkpoint_interval_ms = {ckpt}\nglob_interval_ms = 100\n\
             [transforms.drop_debug]\ntype = \"wasm\"\ninputs = [\"files\"]\nmodule = {module:?}\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"drop_debug\"]\npath = {out:?}\n\
             [dead_letter]\ntype = \"blackhole\"\n",
            state = self.dir.join("state").display().to_string(),
            glob = logs.join("*.log").display().to_string(),
            module = self.module.display().to_string(),
            out = self.dir.join("out.ndjson").display().to_string(),
        );
        let config = Config::parse(&text).map_err(|e| Fail::usage(e.message().to_string()))?;
        let built = config
            .build(&self.dir)
            .map_err(|e| Fail::usage(e.message().to_string()))?;
        let t0 = Instant::now();
        let running = built
            .topology
            .start()
            .map_err(|e| Fail::usage(e.to_string()))?;
        if self.mode == Mode::ReadOnce {
            let report = running.wait().map_err(|e| Fail::usage(e.to_string()))?;
            let secs = t0.elapsed().as_secs_f64();
            return check(&report, self.kept).map(|()| secs);
        }
        // A writer appends each file's lines in 8 pieces, round robin over the files.
        let chunks = std::sync::Arc::clone(&self.chunks);
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut files = paths
                .iter()
                .map(|p| std::fs::OpenOptions::new().append(true).open(p))
                .collect::<std::io::Result<Vec<_>>>()?;
            for piece in 0..8 {
                for (f, c) in files.iter_mut().zip(chunks.iter()) {
                    let at = |k: usize| {
                        let mut i = c.len() * k / 8;
                        while i > 0 && i < c.len() && c[i - 1] != b'\n' {
                            i += 1;
                        }
                        i
                    };
                    f.write_all(&c[at(piece)..at(piece + 1)])?;
                }
            }
            Ok(())
        });
        let sent = || {
            running
                .metrics()
                .components()
                .into_iter()
                .find(|(id, _, _)| id == "out")
                .map_or(0, |(_, _, m)| m.sent_events.get())
        };
        while sent() < self.kept {
            if t0.elapsed() > Duration::from_secs(600) {
                return Err(Fail::usage(format!(
                    "tail bench: the sink took {} of {} events in 10 minutes",
                    sent(),
                    self.kept
                )));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let secs = t0.elapsed().as_secs_f64();
        writer
            .join()
            .map_err(|_| Fail::usage("tail bench: the writer panicked"))?
            .map_err(|e| io("append", e))?;
        running.shutdown_handle().trigger();
        let report = running.wait().map_err(|e| Fail::usage(e.to_string()))?;
        check(&report, self.kept).map(|()| secs)
    }
}

impl Drop for TailBench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sink took exactly the kept events, and every component balances.
fn check(report: &sluicebox::runtime::RunReport, kept: u64) -> Result<(), Fail> {
    if let Some((c, e)) = report.errors.first() {
        return Err(Fail::usage(format!("tail bench: {c}: {e}")));
    }
    let sent = report.component("out").map_or(0, |c| c.sent);
    if sent != kept || !report.is_balanced() {
        return Err(Fail::usage(format!(
            "tail bench: the sink took {sent} events, {kept} expected, or the counts do not balance"
        )));
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
