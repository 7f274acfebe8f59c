//! Property (native path; guest_results covers real guest memory): `check_decisions` never panics on any verdict bytes, record stream and batch size; an answer it accepts, written verbatim by a filter into a real pipeline, is applied without a panic or an error, conservation holds with the drops and extra events the verdicts imply, and every emitted event is a JSON object.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sluicebox::fuzzing::{check_decisions, set_raw_decisions};
use sluicebox::parse::scalar;
use sluicebox::{CollectSink, Decisions, Events, Filter, Pipeline, PipelineConfig};
use sluicebox_abi as abi;
use sluicebox_fuzz::answer::{Record, encode, iter_records, plausible};

#[derive(Arbitrary, Debug)]
enum Answer {
    /// Bytes as they come.
    Raw { verdicts: Vec<u8>, records: Vec<u8> },
    /// Records encoded in the ABI layout, then optionally one byte overwritten.
    Built {
        verdicts: Vec<u8>,
        records: Vec<Record>,
        poke: Option<(u16, u8)>,
    },
    /// Likely to be accepted: n valid verdicts, records sorted by event, and each record's
    /// event given the verdict its op needs.
    Plausible {
        verdicts: Vec<u8>,
        records: Vec<Record>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    n: u8,
    answer: Answer,
}

/// Answers a batch of exactly `n` events with the stored bytes, verbatim.
#[derive(Clone)]
struct Verbatim {
    n: usize,
    verdicts: Vec<u8>,
    records: Vec<u8>,
}

impl Filter for Verbatim {
    fn name(&self) -> &str {
        "verbatim"
    }
    fn process(&mut self, events: &Events<'_>, d: &mut Decisions) -> sluicebox::Result<()> {
        assert_eq!(events.len(), self.n, "the whole batch arrives in one call");
        set_raw_decisions(d, &self.verdicts, &self.records);
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn Filter>> {
        Ok(Box::new(self.clone()))
    }
}

const EVENTS: &[&str] = &[
    r#"{"a":{"b":{"c":1}},"x":[1,2],"msg":"hi"}"#,
    r#"{"a":1,"a":{"b":2},"k\\":"v"}"#,
    r#"{}"#,
    r#"{ "a.b" : "dot" , "é":null, "n":1e400 }"#,
    r#"{"msg":"q\"\u00e9","a":{"b":[{}]}}"#,
];

fuzz_target!(|input: Input| {
    let n = usize::from(input.n % 16);
    let (verdicts, records) = match input.answer {
        Answer::Raw { verdicts, records } => (verdicts, records),
        Answer::Built {
            verdicts,
            records,
            poke,
        } => {
            let mut stream = encode(&records, 0);
            if let Some((at, byte)) = poke
                && !stream.is_empty()
            {
                let i = usize::from(at) % stream.len();
                stream[i] = byte;
            }
            (verdicts, stream)
        }
        Answer::Plausible { verdicts, records } => plausible(&verdicts, records, n),
    };
    if check_decisions(&verdicts, &records, n, 1024).is_err() || n == 0 {
        return;
    }
    // Accepted: what the pipeline must do with it.
    let mut expect_filtered = 0u64;
    let mut expect_created = 0u64;
    let mut emits = vec![0u64; n];
    for r in iter_records(&records) {
        if r.1 == abi::OP_EMIT {
            emits[r.0] += 1;
        }
    }
    for (i, &v) in verdicts.iter().enumerate() {
        match v {
            1 => expect_filtered += 1,
            3 if emits[i] == 0 => expect_filtered += 1,
            3 => expect_created += emits[i] - 1,
            _ => {}
        }
    }
    let mut text = String::new();
    for i in 0..n {
        text.push_str(EVENTS[i % EVENTS.len()]);
        text.push('\n');
    }
    let config = PipelineConfig {
        max_batch_events: n,
        breaker_threshold: u32::MAX,
        ..Default::default()
    };
    let mut out = CollectSink::new();
    let mut dead = CollectSink::new();
    let report = Pipeline::new(config)
        .unwrap()
        .with_filter(Verbatim {
            n,
            verdicts: verdicts.clone(),
            records,
        })
        .run_with_dead_letter(text.as_bytes(), &mut out, &mut dead)
        .expect("an accepted answer is applied");
    let st = report.stats;
    assert!(st.is_balanced(), "{st:?}");
    assert_eq!(st.received, n as u64);
    assert_eq!(st.filter_failures, 0, "{st:?}");
    assert_eq!(st.filtered, expect_filtered, "{st:?}");
    assert_eq!(st.created, expect_created, "{st:?}");
    for (bytes, _, _) in &out.events {
        let mut s = Vec::new();
        scalar::validate(bytes, usize::MAX, &mut s).unwrap_or_else(|e| {
            panic!(
                "emitted event is not JSON ({e}): {:?}",
                String::from_utf8_lossy(bytes)
            )
        });
        assert_eq!(bytes[s[0] as usize], b'{');
    }
});
