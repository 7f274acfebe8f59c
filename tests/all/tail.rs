//! The file tail source: tailing, rotation, restart from checkpoint, kill -9 torture.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluicebox::runtime::{RuntimeSettings, SinkSpec, SourceSpec, Topology};
use sluicebox::source::file::{FileSource, FileSourceConfig};
use sluicebox::{Flow, Output, Sink};

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

/// Appends each event as a line and fsyncs before returning (delivered = on disk).
struct FileSink(std::fs::File);

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
    let d = tempfile::tempdir().unwrap();
    let (logs, data) = (d.path().join("logs"), d.path().join("data"));
    std::fs::create_dir_all(&logs).unwrap();
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
    std::fs::copy(&log, logs.join("app.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
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

/// One read that holds several batches of short lines (64 KiB of 8-byte lines), in a file
/// that is not written again: every line arrives, followed or read once.
#[test]
fn a_read_of_several_batches_delivers_them_all_without_more_input() {
    for follow in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let (logs, data) = (d.path().join("logs"), d.path().join("data"));
        std::fs::create_dir_all(&logs).unwrap();
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
    let d = tempfile::tempdir().unwrap();
    let (logs, data) = (d.path().join("logs"), d.path().join("data"));
    std::fs::create_dir_all(&logs).unwrap();
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
        std::fs::copy(&log, logs.join(format!("app.log.{round}"))).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        append(&log, base + 2990..base + 3000);
        wait_for(&lines, (base + 3000) as usize);
    }
    std::thread::sleep(Duration::from_millis(300));
    let report = running.stop().unwrap();
    assert_eq!(numbers(&lines), (0..15003).collect::<Vec<_>>());
    assert!(report.is_balanced());
}

#[test]
fn restart_from_checkpoint_reads_exactly_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let (logs, data) = (d.path().join("logs"), d.path().join("data"));
    std::fs::create_dir_all(&logs).unwrap();
    append(&logs.join("a.log"), 0..5);
    append(&logs.join("b.log"), 100..103);
    let cfg = config(&logs, "*.log", false);
    let first: Lines = Default::default();
    topology(&cfg, &data, Box::new(Collect(first.clone())))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(numbers(&first), vec![0, 1, 2, 3, 4, 100, 101, 102]);
    append(&logs.join("a.log"), 5..8);
    let second: Lines = Default::default();
    topology(&cfg, &data, Box::new(Collect(second.clone())))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(numbers(&second), vec![5, 6, 7]);
    // A corrupt checkpoint with no good copy: reported, and everything is read again.
    let dir = data.join("source-files");
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(e.unwrap().path(), b"{corrupt").unwrap();
    }
    let third: Lines = Default::default();
    topology(&cfg, &data, Box::new(Collect(third.clone())))
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(numbers(&third).len(), 11);
}

#[test]
fn read_from_end_skips_existing_lines() {
    let d = tempfile::tempdir().unwrap();
    let (logs, data) = (d.path().join("logs"), d.path().join("data"));
    std::fs::create_dir_all(&logs).unwrap();
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

/// Child mode of the torture test: runs the source into a fsyncing file sink until killed.
#[test]
fn torture_child() {
    let Ok(dir) = std::env::var("SLUICEBOX_TORTURE_CHILD") else {
        return; // only meaningful when spawned by `kill9_torture`
    };
    let dir = PathBuf::from(dir);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("out.ndjson"))
        .unwrap();
    let cfg = config(&dir.join("logs"), "app.log*", true);
    let running = topology(&cfg, &dir.join("data"), Box::new(FileSink(out)))
        .start()
        .unwrap();
    running.wait().unwrap();
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &Path) -> Kill {
    let exe = std::env::current_exe().unwrap();
    Kill(
        std::process::Command::new(exe)
            .args([
                "--exact",
                "tail::torture_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SLUICEBOX_TORTURE_CHILD", dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Writes lines with rotation (rename + create, or copytruncate) while SIGKILLing the reader
/// at pseudo-random moments;
/// every line must arrive at least once. Rounds: `SLUICEBOX_TORTURE_ROUNDS` (default 5).
#[test]
fn kill9_torture() {
    let rounds: u32 = std::env::var("SLUICEBOX_TORTURE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rand = move |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let (mut n, mut rotations, mut copytruncates) = (0u32, 0u32, 0u32);
    // What happened when (the line count then), to explain a loss.
    let mut history: Vec<(u32, String)> = Vec::new();
    let mut child = spawn_child(d.path());
    for _ in 0..rounds {
        let until = Instant::now() + Duration::from_millis(200 + rand(800));
        while Instant::now() < until {
            append(&log, n..n + 20);
            n += 20;
            if rand(10) == 0 {
                rotations += 1;
                let rotated = logs.join(format!("app.log.{rotations}"));
                if rand(2) == 0 {
                    history.push((n, format!("rename to app.log.{rotations}")));
                    std::fs::rename(&log, rotated).unwrap();
                } else {
                    history.push((n, format!("copytruncate to app.log.{rotations}")));
                    // copytruncate (the writer waits, as logrotate's copy is quicker than
                    // the next line here; lines in neither are lost by the writer, not us).
                    std::fs::copy(&log, rotated).unwrap();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&log)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    copytruncates += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // SIGKILL (Child::kill sends SIGKILL on unix), then restart.
        history.push((n, "kill -9, restart".to_string()));
        drop(child);
        child = spawn_child(d.path());
    }
    let out = d.path().join("out.ndjson");
    let until = Instant::now() + Duration::from_secs(60);
    let (counts, dups) = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let mut counts = vec![0u32; n as usize];
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("whole lines only");
            counts[v["n"].as_u64().unwrap() as usize] += 1;
        }
        let dups: u32 = counts.iter().map(|c| c.saturating_sub(1)).sum();
        if counts.iter().all(|&c| c > 0) || Instant::now() > until {
            break (counts, dups);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child);
    let missing: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] == 0).collect();
    eprintln!(
        "torture: {rounds} kills, {n} lines, {rotations} rotations ({copytruncates} by copytruncate), {dups} duplicates ({:.2}%), missing {}",
        100.0 * f64::from(dups) / f64::from(n.max(1)),
        missing.len()
    );
    if let Some(&first) = missing.first() {
        let near: Vec<&(u32, String)> = history
            .iter()
            .filter(|(at, _)| (*at as usize).abs_diff(first) < 400)
            .collect();
        let mut holders = Vec::new();
        for e in std::fs::read_dir(&logs).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if text.contains(&format!("{{\"n\":{first}}}")) {
                holders.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        panic!(
            "lost lines: {:?}; around the first: {near:?}; files holding it: {holders:?}",
            &missing[..missing.len().min(20)]
        );
    }
    // Bound: a kill replays at most what was delivered after the last checkpoint (written
    // every 100 ms) plus what was in flight: far below one round's lines per kill.
    assert!(dups <= n / 2, "{dups} duplicates of {n}");
}
