//! What a filter answers for a batch: one verdict byte per event plus a record stream of
//! edits, new events, failures and routes, in the exact layout of the wasm ABI
//! (`sluicebox_abi`). Native and wasm filters produce the same bytes, and one checker
//! validates both before anything is applied.

use sluicebox_abi::{self as abi, RECORD_HEADER_LEN, Verdict};

/// A filter's answer for one batch. Starts as "keep every event".
///
/// Cost: two reusable buffers (n verdict bytes + the records); no allocation in the steady
/// state. Records must name events in non-decreasing order; a violation is reported when the
/// answer is checked, and the batch is then treated as failed.
#[derive(Debug, Default)]
pub struct Decisions {
    pub(crate) verdicts: Vec<u8>,
    pub(crate) records: Vec<u8>,
}

impl Decisions {
    /// An empty answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resets to "keep all" for `n` events, keeping the allocations.
    pub(crate) fn reset(&mut self, n: usize) {
        self.verdicts.clear();
        self.verdicts.resize(n, Verdict::Keep as u8);
        self.records.clear();
    }

    fn set_verdict(&mut self, i: usize, v: Verdict) {
        if let Some(slot) = self.verdicts.get_mut(i) {
            *slot = v as u8;
        }
    }

    pub(crate) fn push_record(&mut self, i: usize, op: u8, a: &[u8], b: &[u8]) {
        let h = abi::RecordHeader {
            event: i as u32,
            op,
            reserved: [0; 3],
            a_len: a.len() as u32,
            b_len: b.len() as u32,
        };
        self.records.extend_from_slice(&h.event.to_le_bytes());
        self.records.extend_from_slice(&[h.op, 0, 0, 0]);
        self.records.extend_from_slice(&h.a_len.to_le_bytes());
        self.records.extend_from_slice(&h.b_len.to_le_bytes());
        self.records.extend_from_slice(a);
        self.records.extend_from_slice(b);
        let padded = abi::pad4(self.records.len());
        self.records.resize(padded, 0);
    }

    /// Event `i` leaves unchanged (the default).
    pub fn keep(&mut self, i: usize) {
        self.set_verdict(i, Verdict::Keep);
    }

    /// Event `i` is filtered out on purpose.
    pub fn drop(&mut self, i: usize) {
        self.set_verdict(i, Verdict::Drop);
    }

    /// Event `i` is dead-lettered with `reason`.
    pub fn fail(&mut self, i: usize, reason: &str) {
        self.set_verdict(i, Verdict::Fail);
        self.push_record(i, abi::OP_FAIL, b"", reason.as_bytes());
    }

    /// Sets `path` of event `i` to the JSON text `json` (checked when the answer is applied).
    pub fn set(&mut self, i: usize, path: &str, json: &str) {
        self.set_verdict(i, Verdict::Edit);
        self.push_record(i, abi::OP_SET, path.as_bytes(), json.as_bytes());
    }

    /// Removes `path` from event `i`.
    pub fn remove(&mut self, i: usize, path: &str) {
        self.set_verdict(i, Verdict::Edit);
        self.push_record(i, abi::OP_REMOVE, path.as_bytes(), b"");
    }

    /// Renames `from` to `to` in event `i`.
    pub fn rename(&mut self, i: usize, from: &str, to: &str) {
        self.set_verdict(i, Verdict::Edit);
        self.push_record(i, abi::OP_RENAME, from.as_bytes(), to.as_bytes());
    }

    /// Replaces event `i` by the events given with `emit` (zero or more, in order).
    pub fn replace(&mut self, i: usize) {
        self.set_verdict(i, Verdict::Replace);
    }

    /// Adds the JSON object `json` as one output of event `i` (and marks it replaced).
    pub fn emit(&mut self, i: usize, json: &str) {
        self.set_verdict(i, Verdict::Replace);
        self.push_record(i, abi::OP_EMIT, b"", json.as_bytes());
    }

    /// Sends event `i` to the output named `name` instead of the default one.
    pub fn route(&mut self, i: usize, name: &str) {
        self.push_record(i, abi::OP_ROUTE, name.as_bytes(), b"");
    }
}

/// Why a filter's answer was refused. The batch is then treated as failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecisionError(pub String);

/// One decoded record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record<'a> {
    pub event: u32,
    pub op: u8,
    pub a: &'a [u8],
    pub b: &'a [u8],
}

/// Iterates the record stream; yields an error for the first malformed record.
pub(crate) fn records(stream: &[u8]) -> impl Iterator<Item = Result<Record<'_>, DecisionError>> {
    let mut pos = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= stream.len() {
            return None;
        }
        let err = |m: String| Some(Err(DecisionError(m)));
        let Some(h) = stream.get(pos..pos + RECORD_HEADER_LEN) else {
            failed = true;
            return err(format!("record at byte {pos}: truncated header"));
        };
        let u = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let (event, op, a_len, b_len) = (u(0), h[4], u(8) as usize, u(12) as usize);
        if h[5..8] != [0, 0, 0] {
            failed = true;
            return err(format!("record at byte {pos}: reserved bytes are not zero"));
        }
        let body = pos + RECORD_HEADER_LEN;
        let Some(end) = body
            .checked_add(a_len)
            .and_then(|x| x.checked_add(b_len))
            .filter(|&e| e <= stream.len())
        else {
            failed = true;
            return err(format!(
                "record at byte {pos}: operand lengths {a_len}+{b_len} run past the stream"
            ));
        };
        let rec = Record {
            event,
            op,
            a: &stream[body..body + a_len],
            b: &stream[body + a_len..end],
        };
        pos = abi::pad4(end);
        Some(Ok(rec))
    })
}

/// Refuses JSON text with a line break in it (whitespace to JSON, but it would split the
/// event across lines of the NDJSON output).
fn single_line(event: u32, what: &str, text: &[u8]) -> Result<(), DecisionError> {
    match memchr::memchr2(b'\n', b'\r', text) {
        None => Ok(()),
        Some(at) => Err(DecisionError(format!(
            "event {event}: {what} has a line break at byte {at}; write JSON on one line"
        ))),
    }
}

/// Whether `v` is a JSON string with nothing to check inside: quoted, and only printable
/// ASCII other than `"` and `\` between the quotes (`"prod"`). Such values, the most common
/// SET operands, skip the full validator.
#[inline]
fn plain_json_string(v: &[u8]) -> bool {
    v.len() >= 2
        && v[0] == b'"'
        && v[v.len() - 1] == b'"'
        && v[1..v.len() - 1]
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Checks an answer for `n` events: verdict bytes, record layout and order, which ops each
/// verdict allows, UTF-8 of paths, names and reasons, and JSON of values and new events.
pub(crate) fn check_decisions(
    verdicts: &[u8],
    stream: &[u8],
    n: usize,
    max_depth: usize,
) -> Result<(), DecisionError> {
    if verdicts.len() != n {
        return Err(DecisionError(format!(
            "{} verdicts for {n} events",
            verdicts.len()
        )));
    }
    for (i, &v) in verdicts.iter().enumerate() {
        if Verdict::from_u8(v).is_none() {
            return Err(DecisionError(format!("event {i}: unknown verdict {v}")));
        }
    }
    let mut last = 0u32;
    let mut scratch = Vec::new();
    for rec in records(stream) {
        let r = rec?;
        if r.event as usize >= n {
            return Err(DecisionError(format!(
                "record names event {} of a batch of {n}",
                r.event
            )));
        }
        if r.event < last {
            return Err(DecisionError(format!(
                "records out of order: event {} after event {last}",
                r.event
            )));
        }
        last = r.event;
        let v = Verdict::from_u8(verdicts[r.event as usize]).unwrap_or(Verdict::Keep);
        let utf8 = |what: &str, b: &[u8]| {
            // Paths and names are short and nearly always ASCII: checked inline.
            if b.is_ascii() {
                return Ok(());
            }
            std::str::from_utf8(b)
                .map(|_| ())
                .map_err(|e| DecisionError(format!("event {}: {what} is not UTF-8: {e}", r.event)))
        };
        let path = |b: &[u8]| {
            utf8("path", b)?;
            if b.is_empty() {
                return Err(DecisionError(format!("event {}: empty path", r.event)));
            }
            Ok(())
        };
        let allowed = match r.op {
            abi::OP_SET => {
                path(r.a)?;
                // The value sits inside one object per path component (the event's own
                // object is the first): together they must stay within `max_depth`. A path
                // has at most as many components as bytes, so a short path with a plain
                // string value needs no count.
                let plain = plain_json_string(r.b);
                if !plain || r.a.len() >= max_depth {
                    let comps = crate::parse::index::path_components(r.a).count();
                    if comps > max_depth {
                        return Err(DecisionError(format!(
                            "event {}: SET path has {comps} components: the event would nest \
                             deeper than the maximum of {max_depth} levels",
                            r.event
                        )));
                    }
                    if !plain {
                        crate::parse::scalar::validate(r.b, max_depth - comps, &mut scratch)
                            .map_err(|e| {
                                DecisionError(format!(
                                    "event {}: SET value is not JSON: {e}",
                                    r.event
                                ))
                            })?;
                        single_line(r.event, "SET value", r.b)?;
                    }
                }
                v == Verdict::Edit
            }
            abi::OP_REMOVE => {
                path(r.a)?;
                v == Verdict::Edit
            }
            abi::OP_RENAME => {
                path(r.a)?;
                path(r.b)?;
                v == Verdict::Edit
            }
            abi::OP_EMIT => {
                crate::parse::scalar::validate(r.b, max_depth, &mut scratch).map_err(|e| {
                    DecisionError(format!("event {}: EMIT event is not JSON: {e}", r.event))
                })?;
                single_line(r.event, "EMIT event", r.b)?;
                if r.b.get(scratch.first().copied().unwrap_or(0) as usize) != Some(&b'{') {
                    return Err(DecisionError(format!(
                        "event {}: EMIT event is not a JSON object",
                        r.event
                    )));
                }
                v == Verdict::Replace
            }
            abi::OP_FAIL => {
                utf8("FAIL reason", r.b)?;
                v == Verdict::Fail
            }
            abi::OP_ROUTE => {
                utf8("route name", r.a)?;
                if r.a.is_empty() {
                    return Err(DecisionError(format!(
                        "event {}: empty route name",
                        r.event
                    )));
                }
                matches!(v, Verdict::Keep | Verdict::Edit | Verdict::Replace)
            }
            op => {
                return Err(DecisionError(format!(
                    "event {}: unknown record op {op}",
                    r.event
                )));
            }
        };
        if !allowed {
            return Err(DecisionError(format!(
                "event {}: record op {} does not go with verdict {v:?}",
                r.event, r.op
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_round_trips_through_the_checker() {
        let mut d = Decisions::new();
        d.reset(4);
        d.drop(0);
        d.set(1, "a.b", "{\"x\":1}");
        d.rename(1, "m", "message");
        d.emit(2, "{\"k\":1}");
        d.emit(2, "{\"k\":2}");
        d.fail(3, "bad");
        check_decisions(&d.verdicts, &d.records, 4, 64).unwrap();
        let recs: Vec<_> = records(&d.records).map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[1].a, b"m");
        assert_eq!(recs[1].b, b"message");
    }

    #[test]
    fn hostile_answers_are_refused() {
        let mut d = Decisions::new();
        d.reset(2);
        d.set(1, "a", "{bad");
        assert!(
            check_decisions(&d.verdicts, &d.records, 2, 64)
                .unwrap_err()
                .0
                .contains("not JSON")
        );
        d.reset(2);
        d.set(1, "a", "1");
        d.set(0, "a", "1");
        assert!(
            check_decisions(&d.verdicts, &d.records, 2, 64)
                .unwrap_err()
                .0
                .contains("out of order")
        );
        d.reset(2);
        d.fail(1, "x");
        d.records[0] = 9; // event 9 of 2
        let e = check_decisions(&d.verdicts, &d.records, 2, 64)
            .unwrap_err()
            .0;
        assert!(e.contains('9'), "{e}");
        d.reset(2);
        d.verdicts[0] = 77;
        let e = check_decisions(&d.verdicts, &d.records, 2, 64)
            .unwrap_err()
            .0;
        assert!(e.contains("77"), "{e}");
        d.reset(2);
        d.set(0, "a", "1");
        d.records[8] = 0xff; // a_len huge
        d.records[11] = 0x7f;
        assert!(
            check_decisions(&d.verdicts, &d.records, 2, 64)
                .unwrap_err()
                .0
                .contains("run past")
        );
        d.reset(2);
        d.drop(0);
        d.route(0, "x");
        assert!(
            check_decisions(&d.verdicts, &d.records, 2, 64)
                .unwrap_err()
                .0
                .contains("does not go")
        );
        d.reset(1);
        d.emit(0, "[1]");
        assert!(
            check_decisions(&d.verdicts, &d.records, 1, 64)
                .unwrap_err()
                .0
                .contains("not a JSON object")
        );
    }
}
