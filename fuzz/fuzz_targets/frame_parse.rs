//! Property: any bytes, read in any chunking or by position in any read sizes (split by byte ranges among two workers), with small batch and line limits, either JSON engine and one or two workers (the calling thread working batches too or not), go through framing and parsing without a panic; every non-blank line is emitted xor dead-lettered (conservation), emitted events keep the input's order, an emitted event is byte for byte its input line and valid JSON object text, the pipeline accepts exactly the lines the strict scalar validator accepts, and dead letters name lines and offsets that exist.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use sluicebox::parse::scalar;
use sluicebox::source::reader::ReadAt;
use sluicebox::{CollectSink, JsonEngine, Pipeline, PipelineConfig};
use sluicebox_fuzz::lines::{is_blank, lines};

/// Returns the input in chunks of the given sizes (cycling), like a socket would.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    k: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = match self.sizes.len() {
            0 => usize::MAX,
            n => usize::from(self.sizes[self.k % n]).max(1),
        };
        self.k += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The input read by position, each read at most the next of `sizes` bytes (cycling).
struct ChunkedAt<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    k: std::sync::atomic::AtomicUsize,
}

impl ReadAt for ChunkedAt<'_> {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.data.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let k = self.k.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let want = match self.sizes.len() {
            0 => usize::MAX,
            n => usize::from(self.sizes[k % n]).max(1),
        };
        let n = want.min(buf.len());
        self.data.read_at(&mut buf[..n], offset)
    }
}

fn is_object(line: &[u8]) -> bool {
    let mut s = Vec::new();
    scalar::validate(line, 1024, &mut s).is_ok()
        && s.first().is_some_and(|&p| line[p as usize] == b'{')
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 6 {
        return;
    }
    let (head, rest) = input.split_at(6);
    let nsizes = usize::from(head[4] % 8).min(rest.len());
    let (sizes, data) = rest.split_at(nsizes);
    // Read by position (`run_at`), with two workers: each frames its own byte ranges.
    let positional = head[5] & 0x30 == 0x30;
    let config = PipelineConfig {
        max_batch_events: 1 + usize::from(head[0] % 8),
        max_batch_bytes: 1 + usize::from(head[1]) * 4,
        max_line_bytes: 1 + usize::from(head[2]) * 2,
        dead_letter_raw_max: usize::from(head[3] % 64),
        workers: 1 + usize::from(head[5] % 8 == 7 || positional),
        // The reader is in memory: with two workers, the calling thread may work batches too.
        input_never_blocks: head[5] & 0x40 != 0,
        json_engine: if head[5] & 0x80 == 0 {
            JsonEngine::Sluice
        } else {
            JsonEngine::SimdJson
        },
        ..Default::default()
    };
    let max_line = config.max_line_bytes;
    let mut out = CollectSink::new();
    let mut dead = CollectSink::new();
    let mut pipeline = Pipeline::new(config).unwrap();
    let report = if positional {
        let at = ChunkedAt {
            data,
            sizes,
            k: Default::default(),
        };
        pipeline.run_at_with_dead_letter(&at, &mut out, &mut dead)
    } else {
        pipeline.run_with_dead_letter(Chunked { data, sizes, k: 0 }, &mut out, &mut dead)
    }
    .expect("a run without filters cannot fail");
    let st = report.stats;
    assert!(st.is_balanced(), "{st:?}");
    assert_eq!(st.filtered, 0);
    assert_eq!(st.created, 0);
    assert_eq!(st.bytes_in, data.len() as u64);
    assert!(out.finished && dead.finished);

    let lines = lines(data);
    // 0: not yet seen, 1: emitted, 2: dead-lettered.
    let mut seen = vec![0u8; lines.len()];
    // Emitted in input order, whatever the workers.
    let mut last = 0u64;
    for (bytes, line, route) in &out.events {
        assert!(route.is_none());
        assert!(*line > last, "line {line} emitted after line {last}");
        last = *line;
        let i = usize::try_from(*line)
            .unwrap()
            .checked_sub(1)
            .expect("line 0");
        let l = lines.get(i).expect("emitted line out of range");
        assert_eq!(
            bytes.as_slice(),
            l.content,
            "emitted event differs from line {line}"
        );
        assert!(
            is_object(bytes),
            "emitted event is not a JSON object: {bytes:?}"
        );
        assert_eq!(seen[i], 0, "line {line} delivered twice");
        seen[i] = 1;
    }
    for (text, _, _) in &dead.events {
        let d: serde_json::Value = serde_json::from_slice(text).expect("dead letter is JSON");
        let line = d["line"].as_u64().expect("dead letter has a line");
        let i = usize::try_from(line)
            .unwrap()
            .checked_sub(1)
            .expect("line 0");
        let l = lines.get(i).expect("dead-lettered line out of range");
        assert_eq!(
            d["offset"].as_u64(),
            Some(l.offset),
            "offset of line {line}"
        );
        assert!(!d["reason"].as_str().unwrap().is_empty());
        if d.get("raw_truncated").is_none() {
            assert_eq!(
                d["raw"].as_str().unwrap(),
                String::from_utf8_lossy(l.content)
            );
        }
        assert_eq!(seen[i], 0, "line {line} delivered twice");
        seen[i] = 2;
    }
    let mut nonblank = 0u64;
    for (i, l) in lines.iter().enumerate() {
        // A whitespace-only line is skipped however long it is.
        let expect = if is_blank(l.content) {
            0
        } else if l.content.len() > max_line {
            2
        } else if is_object(l.content) {
            1
        } else {
            2
        };
        nonblank += u64::from(expect != 0);
        assert_eq!(
            seen[i],
            expect,
            "line {} ({} bytes, limit {max_line}): expected state {expect}, got {}",
            i + 1,
            l.content.len(),
            seen[i]
        );
    }
    assert_eq!(st.received, nonblank);
});
