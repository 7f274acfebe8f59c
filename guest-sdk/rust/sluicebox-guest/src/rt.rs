//! The runtime behind the exports the macros generate: reading the host's batch, calling the
//! user's function once per event, and handing verdicts and records back.
//!
//! Everything here is `#[doc(hidden)]` API for the macros' output (`sluicebox_guest::__rt`),
//! except the output traits, which are re-exported at the crate root because they show up in
//! error messages.

use alloc::string::String;
use alloc::vec::Vec;

use sluicebox_abi::{self as abi, ErrorCode, Verdict};

use crate::edits::{Edits, Emitter};
use crate::event::{Event, NODE_LEN};
use crate::params::Params;

/// What a `#[filter]` function may return: `bool` (true keeps the event) or `Result<bool, E>`,
/// where `Err(reason)` dead-letters the event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a `#[filter]` function",
    label = "a `#[filter]` function returns `bool` (true keeps the event) or `Result<bool, E>` with `E: AsRef<str>`"
)]
pub trait FilterOutput {
    /// Whether the event is kept; records a failure in `edits`.
    #[doc(hidden)]
    fn apply(self, edits: &mut Edits) -> bool;
}

impl FilterOutput for bool {
    fn apply(self, _: &mut Edits) -> bool {
        self
    }
}

impl<E: AsRef<str>> FilterOutput for Result<bool, E> {
    fn apply(self, edits: &mut Edits) -> bool {
        match self {
            Ok(keep) => keep,
            Err(reason) => {
                edits.fail(reason.as_ref());
                false
            }
        }
    }
}

/// What a `#[map]` or `#[flat_map]` function may return: `()` or `Result<(), E>`, where
/// `Err(reason)` dead-letters the event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a `#[map]` or `#[flat_map]` function",
    label = "return `Result<(), E>` with `E: AsRef<str>` (e.g. `String`), or `()`"
)]
pub trait MapOutput {
    /// Records a failure in `edits`.
    #[doc(hidden)]
    fn apply(self, edits: &mut Edits);
}

impl MapOutput for () {
    fn apply(self, _: &mut Edits) {}
}

impl<E: AsRef<str>> MapOutput for Result<(), E> {
    fn apply(self, edits: &mut Edits) {
        if let Err(reason) = self {
            edits.fail(reason.as_ref());
        }
    }
}

/// What an `#[init]` function may return: `()` or `Result<(), E>`, where `Err(reason)` rejects
/// the configuration.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for an `#[init]` function",
    label = "return `Result<(), E>` with `E: AsRef<str>` (e.g. `String`), or `()`"
)]
pub trait InitOutput {
    /// Whether init failed; puts the reason in `message`.
    #[doc(hidden)]
    fn failed(self, message: &mut String) -> bool;
}

impl InitOutput for () {
    fn failed(self, _: &mut String) -> bool {
        false
    }
}

impl<E: AsRef<str>> InitOutput for Result<(), E> {
    fn failed(self, message: &mut String) -> bool {
        match self {
            Ok(()) => false,
            Err(reason) => {
                message.push_str(reason.as_ref());
                true
            }
        }
    }
}

/// Compile-time check of a `#[filter]` function's signature.
pub fn check_filter<F, R>(_: F)
where
    F: Fn(&Event<'_>) -> R,
    R: FilterOutput,
{
}

/// Compile-time check of a `#[map]` function's signature.
pub fn check_map<F, R>(_: F)
where
    F: Fn(&Event<'_>, &mut Edits) -> R,
    R: MapOutput,
{
}

/// Compile-time check of a `#[flat_map]` function's signature.
pub fn check_flat_map<F, R>(_: F)
where
    F: Fn(&Event<'_>, &mut Emitter) -> R,
    R: MapOutput,
{
}

/// Compile-time check of an `#[init]` function's signature.
pub fn check_init<F, R>(_: F)
where
    F: Fn(&Params) -> R,
    R: InitOutput,
{
}

/// What a module declared: its field paths, if any, and whether it wants raw bytes with them.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// The declared paths, in order; `None` for a fully indexed batch.
    pub fields: Option<&'a [&'a str]>,
    /// The same paths joined with `\n`, as `sluicebox_fields` hands them over.
    pub joined: &'a str,
    /// Whether the module asked for raw bytes along with its fields.
    pub raw: bool,
}

/// Where the host's bytes are: the wasm linear memory, or a buffer in native tests.
pub(crate) trait Memory {
    /// The `len` bytes at `ptr`, or `None` when they are not all inside the memory. A zero
    /// length is always fine.
    fn slice(&self, ptr: u32, len: usize) -> Option<&[u8]>;
}

/// What the SDK hands back from one batch. Lives as long as the instance, so its buffers are
/// reused.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) verdicts: Vec<u8>,
    /// The record stream (through its `Edits` for filters and maps).
    pub(crate) emitter: Emitter,
    /// Why the batch failed, when it did.
    pub(crate) message: String,
    /// Whether any verdict is not `Keep` (else the host is told "keep every event").
    pub(crate) any_verdict: bool,
}

impl Output {
    pub(crate) const fn new() -> Self {
        Self {
            verdicts: Vec::new(),
            emitter: Emitter::new(),
            message: String::new(),
            any_verdict: false,
        }
    }

    fn fail(&mut self, code: ErrorCode, message: &str) -> ErrorCode {
        self.message.clear();
        self.message.push_str(message);
        code
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Filters one batch: reads the header at `header_ptr` in `mem`, calls `handle` once per event
/// (with the record stream positioned at it) and leaves the verdicts and records in `out`.
///
/// # Errors
///
/// When the header or a table does not fit in memory, or does not match what the module
/// declared; `out.message` says what.
pub(crate) fn process<M: Memory + ?Sized>(
    mem: &M,
    header_ptr: u32,
    spec: &Spec<'_>,
    out: &mut Output,
    replace: bool,
    mut handle: impl FnMut(&Event<'_>, &mut Emitter),
) -> Result<(), ErrorCode> {
    out.verdicts.clear();
    out.emitter.edits_mut().clear();
    out.message.clear();
    out.any_verdict = false;

    let Some(h) = mem.slice(header_ptr, core::mem::size_of::<abi::BatchHeader>()) else {
        return Err(out.fail(ErrorCode::BadInput, "batch header out of bounds"));
    };
    let field = |i: usize| le32(h, i * 4);
    let (version, event_count, events_ptr, nodes_ptr, node_count) =
        (field(0), field(1), field(2), field(3), field(4));
    let (data_ptr, data_len, flags, field_count) = (field(5), field(6), field(7), field(8));
    if version != abi::ABI_VERSION {
        return Err(out.fail(
            ErrorCode::Unsupported,
            "unsupported ABI version in batch header",
        ));
    }
    let event_count = event_count as usize;
    let node_count = node_count as usize;
    let entry_len = core::mem::size_of::<abi::EventEntry>();
    let tables = (
        event_count
            .checked_mul(entry_len)
            .and_then(|len| mem.slice(events_ptr, len)),
        node_count
            .checked_mul(NODE_LEN)
            .and_then(|len| mem.slice(nodes_ptr, len)),
        mem.slice(data_ptr, data_len as usize),
    );
    let (Some(events), Some(nodes), Some(data)) = tables else {
        return Err(out.fail(ErrorCode::BadInput, "batch table out of bounds"));
    };

    let projected = flags & abi::BATCH_PROJECTED != 0;
    let declared = match (projected, spec.fields) {
        (false, _) => None,
        (true, Some(fields)) if fields.len() == field_count as usize => Some(fields),
        (true, _) => {
            return Err(out.fail(
                ErrorCode::BadInput,
                "projected batch does not match the declared fields",
            ));
        }
    };
    let has_raw = flags & abi::BATCH_RAW != 0;

    out.verdicts.reserve(event_count);
    // `events` holds exactly `event_count` entries of 16 bytes.
    for (i, entry) in events.chunks_exact(entry_len).enumerate() {
        let word =
            |k: usize| u32::from_le_bytes([entry[k], entry[k + 1], entry[k + 2], entry[k + 3]]);
        let (raw_start, raw_len, first, count) =
            (word(0), word(4), word(8) as usize, word(12) as usize);
        let event_nodes = first
            .checked_add(count)
            .filter(|&end| end <= node_count)
            .and_then(|end| nodes.get(first * NODE_LEN..end * NODE_LEN));
        let Some(event_nodes) = event_nodes else {
            return Err(out.fail(ErrorCode::BadInput, "event nodes out of bounds"));
        };
        if declared.is_some() && count != field_count as usize {
            return Err(out.fail(
                ErrorCode::BadInput,
                "projected event does not have one node per declared field",
            ));
        }
        let raw = if has_raw {
            match crate::event::region(data, raw_start, raw_len) {
                Some(raw) => Some(raw),
                None => return Err(out.fail(ErrorCode::BadInput, "event bytes out of bounds")),
            }
        } else {
            None
        };
        // `i < event_count`, which came from a u32.
        let index = i as u32;
        let event = Event::new(index, event_nodes, data, raw, declared);
        if replace {
            out.emitter.begin(index);
        } else {
            out.emitter.edits_mut().begin(index, Verdict::Keep);
        }
        handle(&event, &mut out.emitter);
        let verdict = out.emitter.verdict();
        out.any_verdict |= verdict != Verdict::Keep;
        out.verdicts.push(verdict as u8);
    }
    Ok(())
}

/// Reads an `InitBlock` at `ptr`, parses the parameters and calls `f`.
///
/// # Errors
///
/// When the block or the parameters are out of bounds or malformed, or `f` fails; `message`
/// says why.
pub(crate) fn process_init<M: Memory + ?Sized, R: InitOutput>(
    mem: &M,
    ptr: u32,
    message: &mut String,
    f: impl FnOnce(&Params) -> R,
) -> Result<(), ErrorCode> {
    message.clear();
    let mut fail = |code, text: &str| {
        message.push_str(text);
        Err(code)
    };
    let Some(block) = mem.slice(ptr, core::mem::size_of::<abi::InitBlock>()) else {
        return fail(ErrorCode::BadInput, "init block out of bounds");
    };
    if le32(block, 0) != abi::ABI_VERSION {
        return fail(
            ErrorCode::Unsupported,
            "unsupported ABI version in init block",
        );
    }
    let Some(text) = mem.slice(le32(block, 4), le32(block, 8) as usize) else {
        return fail(ErrorCode::BadInput, "init parameters out of bounds");
    };
    let Ok(text) = core::str::from_utf8(text) else {
        return fail(ErrorCode::BadConfig, "init parameters are not UTF-8");
    };
    let params = match Params::parse(text) {
        Ok(params) => params,
        Err(e) => return fail(ErrorCode::BadConfig, e.message()),
    };
    if f(&params).failed(message) {
        return Err(ErrorCode::BadConfig);
    }
    Ok(())
}

#[cfg(target_arch = "wasm32")]
pub use wasm::*;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use core::cell::RefCell;

    use super::*;
    use crate::{Event, Params};

    #[cfg(target_feature = "atomics")]
    compile_error!("sluicebox-guest assumes a single-threaded wasm module (no `atomics` feature)");

    const PAGE: u64 = 65536;

    /// The guest's linear memory, checked against its current size.
    struct Linear;

    impl Memory for Linear {
        fn slice(&self, ptr: u32, len: usize) -> Option<&[u8]> {
            if len == 0 {
                return Some(&[]);
            }
            let end = u64::from(ptr).checked_add(u64::try_from(len).ok()?)?;
            let size = core::arch::wasm32::memory_size(0) as u64 * PAGE;
            if ptr == 0 || end > size {
                return None;
            }
            // SAFETY: `ptr..ptr + len` is inside linear memory (checked above) and not at
            // address 0, so the pointer is non-null and the whole range is readable for the
            // instance's life (wasm memory never shrinks). The ABI has the host write these
            // bytes into buffers it got from `sluicebox_alloc`, which the SDK never touches
            // again, and nothing writes them during a call; a host that points elsewhere gets
            // garbage verdicts, not memory unsafety outside this instance. Any `u8` is valid.
            Some(unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len) })
        }
    }

    struct State {
        out: Output,
        init_message: String,
        fields: abi::FieldsDecl,
    }

    struct Global(RefCell<State>);

    // SAFETY: a wasm32 module without the `atomics` feature (refused above) runs on one thread,
    // so the state is never shared across threads.
    unsafe impl Sync for Global {}

    /// All of the instance's state. Borrowed for the length of one export call; a re-entrant
    /// call (the user calling an export) traps.
    static STATE: Global = Global(RefCell::new(State {
        out: Output::new(),
        init_message: String::new(),
        fields: abi::FieldsDecl {
            paths_ptr: 0,
            paths_len: 0,
            flags: 0,
        },
    }));

    fn addr<T: ?Sized>(p: *const T) -> u32 {
        p.cast::<u8>() as usize as u32
    }

    /// Writes the little-endian `words` at `ptr` if they are inside memory.
    fn write_words<const N: usize>(ptr: Option<u32>, words: [u32; N]) {
        let Some(ptr) = ptr else { return };
        let mut bytes = [[0u8; 4]; N];
        for (b, w) in bytes.iter_mut().zip(words) {
            *b = w.to_le_bytes();
        }
        let Some(dst) = Linear.slice(ptr, N * 4).map(<[u8]>::as_ptr) else {
            return;
        };
        // SAFETY: the N * 4 bytes at `dst` are inside linear memory (checked by
        // `Linear::slice`), in the block the host passed for this call, which the ABI reserves
        // for the guest to write; no reference to them is alive (the checking slice is gone and
        // `process` has returned), and the source is a local array.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<u8>(), dst.cast_mut(), N * 4);
        }
    }

    /// `sluicebox_abi_version`.
    pub fn abi_version() -> i32 {
        abi::ABI_VERSION as i32
    }

    /// `sluicebox_alloc`: `size` bytes aligned to `align` (a power of two), or 0.
    pub fn alloc(size: i32, align: i32) -> i32 {
        let (Ok(size), Ok(align)) = (usize::try_from(size), usize::try_from(align)) else {
            return 0;
        };
        let Ok(layout) = core::alloc::Layout::from_size_align(size.max(1), align) else {
            return 0;
        };
        // SAFETY: the layout's size is non-zero. The block is never freed (the ABI says the
        // host does not free), so it stays valid for the instance's life.
        let p = unsafe { alloc::alloc::alloc(layout) };
        addr(p) as i32
    }

    /// `sluicebox_fields`: a pointer to the `FieldsDecl` of `spec`.
    pub fn fields(spec: &'static Spec<'static>) -> i32 {
        let mut state = STATE.0.borrow_mut();
        let joined = spec.joined;
        state.fields = abi::FieldsDecl {
            paths_ptr: if joined.is_empty() {
                0
            } else {
                addr(joined.as_ptr())
            },
            paths_len: joined.len() as u32,
            flags: if spec.raw { abi::FIELDS_RAW } else { 0 },
        };
        addr(&state.fields) as i32
    }

    fn run(
        header: i32,
        spec: &Spec<'_>,
        replace: bool,
        handle: impl FnMut(&Event<'_>, &mut Emitter),
    ) -> i32 {
        let mut state = STATE.0.borrow_mut();
        let out = &mut state.out;
        let header = header as u32;
        let result = process(&Linear, header, spec, out, replace, handle);
        let status = match result {
            Ok(()) => abi::STATUS_OK,
            Err(code) => code as i32,
        };
        let (verdicts, records) = match result {
            Ok(()) => (&out.verdicts[..], out.emitter.records()),
            Err(_) => (&[][..], &[][..]),
        };
        let verdicts_ptr = if out.any_verdict && result.is_ok() {
            addr(verdicts.as_ptr())
        } else {
            0
        };
        let records_ptr = if records.is_empty() {
            0
        } else {
            addr(records.as_ptr())
        };
        let message_ptr = if out.message.is_empty() {
            0
        } else {
            addr(out.message.as_ptr())
        };
        write_words(
            header.checked_add(abi::HEADER_OUT_OFFSET),
            [
                verdicts_ptr,
                records_ptr,
                records.len() as u32,
                message_ptr,
                out.message.len() as u32,
            ],
        );
        status
    }

    /// `sluicebox_filter` of a `#[filter]` module.
    pub fn filter<R: FilterOutput>(
        header: i32,
        spec: &Spec<'_>,
        f: impl Fn(&Event<'_>) -> R,
    ) -> i32 {
        run(header, spec, false, |event, out| {
            let edits = out.edits_mut();
            if !f(event).apply(edits) {
                edits.discard();
            }
        })
    }

    /// `sluicebox_filter` of a `#[map]` module.
    pub fn map<R: MapOutput>(
        header: i32,
        spec: &Spec<'_>,
        f: impl Fn(&Event<'_>, &mut Edits) -> R,
    ) -> i32 {
        run(header, spec, false, |event, out| {
            let edits = out.edits_mut();
            f(event, edits).apply(edits);
        })
    }

    /// `sluicebox_filter` of a `#[flat_map]` module.
    pub fn flat_map<R: MapOutput>(
        header: i32,
        spec: &Spec<'_>,
        f: impl Fn(&Event<'_>, &mut Emitter) -> R,
    ) -> i32 {
        run(header, spec, true, |event, out| {
            f(event, out).apply(out.edits_mut());
        })
    }

    /// `sluicebox_init`.
    pub fn init<R: InitOutput>(ptr: i32, f: impl FnOnce(&Params) -> R) -> i32 {
        let mut state = STATE.0.borrow_mut();
        let message = &mut state.init_message;
        let ptr = ptr as u32;
        let status = match process_init(&Linear, ptr, message, f) {
            Ok(()) => abi::STATUS_OK,
            Err(code) => code as i32,
        };
        let words = if message.is_empty() {
            [0, 0]
        } else {
            [addr(message.as_ptr()), message.len() as u32]
        };
        let out_offset = core::mem::offset_of!(abi::InitBlock, message_ptr) as u32;
        write_words(ptr.checked_add(out_offset), words);
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Buffer, Harness};
    use alloc::vec;

    const EVENT: &str = r#"{"a":{"b":1},"c":"d"}"#;

    /// A valid batch of `EVENT`, then `corrupt` applied to (memory, header address).
    fn run_corrupted(
        harness: &Harness,
        fields: Option<&[&str]>,
        corrupt: impl FnOnce(&mut Vec<u8>, usize),
    ) -> (Result<(), ErrorCode>, Output, Vec<Option<i64>>) {
        let (Buffer(mut mem), header) = harness.layout(&[EVENT, EVENT]);
        corrupt(&mut mem, header as usize);
        let spec = Spec {
            fields,
            joined: "",
            raw: false,
        };
        let mut out = Output::new();
        let mut seen = Vec::new();
        let result = process(&Buffer(mem), header, &spec, &mut out, false, |e, _| {
            seen.push(e.get_i64("a.b"));
            e.str("c");
            e.members().for_each(|m| {
                m.key();
                m.value().elements().count();
            });
        });
        (result, out, seen)
    }

    fn set_word(mem: &mut [u8], at: usize, value: u32) {
        mem[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn word(mem: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(mem[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn a_valid_batch_runs() {
        let (result, out, seen) = run_corrupted(&Harness::full(), None, |_, _| {});
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [Some(1), Some(1)]);
        assert_eq!(out.verdicts, [0, 0]);
    }

    #[test]
    fn bad_headers_are_refused_with_a_message() {
        let full = Harness::full();
        type Corrupt = fn(&mut Vec<u8>, usize);
        let cases: [(&str, Corrupt, ErrorCode); 7] = [
            ("version", |m, h| set_word(m, h, 2), ErrorCode::Unsupported),
            (
                "event count",
                |m, h| set_word(m, h + 4, u32::MAX),
                ErrorCode::BadInput,
            ),
            (
                "events ptr",
                |m, h| set_word(m, h + 8, u32::MAX - 4),
                ErrorCode::BadInput,
            ),
            (
                "node count",
                |m, h| set_word(m, h + 16, 1 << 30),
                ErrorCode::BadInput,
            ),
            (
                "data len",
                |m, h| set_word(m, h + 24, 1 << 20),
                ErrorCode::BadInput,
            ),
            ("truncated", |m, h| m.truncate(h + 20), ErrorCode::BadInput),
            // The second event's nodes start past the node table.
            (
                "node range",
                |m, h| {
                    let entries = word(m, h + 8) as usize;
                    set_word(m, entries + 16 + 8, 1000);
                },
                ErrorCode::BadInput,
            ),
        ];
        for (what, corrupt, code) in cases {
            let (result, out, _) = run_corrupted(&full, None, corrupt);
            assert_eq!(result, Err(code), "{what}");
            assert!(!out.message.is_empty(), "{what}");
        }
        let (result, _, _) = run_corrupted(&full, None, |m, h| {
            let entries = word(m, h + 8) as usize;
            set_word(m, entries + 4, 1 << 20);
        });
        assert_eq!(
            result,
            Err(ErrorCode::BadInput),
            "raw bytes out of the data region"
        );
    }

    #[test]
    fn projected_batches_must_match_the_declaration() {
        let h = Harness::projected(&["a.b", "c"]);
        let (result, _, seen) = run_corrupted(&h, Some(&["a.b", "c"]), |_, _| {});
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [Some(1), Some(1)]);
        let (result, _, _) = run_corrupted(&h, Some(&["a.b"]), |_, _| {});
        assert_eq!(result, Err(ErrorCode::BadInput));
        let (result, _, _) = run_corrupted(&h, None, |_, _| {});
        assert_eq!(result, Err(ErrorCode::BadInput));
    }

    #[test]
    fn malformed_nodes_read_as_missing() {
        let full = Harness::full();
        fn node(m: &[u8], h: usize, i: usize) -> usize {
            word(m, h + 12) as usize + i * NODE_LEN
        }
        let cases: [fn(&mut Vec<u8>, usize); 5] = [
            // `end` of the first node before itself.
            |m, h| {
                let at = node(m, h, 0);
                set_word(m, at + 20, 0);
            },
            // `end` past the event.
            |m, h| {
                let at = node(m, h, 0);
                set_word(m, at + 20, 99);
            },
            // Wrong depth for the child.
            |m, h| {
                let at = node(m, h, 1);
                m[at + 18] = 7;
            },
            // Key out of the data region.
            |m, h| {
                let at = node(m, h, 0);
                set_word(m, at, u32::MAX);
            },
            // Value out of the data region.
            |m, h| {
                let at = node(m, h, 1);
                set_word(m, at + 12, u32::MAX);
            },
        ];
        for (i, corrupt) in cases.into_iter().enumerate() {
            let (result, _, seen) = run_corrupted(&full, None, corrupt);
            assert_eq!(result, Ok(()), "case {i}");
            assert_eq!(seen, [None, Some(1)], "case {i}");
        }
        let mut mem = vec![0u8; 8];
        mem.extend_from_slice(&[0xff; 64]);
        assert!(Buffer(mem).slice(8, 64).is_some());
    }
}
