//! Pieces shared by the fuzz targets in `fuzz_targets/`: the ABI answer encoder (used by
//! `decisions` and `guest_results`) and the framer's view of an input's lines (used by
//! `frame_parse` and `e2e_wat`), reference code that calls nothing of sluicebox, and the wasm
//! settings the targets share ([`wasm_config`]).

/// The wasm settings of the fuzz targets: the defaults but for the deadline, 30 s instead
/// of 100 ms. The deadline is wall-clock time: on a loaded machine (ASan, two fuzzers,
/// builds beside them) a call now and then overran 100 ms and the harnesses reported the
/// resulting isolation as a mismatch (seen twice, neither reproducible on an idle machine).
/// Deadlines have their own tests; libFuzzer's `-timeout` still catches a hang.
pub fn wasm_config() -> sluicebox::WasmConfig {
    sluicebox::WasmConfig {
        deadline: std::time::Duration::from_secs(30),
        ..Default::default()
    }
}

pub mod answer {
    //! Filter answers in the ABI layout (`docs/abi.md` section 9), built from fuzz input.

    use arbitrary::Arbitrary;
    use sluicebox_abi as abi;

    /// Path operands: dots, escapes, empty, non-ASCII.
    pub const PATHS: &[&str] = &[
        "a", "b", "a.b", "a.b.c", "x", "a\\.b", "k\\\\", "", ".", "a..b", "\\", "msg", "é",
    ];
    /// Value operands: valid and invalid JSON, objects and not.
    pub const VALUES: &[&str] = &[
        "1",
        "-0",
        "1e400",
        "\"s\"",
        "\"\\u00e9\\\"\"",
        "null",
        "true",
        "{}",
        "{\"b\":{\"c\":1}}",
        "[1,{\"a\":2}]",
        " 2 ",
        "{\"a\":1,\"a\":2}",
        "",
        "{",
        "[1,]",
        "\"\\ud800\"",
        "0x1",
    ];

    /// One operand of a record.
    #[derive(Arbitrary, Clone, Debug)]
    pub enum Operand {
        Path(u8),
        Value(u8),
        Raw(Vec<u8>),
    }

    impl Operand {
        pub fn bytes(&self) -> Vec<u8> {
            match self {
                Operand::Path(i) => PATHS[usize::from(*i) % PATHS.len()].as_bytes().to_vec(),
                Operand::Value(i) => VALUES[usize::from(*i) % VALUES.len()].as_bytes().to_vec(),
                Operand::Raw(b) => b.clone(),
            }
        }
    }

    /// One record before encoding; `op` is taken modulo 8 (0 and 7 are unknown ops).
    #[derive(Arbitrary, Clone, Debug)]
    pub struct Record {
        pub event: u8,
        pub op: u8,
        pub a: Operand,
        pub b: Operand,
    }

    /// Encodes records in the ABI layout; `n > 0` folds event numbers into the batch.
    pub fn encode(records: &[Record], n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let (a, b) = (r.a.bytes(), r.b.bytes());
            let event = if n > 0 {
                usize::from(r.event) % n
            } else {
                usize::from(r.event)
            };
            out.extend_from_slice(&(event as u32).to_le_bytes());
            out.extend_from_slice(&[r.op % 8, 0, 0, 0]);
            out.extend_from_slice(&(a.len() as u32).to_le_bytes());
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&a);
            out.extend_from_slice(&b);
            out.resize(abi::pad4(out.len()), 0);
        }
        out
    }

    /// An answer likely to be accepted for `n` events: `n` valid verdicts, records sorted by
    /// event, and each record's event given the verdict its op needs.
    pub fn plausible(verdicts: &[u8], mut records: Vec<Record>, n: usize) -> (Vec<u8>, Vec<u8>) {
        let mut verdicts: Vec<u8> = verdicts.iter().map(|v| v % 5).collect();
        verdicts.resize(n, 0);
        if n > 0 {
            records.sort_by_key(|r| usize::from(r.event) % n);
            for r in &records {
                let e = usize::from(r.event) % n;
                verdicts[e] = match r.op % 8 {
                    abi::OP_SET | abi::OP_REMOVE | abi::OP_RENAME => 2,
                    abi::OP_EMIT => 3,
                    abi::OP_FAIL => 4,
                    _ => verdicts[e],
                };
            }
        }
        (verdicts, encode(&records, n))
    }

    /// (event, op) of each record of a stream the host accepted.
    pub fn iter_records(stream: &[u8]) -> Vec<(usize, u8)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + abi::RECORD_HEADER_LEN <= stream.len() {
            let u = |o: usize| {
                u32::from_le_bytes(stream[pos + o..pos + o + 4].try_into().unwrap()) as usize
            };
            let (event, op, a, b) = (u(0), stream[pos + 4], u(8), u(12));
            out.push((event, op));
            pos = abi::pad4(pos + abi::RECORD_HEADER_LEN + a + b);
        }
        out
    }
}

pub mod lines {
    //! An input's lines as the framer must see them (`src/frame`): a UTF-8 BOM at the very
    //! start is skipped, lines end at `\n`, one `\r` before it is not content, the last line
    //! needs no newline.

    /// One input line.
    pub struct Line<'a> {
        /// The line without its `\n` and trailing `\r`.
        pub content: &'a [u8],
        /// Byte offset of the line's first byte in the input.
        pub offset: u64,
    }

    /// The lines of `data`, blank ones included.
    pub fn lines(data: &[u8]) -> Vec<Line<'_>> {
        let (mut rest, mut offset) = match data.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
            Some(r) => (r, 3u64),
            None => (data, 0),
        };
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (line, consumed) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], i + 1),
                None => (rest, rest.len()),
            };
            let content = line.strip_suffix(b"\r").unwrap_or(line);
            out.push(Line { content, offset });
            offset += consumed as u64;
            rest = &rest[consumed..];
        }
        out
    }

    /// A line the framer skips: only spaces, tabs and carriage returns.
    pub fn is_blank(content: &[u8]) -> bool {
        content.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
    }
}
