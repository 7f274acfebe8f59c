//! Thin wrappers over crate-internal functions, for the fuzz targets in `fuzz/` and the
//! robustness tests in `tests/all/`. **Not a stable API**: hidden from the docs, not covered
//! by semver, and free to change with the internals it exposes. Nothing here adds logic:
//! each function calls the same code the pipeline runs.

#![doc(hidden)]

use crate::batch::{Batch, EventMeta, ObjEditor, Op, PADDING, TopEditor};
use crate::parse::Parser;

/// Runs the real parse stage (simd-json in place, scalar fallback, object check) on one
/// line, as the pipeline would with `max_depth`. Returns the event's structural positions
/// (as `parse::index::lookup` wants them), or the dead-letter reason.
///
/// # Errors
/// The reason the parse stage gives when it rejects the line.
pub fn parse_event(line: &[u8], max_depth: usize) -> Result<Vec<u32>, String> {
    let mut batch = Batch::new();
    batch.data.extend_from_slice(line);
    batch.data.resize(line.len() + PADDING, 0);
    batch.events.push(EventMeta {
        len: line.len() as u32,
        line: 1,
        ..Default::default()
    });
    Parser::new(max_depth, 64).parse_batch(&mut batch);
    match batch.dead.pop() {
        Some(d) => Err(d.reason),
        None => Ok(batch.structurals),
    }
}

/// The full-mode index of one line (the node table a wasm filter that declares no fields
/// reads; see [`sluicebox_abi::Node`]), built by the pipeline's code over the structural
/// positions [`parse_event`] returns. Offsets are relative to the start of `line`.
///
/// # Errors
/// The reason the parse stage gives when it rejects the line.
pub fn full_index(line: &[u8], max_depth: usize) -> Result<Vec<sluicebox_abi::Node>, String> {
    let s = parse_event(line, max_depth)?;
    let mut out = Vec::new();
    crate::parse::index::full_index(line, &s, 0, &mut out, &mut Vec::new());
    Ok(out)
}

/// `check_decisions`: validates a filter's raw answer (verdict bytes and record stream, in
/// the ABI layout) for a batch of `n` events.
///
/// # Errors
/// Why the answer is refused.
pub fn check_decisions(
    verdicts: &[u8],
    records: &[u8],
    n: usize,
    max_depth: usize,
) -> Result<(), String> {
    crate::batch::check_decisions(verdicts, records, n, max_depth).map_err(|e| e.0)
}

/// Overwrites a [`crate::Decisions`] with raw verdict bytes and a raw record stream, as a
/// wasm guest's answer would arrive (nothing is checked here; the pipeline checks it).
pub fn set_raw_decisions(decisions: &mut crate::Decisions, verdicts: &[u8], records: &[u8]) {
    decisions.verdicts.clear();
    decisions.verdicts.extend_from_slice(verdicts);
    decisions.records.clear();
    decisions.records.extend_from_slice(records);
}

/// One edit for [`apply_edits`]; paths use the `sluicebox_abi::path_syntax` escapes.
#[derive(Clone, Copy, Debug)]
pub enum Edit<'a> {
    /// SET path to the JSON text.
    Set(&'a str, &'a str),
    /// REMOVE path.
    Remove(&'a str),
    /// RENAME from to.
    Rename(&'a str, &'a str),
}

/// Applies `edits` in order to the JSON object `text` with the pipeline's editor (after the
/// scalar validator computes its structural positions) and returns the edited event.
///
/// The edits are applied twice: by the editor as the pipeline runs it (a compact event takes
/// the shorter splicing path), and by the member walk alone; the two must give the same
/// bytes.
///
/// # Errors
/// `text` is not a JSON object within `max_depth`, or the editor refuses an edit.
///
/// # Panics
/// The two ways give different results.
pub fn apply_edits(text: &[u8], edits: &[Edit<'_>], max_depth: usize) -> Result<Vec<u8>, String> {
    let mut s = Vec::new();
    crate::parse::scalar::validate(text, max_depth, &mut s).map_err(|e| e.to_string())?;
    let plain = memchr::memchr(b'\\', text).is_none();
    let walked = edit_once(text, &s, plain, TopEditor::without_splice(), edits);
    let spliced = edit_once(text, &s, plain, TopEditor::default(), edits);
    assert_eq!(
        walked, spliced,
        "the splicing path differs from the member walk"
    );
    walked
}

/// The editor as the pipeline calls it, on `text` with structural positions `s`.
fn edit_once(
    text: &[u8],
    s: &[u32],
    plain: bool,
    mut top: TopEditor,
    edits: &[Edit<'_>],
) -> Result<Vec<u8>, String> {
    let ops = edits.iter().map(|e| match *e {
        Edit::Set(p, v) => Op::Set(p.as_bytes(), v.as_bytes()),
        Edit::Remove(p) => Op::Remove(p.as_bytes()),
        Edit::Rename(f, t) => Op::Rename(f.as_bytes(), t.as_bytes()),
    });
    let mut data = text.to_vec();
    crate::batch::apply_edits(
        &mut ObjEditor::default(),
        &mut top,
        &mut data,
        0..text.len(),
        s,
        plain,
        ops,
        crate::batch::EDIT_WORK_PER_EVENT,
    )?;
    Ok(data.split_off(text.len()))
}
