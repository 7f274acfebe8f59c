//! Property: whatever a wasm guest leaves in its own memory as results (init status and message, FieldsDecl and its paths, filter status, verdicts and records pointers and lengths, message, verdict and record bytes, traps), the host decodes it into a typed error or an answer and never panics: building fails only with `ModuleInit`, a run never fails, conservation holds, emitted events are JSON objects, and whenever every pointer lands in memory the harness knows, the outcome (outputs, dead letters, counters) equals a reference model of the ABI's decoding rules run as a native filter.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sluicebox::fuzzing::set_raw_decisions;
use sluicebox::parse::scalar;
use sluicebox::wasm::WasmModule;
use sluicebox::{
    CollectSink, Decisions, Error, Events, Filter, Kind, Pipeline, PipelineConfig, Stats,
    WasmConfig,
};
use sluicebox_abi as abi;
use sluicebox_fuzz::answer::{Record, encode, plausible};

/// The guest: every result comes from the blob it is given (see the file's header).
const WAT: &str = include_str!("../wat/hostile_answer.wat");
/// Where the guest decodes the blob, and where its payload starts.
const BLOB: u32 = 0x10000;
const PAYLOAD: u32 = BLOB + 48;
/// Start of the guest's heap: below it, guest memory is the harness's image (zeros and the
/// blob); from it on, the host's init block and batch buffers (contents not modelled).
const HEAP: u32 = 0x30000;
/// `WasmConfig::default().memory_limit`: guest memory never grows past it, so a range
/// ending beyond it is out of bounds whatever the memory's size.
const LIMIT: u64 = 64 << 20;
const NAME: &str = "hostile_answer";

/// [without `sluicebox_fields`, with it], compiled once.
fn modules() -> &'static [Arc<WasmModule>; 2] {
    static M: OnceLock<[Arc<WasmModule>; 2]> = OnceLock::new();
    M.get_or_init(|| {
        let without: String = WAT
            .lines()
            .filter(|l| !l.ends_with(";; FIELDS"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(without.len(), WAT.len(), "the FIELDS line is marked");
        [
            WasmModule::from_bytes(NAME, without.as_bytes(), None).unwrap(),
            WasmModule::from_bytes(NAME, WAT.as_bytes(), None).unwrap(),
        ]
    })
}

/// A pointer the guest returns.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ptr {
    /// The matching part of the payload (first: what exhausted input decodes to).
    Auto,
    Zero,
    /// Anywhere in the payload.
    Payload(u16),
    /// In the zero page below the blob.
    Low(u16),
    /// In the heap: the init block or a batch buffer, or past the memory's end.
    Heap(u32),
    /// At or past the memory cap.
    High(u32),
    Any(u32),
}

impl Ptr {
    fn at(self, auto: u32) -> u32 {
        match self {
            Ptr::Zero => 0,
            Ptr::Auto => auto,
            Ptr::Payload(o) => PAYLOAD + u32::from(o),
            Ptr::Low(o) => u32::from(o),
            Ptr::Heap(x) => HEAP + x % (4 << 20),
            Ptr::High(x) => (LIMIT as u32).saturating_add(x),
            Ptr::Any(x) => x,
        }
    }
}

/// A length the guest returns.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    /// The length of the matching part of the payload.
    Auto,
    Small(u8),
    Any(u32),
}

impl Len {
    fn of(self, auto: usize) -> u32 {
        match self {
            Len::Auto => auto as u32,
            Len::Small(x) => u32::from(x),
            Len::Any(x) => x,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum RecordsIn {
    /// Likely accepted for the first batch; the verdicts are replaced to go with them.
    Plausible(Vec<Record>),
    /// Encoded records, then optionally one byte overwritten.
    Built(Vec<Record>, Option<(u16, u8)>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Message {
    text: Vec<u8>,
    ptr: Ptr,
    len: Len,
}

#[derive(Arbitrary, Debug)]
struct FieldsIn {
    decl: Ptr,
    /// Indexes into `FIELD_PATHS`, joined with `\n`; or raw bytes.
    named: Vec<u8>,
    raw_paths: Option<Vec<u8>>,
    paths_ptr: Ptr,
    paths_len: Len,
    flags: u8,
}

const FIELD_PATHS: &[&str] = &["level", "a.b", "msg", "x", "a\\.b", "", "é", "a..b", "\\"];

#[derive(Arbitrary, Debug)]
struct Input {
    /// Indexes into `LINES`.
    lines: Vec<u8>,
    batch: u8,
    /// 0: `sluicebox_fields` not exported.
    fields: Option<FieldsIn>,
    init_fail: Option<(i32, Message)>,
    grow: u8,
    /// 1: trap in `sluicebox_filter`; 2: trap in `sluicebox_init`.
    trap: u8,
    status: i32,
    message: Message,
    verdicts: Vec<u8>,
    verdicts_ptr: Ptr,
    records: RecordsIn,
    records_ptr: Ptr,
    records_len: Len,
    records_cap: Option<u16>,
}

const LINES: &[&str] = &[
    r#"{"level":"INFO","msg":"a"}"#,
    r#"{"a":{"b":[1,2]},"x":"y"}"#,
    "{}",
    r#"{"level":"DEBUG","a.b":true}"#,
    "not json",
    "[1,2]",
    "",
    r#"{"msg":"q\"\u00e9","n":-1.5e3,"a":{"b":{"c":null}}}"#,
];

/// Guest memory below `HEAP` as the harness laid it out.
struct Image(Vec<u8>);

enum Region<'a> {
    Known(&'a [u8]),
    OutOfBounds,
    Unknown,
}

impl Image {
    fn region(&self, p: u32, len: u64) -> Region<'_> {
        let end = u64::from(p) + len;
        if end <= u64::from(HEAP) {
            Region::Known(&self.0[p as usize..end as usize])
        } else if end > LIMIT {
            Region::OutOfBounds
        } else {
            Region::Unknown
        }
    }

    fn word(&self, p: u32) -> u32 {
        u32::from_le_bytes(self.0[p as usize..p as usize + 4].try_into().unwrap())
    }
}

/// What the guest hands back from `sluicebox_filter`, as the model reads it.
#[derive(Clone)]
struct Answer {
    image: Arc<Image>,
    trap: bool,
    status: i32,
    vp: u32,
    rp: u32,
    rl: u32,
    cap: usize,
}

impl Answer {
    /// Whether the harness knows what the host reads for every batch size up to `max_n`:
    /// each range the host reads is in the harness's image or out of bounds for sure.
    fn predictable(&self, max_n: usize) -> bool {
        if self.trap || self.status != abi::STATUS_OK {
            return true;
        }
        let v_ok = self.vp == 0
            || matches!(self.image.region(self.vp, max_n as u64), Region::Known(_))
            || matches!(self.image.region(self.vp, 1), Region::OutOfBounds);
        let r_ok = self.rl == 0
            || self.rl as usize > self.cap
            || self.rp == 0
            || !matches!(
                self.image.region(self.rp, u64::from(self.rl)),
                Region::Unknown
            );
        v_ok && r_ok
    }

    /// The host's decoding rules (docs/abi.md sections 2.3, 9 and 12), for a call of `n`
    /// events.
    fn decode(&self, n: usize, d: &mut Decisions) -> sluicebox::Result<()> {
        let fail = |m: &str| Err(Error::new(Kind::FilterFailed, m.to_string()));
        if self.trap {
            return fail("trap");
        }
        if self.status != abi::STATUS_OK {
            return fail("status");
        }
        let verdicts = if self.vp == 0 {
            vec![abi::Verdict::Keep as u8; n]
        } else {
            match self.image.region(self.vp, n as u64) {
                Region::Known(b) => b.to_vec(),
                Region::OutOfBounds => return fail("verdicts out of bounds"),
                Region::Unknown => unreachable!("checked by predictable"),
            }
        };
        let records = if self.rl == 0 {
            Vec::new()
        } else if self.rl as usize > self.cap {
            return fail("records over the cap");
        } else if self.rp == 0 {
            return fail("records_ptr 0");
        } else {
            match self.image.region(self.rp, u64::from(self.rl)) {
                Region::Known(b) => b.to_vec(),
                Region::OutOfBounds => return fail("records out of bounds"),
                Region::Unknown => unreachable!("checked by predictable"),
            }
        };
        set_raw_decisions(d, &verdicts, &records);
        Ok(())
    }
}

/// The reference model: the guest's answer decoded by the ABI's rules, as a native filter.
#[derive(Clone)]
struct Model(Answer);

impl Filter for Model {
    fn name(&self) -> &str {
        NAME
    }
    fn process(&mut self, events: &Events<'_>, d: &mut Decisions) -> sluicebox::Result<()> {
        self.0.decode(events.len(), d)
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn Filter>> {
        Ok(Box::new(self.clone()))
    }
}

/// Whether building must succeed (`Some(true)`), must fail (`Some(false)`), or the harness
/// cannot tell (`None`: a pointer into the heap).
fn predict_build(input: &Input, image: &Image, fields_at: Option<u32>) -> Option<bool> {
    if input.trap == 2 || input.init_fail.as_ref().is_some_and(|(s, _)| *s != 0) {
        return Some(false);
    }
    let Some(decl) = fields_at else {
        return Some(true);
    };
    let (pp, pl, flags) = match image.region(decl, 12) {
        Region::Known(_) => (image.word(decl), image.word(decl + 4), image.word(decl + 8)),
        Region::OutOfBounds => return Some(false),
        Region::Unknown => return None,
    };
    let paths = match image.region(pp, u64::from(pl)) {
        Region::Known(b) => b,
        Region::OutOfBounds => return Some(false),
        Region::Unknown => return None,
    };
    // Projection::parse, restated.
    if flags & !abi::FIELDS_RAW != 0 {
        return Some(false);
    }
    let Ok(text) = std::str::from_utf8(paths) else {
        return Some(false);
    };
    if text.is_empty() {
        return Some(true);
    }
    let list: Vec<&str> = text.split('\n').collect();
    Some(list.len() <= abi::MAX_FIELDS && list.iter().all(|p| !p.is_empty()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(p: &mut Pipeline, input: &[u8]) -> (Stats, CollectSink, CollectSink) {
    let mut out = CollectSink::new();
    let mut dead = CollectSink::new();
    let report = p
        .run_with_dead_letter(input, &mut out, &mut dead)
        .unwrap_or_else(|e| panic!("a run with the breaker off cannot fail: {e}"));
    assert!(report.stats.is_balanced(), "{:?}", report.stats);
    (report.stats, out, dead)
}

/// (line, offset, raw) of each dead letter, and whether a filter sent it.
fn dead_keys(dead: &CollectSink) -> Vec<(u64, u64, String, bool)> {
    dead.events
        .iter()
        .map(|(t, _, _)| {
            let d: serde_json::Value = serde_json::from_slice(t).expect("dead letter is JSON");
            (
                d["line"].as_u64().unwrap(),
                d["offset"].as_u64().unwrap(),
                d["raw"].as_str().unwrap_or("").to_string(),
                d.get("filter").is_some_and(|f| !f.is_null()),
            )
        })
        .collect()
}

fuzz_target!(|input: Input| {
    let lines: Vec<&str> = input
        .lines
        .iter()
        .take(24)
        .map(|&i| LINES[usize::from(i) % LINES.len()])
        .collect();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let objects = lines.iter().filter(|l| l.starts_with('{')).count();
    let max_batch = 1 + usize::from(input.batch % 8);
    let first_n = objects.min(max_batch);

    // Payload: verdicts, records, message, init message, FieldsDecl, paths; each 4-aligned.
    let mut payload: Vec<u8> = Vec::new();
    let part = |payload: &mut Vec<u8>, bytes: &[u8]| -> (u32, usize) {
        let at = PAYLOAD + payload.len() as u32;
        payload.extend_from_slice(bytes);
        payload.resize(abi::pad4(payload.len()), 0);
        (at, bytes.len())
    };
    let (verdicts, records) = match &input.records {
        RecordsIn::Raw(r) => (input.verdicts.clone(), r.clone()),
        RecordsIn::Built(recs, poke) => {
            let mut stream = encode(recs, 0);
            if let Some((at, byte)) = *poke
                && !stream.is_empty()
            {
                let i = usize::from(at) % stream.len();
                stream[i] = byte;
            }
            (input.verdicts.clone(), stream)
        }
        RecordsIn::Plausible(recs) => plausible(&input.verdicts, recs.clone(), first_n),
    };
    let (v_at, _) = part(&mut payload, &verdicts);
    let (r_at, r_len) = part(&mut payload, &records);
    let (m_at, m_len) = part(&mut payload, &input.message.text);
    let (im_at, im_len) = match &input.init_fail {
        Some((_, m)) => part(&mut payload, &m.text),
        None => (0, 0),
    };
    let mut fields_at = None;
    if let Some(f) = &input.fields {
        let paths: Vec<u8> = match &f.raw_paths {
            Some(raw) => raw.clone(),
            None => f
                .named
                .iter()
                .take(8)
                .map(|&i| FIELD_PATHS[usize::from(i) % FIELD_PATHS.len()])
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
        };
        let flags = match f.flags {
            0..=127 => 0,
            128..=250 => abi::FIELDS_RAW,
            x => u32::from(x),
        };
        let paths_at = PAYLOAD + payload.len() as u32 + 12;
        let mut decl = Vec::new();
        decl.extend_from_slice(&f.paths_ptr.at(paths_at).to_le_bytes());
        decl.extend_from_slice(&f.paths_len.of(paths.len()).to_le_bytes());
        decl.extend_from_slice(&flags.to_le_bytes());
        let (d_at, _) = part(&mut payload, &decl);
        part(&mut payload, &paths);
        fields_at = Some(f.decl.at(d_at));
    }
    let mut blob = Vec::new();
    let mut word = |w: u32| blob.extend_from_slice(&w.to_le_bytes());
    match &input.init_fail {
        Some((status, m)) => {
            word(*status as u32);
            word(m.ptr.at(im_at));
            word(m.len.of(im_len));
        }
        None => (0..3).for_each(|_| word(0)),
    }
    word(fields_at.unwrap_or(0));
    word(u32::from(input.grow));
    word(input.status as u32);
    word(input.verdicts_ptr.at(v_at));
    word(input.records_ptr.at(r_at));
    let rl = input.records_len.of(r_len);
    word(rl);
    word(input.message.ptr.at(m_at));
    word(input.message.len.of(m_len));
    word(match input.trap {
        1 => 1,
        2 => 2,
        _ => 0,
    });
    blob.extend_from_slice(&payload);
    if blob.len() > 0x20000 {
        return;
    }
    let mut image = vec![0u8; HEAP as usize];
    image[BLOB as usize..BLOB as usize + blob.len()].copy_from_slice(&blob);
    let image = Arc::new(Image(image));

    let cap = input.records_cap.map_or(64 << 20, usize::from);
    let config = WasmConfig {
        params: [("b".to_string(), hex(&blob))].into(),
        max_records_bytes: cap,
        ..sluicebox_fuzz::wasm_config()
    };
    let module = &modules()[usize::from(fields_at.is_some())];
    let expect_build = predict_build(&input, &image, fields_at);
    let filter = match config.build(module) {
        Ok(f) => {
            assert_ne!(
                expect_build,
                Some(false),
                "the guest's init should have been refused"
            );
            f
        }
        Err(e) => {
            assert_eq!(e.kind(), Kind::ModuleInit, "{e}");
            assert_ne!(
                expect_build,
                Some(true),
                "the guest's init was refused: {e}"
            );
            return;
        }
    };
    let pipeline_config = PipelineConfig {
        max_batch_events: max_batch,
        breaker_threshold: u32::MAX,
        ..Default::default()
    };
    let mut wasm = Pipeline::new(pipeline_config.clone())
        .unwrap()
        .with_filter(filter);
    let (ws, wout, wdead) = run(&mut wasm, text.as_bytes());
    for (bytes, _, _) in &wout.events {
        let mut s = Vec::new();
        scalar::validate(bytes, usize::MAX, &mut s).unwrap_or_else(|e| {
            panic!(
                "emitted event is not JSON ({e}): {:?}",
                String::from_utf8_lossy(bytes)
            )
        });
        assert_eq!(bytes[s[0] as usize], b'{');
    }
    let answer = Answer {
        image,
        trap: input.trap == 1,
        status: input.status,
        vp: input.verdicts_ptr.at(v_at),
        rp: input.records_ptr.at(r_at),
        rl,
        cap,
    };
    if answer.trap || answer.status != abi::STATUS_OK {
        assert_eq!((ws.emitted, ws.dead_lettered), (0, ws.received), "{ws:?}");
    }
    if !answer.predictable(max_batch) {
        return;
    }
    let mut model = Pipeline::new(pipeline_config)
        .unwrap()
        .with_filter(Model(answer));
    let (ms, mout, mdead) = run(&mut model, text.as_bytes());
    assert_eq!(wout.events, mout.events, "output differs from the model");
    assert_eq!(
        dead_keys(&wdead),
        dead_keys(&mdead),
        "dead letters differ from the model"
    );
    assert_eq!(ws, ms, "counters differ from the model");
});
