//! The editor's shortest path: at most [`SPLICE_OPS_MAX`] edits of plain top-level keys on a
//! compact event (no whitespace between its top-level members or next to its braces, which
//! the output form of docs/abi.md section 11 drops). Only the members an edit names are
//! kept track of; the runs of members between them are copied whole.
//!
//! Cost per edited event: one walk over its structural positions (a few loads and a length
//! test per top-level member; a key is compared only when an edit names a key of its length),
//! then one copy per run of untouched members. The same bytes as
//! [`super::edit::TopEditor`]: a unit test, a pipeline test over every event shape, and the
//! `edits` fuzzer compare them.

use super::edit::{Op, push_key};
use crate::parse::index;

/// Where a key or value's bytes are: in the event, or an operand of one of the edits.
#[derive(Clone, Copy, Debug)]
enum Src {
    Text(u32, u32),
    /// Edit `n`'s path (a key), or its second operand (a SET's value, a RENAME's target).
    OpA(u8),
    OpB(u8),
}

/// One member an edit names (or creates): where its text is, and what the edits made of it.
#[derive(Clone, Copy, Debug)]
struct Named {
    /// Index among the event's top-level members, or `u32::MAX` for a created one.
    index: u32,
    /// The member's text in the event, from its key's opening quote to its value's end.
    whole: (u32, u32),
    /// Its key (between the quotes in the event; a path component from an edit), the
    /// index of that key among the distinct keys the edits name, and its value.
    key: Src,
    id: u8,
    val: Src,
    /// Its value was set, or it was created: written as `KEY:VALUE`.
    changed: bool,
    removed: bool,
}

/// Reusable state of the short path.
///
/// Cost: one small vector reused across events; nothing allocated in the steady state.
#[derive(Default)]
pub(crate) struct Splicer {
    named: Vec<Named>,
}

/// What [`Splicer::plan`] found: the event's braces and its number of top-level members.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    brace: usize,
    close: usize,
    /// How many top-level members the event has.
    pub(crate) members: usize,
}

/// The most edits one event may have for the short path (its key tests are per edit key).
pub(crate) const SPLICE_OPS_MAX: usize = 8;

impl Splicer {
    /// Finds the members `ops` name in the object `text` (structural positions `s`) and
    /// applies `ops` to them, ready for [`Splicer::write`]. `None` when the short path does
    /// not apply: the event has whitespace between members or next to its braces (the
    /// output form has none there, so the runs could not be copied), a top-level key with a
    /// backslash (keys are compared as plain bytes), or more than [`SPLICE_OPS_MAX`] edits;
    /// the caller then takes the general path. `plain` promises the text has no backslash.
    ///
    /// The caller promises that every path of `ops` is one plain top-level key.
    pub(crate) fn plan<'o>(
        &mut self,
        text: &[u8],
        s: &[u32],
        plain: bool,
        ops: &[Op<'o>],
    ) -> Option<Plan> {
        if ops.len() > SPLICE_OPS_MAX {
            return None;
        }
        // The distinct keys the edits name (each edit's path, and a RENAME's target), each
        // edit's by index, and a bit per length among them.
        let mut keys: [&[u8]; 2 * SPLICE_OPS_MAX] = [&[]; 2 * SPLICE_OPS_MAX];
        let mut ids = [(0u8, 0u8); SPLICE_OPS_MAX];
        let (mut nk, mut lens) = (0usize, 0u64);
        let mut intern = |k: &'o [u8]| -> u8 {
            match keys[..nk].iter().position(|&x| same(x, k)) {
                Some(i) => i as u8,
                None => {
                    keys[nk] = k;
                    lens |= 1 << k.len().min(63);
                    nk += 1;
                    (nk - 1) as u8
                }
            }
        };
        for (n, op) in ops.iter().enumerate() {
            ids[n] = match *op {
                Op::Set(k, _) | Op::Remove(k) => (intern(k), 0),
                Op::Rename(f, t) => (intern(f), intern(t)),
            };
        }
        let keys = &keys[..nk];
        // Every read below is checked: a position or index out of range declines (`?`).
        let at = |j: usize| s.get(j).map(|&p| p as usize);
        let byte = |p: usize| text.get(p).copied();
        let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
        let last = s.len().checked_sub(1)?;
        let (brace, close) = (at(0)?, at(last)?);
        if byte(brace)? != b'{' || byte(close)? != b'}' {
            return None;
        }
        self.named.clear();
        let mut members = 0usize;
        if last == 1 {
            // `{}`, compact only without whitespace inside.
            if close != brace + 1 {
                return None;
            }
        } else {
            // Member by member: `"key" : value` at structurals j, j + 1, j + 2, then the
            // separator. Compact: the key's quote right after the `{` or `,` before it, its
            // closing quote right before the colon, no whitespace before the separator.
            let mut j = 1usize;
            let mut before = brace;
            loop {
                let (open, colon, vs) = (at(j)?, at(j + 1)?, at(j + 2)?);
                if open != before + 1
                    || colon < open + 2
                    || byte(open)? != b'"'
                    || byte(colon - 1)? != b'"'
                    || byte(colon)? != b':'
                {
                    return None;
                }
                // Past the value: a nested one's structurals up to its matching close.
                let mut k = j + 3;
                let first = byte(vs)?;
                if first == b'{' || first == b'[' {
                    let mut depth = 1usize;
                    while depth > 0 {
                        match byte(at(k)?)? {
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => depth -= 1,
                            _ => {}
                        }
                        k += 1;
                    }
                }
                let sep = at(k)?;
                if ws(byte(sep - 1)?) {
                    return None;
                }
                let key = &text[open + 1..colon - 1];
                if !plain && index::has_backslash(key) {
                    return None;
                }
                if lens & (1 << key.len().min(63)) != 0
                    && let Some(id) = keys.iter().position(|&k| same(k, key))
                {
                    self.named.push(Named {
                        index: members as u32,
                        whole: (open as u32, sep as u32),
                        key: Src::Text(open as u32 + 1, colon as u32 - 1),
                        id: id as u8,
                        val: Src::Text(vs as u32, sep as u32),
                        changed: false,
                        removed: false,
                    });
                }
                members += 1;
                if k >= last {
                    // The closing brace ends the last member.
                    if k != last {
                        return None;
                    }
                    break;
                }
                if byte(sep)? != b',' {
                    return None;
                }
                before = sep;
                j = k + 1;
            }
        }
        for (n, op) in ops.iter().enumerate() {
            let (a, b) = ids[n];
            let n = n as u8;
            match op {
                Op::Set(..) => self.set(a, Src::OpA(n), Src::OpB(n)),
                Op::Remove(..) => self.remove_all(a),
                Op::Rename(..) => {
                    if let Some(i) = self.find(a) {
                        let val = self.named[i].val;
                        self.remove_all(a);
                        self.set(b, Src::OpB(n), val);
                    }
                }
            }
        }
        Some(Plan {
            brace,
            close,
            members,
        })
    }

    /// The last member with key `id` that is still there.
    fn find(&self, id: u8) -> Option<usize> {
        (0..self.named.len())
            .rev()
            .find(|&i| !self.named[i].removed && self.named[i].id == id)
    }

    fn remove_all(&mut self, id: u8) {
        for m in &mut self.named {
            m.removed |= m.id == id;
        }
    }

    /// Sets the member with key `id` (spelled `key` if it is created) to `val`, or appends
    /// it.
    fn set(&mut self, id: u8, key: Src, val: Src) {
        if let Some(i) = self.find(id) {
            let m = &mut self.named[i];
            (m.val, m.changed) = (val, true);
            return;
        }
        self.named.push(Named {
            index: u32::MAX,
            whole: (0, 0),
            key,
            id,
            val,
            changed: true,
            removed: false,
        });
    }

    /// Appends the planned event to `data`, whose bytes `base..` hold its text: `{`, the
    /// members joined by `,`, `}`, the runs of members no edit names copied as they are (the
    /// event is compact, so a run is one slice of it). `ops` are the edits `plan` was given.
    pub(crate) fn write(&self, data: &mut Vec<u8>, base: usize, plan: Plan, ops: &[Op<'_>]) {
        let Plan {
            brace,
            close,
            members,
        } = plan;
        let extra: usize = ops
            .iter()
            .map(|o| operands(o).0.len() + operands(o).1.len() + 4)
            .sum();
        data.reserve(close + 2 + extra);
        data.push(b'{');
        let mut first = true;
        // A `,` before every member but the first.
        let comma = |data: &mut Vec<u8>, first: &mut bool| {
            if !std::mem::take(first) {
                data.push(b',');
            }
        };
        // The next original member not yet written, and where its text starts.
        let mut next = 0usize;
        let mut from = brace + 1;
        for m in &self.named {
            if m.index != u32::MAX {
                let i = m.index as usize;
                if i > next {
                    // Members next..i: from `from` to the separator before member i.
                    comma(data, &mut first);
                    data.extend_from_within(base + from..base + m.whole.0 as usize - 1);
                }
                next = i + 1;
                from = m.whole.1 as usize + 1;
                if m.removed {
                    continue;
                }
                comma(data, &mut first);
                if !m.changed {
                    data.extend_from_within(base + m.whole.0 as usize..base + m.whole.1 as usize);
                    continue;
                }
            } else {
                if m.removed {
                    continue;
                }
                if next < members {
                    comma(data, &mut first);
                    data.extend_from_within(base + from..base + close);
                    next = members;
                }
                comma(data, &mut first);
            }
            match m.key {
                Src::Text(a, b) => {
                    data.push(b'"');
                    data.extend_from_within(base + a as usize..base + b as usize);
                    data.push(b'"');
                }
                k => push_key(data, op_bytes(ops, k)),
            }
            data.push(b':');
            match m.val {
                Src::Text(a, b) => data.extend_from_within(base + a as usize..base + b as usize),
                v => data.extend_from_slice(op_bytes(ops, v)),
            }
        }
        if next < members {
            comma(data, &mut first);
            data.extend_from_within(base + from..base + close);
        }
        data.push(b'}');
    }
}

/// Whether two keys are the same bytes; most keys of another length or first byte are told
/// apart without a call to compare them.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.first() == b.first() && a == b
}

/// An edit's path, and its second operand (empty for REMOVE).
fn operands<'o>(op: &Op<'o>) -> (&'o [u8], &'o [u8]) {
    match *op {
        Op::Set(k, v) => (k, v),
        Op::Remove(k) => (k, &[]),
        Op::Rename(f, t) => (f, t),
    }
}

fn op_bytes<'o>(ops: &[Op<'o>], src: Src) -> &'o [u8] {
    match src {
        Src::OpA(n) => operands(&ops[n as usize]).0,
        Src::OpB(n) => operands(&ops[n as usize]).1,
        Src::Text(..) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::edit::{EDIT_WORK_PER_EVENT, ObjEditor, TopEditor, apply_edits};

    /// The member walk's editor: the reference for the short path.
    fn walked(text: &str, ops: &[Op<'_>]) -> String {
        let mut s = Vec::new();
        crate::parse::scalar::validate(text.as_bytes(), 64, &mut s).unwrap();
        let mut data = text.as_bytes().to_vec();
        apply_edits(
            &mut ObjEditor::default(),
            &mut TopEditor::without_splice(),
            &mut data,
            0..text.len(),
            &s,
            false,
            ops.iter().copied(),
            EDIT_WORK_PER_EVENT,
        )
        .unwrap();
        String::from_utf8(data.split_off(text.len())).unwrap()
    }

    /// The short path on its own; `None` when it declines.
    fn spliced(text: &str, ops: &[Op<'_>]) -> Option<String> {
        let mut s = Vec::new();
        crate::parse::scalar::validate(text.as_bytes(), 64, &mut s).unwrap();
        let mut data = text.as_bytes().to_vec();
        let mut splicer = Splicer::default();
        let plan = splicer.plan(text.as_bytes(), &s, !text.contains('\\'), ops)?;
        splicer.write(&mut data, 0, plan, ops);
        Some(String::from_utf8(data.split_off(text.len())).unwrap())
    }

    /// Every combination of a few compact events (duplicate keys, nested values, keys of
    /// equal length, the empty object) and edit sequences gives the walk's bytes.
    #[test]
    fn gives_the_walks_bytes_on_compact_events() {
        let events = [
            r#"{}"#,
            r#"{"a":1}"#,
            r#"{"msg":"hi","n":2,"msg":{"x":[1,2]},"env":"dev"}"#,
            r#"{"ab":[],"ba":{},"a":"x","b":null,"abc":true}"#,
            r#"{"level":"INFO","http":{"a":{"b":1}},"msg":"é","message":"m"}"#,
        ];
        let keys: [&[u8]; 7] = [b"a", b"b", b"msg", b"message", b"env", b"q\"", b"ab"];
        let values: [&[u8]; 3] = [b"1", b"\"prod\"", b" {\"y\":2} "];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        // Events that the edits made longer (a member added) and shorter (one removed).
        let (mut grew, mut shrank) = (0, 0);
        for _ in 0..4000 {
            let text = events[next(events.len())];
            let ops: Vec<Op<'_>> = (0..1 + next(4))
                .map(|_| match next(3) {
                    0 => Op::Set(keys[next(keys.len())], values[next(values.len())]),
                    1 => Op::Remove(keys[next(keys.len())]),
                    _ => Op::Rename(keys[next(keys.len())], keys[next(keys.len())]),
                })
                .collect();
            let got = spliced(text, &ops).expect("a compact event takes the short path");
            assert_eq!(got, walked(text, &ops), "{text} {ops:?}");
            grew += usize::from(got.len() > text.len());
            shrank += usize::from(got.len() < text.len());
        }
        // The sequences both added and removed members (the generator is not degenerate).
        assert!(grew > 100 && shrank > 100, "grew {grew}, shrank {shrank}");
    }

    #[test]
    fn declines_whitespace_between_members_and_too_many_edits() {
        let set: &[Op<'_>] = &[Op::Set(b"a", b"1")];
        for text in [
            r#"{ "a":1}"#,
            r#"{"a":1 }"#,
            r#"{"a":1 ,"b":2}"#,
            r#"{"a":1, "b":2}"#,
            r#"{"a" :1}"#,
            r#"{ }"#,
        ] {
            assert_eq!(spliced(text, set), None, "{text}");
        }
        // Whitespace inside a member is its own text: kept, and the path still applies.
        assert_eq!(
            spliced(r#"{"a": 1,"b":[1, 2]}"#, &[Op::Set(b"c", b"3")]).as_deref(),
            Some(r#"{"a": 1,"b":[1, 2],"c":3}"#)
        );
        let many = [Op::Remove(b"x"); SPLICE_OPS_MAX + 1];
        assert_eq!(spliced(r#"{"a":1}"#, &many), None);
    }
}
