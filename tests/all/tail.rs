//! The file tail source: tailing, rotation, restart from checkpoint, kill -9 torture.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluicebox::runtime::{RuntimeSettings, SinkSpec, SourceSpec, Topology};
use sluicebox::source::file::{FileSource, FileSourceConfig};
use sluicebox::{Flow, Output, Sink};

use crate::torture;

type Lines = Arc<Mutex<Vec<String>>>;

struct Collect(Lines);

impl Sink for Collect {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let mut v = self.0.lock().unwrap();
        for e in out.iter() {
            v.push(String::from_utf8_lossy(e.bytes).into_owned());
        }
        Ok(Flow::Continue)
    }
}

fn config(dir: &Path, pattern: &str, follow: bool) -> FileSourceConfig {
    let toml = format!(
        "include = [{:?}]\nfollow = {follow}\nglob_interval_ms = 100\ncheckpoint_interval_ms = 100\nrotate_wait_secs = 1\n",
        dir.join(pattern).display().to_string()
    );
    toml::from_str(&toml).unwrap()
}

fn topology(cfg: &FileSourceConfig, data: &Path, sink: Box<dyn Sink + Send>) -> Topology {
    let mut s = RuntimeSettings::default();
    s.data_dir = Some(data.to_path_buf());
    let src = FileSource::new(cfg).unwrap();
    Topology::new(s)
        .source(SourceSpec::new("files", "file", Box::new(src)))
        .sink(SinkSpec::new("out", "collect", vec!["files".into()], sink))
}

/// A scratch directory with `logs/` (created) and `data/` (the run's data_dir) under it.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (logs, data) = (d.path().join("logs"), d.path().join("data"));
    std::fs::create_dir_all(&logs).unwrap();
    (d, logs, data)
}

/// logrotate's copytruncate: `log` copied to `copy`, then truncated in place.
fn copytruncate(log: &Path, copy: &Path) {
    std::fs::copy(log, copy).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn append(p: &Path, lines: std::ops::Range<u32>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    for i in lines {
        writeln!(f, "{{\"n\":{i}}}").unwrap();
    }
}

fn wait_for(lines: &Lines, n: usize) {
    let until = Instant::now() + Duration::from_secs(20);
    while lines.lock().unwrap().len() < n {
        assert!(
            Instant::now() < until,
            "timed out: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the source over `cfg` (read once) to its end; returns what the sink took.
fn read_once(cfg: &FileSourceConfig, data: &Path) -> Lines {
    let lines: Lines = Default::default();
    topology(cfg, data, Box::new(Collect(lines.clone())))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    lines
}

fn numbers(lines: &Lines) -> Vec<u32> {
    let mut v: Vec<u32> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap() as u32
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn tail_append_rename_copytruncate() {
    let (_d, logs, data) = scratch();
    let log = logs.join("app.log");
    append(&log, 0..3);
    // A partial last line waits for its newline.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"{\"n\":")
        .unwrap();
    let lines: Lines = Default::default();
    let running = topology(
        &config(&logs, "*.log", true),
        &data,
        Box::new(Collect(lines.clone())),
    )
    .start()
    .unwrap();
    wait_for(&lines, 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(numbers(&lines), vec![0, 1, 2], "partial line must wait");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"3}\n")
        .unwrap();
    append(&log, 4..6);
    wait_for(&lines, 6);
    // rename + create: the old file (now app.log.1, not matched) is drained by its fd.
    let mut old = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, logs.join("app.log.1")).unwrap();
    writeln!(old, "{{\"n\":6}}").unwrap();
    append(&log, 7..9);
    wait_for(&lines, 9);
    // copytruncate: copy, truncate in place, go on writing.
    copytruncate(&log, &logs.join("app.log.2"));
    std::thread::sleep(Duration::from_millis(200));
    append(&log, 9..11);
    wait_for(&lines, 11);
    // A matching directory is reported once and skipped, not fatal.
    std::fs::create_dir(logs.join("dir.log")).unwrap();
    append(&log, 11..12);
    wait_for(&lines, 12);
    let report = running.stop().unwrap();
    assert_eq!(numbers(&lines), (0..12).collect::<Vec<_>>());
    assert!(report.is_balanced());
}

/// A file with a backlog of many reads goes in full batches (up to the batch bounds), not
/// one batch per 64 KiB read: followed or read once, every batch but the last holds
/// `max_batch_events` (1,024 by default) lines.
#[test]
fn a_backlog_goes_in_full_batches() {
    struct Sizes(Arc<Mutex<Vec<usize>>>);
    impl Sink for Sizes {
        fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
            self.0.lock().unwrap().push(out.len());
            Ok(Flow::Continue)
        }
    }
    for follow in [true, false] {
        let (_d, logs, data) = scratch();
        // 20,000 lines of about 150 bytes: 3 MB, some 46 reads of 64 KiB.
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(128)));
        }
        std::fs::write(logs.join("big.log"), &text).unwrap();
        let sizes: Arc<Mutex<Vec<usize>>> = Default::default();
        let running = topology(
            &config(&logs, "*.log", follow),
            &data,
            Box::new(Sizes(sizes.clone())),
        )
        .start()
        .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while sizes.lock().unwrap().iter().sum::<usize>() < 20_000 {
            assert!(Instant::now() < until, "timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
        if follow {
            running.stop().unwrap();
        } else {
            running.wait().unwrap();
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20_000);
        let (last, full) = sizes.split_last().unwrap();
        assert!(
            full.iter().all(|&n| n == 1024) && *last <= 1024,
            "follow = {follow}: batch sizes {sizes:?}"
        );
    }
}

/// One read that holds several batches of short lines (64 KiB of 8-byte lines), in a file
/// that is not written again: every line arrives, followed or read once.
#[test]
fn a_read_of_several_batches_delivers_them_all_without_more_input() {
    for follow in [true, false] {
        let (_d, logs, data) = scratch();
        let mut text = String::new();
        for i in 0..6000 {
            text.push_str(&format!("{{\"n\":{i}}}\n"));
        }
        std::fs::write(logs.join("short.log"), &text).unwrap();
        let lines: Lines = Default::default();
        let running = topology(
            &config(&logs, "*.log", follow),
            &data,
            Box::new(Collect(lines.clone())),
        )
        .start()
        .unwrap();
        wait_for(&lines, 6000);
        let report = if follow {
            running.stop().unwrap()
        } else {
            running.wait().unwrap()
        };
        assert_eq!(
            numbers(&lines),
            (0..6000).collect::<Vec<_>>(),
            "follow = {follow}"
        );
        assert!(report.is_balanced());
    }
}

/// copytruncate with lines the reader has not read yet: they are only in the copy (which the
/// globs do not match), and are read from it, from the last line sent; nothing twice.
#[test]
fn copytruncate_reads_the_unread_rest_from_the_copy() {
    let (_d, logs, data) = scratch();
    let log = logs.join("app.log");
    append(&log, 0..3);
    let lines: Lines = Default::default();
    let running = topology(
        &config(&logs, "*.log", true),
        &data,
        Box::new(Collect(lines.clone())),
    )
    .start()
    .unwrap();
    wait_for(&lines, 3);
    for round in 0..5u32 {
        // Written, copied and truncated faster than the reader's idle poll (50 ms): most
        // or all of these lines are read from the copy.
        let base = 3 + round * 3000;
        append(&log, base..base + 2990);
        copytruncate(&log, &logs.join(format!("app.log.{round}")));
        std::thread::sleep(Duration::from_millis(300));
        append(&log, base + 2990..base + 3000);
        wait_for(&lines, (base + 3000) as usize);
    }
    std::thread::sleep(Duration::from_millis(300));
    let report = running.stop().unwrap();
    assert_eq!(numbers(&lines), (0..15003).collect::<Vec<_>>());
    assert!(report.is_balanced());
}

/// A sink that takes every event and holds its first batch (a synchronous sink
/// acknowledges when `write` returns) until `gate` opens.
struct Gated {
    lines: Lines,
    gate: Arc<std::sync::atomic::AtomicBool>,
}

impl Sink for Gated {
    fn write(&mut self, out: &Output<'_>) -> sluicebox::Result<Flow> {
        let mut v = self.lines.lock().unwrap();
        for e in out.iter() {
            v.push(String::from_utf8_lossy(e.bytes).into_owned());
        }
        drop(v);
        while !self.gate.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Flow::Continue)
    }
}

/// Follows `logs/app.log`, which holds 8,003 lines of about 11 bytes when the source
/// starts, through a [`Gated`] sink that holds the first batch, with an in-flight budget of
/// one batch. The first read is a full 64 KiB (some 6,000 lines, a batch 1,024): its first
/// batch goes and is held, its second waits for room, half-way through the read. Then
/// `rotate` runs, the gate opens, and the rest of the read stays framed in the open batch
/// when the turn ends. Returns the lines delivered once they stop coming, and whether the
/// run balanced.
fn rotate_while_framed_lines_wait(rotate: impl FnOnce(&Path, &Path)) -> (Vec<u32>, bool) {
    let (_d, logs, data) = scratch();
    let log = logs.join("app.log");
    append(&log, 0..8003);
    let lines: Lines = Default::default();
    let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut s = RuntimeSettings::default();
    s.data_dir = Some(data);
    let src = FileSource::new(&config(&logs, "*.log", true)).unwrap();
    let running = Topology::new(s)
        .source(
            SourceSpec::new("files", "file", Box::new(src))
                .in_flight(1, sluicebox::source::OverflowPolicy::Block),
        )
        .sink(SinkSpec::new(
            "out",
            "gated",
            vec!["files".into()],
            Box::new(Gated {
                lines: lines.clone(),
                gate: gate.clone(),
            }),
        ))
        .start()
        .unwrap();
    wait_for(&lines, 1024);
    std::thread::sleep(Duration::from_millis(500));
    rotate(&log, &logs);
    gate.store(true, std::sync::atomic::Ordering::SeqCst);
    // Settled: no new line for two seconds.
    let mut seen = 0;
    loop {
        std::thread::sleep(Duration::from_millis(2000));
        let now = lines.lock().unwrap().len();
        if now == seen {
            break;
        }
        seen = now;
    }
    let report = running.stop().unwrap();
    (numbers(&lines), report.is_balanced())
}

/// copytruncate while the reader holds framed lines it has not sent: those lines come from
/// the copy, once (they were lost when the copy was read from the decoder's position).
#[test]
fn copytruncate_while_framed_lines_wait_in_the_open_batch() {
    let (got, balanced) =
        rotate_while_framed_lines_wait(|log, logs| copytruncate(log, &logs.join("app.log.1")));
    assert_eq!(got, (0..8003).collect::<Vec<_>>());
    assert!(balanced);
}

/// Truncation in place with no copy while the reader holds framed lines it has not sent:
/// every line of the reads made before the truncation arrives (they were dropped with the
/// old generation's open batch), and only the unread rest is gone with the file's bytes.
#[test]
fn truncation_without_a_copy_sends_the_framed_lines_it_read() {
    let (got, balanced) = rotate_while_framed_lines_wait(|log, _| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(log)
            .unwrap()
            .set_len(0)
            .unwrap()
    });
    // The lines wholly inside the first read: the file's first 64 KiB.
    let (mut end, mut read) = (0usize, 0u32);
    while end + format!("{{\"n\":{read}}}\n").len() <= 65536 {
        end += format!("{{\"n\":{read}}}\n").len();
        read += 1;
    }
    let k = got.len() as u32;
    assert_eq!(got, (0..k).collect::<Vec<_>>(), "a prefix, once each");
    assert!(k >= read, "{k} lines arrived, the first read held {read}");
    assert!(balanced);
}

/// A checkpointed file that a restart skips as older than `ignore_older_secs` keeps its
/// checkpoint entry: written to again later, it is read on from there, not from its start.
#[test]
fn a_file_skipped_as_too_old_keeps_its_checkpoint() {
    let (_d, logs, data) = scratch();
    let log = logs.join("a.log");
    append(&log, 0..5);
    let plain = config(&logs, "*.log", false);
    assert_eq!(numbers(&read_once(&plain, &data)), vec![0, 1, 2, 3, 4]);
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let mut aging = plain.clone();
    aging.ignore_older_secs = Some(3600);
    // Skipped (too old), and the run writes its checkpoint on the way out.
    assert!(read_once(&aging, &data).lock().unwrap().is_empty());
    append(&log, 5..8);
    assert_eq!(numbers(&read_once(&aging, &data)), vec![5, 6, 7]);
}

#[test]
fn restart_from_checkpoint_reads_exactly_the_rest() {
    let (_d, logs, data) = scratch();
    append(&logs.join("a.log"), 0..5);
    append(&logs.join("b.log"), 100..103);
    let cfg = config(&logs, "*.log", false);
    let first = read_once(&cfg, &data);
    assert_eq!(numbers(&first), vec![0, 1, 2, 3, 4, 100, 101, 102]);
    append(&logs.join("a.log"), 5..8);
    let second = read_once(&cfg, &data);
    assert_eq!(numbers(&second), vec![5, 6, 7]);
    // A corrupt checkpoint with no good copy: reported, and everything is read again.
    let dir = data.join("source-files");
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(e.unwrap().path(), b"{corrupt").unwrap();
    }
    let third = read_once(&cfg, &data);
    assert_eq!(numbers(&third).len(), 11);
}

/// A checkpointed file that is now excluded stays unread after a restart: still at its
/// checkpointed path, it was not renamed, so the first scan's search for files renamed while
/// the agent was down must leave it alone.
#[test]
fn a_checkpointed_file_excluded_after_a_restart_stays_unread() {
    let (_d, logs, data) = scratch();
    append(&logs.join("a.log"), 0..2);
    append(&logs.join("b.log"), 100..102);
    let cfg = config(&logs, "*.log", false);
    let first = read_once(&cfg, &data);
    assert_eq!(numbers(&first), vec![0, 1, 100, 101]);
    append(&logs.join("a.log"), 2..3);
    append(&logs.join("b.log"), 102..104);
    let mut cfg = config(&logs, "*.log", true);
    cfg.exclude = vec![logs.join("b.log").display().to_string()];
    let second: Lines = Default::default();
    let running = topology(&cfg, &data, Box::new(Collect(second.clone())))
        .start()
        .unwrap();
    wait_for(&second, 1);
    // Several glob intervals and a rotate wait: time enough to read b.log if it were taken.
    std::thread::sleep(Duration::from_millis(1500));
    running.stop().unwrap();
    assert_eq!(numbers(&second), vec![2]);
}

#[test]
fn read_from_end_skips_existing_lines() {
    let (_d, logs, data) = scratch();
    append(&logs.join("a.log"), 0..5);
    let mut cfg = config(&logs, "*.log", true);
    cfg.read_from = sluicebox::source::file::ReadFrom::End;
    let lines: Lines = Default::default();
    let running = topology(&cfg, &data, Box::new(Collect(lines.clone())))
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append(&logs.join("a.log"), 5..7);
    append(&logs.join("new.log"), 50..51); // found later: read from its start
    wait_for(&lines, 3);
    running.stop().unwrap();
    assert_eq!(numbers(&lines), vec![5, 6, 50]);
}

/// A file deleted while being read is drained to its end through the open descriptor, and
/// its checkpoint entry goes once it was let go.
#[test]
fn a_file_deleted_while_being_read_is_drained_and_its_checkpoint_dropped() {
    let (_d, logs, data) = scratch();
    let log = logs.join("app.log");
    append(&log, 0..1);
    let lines: Lines = Default::default();
    let running = topology(
        &config(&logs, "*.log", true),
        &data,
        Box::new(Collect(lines.clone())),
    )
    .start()
    .unwrap();
    wait_for(&lines, 1);
    // 200,000 lines (2.5 MB) appended at once, then the file is deleted at once: most of it
    // is read after the deletion.
    append(&log, 1..200_000);
    std::fs::remove_file(&log).unwrap();
    append(&log, 200_000..200_010); // a new file of the same name
    wait_for(&lines, 200_010);
    let store = sluicebox::source::file::checkpoint::Store::new(&data.join("source-files"));
    let until = Instant::now() + Duration::from_secs(20);
    // rotate_wait_secs = 1: the deleted file is let go after 1 s, and with it its entry.
    while store.load().checkpoint.files.len() != 1 {
        assert!(Instant::now() < until, "{:?}", store.load().checkpoint);
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = running.stop().unwrap();
    assert_eq!(numbers(&lines), (0..200_010).collect::<Vec<_>>());
    assert!(report.is_balanced());
    let kept = store.load().checkpoint.files;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].path, log.display().to_string());
}

/// A file found by a scan is in the checkpoint at once, not a checkpoint interval later:
/// until it is, a restart would not find it again if it was renamed out of the globs' sight
/// (kubelet rotation) meanwhile. Found by `kubernetes::kubernetes_kill9_torture`.
#[test]
fn a_new_file_is_checkpointed_when_it_is_opened() {
    let (_d, logs, data) = scratch();
    append(&logs.join("a.log"), 0..1);
    let mut cfg = config(&logs, "*.log", true);
    cfg.checkpoint_interval_ms = 3_600_000;
    let lines: Lines = Default::default();
    let running = topology(&cfg, &data, Box::new(Collect(lines.clone())))
        .start()
        .unwrap();
    wait_for(&lines, 1);
    append(&logs.join("b.log"), 1..2);
    wait_for(&lines, 2);
    let store = sluicebox::source::file::checkpoint::Store::new(&data.join("source-files"));
    let b = logs.join("b.log").display().to_string();
    let until = Instant::now() + Duration::from_secs(20);
    while !store.load().checkpoint.files.iter().any(|e| e.path == b) {
        assert!(Instant::now() < until, "{:?}", store.load().checkpoint);
        std::thread::sleep(Duration::from_millis(20));
    }
    running.stop().unwrap();
}

/// Child mode of the torture test: runs the source into a fsyncing file sink until killed.
#[test]
fn torture_child() {
    let Ok(dir) = std::env::var(torture::CHILD_ENV) else {
        return; // only meaningful when spawned by `kill9_torture`
    };
    let dir = PathBuf::from(dir);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(torture::out_path(&dir))
        .unwrap();
    let cfg = config(&dir.join("logs"), "app.log*", true);
    let running = topology(&cfg, &dir.join("data"), Box::new(torture::FileSink(out)))
        .start()
        .unwrap();
    running.wait().unwrap();
}

/// Writes lines into `app.log` while rotating (rename + create, copytruncate), deleting
/// rotated files and the live one (a new file of the same name follows) at random moments,
/// and SIGKILLs the reader at random moments. Rounds (kills): `SLUICEBOX_TORTURE_ROUNDS`
/// (default 5); a last round writes without a kill. Every line the reader had a chance to
/// read arrives at least once (see `torture` for what is excused), every duplicate is one
/// the checkpoint at its kill did not cover, deleted files' entries leave the checkpoint,
/// and no run panics.
#[test]
fn kill9_torture() {
    let rounds = torture::rounds(5);
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    let mut rng = torture::Rng::new();
    let mut ledger = torture::Ledger::new(d.path(), &d.path().join("data/source-files"), |l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        u32::try_from(v["n"].as_u64()?).ok()
    });
    let (mut renames, mut copytruncates, mut live_deleted) = (0u32, 0u32, 0u32);
    let mut rotated: Vec<PathBuf> = Vec::new();
    // What happened when (the line count then), to explain a loss.
    let mut history: Vec<(u32, String)> = Vec::new();
    let mut child = torture::Child::spawn("tail::torture_child", d.path(), 0);
    for round in 0..=rounds {
        let until = Instant::now() + Duration::from_millis(200 + rng.below(800));
        while Instant::now() < until {
            let n = ledger.lines();
            let chunk: Vec<(Option<u32>, Vec<u8>)> = (n..n + 20)
                .map(|i| (Some(i), format!("{{\"n\":{i}}}\n").into_bytes()))
                .collect();
            ledger.append(&log, &chunk);
            let n = ledger.lines();
            match rng.below(40) {
                0 | 1 => {
                    let to = logs.join(format!("app.log.{}", renames + copytruncates + 1));
                    history.push((n, format!("rename to {}", to.display())));
                    ledger.rename(&log, &to);
                    rotated.push(to);
                    renames += 1;
                }
                2 | 3 => {
                    let to = logs.join(format!("app.log.{}", renames + copytruncates + 1));
                    history.push((n, format!("copytruncate to {}", to.display())));
                    ledger.copytruncate(&log, &to);
                    rotated.push(to);
                    copytruncates += 1;
                }
                4 | 5 if !rotated.is_empty() => {
                    let i = rng.below(rotated.len() as u64) as usize;
                    if ledger.delete(&rotated[i], &child) {
                        history.push((n, format!("delete {}", rotated[i].display())));
                        rotated.swap_remove(i);
                    }
                }
                6 if ledger.delete(&log, &child) => {
                    history.push((n, "delete app.log".into()));
                    live_deleted += 1;
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if round < rounds {
            if rng.below(2) == 0 {
                // Half the kills fall right after a write and a rotation: the rotated
                // file's (or the copy's) end is not read yet.
                let n = ledger.lines();
                let chunk: Vec<(Option<u32>, Vec<u8>)> = (n..n + 20)
                    .map(|i| (Some(i), format!("{{\"n\":{i}}}\n").into_bytes()))
                    .collect();
                ledger.append(&log, &chunk);
                let to = logs.join(format!("app.log.{}", renames + copytruncates + 1));
                if rng.below(2) == 0 {
                    history.push((n + 20, format!("rename to {}", to.display())));
                    ledger.rename(&log, &to);
                    renames += 1;
                } else {
                    history.push((n + 20, format!("copytruncate to {}", to.display())));
                    ledger.copytruncate(&log, &to);
                    copytruncates += 1;
                }
                rotated.push(to);
            }
            history.push((ledger.lines(), "kill -9, restart".to_string()));
            ledger.kill(child);
            child = torture::Child::spawn("tail::torture_child", d.path(), round + 1);
        }
    }
    let o = ledger.settle(Duration::from_secs(60));
    let stale = ledger.stale_checkpoint_entries(Duration::from_secs(30));
    let crashed = child.exited();
    drop(child);
    let panics = torture::panics(d.path());
    eprintln!(
        "torture (file, seed {}): {rounds} kills, {} lines, {renames} renames, {copytruncates} copytruncates, \
         {} files deleted ({live_deleted} live, {} postponed), lost {}, excused {}, {} duplicates ({:.2}%, \
         at most {} per restart, {} within a run), unexplained duplicates {}, stale checkpoint entries {stale}",
        rng.seed,
        o.lines,
        ledger.deleted,
        ledger.postponed,
        o.lost.len(),
        o.excused,
        o.duplicates,
        100.0 * f64::from(o.duplicates) / f64::from(o.lines.max(1)),
        o.max_per_restart,
        o.within_run,
        o.unexplained.len(),
    );
    torture::keep_on_failure(
        !(o.lost.is_empty() && o.unparsed.is_empty() && o.unexplained.is_empty()),
        d,
        &ledger,
    );
    if let Some(&first) = o.lost.first() {
        let near: Vec<&(u32, String)> = history
            .iter()
            .filter(|(at, _)| at.abs_diff(first) < 400)
            .collect();
        panic!(
            "lost lines: {:?}; around the first: {near:?}; files holding it: {:?}",
            &o.lost[..o.lost.len().min(20)],
            ledger.whereabouts(first)
        );
    }
    assert!(
        o.unparsed.is_empty(),
        "torn or garbled output: {:?}",
        &o.unparsed[..o.unparsed.len().min(5)]
    );
    assert!(
        o.unexplained.is_empty(),
        "duplicates the checkpoint covered: {:?}",
        &o.unexplained[..o.unexplained.len().min(20)]
    );
    assert!(panics.is_empty(), "{panics:?}");
    assert!(!crashed, "the last reader exited on its own");
    assert_eq!(stale, 0, "checkpoint entries of deleted files left behind");
}
