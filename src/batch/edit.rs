//! Applies SET / REMOVE / RENAME edits to one event by splicing: the event's top-level
//! members are kept as byte ranges of the original text, edits replace or add ranges, and
//! the result is written once. Untouched members keep their exact bytes (numbers, escapes,
//! key order); only the separators between top-level members are normalised to `,`.
//!
//! Cost per edited event: one walk of its top-level structural positions, plus a rescan of
//! any nested object an edit goes into. The top-level scratch is reused across events.
//! A compact event edited at plain top-level keys takes the shorter path of
//! [`super::splice`] first, which writes the same bytes.

use super::splice::SPLICE_OPS_MAX;
use crate::parse::index::{self, path_components};
use crate::parse::scalar;

/// One edit, as decoded from a record.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op<'a> {
    Set(&'a [u8], &'a [u8]),
    Remove(&'a [u8]),
    Rename(&'a [u8], &'a [u8]),
}

#[derive(Clone, Copy, Debug)]
enum Piece {
    /// A range of the original text.
    Orig(u32, u32),
    /// A range of the editor's own buffer.
    Own(u32, u32),
}

/// Reusable editing state for one object level.
#[derive(Default)]
pub(crate) struct ObjEditor {
    /// (key with its quotes, value, the original `key : value` text while untouched,
    /// whether the key is free of backslashes and so compares as plain bytes)
    members: Vec<(Piece, Piece, Option<Piece>, bool)>,
    own: Vec<u8>,
    /// The edited event before it is appended to the batch (reused).
    out: Vec<u8>,
}

impl ObjEditor {
    fn load(&mut self, text: &[u8], s: &[u32]) -> Result<(), String> {
        self.members.clear();
        self.own.clear();
        let members = &mut self.members;
        index::members(text, s, 0, |m| {
            let (ks, ke) = (m.key.0 - 1, m.key.1 + 1);
            let plain = !text[m.key.0..m.key.1].contains(&b'\\');
            members.push((
                Piece::Orig(ks as u32, ke as u32),
                Piece::Orig(m.value.0 as u32, m.value.1 as u32),
                Some(Piece::Orig(ks as u32, m.value.1 as u32)),
                plain,
            ));
            true
        })
        .ok_or_else(|| "event is not an object".to_string())?;
        Ok(())
    }

    fn bytes<'t>(&'t self, text: &'t [u8], p: Piece) -> &'t [u8] {
        piece(&self.own, text, p)
    }

    fn own(&mut self, b: &[u8]) -> Piece {
        let a = self.own.len() as u32;
        self.own.extend_from_slice(b);
        Piece::Own(a, self.own.len() as u32)
    }

    fn own_key(&mut self, comp: &[u8]) -> Piece {
        let a = self.own.len() as u32;
        push_key(&mut self.own, comp);
        Piece::Own(a, self.own.len() as u32)
    }

    fn find(&self, text: &[u8], comp: &[u8]) -> Option<usize> {
        let own = &self.own;
        (0..self.members.len())
            .rev()
            .find(|&i| key_is(own, text, &self.members[i], comp))
    }

    fn remove_all(&mut self, text: &[u8], comp: &[u8]) {
        let own = &self.own;
        self.members.retain(|m| !key_is(own, text, m, comp));
    }

    /// Sets the top-level key `comp` to the value `v` (replacing the last occurrence).
    fn set_piece(&mut self, text: &[u8], comp: &[u8], v: Piece) {
        match self.find(text, comp) {
            Some(i) => {
                let m = self.members[i];
                self.members[i] = (m.0, v, None, m.3);
            }
            None => {
                let k = self.own_key(comp);
                let plain = !self.bytes(text, k).contains(&b'\\');
                self.members.push((k, v, None, plain));
            }
        }
    }

    /// Sets `comps` (a path already split) to `value`.
    fn set(
        &mut self,
        text: &[u8],
        comps: &[&[u8]],
        value: &[u8],
        depth: usize,
    ) -> Result<(), String> {
        let (first, rest) = comps.split_first().ok_or("empty path")?;
        if rest.is_empty() {
            let v = self.own(value);
            self.set_piece(text, first, v);
            return Ok(());
        }
        let new_val = match self.find(text, first) {
            Some(i) if holds_object(self.bytes(text, self.members[i].1)) => {
                let inner = self.bytes(text, self.members[i].1).to_vec();
                edit_nested(&inner, |ed, t| ed.set(t, rest, value, depth + 1), depth)?
            }
            _ => build_nested(rest, value),
        };
        let v = self.own(&new_val);
        self.set_piece(text, first, v);
        Ok(())
    }

    fn remove(&mut self, text: &[u8], comps: &[&[u8]], depth: usize) -> Result<(), String> {
        let (first, rest) = comps.split_first().ok_or("empty path")?;
        if rest.is_empty() {
            self.remove_all(text, first);
            return Ok(());
        }
        if let Some(i) = self.find(text, first)
            && holds_object(self.bytes(text, self.members[i].1))
        {
            let inner = self.bytes(text, self.members[i].1).to_vec();
            let new_val = edit_nested(&inner, |ed, t| ed.remove(t, rest, depth + 1), depth)?;
            let v = self.own(&new_val);
            let m = self.members[i];
            self.members[i] = (m.0, v, None, m.3);
        }
        Ok(())
    }

    fn rename(&mut self, text: &[u8], from: &[&[u8]], to: &[&[u8]]) -> Result<(), String> {
        if let ([f], [t]) = (from, to) {
            // Top level to top level: move the value's bytes, copy nothing.
            if let Some(i) = self.find(text, f) {
                let v = self.members[i].1;
                self.remove_all(text, f);
                self.set_piece(text, t, v);
            }
            return Ok(());
        }
        if let Some(v) = self.get(text, from) {
            self.remove(text, from, 0)?;
            self.set(text, to, &v, 0)?;
        }
        Ok(())
    }

    fn get(&self, text: &[u8], comps: &[&[u8]]) -> Option<Vec<u8>> {
        let (first, rest) = comps.split_first()?;
        let i = self.find(text, first)?;
        let v = self.bytes(text, self.members[i].1);
        if rest.is_empty() {
            return Some(v.to_vec());
        }
        let mut s = Vec::new();
        scalar::validate(v, usize::MAX, &mut s).ok()?;
        let mut path = Vec::new();
        for (n, c) in rest.iter().enumerate() {
            if n > 0 {
                path.push(b'.');
            }
            for &b in *c {
                if b == b'.' || b == b'\\' {
                    path.push(b'\\');
                }
                path.push(b);
            }
        }
        let f = index::lookup(v, &s, &path)?;
        let start =
            f.start as usize - usize::from(f.kind == crate::parse::index::FieldKind::String);
        let end = f.start as usize
            + f.raw.len()
            + usize::from(f.kind == crate::parse::index::FieldKind::String);
        Some(v[start..end].to_vec())
    }

    fn write(&self, text: &[u8], out: &mut Vec<u8>) {
        out.push(b'{');
        // Untouched members that follow each other in the original text, separated by a
        // bare `,`, are copied as one run.
        let mut run: Option<(u32, u32)> = None;
        let flush = |run: &mut Option<(u32, u32)>, out: &mut Vec<u8>| {
            if let Some((a, b)) = run.take() {
                out.extend_from_slice(&text[a as usize..b as usize]);
            }
        };
        for (n, &(k, v, whole, _)) in self.members.iter().enumerate() {
            if let Some(Piece::Orig(a, b)) = whole {
                match run {
                    Some((ra, rb)) if rb + 1 == a && text[rb as usize] == b',' => {
                        run = Some((ra, b));
                        continue;
                    }
                    _ => {
                        flush(&mut run, out);
                        if n > 0 {
                            out.push(b',');
                        }
                        run = Some((a, b));
                        continue;
                    }
                }
            }
            flush(&mut run, out);
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(self.bytes(text, k));
            out.push(b':');
            out.extend_from_slice(self.bytes(text, v));
        }
        flush(&mut run, out);
        out.push(b'}');
    }
}

/// Whether a member's value text is an object. A value set by a record keeps the record's
/// text, which may start with whitespace (`SET a " {}"`).
fn holds_object(value: &[u8]) -> bool {
    value.trim_ascii_start().first() == Some(&b'{')
}

/// Whether member `m`'s key is `comp` (after JSON unescaping).
#[inline]
fn key_is(own: &[u8], text: &[u8], m: &(Piece, Piece, Option<Piece>, bool), comp: &[u8]) -> bool {
    let k = piece(own, text, m.0);
    let raw = &k[1..k.len() - 1];
    if m.3 {
        raw == comp
    } else {
        index::key_eq(raw, comp)
    }
}

fn piece<'t>(own: &'t [u8], text: &'t [u8], p: Piece) -> &'t [u8] {
    match p {
        Piece::Orig(a, b) => &text[a as usize..b as usize],
        Piece::Own(a, b) => &own[a as usize..b as usize],
    }
}

fn edit_nested(
    inner: &[u8],
    f: impl FnOnce(&mut ObjEditor, &[u8]) -> Result<(), String>,
    depth: usize,
) -> Result<Vec<u8>, String> {
    // `depth` nested objects were entered already: this would be number `depth + 1`, and
    // docs/abi.md section 11 refuses more than 256 (the top-level object not counted).
    if depth >= 256 {
        return Err("edit path too deep".into());
    }
    let mut s = Vec::new();
    scalar::validate(inner, usize::MAX, &mut s).map_err(|e| e.to_string())?;
    let mut ed = ObjEditor::default();
    ed.load(inner, &s)?;
    f(&mut ed, inner)?;
    let mut out = Vec::with_capacity(inner.len() + 16);
    ed.write(inner, &mut out);
    Ok(out)
}

/// Appends `comp` as a JSON string (quoted, escaped where JSON requires it).
pub(super) fn push_key(out: &mut Vec<u8>, comp: &[u8]) {
    let plain = comp
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x80);
    if plain {
        out.push(b'"');
        out.extend_from_slice(comp);
        out.push(b'"');
    } else {
        // Path components come from checked UTF-8 paths.
        let _ = serde_json::to_writer(&mut *out, &*String::from_utf8_lossy(comp));
    }
}

fn build_nested(comps: &[&[u8]], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in comps {
        out.push(b'{');
        push_key(&mut out, c);
        out.push(b':');
    }
    out.extend_from_slice(value);
    out.extend(std::iter::repeat_n(b'}', comps.len()));
    out
}

/// Calls `f` with the components of `path`, without allocating for a plain top-level key.
fn with_comps<R>(path: &[u8], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    if memchr::memchr2(b'.', b'\\', path).is_none() {
        return f(&[path]);
    }
    let owned: Vec<Vec<u8>> = path_components(path).map(|c| c.into_owned()).collect();
    let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    f(&refs)
}

/// One top-level member for [`TopEditor`]: byte ranges of its key (between the quotes) and
/// value, each in the event text or in the editor's own buffer.
#[derive(Clone, Copy, Debug)]
struct TopMember {
    key: (u32, u32),
    val: (u32, u32),
    key_own: bool,
    val_own: bool,
    /// Neither key nor value changed: the original `"key":value` text is copied.
    untouched: bool,
    /// The key has no backslash, so it compares as plain bytes.
    plain: bool,
    /// The key's first byte (0 when empty): with its length, it tells most keys apart
    /// without reading them.
    first: u8,
}

/// The fast path of [`apply_edits`] for the common case where every path is a plain
/// top-level key: members as plain ranges, found in one walk over the structurals, with the
/// same semantics as [`ObjEditor`] (SET replaces the last occurrence or appends, REMOVE
/// removes every occurrence, RENAME moves the last occurrence's value).
#[derive(Default)]
pub(crate) struct TopEditor {
    members: Vec<TopMember>,
    own: Vec<u8>,
    /// The shorter path for compact events (see [`super::splice`]).
    splicer: super::splice::Splicer,
    /// Never take the shorter path (the reference it is checked against).
    no_splice: bool,
}

impl TopEditor {
    /// An editor that never takes the shorter path of [`super::splice`]: what the tests and
    /// the `edits` fuzzer compare it with.
    pub(crate) fn without_splice() -> Self {
        Self {
            no_splice: true,
            ..Self::default()
        }
    }

    /// Loads the top-level members of the object `text`; false if it is not one. One step
    /// per member (`"key" : value`), plus one per structural inside nested values.
    fn load(&mut self, text: &[u8], s: &[u32], plain: bool) -> bool {
        self.members.clear();
        self.own.clear();
        // The byte at structural `j`, or 0 past the end (never a structural's byte).
        let byte = |j: usize| -> u8 {
            s.get(j)
                .and_then(|&p| text.get(p as usize))
                .copied()
                .unwrap_or(0)
        };
        if byte(0) != b'{' {
            return false;
        }
        if byte(1) == b'}' {
            return true;
        }
        let mut j = 1;
        loop {
            if byte(j) != b'"' || byte(j + 1) != b':' {
                return false;
            }
            let c = byte(j + 2);
            let mut k = j + 3;
            if c == b'{' || c == b'[' {
                // Skip the nested value: its structurals up to the matching close.
                let mut depth = 1usize;
                let Some(inner) = s.get(k..) else {
                    return false;
                };
                for &p in inner {
                    k += 1;
                    match text.get(p as usize) {
                        Some(b'{' | b'[') => depth += 1,
                        Some(b'}' | b']') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Some(_) => {}
                        None => return false,
                    }
                }
                if depth != 0 {
                    return false;
                }
            } else if c == 0 {
                return false;
            }
            let sep = byte(k);
            if sep != b'}' && sep != b',' {
                return false;
            }
            // `s[j]`, `s[j + 1]`, `s[j + 2]` and `s[k]` exist: their bytes were read.
            self.push_member(
                text,
                s[j] as usize,
                s[j + 1] as usize,
                s[j + 2] as usize,
                s[k] as usize,
                plain,
            );
            if sep == b'}' {
                return true;
            }
            j = k + 1;
        }
    }

    /// Records the member whose key opens at `open`, whose colon is at `colon`, whose value
    /// starts at `vs`, and which ends before the separator at `sep`.
    fn push_member(
        &mut self,
        text: &[u8],
        open: usize,
        colon: usize,
        vs: usize,
        sep: usize,
        plain_event: bool,
    ) {
        let mut close = colon - 1;
        while close > open && text[close] != b'"' {
            close -= 1;
        }
        let mut ve = sep;
        while ve > vs && matches!(text[ve - 1], b' ' | b'\t' | b'\n' | b'\r') {
            ve -= 1;
        }
        let key = &text[open + 1..close];
        self.members.push(TopMember {
            key: (open as u32 + 1, close as u32),
            val: (vs as u32, ve as u32),
            key_own: false,
            val_own: false,
            untouched: true,
            plain: plain_event || !index::has_backslash(key),
            first: key.first().copied().unwrap_or(0),
        });
    }

    fn range<'t>(&'t self, text: &'t [u8], r: (u32, u32), own: bool) -> &'t [u8] {
        let src = if own { &self.own[..] } else { text };
        &src[r.0 as usize..r.1 as usize]
    }

    /// Whether member `m`'s key is `comp`. A plain key of another length or first byte is
    /// told apart without reading it; most members of an event are.
    #[inline(always)]
    fn is(&self, text: &[u8], m: &TopMember, comp: &[u8]) -> bool {
        if m.plain {
            m.key.1 - m.key.0 == comp.len() as u32
                && m.first == comp.first().copied().unwrap_or(0)
                && self.range(text, m.key, m.key_own) == comp
        } else {
            index::key_eq(self.range(text, m.key, m.key_own), comp)
        }
    }

    fn find(&self, text: &[u8], comp: &[u8]) -> Option<usize> {
        (0..self.members.len())
            .rev()
            .find(|&i| self.is(text, &self.members[i], comp))
    }

    /// Removes every member named `comp`, in place: one pass to find the first, members
    /// after it moved down once, no allocation.
    fn remove_all(&mut self, text: &[u8], comp: &[u8]) {
        let Some(first) = self.members.iter().position(|m| self.is(text, m, comp)) else {
            return;
        };
        let mut kept = first;
        for i in first + 1..self.members.len() {
            let m = self.members[i];
            if !self.is(text, &m, comp) {
                self.members[kept] = m;
                kept += 1;
            }
        }
        self.members.truncate(kept);
    }

    /// Sets `comp` to the value range `val`.
    fn set(&mut self, text: &[u8], comp: &[u8], val: (u32, u32), val_own: bool) {
        match self.find(text, comp) {
            Some(i) => {
                let m = &mut self.members[i];
                m.val = val;
                m.val_own = val_own;
                m.untouched = false;
            }
            None => {
                let a = self.own.len() as u32;
                push_key(&mut self.own, comp);
                let b = self.own.len() as u32;
                // `push_key` quoted (and, where JSON needs it, escaped) the key; the
                // member's key range is inside the quotes.
                let key = (a + 1, b - 1);
                let k = &self.own[key.0 as usize..key.1 as usize];
                let plain = !k.contains(&b'\\');
                let first = k.first().copied().unwrap_or(0);
                self.members.push(TopMember {
                    key,
                    val,
                    key_own: true,
                    val_own,
                    untouched: false,
                    plain,
                    first,
                });
            }
        }
    }

    fn apply(&mut self, text: &[u8], op: Op<'_>) {
        match op {
            Op::Set(k, v) => {
                let a = self.own.len() as u32;
                self.own.extend_from_slice(v);
                let b = self.own.len() as u32;
                self.set(text, k, (a, b), true);
            }
            Op::Remove(k) => self.remove_all(text, k),
            Op::Rename(f, t) => {
                if let Some(i) = self.find(text, f) {
                    let m = self.members[i];
                    self.remove_all(text, f);
                    self.set(text, t, m.val, m.val_own);
                }
            }
        }
    }

    /// Appends the edited object to `data`, whose bytes `base..` hold the original text the
    /// members point into: untouched runs are copied within `data`, so the event is written
    /// once, straight into the batch buffer.
    fn write_within(&self, data: &mut Vec<u8>, base: usize) {
        data.reserve(self.own.len() + 4 * self.members.len() + 2);
        data.push(b'{');
        // Untouched members that follow each other in the original text, separated by a
        // bare `,`, are copied as one run.
        let mut run: Option<(usize, usize)> = None;
        for (n, m) in self.members.iter().enumerate() {
            if m.untouched {
                // From the key's opening quote to the value's end.
                let (a, b) = (base + m.key.0 as usize - 1, base + m.val.1 as usize);
                match run {
                    Some((ra, rb)) if rb + 1 == a && data[rb] == b',' => run = Some((ra, b)),
                    _ => {
                        if let Some((ra, rb)) = run.take() {
                            data.extend_from_within(ra..rb);
                        }
                        if n > 0 {
                            data.push(b',');
                        }
                        run = Some((a, b));
                    }
                }
                continue;
            }
            if let Some((ra, rb)) = run.take() {
                data.extend_from_within(ra..rb);
            }
            if n > 0 {
                data.push(b',');
            }
            data.push(b'"');
            self.copy(data, base, m.key, m.key_own);
            data.extend_from_slice(b"\":");
            self.copy(data, base, m.val, m.val_own);
        }
        if let Some((ra, rb)) = run {
            data.extend_from_within(ra..rb);
        }
        data.push(b'}');
    }

    /// Appends the range `r` of the editor's own buffer, or of the text at `data[base..]`.
    #[inline]
    fn copy(&self, data: &mut Vec<u8>, base: usize, r: (u32, u32), own: bool) {
        let (a, b) = (r.0 as usize, r.1 as usize);
        if own {
            data.extend_from_slice(&self.own[a..b]);
        } else {
            data.extend_from_within(base + a..base + b);
        }
    }
}

/// Whether a path is one plain top-level key (no `.` or `\` to split or unescape).
fn top_level(path: &[u8]) -> bool {
    // Paths are short: a plain loop beats a call into memchr's vector search.
    !path.iter().any(|&b| b == b'.' || b == b'\\')
}

/// Most work steps (member comparisons, bytes copied or rescanned) the host spends on one
/// event's edits. An ordinary event takes thousands of edits within it; a filter that asks
/// for more is refused rather than let it make the host work without bound.
pub(crate) const EDIT_WORK_PER_EVENT: u64 = 1 << 24;

/// Most work steps the host spends on the edits of one filter's answer for one batch
/// (about a quarter of a second), whatever the batch size.
pub(crate) const EDIT_WORK_PER_BATCH: u64 = 1 << 28;

/// Applies `ops` in order to the object at `data[at]` (with structural positions `s`) and
/// appends the edited event to `data`; returns the work steps spent, or an error, with
/// `data` as it was, when they would exceed `budget`. Edits of plain top-level keys take
/// [`TopEditor`]'s fast path, which costs a step per member per edit and writes the event
/// once, copying its untouched runs within `data`; anything else goes through
/// [`ObjEditor`], which may rescan the whole event for each edit and writes through a
/// scratch buffer. `plain` promises the text has no backslash. Before both, a compact event
/// with few edits of plain top-level keys takes [`super::splice`]'s shorter path, which
/// writes the same bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_edits<'a>(
    ed: &mut ObjEditor,
    top: &mut TopEditor,
    data: &mut Vec<u8>,
    at: std::ops::Range<usize>,
    s: &[u32],
    plain: bool,
    ops: impl Iterator<Item = Op<'a>> + Clone,
    budget: u64,
) -> Result<u64, String> {
    let (mut simple, mut n, mut bytes) = (true, 0u64, at.len() as u64);
    // The edits, kept for the short path when there are few.
    let mut few = [Op::Remove(&[]); SPLICE_OPS_MAX];
    for op in ops.clone() {
        if let Some(slot) = few.get_mut(n as usize) {
            *slot = op;
        }
        n += 1;
        // The path, and the second operand: a value, or a path for RENAME.
        let (path, b, b_is_path) = match op {
            Op::Set(k, v) => (k, v, false),
            Op::Remove(k) => (k, &[][..], false),
            Op::Rename(f, t) => (f, t, true),
        };
        bytes += (path.len() + b.len()) as u64;
        simple = simple && top_level(path) && (!b_is_path || top_level(b));
    }
    let over = |cost: u64| {
        format!(
            "too much edit work: {n} edits on this {}-byte event would take {cost} steps, \
             more than the {budget} the host allows",
            at.len()
        )
    };
    let cost_of = |members: usize| n.saturating_mul(members as u64 + n).saturating_add(bytes);
    if simple && !top.no_splice && n as usize <= SPLICE_OPS_MAX {
        let few = &few[..n as usize];
        if let Some(plan) = top.splicer.plan(&data[at.clone()], s, plain, few) {
            let cost = cost_of(plan.members);
            if cost > budget {
                return Err(over(cost));
            }
            top.splicer.write(data, at.start, plan, few);
            return Ok(cost);
        }
    }
    let text = &data[at.clone()];
    if simple && top.load(text, s, plain) {
        let cost = cost_of(top.members.len());
        if cost > budget {
            return Err(over(cost));
        }
        for op in ops {
            top.apply(text, op);
        }
        top.write_within(data, at.start);
        return Ok(cost);
    }
    // Each edit may rescan and copy the whole event, which never grows past `bytes`.
    let cost = n.saturating_add(1).saturating_mul(bytes);
    if cost > budget {
        return Err(over(cost));
    }
    ed.load(text, s)?;
    for op in ops {
        match op {
            Op::Set(path, value) => with_comps(path, |c| ed.set(text, c, value, 0))?,
            Op::Remove(path) => with_comps(path, |c| ed.remove(text, c, 0))?,
            Op::Rename(from, to) => {
                with_comps(from, |f| with_comps(to, |t| ed.rename(text, f, t)))?
            }
        }
    }
    let mut out = std::mem::take(&mut ed.out);
    out.clear();
    ed.write(text, &mut out);
    data.extend_from_slice(&out);
    ed.out = out;
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, ops: &[Op<'_>]) -> String {
        let mut s = Vec::new();
        scalar::validate(text.as_bytes(), 1024, &mut s).unwrap();
        let edit = |top: &mut TopEditor| {
            let mut data = text.as_bytes().to_vec();
            apply_edits(
                &mut ObjEditor::default(),
                top,
                &mut data,
                0..text.len(),
                &s,
                !text.contains('\\'),
                ops.iter().copied(),
                EDIT_WORK_PER_EVENT,
            )
            .unwrap();
            data.split_off(text.len())
        };
        let out = edit(&mut TopEditor::default());
        // The shorter path for compact events gives the same bytes as the member walk.
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&edit(&mut TopEditor::without_splice())),
            "splice and walk differ"
        );
        // The general editor gives the same bytes as the top-level fast path.
        let mut ed = ObjEditor::default();
        ed.load(text.as_bytes(), &s).unwrap();
        let t = text.as_bytes();
        for op in ops {
            match *op {
                Op::Set(p, v) => with_comps(p, |c| ed.set(t, c, v, 0)).unwrap(),
                Op::Remove(p) => with_comps(p, |c| ed.remove(t, c, 0)).unwrap(),
                Op::Rename(f, to) => {
                    with_comps(f, |f| with_comps(to, |to| ed.rename(t, f, to))).unwrap()
                }
            }
        }
        let mut general = Vec::new();
        ed.write(t, &mut general);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&general),
            "fast path and general editor differ"
        );
        let r = String::from_utf8(out).unwrap();
        scalar::validate(r.as_bytes(), 1024, &mut Vec::new()).expect("edited event is JSON");
        r
    }

    #[test]
    fn set_remove_rename_keep_untouched_bytes() {
        let t = r#"{"n": 1e400, "msg":"hi \u00e9", "x":{"y":1}}"#;
        assert_eq!(
            run(t, &[Op::Set(b"env", b"\"prod\"")]),
            r#"{"n": 1e400,"msg":"hi \u00e9","x":{"y":1},"env":"prod"}"#
        );
        assert_eq!(
            run(t, &[Op::Rename(b"msg", b"message")]),
            r#"{"n": 1e400,"x":{"y":1},"message":"hi \u00e9"}"#
        );
        assert_eq!(
            run(t, &[Op::Remove(b"x.y")]),
            r#"{"n": 1e400,"msg":"hi \u00e9","x":{}}"#
        );
        assert_eq!(
            run(t, &[Op::Set(b"x.z.w", b"[1]")]),
            r#"{"n": 1e400,"msg":"hi \u00e9","x":{"y":1,"z":{"w":[1]}}}"#
        );
        assert_eq!(
            run(t, &[Op::Set(b"n", b"2"), Op::Remove(b"msg")]),
            r#"{"n":2,"x":{"y":1}}"#
        );
        assert_eq!(
            run(t, &[Op::Rename(b"x.y", b"top")]),
            r#"{"n": 1e400,"msg":"hi \u00e9","x":{},"top":1}"#
        );
        assert_eq!(
            run(t, &[Op::Rename(b"absent", b"top")]),
            r#"{"n": 1e400,"msg":"hi \u00e9","x":{"y":1}}"#
        );
        assert_eq!(run(r#"{"a":1,"a":2}"#, &[Op::Remove(b"a")]), "{}");
        assert_eq!(
            run(r#"{"a":1,"b":0,"a":2}"#, &[Op::Remove(b"a")]),
            r#"{"b":0}"#
        );
        assert_eq!(
            run(r#"{"a":1,"b":0,"a":2}"#, &[Op::Rename(b"a", b"c")]),
            r#"{"b":0,"c":2}"#
        );
        assert_eq!(
            run(r#"{"a":1,"b":0,"a":2}"#, &[Op::Set(b"a", b"3")]),
            r#"{"a":1,"b":0,"a":3}"#
        );
        assert_eq!(run("{}", &[Op::Set(b"a\\.b", b"1")]), r#"{"a.b":1}"#);
    }
}
