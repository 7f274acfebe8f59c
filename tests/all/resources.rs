//! Resource bounds of the `sluicebox filter` command, run as a child process fed through
//! stdin by a writer thread: a 64 MiB line under a 1 MiB limit keeps the peak RSS bounded,
//! and a long storm of trapping batches leaves RSS and file descriptors flat.
//!
//! Run with `--nocapture` to see the figures.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::guest;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluicebox-resources-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn filter_command() -> Command {
    let mut c = Command::new(crate::common::sluicebox_bin());
    c.arg("filter")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// VmRSS and VmHWM (peak RSS), in KiB, and the number of open file descriptors of
/// process `pid`. VmHWM is the peak of the process's own address space since its `exec`
/// (unlike `wait4`'s `ru_maxrss`, which also counts the test process's footprint at the
/// moment it spawned the child).
fn sample(pid: u32) -> (u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (kib("VmRSS:"), kib("VmHWM:"), fds)
}

/// Waits until `count` reaches `n` (the child has written that many lines).
fn wait_for(count: &AtomicU64, n: u64, what: &str) {
    let started = Instant::now();
    while count.load(Ordering::SeqCst) < n {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the child is stuck before {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads a pipe to its end on a thread, counting lines as they arrive.
fn drain(
    mut pipe: impl Read + Send + 'static,
) -> (Arc<AtomicU64>, std::thread::JoinHandle<Vec<u8>>) {
    let lines = Arc::new(AtomicU64::new(0));
    let counter = lines.clone();
    let handle = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    let nl = buf[..n].iter().filter(|&&b| b == b'\n').count();
                    counter.fetch_add(nl as u64, Ordering::SeqCst);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading the child's output: {e}"),
            }
        }
        all
    });
    (lines, handle)
}

/// Parses `received=N emitted=N ...` from the summary line.
fn counter(stderr: &str, name: &str) -> u64 {
    let key = format!(" {name}=");
    let line = stderr
        .lines()
        .find(|l| l.contains("received="))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let line = format!(" {}", line.trim_start_matches("sluicebox: "));
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `filter` with `args`, feeding it what `feed` writes. Once the child has written
/// `lines` output lines it has processed everything and waits for more input: its peak
/// RSS is read then, before its stdin is closed. (A batch is processed when it is full or
/// the input ends, so `lines` must end a full batch: the callers use batches of 1,000
/// events and 1,000 lines on each side of the big one.) Returns (exit code, peak RSS in
/// KiB, stdout, stderr).
fn run_fed(
    args: &[&str],
    lines: u64,
    feed: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
) -> (i32, u64, Vec<u8>, String) {
    let mut child = filter_command().args(args).spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = BufWriter::with_capacity(64 << 10, stdin);
        feed(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())
    });
    let (written, out) = drain(child.stdout.take().unwrap());
    let (_, err) = drain(child.stderr.take().unwrap());
    let stdin = writer.join().unwrap().expect("feeding the child");
    wait_for(&written, lines, "the end of its input");
    let (_, peak, _) = sample(child.id());
    drop(stdin);
    let status = child.wait().unwrap();
    let out = out.join().unwrap();
    let err = String::from_utf8(err.join().unwrap()).unwrap();
    (status.code().expect("exit code"), peak, out, err)
}

const BIG: usize = 64 << 20;

/// 1,000 small lines, one line of `BIG` bytes (written in 64 KiB pieces, never whole in
/// memory on either side), 1,000 small lines.
fn feed_with_big_line(w: &mut dyn Write, big: bool) -> std::io::Result<()> {
    for i in 0..1000 {
        writeln!(w, "{{\"before\":{i}}}")?;
    }
    if big {
        w.write_all(b"{\"big\":\"")?;
        let piece = vec![b'x'; 64 << 10];
        for _ in 0..(BIG - 10) / piece.len() {
            w.write_all(&piece)?;
        }
        w.write_all(&vec![b'x'; (BIG - 10) % piece.len()])?;
        w.write_all(b"\"}\n")?;
    }
    for i in 0..1000 {
        writeln!(w, "{{\"after\":{i}}}")?;
    }
    Ok(())
}

#[test]
fn a_64_mib_line_keeps_peak_memory_bounded() {
    let started = Instant::now();
    // The same run without the big line: the command's own footprint.
    let (code, base_kib, out, err) = run_fed(
        &["--max-line-bytes", "1048576", "--batch-events", "1000"],
        2000,
        |w| feed_with_big_line(w, false),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2000);

    let dl = tmp("big-line-dead.ndjson");
    let dl_arg = dl.to_str().unwrap().to_string();
    let (code, peak_kib, out, err) = run_fed(
        &[
            "--max-line-bytes",
            "1048576",
            "--batch-events",
            "1000",
            "--dead-letter",
            &dl_arg,
        ],
        2000,
        |w| feed_with_big_line(w, true),
    );
    assert_eq!(code, 0, "{err}");
    // The lines before and after flow, byte for byte and in order.
    let mut want = Vec::new();
    feed_with_big_line(&mut want, false).unwrap();
    assert_eq!(out, want);
    assert_eq!(
        (
            counter(&err, "received"),
            counter(&err, "emitted"),
            counter(&err, "dead_lettered")
        ),
        (2001, 2000, 1),
        "{err}"
    );
    // The big one is dead-lettered as oversized, at its line and offset, its raw cut.
    let dead = std::fs::read_to_string(&dl).unwrap();
    assert_eq!(dead.lines().count(), 1);
    let d: serde_json::Value = serde_json::from_str(dead.trim_end()).unwrap();
    assert!(d["reason"].as_str().unwrap().contains("oversized"), "{d}");
    assert_eq!(d["line"], 1001);
    let offset: usize = (0..1000)
        .map(|i| format!("{{\"before\":{i}}}\n").len())
        .sum();
    assert_eq!(d["offset"], offset as u64);
    assert_eq!(d["raw_truncated"], true);
    assert!(d["raw"].as_str().unwrap().len() <= 64 << 10);
    let _ = std::fs::remove_file(&dl);

    println!(
        "resources: 64 MiB line under --max-line-bytes 1 MiB: peak RSS {:.1} MiB (without the \
         big line {:.1} MiB); both runs {:.1?}",
        peak_kib as f64 / 1024.0,
        base_kib as f64 / 1024.0,
        started.elapsed()
    );
    // The line is 64 MiB; the framer keeps at most the limit (1 MiB) plus a read chunk of
    // it, so the peak stays far below the line's size.
    assert!(
        peak_kib < 48 << 10,
        "peak RSS {peak_kib} KiB for a 64 MiB line"
    );
    assert!(
        peak_kib < base_kib + (16 << 10),
        "peak RSS {peak_kib} KiB, {base_kib} KiB without the big line"
    );
}

fn good(k: usize) -> String {
    format!("{{\"i\":{},\"poison\":false}}\n", 2 * k)
}

fn poison(k: usize) -> String {
    format!("{{\"i\":{},\"poison\":true}}\n", 2 * k + 1)
}

/// `batches` batches of two events, a good one then one that traps the guest, through
/// `filter --batch-events 2`. The writer stops at each checkpoint (a number of batches)
/// until the child has written that many good events, samples its RSS and descriptors
/// while it waits for input, then goes on. Returns the samples and the run's duration.
fn trap_storm(batches: usize, checkpoints: &[usize]) -> (Vec<(usize, u64, usize)>, Duration) {
    // Traps (`unreachable`) on an event whose "poison" is true (kind 3).
    let wat = guest(
        "poison",
        "(if (i32.eq (call $field (local.get $h) (local.get $i) (i32.const 0)) (i32.const 3)) (then unreachable))",
        "",
        "",
        1,
    );
    let module = tmp("poison.wat");
    std::fs::write(&module, wat).unwrap();
    let dl = tmp(&format!("storm-{batches}-dead.ndjson"));
    let started = Instant::now();
    let mut child = filter_command()
        .args(["--batch-events", "2", "--no-cache", "--module"])
        .arg(&module)
        .arg("--dead-letter")
        .arg(&dl)
        .spawn()
        .unwrap();
    let pid = child.id();
    let (emitted, out) = drain(child.stdout.take().unwrap());
    let (_, err) = drain(child.stderr.take().unwrap());
    let stdin = child.stdin.take().unwrap();
    let checkpoints = checkpoints.to_vec();
    let writer = std::thread::spawn(move || {
        let mut w = BufWriter::with_capacity(64 << 10, stdin);
        let mut samples = Vec::new();
        let mut k = 0;
        for &c in &checkpoints {
            while k < c {
                w.write_all(good(k).as_bytes()).unwrap();
                w.write_all(poison(k).as_bytes()).unwrap();
                k += 1;
            }
            w.flush().unwrap();
            wait_for(&emitted, c as u64, &format!("batch {c}"));
            let (rss, _, fds) = sample(pid);
            samples.push((c, rss, fds));
        }
        while k < batches {
            w.write_all(good(k).as_bytes()).unwrap();
            w.write_all(poison(k).as_bytes()).unwrap();
            k += 1;
        }
        w.flush().unwrap();
        samples
    });
    let samples = writer.join().unwrap();
    let code = child.wait().unwrap().code().expect("exit code");
    let elapsed = started.elapsed();
    let out = out.join().unwrap();
    let err = String::from_utf8(err.join().unwrap()).unwrap();
    assert_eq!(code, 0, "{err}");

    // Conservation: every good event emitted in order, every poison one dead-lettered.
    let n = batches as u64;
    assert_eq!(
        (
            counter(&err, "received"),
            counter(&err, "emitted"),
            counter(&err, "filtered"),
            counter(&err, "dead_lettered"),
        ),
        (2 * n, n, 0, n),
        "{err}"
    );
    let want: String = (0..batches).map(good).collect();
    assert!(
        out == want.as_bytes(),
        "the good events did not all come out in order"
    );
    let dead = std::fs::read_to_string(&dl).unwrap();
    let mut count = 0;
    for (k, l) in dead.lines().enumerate() {
        let d: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(d["line"], 2 * k as u64 + 2, "{d}");
        assert_eq!(d["filter"], "poison", "{d}");
        assert_eq!(d["raw"], poison(k).trim_end(), "{d}");
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("trap") && reason.contains("unreachable"),
            "{d}"
        );
        count += 1;
    }
    assert_eq!(count, batches);
    let _ = std::fs::remove_file(&dl);
    let _ = std::fs::remove_file(&module);
    (samples, elapsed)
}

/// 100,000 batches of two events, a good one then a trapping one, through
/// `filter --batch-events 2`. Each batch costs two traps and two fresh instances: the
/// whole batch traps (instance discarded), its first half runs alone on a new instance and
/// succeeds, its second half traps alone (discarded). The success in between resets the
/// breaker, so it never trips. Takes about 6 s on the 2-core test machine.
///
/// Bounds, from the sample at 10,000 batches (everything lazily allocated exists by then)
/// to the end: 180,000 instances are discarded in between, so a leak of 24 bytes per
/// discarded instance would already exceed the 4 MiB of slack, which leaves room for
/// allocator noise (measured growth: under 0.1 MiB). A discarded instance must not keep a
/// file descriptor: the count must not change at all.
#[test]
fn trap_storm_100k_batches_keeps_memory_and_fds_flat() {
    let batches = 100_000;
    let (samples, elapsed) = trap_storm(batches, &[1_000, 10_000, 50_000, batches]);
    let show: Vec<String> = samples
        .iter()
        .map(|(c, rss, fds)| {
            format!(
                "after {c} batches: RSS {:.1} MiB, {fds} fds",
                *rss as f64 / 1024.0
            )
        })
        .collect();
    println!(
        "resources: {batches} trapping batches in {elapsed:.1?} ({:.1} us per batch); {}",
        elapsed.as_secs_f64() * 1e6 / batches as f64,
        show.join("; ")
    );
    let (from, to) = (samples[1], samples[samples.len() - 1]);
    assert!(
        to.1 <= from.1 + (4 << 10),
        "RSS grew from {} KiB to {} KiB over {} batches: {show:?}",
        from.1,
        to.1,
        to.0 - from.0
    );
    assert_eq!(from.2, to.2, "file descriptors changed: {show:?}");
}

/// Issue 16: a module that fails every call of more than one event, and answers each
/// single event with a 60 MiB record stream (one `FAIL` record with a 60 MiB reason), made
/// the host keep every such answer while it isolated the batch: about 1 GB for 16 events,
/// some 100 GB for a batch of 1,024. What the host keeps per batch across isolation retries
/// is bounded (128 MiB, docs/abi.md section 12.2); past it events are dead-lettered with a
/// reason saying so. Peak RSS is read while the child waits for more input, once it has
/// dead-lettered the whole batch.
#[test]
fn isolation_keeps_a_bounded_amount_of_answers_per_batch() {
    const EVENTS: usize = 16;
    const REASON: usize = 60 << 20;
    let wat = format!(
        r#"(module
  (memory (export "memory") 1000)
  (global $heap (mut i32) (i32.const 8192))
  (func (export "sluicebox_abi_version") (result i32) (i32.const 1))
  {alloc}
  (func (export "sluicebox_filter") (param $h i32) (result i32)
    (if (i32.gt_u (i32.load offset=4 (local.get $h)) (i32.const 1)) (then unreachable))
    (memory.fill (i32.const 0x100010) (i32.const 0x78) (i32.const {REASON}))
    (i32.store8 (i32.const 4096) (i32.const {fail}))
    (i32.store (i32.const 0x100000) (i32.const 0))
    (i32.store (i32.const 0x100004) (i32.const {op}))
    (i32.store (i32.const 0x100008) (i32.const 0))
    (i32.store (i32.const 0x10000c) (i32.const {REASON}))
    (i32.store offset=36 (local.get $h) (i32.const 4096))
    (i32.store offset=40 (local.get $h) (i32.const 0x100000))
    (i32.store offset=44 (local.get $h) (i32.const {rl}))
    (i32.const 0))
)"#,
        alloc = crate::common::ALLOC_WAT,
        fail = sluicebox_abi::Verdict::Fail as u8,
        op = sluicebox_abi::OP_FAIL,
        rl = REASON + 16,
    );
    let module = tmp("big-answers.wat");
    std::fs::write(&module, wat).unwrap();
    let dl = tmp("big-answers-dead.ndjson");
    let _ = std::fs::remove_file(&dl);
    let mut child = filter_command()
        .args([
            "--batch-events",
            &EVENTS.to_string(),
            "--memory-limit-mib",
            "128",
        ])
        .arg("--module")
        .arg(&module)
        .arg("--dead-letter")
        .arg(&dl)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (_, out) = drain(child.stdout.take().unwrap());
    let (_, err) = drain(child.stderr.take().unwrap());
    stdin
        .write_all(&crate::common::numbered(EVENTS, &[]))
        .unwrap();
    stdin.flush().unwrap();
    // The batch is full: the child processes it, then waits for more input.
    let started = Instant::now();
    let lines = || std::fs::read(&dl).map_or(0, |d| d.iter().filter(|&&b| b == b'\n').count());
    while lines() < EVENTS {
        assert!(
            started.elapsed() < Duration::from_secs(120) && child.try_wait().unwrap().is_none(),
            "the child did not dead-letter the batch"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (_, peak_kib, _) = sample(child.id());
    drop(stdin);
    let status = child.wait().unwrap();
    let _ = out.join().unwrap();
    let err = String::from_utf8(err.join().unwrap()).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    println!(
        "resources: {EVENTS} events answered with 60 MiB each during isolation: peak RSS {:.0} MiB",
        peak_kib as f64 / 1024.0
    );
    let dead = std::fs::read_to_string(&dl).unwrap();
    let reasons: Vec<String> = dead
        .lines()
        .map(|l| {
            let d: serde_json::Value = serde_json::from_str(l).unwrap();
            d["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(reasons.len(), EVENTS);
    // The first answers fit under the bound (their reasons cut at 64 KiB); the rest are
    // refused with a reason that says why.
    let kept = reasons.iter().filter(|r| r.ends_with("… (cut)")).count();
    let refused = reasons
        .iter()
        .filter(|r| r.contains("passed 128 MiB"))
        .count();
    assert!(
        kept >= 1 && kept + refused == EVENTS,
        "{kept} kept, {refused} refused"
    );
    // Kept: at most 128 MiB of answers, plus one 60 MiB answer being checked, plus the
    // guest's 62.5 MiB memory, plus the command's own few MiB and allocator slack: under
    // 400 MiB. Without the bound, the 16 answers alone are 960 MiB.
    assert!(
        peak_kib < 400 << 10,
        "peak RSS {} MiB: the host kept more than the bound",
        peak_kib >> 10
    );
    let _ = std::fs::remove_file(&dl);
    let _ = std::fs::remove_file(&module);
}
