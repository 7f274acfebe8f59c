//! Property tests: chunking invariance and conservation on random mixes of lines.

use std::io::Read;

use proptest::prelude::*;
use sluicebox::{CollectSink, Pipeline, PipelineConfig};

/// A reader that returns the input in chunks of the given sizes (cycling).
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    k: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self.sizes[self.k % self.sizes.len()].max(1);
        self.k += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"{\"level\":\"INFO\",\"msg\":\"ok \\\"q\\\"\"}".to_vec()),
        1 => Just(b"{\"n\":1e400}".to_vec()),
        1 => Just(b"".to_vec()),
        1 => Just(b"  \t".to_vec()),
        1 => Just(b"{\"a\":1}\r".to_vec()),
        1 => Just(b"[1]".to_vec()),
        1 => Just(b"{broken".to_vec()),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40),
    ]
}

fn run(
    data: &[u8],
    sizes: Vec<usize>,
    config: PipelineConfig,
) -> (sluicebox::Stats, Vec<u8>, Vec<u8>) {
    let mut out = CollectSink::new();
    let mut dead = CollectSink::new();
    let r = Pipeline::new(config)
        .unwrap()
        .run_with_dead_letter(Chunked { data, sizes, k: 0 }, &mut out, &mut dead)
        .unwrap();
    (r.stats, out.ndjson(), dead.ndjson())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn chunking_does_not_change_the_output(lines in proptest::collection::vec(line(), 0..60),
                                           sizes in proptest::collection::vec(1usize..300, 1..8),
                                           batch in 1usize..20, final_newline in any::<bool>()) {
        let mut data = lines.join(&b"\n"[..]);
        if final_newline { data.push(b'\n'); }
        let config = || PipelineConfig { max_batch_events: batch, max_line_bytes: 64, ..Default::default() };
        let (s1, o1, d1) = run(&data, vec![1 << 20], config());
        let (s2, o2, d2) = run(&data, sizes, config());
        prop_assert_eq!(&o1, &o2);
        prop_assert_eq!(&d1, &d2);
        prop_assert_eq!(s1.received, s2.received);
        prop_assert!(s1.is_balanced() && s2.is_balanced());
        // Every non-blank line is one event.
        let nonblank = data.split(|&b| b == b'\n').enumerate()
            .filter(|(i, l)| !(l.is_empty() && *i == data.split(|&b| b == b'\n').count() - 1))
            .filter(|(_, l)| !l.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))).count() as u64;
        prop_assert_eq!(s1.received, nonblank);
    }
}
