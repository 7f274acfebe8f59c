//! Hostile and tricky input through the library: every line ends up emitted, filtered or
//! dead-lettered with a reason and its position.

use sluicebox::{DropWhere, PipelineConfig, TagService};

use crate::common::*;

#[test]
fn valid_events_pass_byte_for_byte() {
    let input = b"{\"n\":1e400,\"big\":123456789012345678901234567890}\n{ \"k\" : \"\\u00e9\\n\" , \"z\":[1, 2]}\r\n{\"a\":{}}";
    let (r, out, dead) = run(input);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out, b"{\"n\":1e400,\"big\":123456789012345678901234567890}\n{ \"k\" : \"\\u00e9\\n\" , \"z\":[1, 2]}\n{\"a\":{}}\n");
    assert_eq!(
        (r.stats.received, r.stats.emitted, r.stats.unchanged),
        (3, 3, 3)
    );
}

#[test]
fn each_bad_line_is_dead_lettered_with_reason_line_and_offset() {
    let lines: &[&[u8]] = &[
        b"{\"ok\":1}",
        b"{\"a\":",               // truncated
        b"{\"a\":1}{\"b\":2}",    // two texts
        b"{\"a\":1} x",           // trailing garbage
        b"{\"a\":\"\x00\"}",      // NUL in string
        b"{\"a\":\"\xff\xfe\"}",  // invalid UTF-8
        b"\xEF\xBB\xBF{\"a\":1}", // BOM mid-stream
        b"[1,2]",                 // not an object
        b"\"str\"",
        b"nul",
        b"{\"ok\":2}",
    ];
    let input = lines.join(&b"\n"[..]);
    let (r, out, dead) = run(&input);
    assert_eq!(out, b"{\"ok\":1}\n{\"ok\":2}\n");
    assert_eq!(r.stats.dead_lettered, 9);
    let got: Vec<u64> = dead.iter().map(|d| d["line"].as_u64().unwrap()).collect();
    assert_eq!(got, (2..=10).collect::<Vec<u64>>());
    let mut offset = 0u64;
    let offsets: Vec<u64> = lines
        .iter()
        .map(|l| {
            let o = offset;
            offset += l.len() as u64 + 1;
            o
        })
        .collect();
    for d in &dead {
        let line = d["line"].as_u64().unwrap() as usize;
        assert_eq!(d["offset"].as_u64().unwrap(), offsets[line - 1]);
        assert!(!d["reason"].as_str().unwrap().is_empty());
        assert_eq!(
            d["raw"].as_str().unwrap(),
            String::from_utf8_lossy(lines[line - 1])
        );
    }
    assert!(
        dead[6]["reason"]
            .as_str()
            .unwrap()
            .contains("not an object"),
        "{}",
        dead[6]
    );
    assert!(
        dead[3]["reason"]
            .as_str()
            .unwrap()
            .contains("control character"),
        "{}",
        dead[3]
    );
}

#[test]
fn bom_at_start_is_skipped() {
    let (r, out, dead) = run(b"\xEF\xBB\xBF{\"a\":1}\n{\"b\":2}\n");
    assert!(dead.is_empty());
    assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
    assert_eq!(r.stats.received, 2);
}

#[test]
fn blank_lines_are_skipped_not_events() {
    let (r, out, _) = run(b"\n  \n{\"a\":1}\n\t\r\n\n{\"b\":2}");
    assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
    assert_eq!((r.stats.received, r.stats.skipped), (2, 4));
}

#[test]
fn empty_input_and_no_final_newline() {
    let (r, out, _) = run(b"");
    assert_eq!((r.stats.received, out.len()), (0, 0));
    let (r, out, _) = run(b"{\"a\":1}");
    assert_eq!((r.stats.received, out), (1, b"{\"a\":1}\n".to_vec()));
}

#[test]
fn deep_nesting_is_rejected_without_crashing() {
    let mut deep = b"{\"a\":".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.extend_from_slice(b"}\n{\"ok\":1}\n");
    let (r, out, dead) = run(&deep);
    assert_eq!(out, b"{\"ok\":1}\n");
    assert_eq!(r.stats.dead_lettered, 1);
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("deeper"),
        "{}",
        dead[0]["reason"]
    );
}

#[test]
fn oversized_line_is_dead_lettered_and_neighbours_flow() {
    let mut input = b"{\"a\":1}\n{\"big\":\"".to_vec();
    input.extend(std::iter::repeat_n(b'x', 20 << 20));
    input.extend_from_slice(b"\"}\n{\"b\":2}\n");
    let config = PipelineConfig {
        max_line_bytes: 1 << 20,
        ..Default::default()
    };
    let (r, out, dead) = run_with(config, vec![], &input);
    assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
    assert_eq!(r.stats.dead_lettered, 1);
    assert_eq!(dead[0]["line"], 2);
    assert_eq!(dead[0]["offset"], 8);
    assert_eq!(dead[0]["raw_truncated"], true);
    assert!(dead[0]["reason"].as_str().unwrap().contains("oversized"));
    assert!(dead[0]["raw"].as_str().unwrap().len() <= 64 << 10);
}

#[test]
fn oversized_final_line_without_newline() {
    let mut input = b"{\"a\":1}\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 3000));
    let config = PipelineConfig {
        max_line_bytes: 1000,
        ..Default::default()
    };
    let (r, out, dead) = run_with(config, vec![], &input);
    assert_eq!(out, b"{\"a\":1}\n");
    assert_eq!((r.stats.received, r.stats.dead_lettered), (2, 1));
    assert_eq!(dead[0]["line"], 2);
}

/// Reads at most `step` bytes per call.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn a_whitespace_only_line_is_skipped_however_long() {
    // Review of hostile input: a blank line longer than the limit was dead-lettered as
    // oversized, although blank lines are not events.
    let spaces = " ".repeat(2000);
    let tabs = "\t \r".repeat(700);
    let late = format!("{}x", " ".repeat(1500));
    let input = format!("{{\"a\":1}}\n{spaces}\n{tabs}\r\n{late}\n{{\"b\":2}}\n{spaces}");
    let config = || PipelineConfig {
        max_line_bytes: 1000,
        max_batch_events: 3,
        ..Default::default()
    };
    for step in [1 << 20, 7, 999, 1001] {
        let mut p = sluicebox::Pipeline::new(config()).unwrap();
        let mut out = sluicebox::CollectSink::new();
        let mut dead = sluicebox::CollectSink::new();
        let reader = Trickle {
            data: input.as_bytes(),
            step,
        };
        let r = p.run_with_dead_letter(reader, &mut out, &mut dead).unwrap();
        assert_eq!(out.ndjson(), b"{\"a\":1}\n{\"b\":2}\n", "step {step}");
        let s = r.stats;
        assert_eq!(
            (s.received, s.emitted, s.dead_lettered, s.skipped),
            (3, 2, 1, 3),
            "step {step}"
        );
        // The line that is blank for 1,500 bytes and then is not: oversized, at its line.
        let d: serde_json::Value = serde_json::from_slice(&dead.events[0].0).unwrap();
        assert_eq!(d["line"], 4, "step {step}");
        assert_eq!(d["offset"], 8 + 2001 + 2102, "step {step}");
        assert!(d["reason"].as_str().unwrap().starts_with("oversized"));
        assert_eq!(d["raw"].as_str().unwrap(), " ".repeat(1000));
    }
}

#[test]
fn native_filters_drop_and_edit() {
    let input = b"{\"level\":\"DEBUG\",\"msg\":\"a\"}\n{\"level\":\"INFO\",\"msg\":\"b\",\"n\":1e400}\n{\"level\":\"DEBU\\u0047\"}\n";
    let (r, out, _) = run_with(
        PipelineConfig::default(),
        vec![Box::new(DropWhere::drop_debug()), Box::new(TagService)],
        input,
    );
    assert_eq!(
        out,
        b"{\"level\":\"INFO\",\"n\":1e400,\"env\":\"prod\",\"message\":\"b\"}\n"
    );
    assert_eq!(
        (r.stats.filtered, r.stats.emitted, r.stats.unchanged),
        (2, 1, 0)
    );
}

/// Edits every event whose `i` is divisible by 3, emits two events for those divisible by 5
/// (and not by 3), keeps the rest as they are.
#[derive(Clone)]
struct EditSome;

impl sluicebox::Filter for EditSome {
    fn name(&self) -> &str {
        "edit_some"
    }
    fn process(
        &mut self,
        events: &sluicebox::Events<'_>,
        d: &mut sluicebox::Decisions,
    ) -> sluicebox::Result<()> {
        for (k, e) in events.iter().enumerate() {
            let n = e.field("i").and_then(|f| f.as_i64()).unwrap_or(1);
            if n % 3 == 0 {
                d.set(k, "edited", "true");
                d.rename(k, "msg", "message");
            } else if n % 5 == 0 {
                d.emit(k, &format!("{{\"copy\":1,\"i\":{n}}}"));
                d.emit(k, &format!("{{\"copy\":2,\"i\":{n}}}"));
            }
        }
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn sluicebox::Filter>> {
        Ok(Box::new(self.clone()))
    }
}

/// A writer sink writes, byte for byte, what the collecting sink collects when edited and
/// emitted events (appended to the batch, each with a newline after it, outside its range)
/// run next to each other and between unedited ones: CRLF, blank and unterminated lines,
/// drops, one-event and many-event batches.
#[test]
fn a_writer_sink_writes_edited_emitted_and_unedited_events_as_collected() {
    let mut input = Vec::new();
    for i in 0..3000 {
        let line = match i % 7 {
            0 => format!("{{\"level\":\"DEBUG\",\"i\":{i}}}\n"),
            1 => format!("{{\"level\":\"INFO\",\"msg\":\"m\",\"i\":{i}}}\r\n"),
            2 => format!("  {{ \"msg\" : \"spaced\" , \"i\" : {i} }} \n"),
            3 => "\n".to_string(),
            _ => format!("{{\"i\":{i},\"msg\":\"x\"}}\n"),
        };
        input.extend_from_slice(line.as_bytes());
    }
    input.extend_from_slice(b"{\"i\":3003,\"msg\":\"last, no newline\"}");
    for (events, bytes) in [(1, 1 << 20), (7, 1 << 20), (1024, 1 << 20), (3, 200)] {
        let config = PipelineConfig {
            max_batch_events: events,
            max_batch_bytes: bytes,
            ..Default::default()
        };
        let filters = || -> Vec<Box<dyn sluicebox::Filter>> {
            vec![Box::new(DropWhere::drop_debug()), Box::new(EditSome)]
        };
        let (r, collected, dead) = run_with(config.clone(), filters(), &input);
        assert!(dead.is_empty(), "{dead:?}");
        assert!(r.stats.filtered > 0 && r.stats.created > 0, "{:?}", r.stats);
        let mut p = sluicebox::Pipeline::new(config).unwrap();
        for f in filters() {
            p.push_filter(f);
        }
        let mut w = sluicebox::WriterSink::new(Vec::new());
        p.run(&input[..], &mut w).unwrap();
        let written = w.into_inner();
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&collected),
            "events={events} bytes={bytes}"
        );
        let has = |needle: &[u8]| written.windows(needle.len()).any(|w| w == needle);
        assert!(
            has(b"\"edited\":true") && has(b"{\"copy\":2,"),
            "events={events}"
        );
    }
}

#[test]
fn many_batches_with_small_limits_keep_order() {
    let input = sluicebox::loggen::corpus(5000, 7);
    for (events, bytes) in [(1, 1 << 20), (7, 1 << 20), (1024, 1000), (3, 100)] {
        let config = PipelineConfig {
            max_batch_events: events,
            max_batch_bytes: bytes,
            ..Default::default()
        };
        let (r, out, _) = run_with(config, vec![], &input);
        assert_eq!(out, input, "events={events} bytes={bytes}");
        assert_eq!(r.stats.received, 5000);
    }
}

#[test]
fn workers_keep_order_and_count() {
    let input = sluicebox::loggen::corpus(20_000, 3);
    let (single, out1, _) = run_with(
        PipelineConfig::default(),
        vec![Box::new(DropWhere::drop_debug())],
        &input,
    );
    // With and without the calling thread working batches too.
    for input_never_blocks in [false, true] {
        let config = PipelineConfig {
            workers: 3,
            max_batch_events: 100,
            input_never_blocks,
            ..Default::default()
        };
        let (multi, out3, _) = run_with(config, vec![Box::new(DropWhere::drop_debug())], &input);
        assert!(out1 == out3, "input_never_blocks={input_never_blocks}");
        // The same counts (in more, smaller batches).
        let stats = sluicebox::Stats {
            batches: single.stats.batches,
            ..multi.stats
        };
        assert_eq!(single.stats, stats, "{input_never_blocks}");
    }
    assert!(single.stats.filtered > 0);
}

#[tokio::test(flavor = "current_thread")]
async fn async_reader_matches_sync() {
    let input = sluicebox::loggen::corpus(3000, 9);
    let mut p = sluicebox::Pipeline::new(PipelineConfig::default())
        .unwrap()
        .with_filter(DropWhere::drop_debug());
    let mut out = sluicebox::CollectSink::new();
    let r = p.run_async(&input[..], &mut out, None).await.unwrap();
    let (r2, out2, _) = run_with(
        PipelineConfig::default(),
        vec![Box::new(DropWhere::drop_debug())],
        &input,
    );
    assert_eq!(out.ndjson(), out2);
    assert_eq!(r.stats, r2.stats);
}

/// A source that gives one line at a time, and the next only once the sink has seen the
/// previous one (or after a timeout, which the test then reports as a failure).
struct SlowProducer {
    lines: Vec<Vec<u8>>,
    next: usize,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    waited_out: bool,
}

impl std::io::Read for SlowProducer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let Some(line) = self.lines.get(self.next) else {
            return Ok(0);
        };
        let t0 = std::time::Instant::now();
        while self.seen.load(Ordering::SeqCst) < self.next {
            if t0.elapsed() > std::time::Duration::from_secs(5) {
                self.waited_out = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.next += 1;
        buf[..line.len()].copy_from_slice(line);
        Ok(line.len())
    }
}

struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl sluicebox::Sink for Counting {
    fn write(&mut self, out: &sluicebox::Output<'_>) -> sluicebox::Result<sluicebox::Flow> {
        self.0
            .fetch_add(out.len(), std::sync::atomic::Ordering::SeqCst);
        Ok(sluicebox::Flow::Continue)
    }
}

#[test]
fn a_slow_producers_events_leave_without_waiting_for_a_full_batch() {
    for workers in [1, 2] {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut source = SlowProducer {
            lines: (0..20)
                .map(|i| format!("{{\"i\":{i}}}\n").into_bytes())
                .collect(),
            next: 0,
            seen: seen.clone(),
            waited_out: false,
        };
        let config = PipelineConfig {
            workers,
            ..Default::default()
        };
        let r = sluicebox::Pipeline::new(config)
            .unwrap()
            .run(&mut source, Counting(seen.clone()))
            .unwrap();
        assert_eq!(r.stats.emitted, 20);
        assert!(
            !source.waited_out,
            "workers={workers}: an event was held back until more input came"
        );
    }
}

/// Gives its input in bursts, each in one read, and the next burst only once the sink has
/// seen every event of the earlier ones (or after a timeout, reported as a failure).
struct Bursts {
    bursts: Vec<(Vec<u8>, usize)>,
    next: usize,
    /// Events in the bursts given so far.
    given: usize,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    waited_out: bool,
}

impl std::io::Read for Bursts {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let Some((bytes, events)) = self.bursts.get(self.next) else {
            return Ok(0);
        };
        let t0 = std::time::Instant::now();
        while self.seen.load(Ordering::SeqCst) < self.given {
            if t0.elapsed() > std::time::Duration::from_secs(5) {
                self.waited_out = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(bytes.len() <= buf.len(), "a burst fits one read");
        buf[..bytes.len()].copy_from_slice(bytes);
        self.given += events;
        self.next += 1;
        Ok(bytes.len())
    }
}

#[test]
fn lines_left_over_from_a_full_batch_leave_before_the_next_read() {
    // Bursts of 150 short lines, in one read each, into batches of at most 100 events: 50
    // lines of each burst are left over when its first batch fills. They must not wait for
    // the next burst (which a pipe gives only when the producer writes again).
    for workers in [1, 2] {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let burst = |b: usize| {
            let text: Vec<u8> = (0..150)
                .flat_map(|i| format!("{{\"b\":{b},\"i\":{i}}}\n").into_bytes())
                .collect();
            (text, 150)
        };
        let mut source = Bursts {
            bursts: (0..4).map(burst).collect(),
            next: 0,
            given: 0,
            seen: seen.clone(),
            waited_out: false,
        };
        let config = PipelineConfig {
            workers,
            max_batch_events: 100,
            ..Default::default()
        };
        let r = sluicebox::Pipeline::new(config)
            .unwrap()
            .run(&mut source, Counting(seen.clone()))
            .unwrap();
        assert_eq!(r.stats.emitted, 600, "workers={workers}");
        assert!(
            !source.waited_out,
            "workers={workers}: lines left over from a full batch waited for the next burst"
        );
    }
}

/// Lines that cross range and batch bounds in every way: a byte order mark, blank and
/// whitespace-only lines (one far longer than a range), CRLF endings, invalid lines, lines
/// longer than the line limit and than a range, and a last line without a newline.
fn awkward_input() -> Vec<u8> {
    let mut v = b"\xEF\xBB\xBF".to_vec();
    let corpus = sluicebox::loggen::corpus(6000, 11);
    for (i, line) in corpus.split_inclusive(|&b| b == b'\n').enumerate() {
        match i % 97 {
            3 => v.extend_from_slice(b"\n"),
            5 => v.extend_from_slice(b"   \r\n"),
            7 => v.extend_from_slice(b"{\"broken\": }\n"),
            11 => {
                // This line with a CRLF ending instead.
                v.extend_from_slice(&line[..line.len() - 1]);
                v.extend_from_slice(b"\r\n");
                continue;
            }
            13 => {
                v.extend_from_slice(b"{\"big\":\"");
                v.resize(v.len() + 70_000 + i, b'x');
                v.extend_from_slice(b"\"}\n");
            }
            17 if i % 3 == 0 => {
                v.resize(v.len() + 150_000, b' ');
                v.push(b'\n');
            }
            _ => {}
        }
        v.extend_from_slice(line);
    }
    v.extend_from_slice(b"{\"last\":\"no newline\"}");
    v
}

/// A run by position, with dead letters.
fn run_at(
    config: PipelineConfig,
    input: &dyn sluicebox::source::reader::ReadAt,
) -> sluicebox::Result<(sluicebox::Report, Vec<u8>, Vec<serde_json::Value>)> {
    let mut p = sluicebox::Pipeline::new(config)
        .unwrap()
        .with_filter(DropWhere::drop_debug());
    let mut out = sluicebox::CollectSink::new();
    let mut dead = sluicebox::CollectSink::new();
    let r = p.run_at_with_dead_letter(input, &mut out, &mut dead)?;
    assert!(r.stats.is_balanced(), "{:?}", r.stats);
    let dead = dead
        .events
        .iter()
        .map(|(b, _, _)| serde_json::from_slice(b).expect("dead letter is JSON"))
        .collect();
    Ok((r, out.ndjson(), dead))
}

#[test]
fn split_by_position_the_workers_give_what_one_stream_gives() {
    let input = awkward_input();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &input).unwrap();
    let opened = std::fs::File::open(file.path()).unwrap();
    for (workers, events, bytes, line) in [
        (2, 1024, 1 << 20, 1 << 20),
        (3, 1024, 1 << 20, 1 << 20),
        (2, 7, 1 << 20, 1 << 20),
        (2, 1024, 1000, 1 << 20),
        (3, 100, 5000, 60_000),
        (2, 1024, 1 << 20, 200),
    ] {
        let config = PipelineConfig {
            workers,
            max_batch_events: events,
            max_batch_bytes: bytes,
            max_line_bytes: line,
            ..Default::default()
        };
        let one = PipelineConfig {
            workers: 1,
            ..config.clone()
        };
        let what = format!("workers={workers} events={events} bytes={bytes} line={line}");
        let (r1, out1, dead1) = run_with(one, vec![Box::new(DropWhere::drop_debug())], &input);
        assert!(r1.stats.dead_lettered > 50, "{what}");
        assert!(line < 1000 || r1.stats.filtered > 100, "{what}");
        let from_memory = run_at(config.clone(), &input).unwrap();
        let from_file = run_at(config, &opened).unwrap();
        for (how, (r, out, dead)) in [("memory", from_memory), ("file", from_file)] {
            assert!(out == out1, "{what} {how}: the output differs");
            assert_eq!(dead, dead1, "{what} {how}: the dead letters differ");
            let stats = sluicebox::Stats {
                batches: r1.stats.batches,
                ..r.stats
            };
            assert_eq!(stats, r1.stats, "{what} {how}");
        }
    }
}

/// Bytes in memory whose reads fail (or panic) from `at` on.
struct FailingAt {
    data: Vec<u8>,
    at: u64,
    panic: bool,
}

impl sluicebox::source::reader::ReadAt for FailingAt {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.data.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(self.data.len().saturating_sub(offset as usize));
        if offset + n as u64 > self.at {
            assert!(!self.panic, "a read at {offset} panicked");
            return Err(std::io::Error::other(format!("no read at {offset}")));
        }
        self.data.read_at(buf, offset)
    }
}

#[test]
fn a_positional_input_that_fails_stops_the_run_with_its_error_and_nothing_after_it() {
    use sluicebox::source::reader::ReadAt;
    let data = sluicebox::loggen::corpus(50_000, 5);
    let (_, all, _) = run_at(PipelineConfig::default(), &data).unwrap();
    for panic in [false, true] {
        let input = FailingAt {
            data: data.clone(),
            at: data.len() as u64 / 2,
            panic,
        };
        assert!(input.size().is_ok());
        let config = PipelineConfig {
            workers: 2,
            ..Default::default()
        };
        let mut p = sluicebox::Pipeline::new(config)
            .unwrap()
            .with_filter(DropWhere::drop_debug());
        let mut out = sluicebox::CollectSink::new();
        let e = p.run_at(&input, &mut out).unwrap_err();
        assert_eq!(e.kind(), sluicebox::Kind::Input, "{e}");
        let text = e.to_string();
        assert!(
            text.contains(if panic { "panicked" } else { "no read at" }),
            "{text}"
        );
        let got = out.ndjson();
        // What went out is a prefix of the whole output, ending before the failed read.
        assert!(all.starts_with(&got), "panic={panic}: not a prefix");
        assert!(!got.is_empty() && got.len() < all.len(), "panic={panic}");
    }
}

/// Bytes in memory behind a `ReadAt` that misbehaves as asked: short reads, a size that
/// lies, one spurious end, counts larger than the buffer. Counts the bytes handed out.
#[derive(Default)]
struct Odd {
    data: Vec<u8>,
    /// Most bytes per read.
    short: Option<usize>,
    /// The size it claims.
    size: Option<u64>,
    /// A read at this offset returns 0 (reads before it stop there, reads after it do not:
    /// a stream read ends there, and so must a read by position).
    zero_at: Option<u64>,
    /// Says it read one byte more than it did.
    over: bool,
    read: std::sync::atomic::AtomicU64,
}

impl sluicebox::source::reader::ReadAt for Odd {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.size.unwrap_or(self.data.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        if self.zero_at == Some(offset) {
            // Slowly: the other worker claims and reads the ranges after it meanwhile.
            std::thread::sleep(std::time::Duration::from_millis(30));
            return Ok(0);
        }
        let want = buf.len().min(self.short.unwrap_or(usize::MAX));
        let want = match self.zero_at {
            Some(z) if offset < z => want.min((z - offset) as usize),
            _ => want,
        };
        let n = self.data.read_at(&mut buf[..want], offset)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(if self.over && n > 0 { n + 1 } else { n })
    }
}

#[test]
fn a_misbehaving_positional_input_gives_what_its_stream_gives_or_an_error() {
    let data = sluicebox::loggen::corpus(20_000, 13);
    let two = |bytes| PipelineConfig {
        workers: 2,
        max_batch_events: 100,
        max_batch_bytes: bytes,
        ..Default::default()
    };
    let one = PipelineConfig {
        max_batch_events: 100,
        ..Default::default()
    };
    let cases = [
        (
            "short reads",
            Odd {
                short: Some(77),
                ..Default::default()
            },
        ),
        (
            "a size of 0",
            Odd {
                size: Some(0),
                ..Default::default()
            },
        ),
        (
            "a size too large",
            Odd {
                size: Some(u64::MAX),
                ..Default::default()
            },
        ),
        (
            "a spurious end",
            Odd {
                zero_at: Some(data.len() as u64 / 3),
                ..Default::default()
            },
        ),
    ];
    for (what, mut odd) in cases {
        odd.data = data.clone();
        // What a stream read of it gives (one worker reads `run_at`'s input as a stream).
        let (r1, out1, _) = run_at(one.clone(), &odd).unwrap();
        if what == "a spurious end" {
            assert!(out1.len() < data.len() / 2 && !out1.is_empty(), "{what}");
        } else {
            assert_eq!(r1.stats.bytes_in, data.len() as u64, "{what}");
        }
        for bytes in [1 << 20, 5000] {
            let (r2, out2, _) = run_at(two(bytes), &odd).unwrap();
            assert!(
                out1 == out2,
                "{what}, {bytes}-byte batches: the output differs"
            );
            assert_eq!(r1.stats.received, r2.stats.received, "{what}");
            assert_eq!(r1.stats.bytes_in, r2.stats.bytes_in, "{what}");
        }
    }
    // A read said to be longer than it was is an error, never the buffer's old bytes.
    for config in [one, two(5000)] {
        let odd = Odd {
            data: data.clone(),
            over: true,
            ..Default::default()
        };
        let e = run_at(config, &odd).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), sluicebox::Kind::Input, "{e}");
        assert!(e.to_string().contains("said it read"), "{e}");
    }
}

#[test]
fn a_sink_that_stops_stops_the_reading_of_a_positional_input() {
    struct StopAfterOne;
    impl sluicebox::Sink for StopAfterOne {
        fn write(&mut self, _: &sluicebox::Output<'_>) -> sluicebox::Result<sluicebox::Flow> {
            Ok(sluicebox::Flow::Stop)
        }
    }
    let odd = Odd {
        data: sluicebox::loggen::corpus(200_000, 17),
        ..Default::default()
    };
    let config = PipelineConfig {
        workers: 2,
        ..Default::default()
    };
    let mut p = sluicebox::Pipeline::new(config).unwrap();
    p.run_at(&odd, StopAfterOne).unwrap();
    // A few ranges at most (of up to 1 MiB): the workers stop claiming once the sink stops
    // (without that, this read 15 MB of the 67).
    let read = odd.read.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        read < 8 << 20,
        "read {read} of {} bytes after the sink stopped",
        odd.data.len()
    );
}

#[test]
fn sluicebox_filter_reads_a_file_by_position_as_it_streams_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, awkward_input()).unwrap();
    let module = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wat/drop_debug.wat");
    // (workers, read from the file by position or piped): stdout and dead letters.
    let run = |workers: &str, file: bool| {
        let dead = dir.path().join(format!("dead-{workers}-{file}"));
        let script = format!(
            "{} filter --module {module} --workers {workers} --dead-letter {} > out; cat > rest",
            crate::common::sluicebox_bin().display(),
            dead.display(),
        );
        let shell = if file {
            format!("{{ {script}; }} < in.ndjson")
        } else {
            format!("cat in.ndjson | {{ {script}; }}")
        };
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&shell)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{shell}");
        let out = std::fs::read(dir.path().join("out")).unwrap();
        // Whatever reads standard input next finds it at the end, as after a stream read.
        let rest = std::fs::read(dir.path().join("rest")).unwrap();
        assert!(rest.is_empty(), "{shell}: {} bytes left", rest.len());
        (out, std::fs::read(dead).unwrap())
    };
    let (out, dead) = run("1", false);
    assert!(out.len() > 1_000_000 && dead.len() > 10_000);
    for workers in ["2", "3"] {
        let (o, d) = run(workers, true);
        assert!(o == out, "--workers {workers}: the output differs");
        assert!(d == dead, "--workers {workers}: the dead letters differ");
    }
}
