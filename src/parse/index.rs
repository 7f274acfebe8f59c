//! Field lookup and index building over a validated event and its structural positions.
//!
//! Cost: a lookup walks the structural positions of the objects on the path (skipping nested
//! values by bracket counting), O(structurals of those objects); no allocation unless a key
//! or path component contains escapes.

use std::borrow::Cow;

use sluicebox_abi as abi;

/// One value found by a lookup: its kind and its bytes inside the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldRef<'a> {
    /// The value's JSON type.
    pub kind: FieldKind,
    /// The value's text. Strings: between the quotes, escapes not decoded.
    pub raw: &'a [u8],
    /// Offset of `raw` inside the event.
    pub start: u32,
    /// For strings: whether `raw` contains backslash escapes.
    pub escaped: bool,
}

/// The JSON type of a field's value. `kind.abi()` (or `as u8`) is the ABI's `KIND_*` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FieldKind {
    /// `null`
    Null = abi::KIND_NULL,
    /// `false`
    False = abi::KIND_FALSE,
    /// `true`
    True = abi::KIND_TRUE,
    /// A number.
    Number = abi::KIND_NUMBER,
    /// A string.
    String = abi::KIND_STRING,
    /// An object.
    Object = abi::KIND_OBJECT,
    /// An array.
    Array = abi::KIND_ARRAY,
}

impl FieldKind {
    /// The kind of an ABI `KIND_*` code; `None` for `KIND_MISSING` and unknown codes.
    pub fn from_abi(code: u8) -> Option<Self> {
        Some(match code {
            abi::KIND_NULL => Self::Null,
            abi::KIND_FALSE => Self::False,
            abi::KIND_TRUE => Self::True,
            abi::KIND_NUMBER => Self::Number,
            abi::KIND_STRING => Self::String,
            abi::KIND_OBJECT => Self::Object,
            abi::KIND_ARRAY => Self::Array,
            _ => return None,
        })
    }

    /// The ABI's `KIND_*` code.
    pub fn abi(self) -> u8 {
        self as u8
    }
}

impl<'a> FieldRef<'a> {
    /// The string value, decoded; `None` if the value is not a string.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        if self.kind != FieldKind::String {
            return None;
        }
        if !self.escaped {
            // Validated JSON strings are UTF-8.
            return std::str::from_utf8(self.raw).ok().map(Cow::Borrowed);
        }
        let mut quoted = Vec::with_capacity(self.raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(self.raw);
        quoted.push(b'"');
        serde_json::from_slice::<String>(&quoted)
            .ok()
            .map(Cow::Owned)
    }

    /// Whether the value is the string `s` (compares decoded text).
    pub fn is_str(&self, s: &str) -> bool {
        if self.kind != FieldKind::String {
            return false;
        }
        if !self.escaped {
            return self.raw == s.as_bytes();
        }
        self.as_str().is_some_and(|v| v == s)
    }

    /// The value as an `f64` when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        if self.kind != FieldKind::Number {
            return None;
        }
        std::str::from_utf8(self.raw).ok()?.parse().ok()
    }

    /// The value as an `i64` when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        if self.kind != FieldKind::Number {
            return None;
        }
        std::str::from_utf8(self.raw).ok()?.parse().ok()
    }

    /// The value as a `bool` when it is `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.kind {
            FieldKind::True => Some(true),
            FieldKind::False => Some(false),
            _ => None,
        }
    }
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// End (exclusive) of a scalar or string that starts at `start` and is followed by the
/// structural at byte `next` (or the end of the text).
#[inline]
fn trim_end(bytes: &[u8], start: usize, next: usize) -> usize {
    let mut end = next;
    while end > start && is_ws(bytes[end - 1]) {
        end -= 1;
    }
    end
}

/// Whether a raw key (between the quotes) equals `want` after JSON unescaping.
#[inline]
pub(crate) fn key_eq(raw: &[u8], want: &[u8]) -> bool {
    // An escape sequence is at least two bytes for one character, so a raw key that decodes
    // to `want` is either `want` itself, with no escapes, or longer than it. (A raw `x\\y`
    // is the key `x\y`, not `x\\y`.)
    if raw.len() <= want.len() {
        return raw == want && !has_backslash(raw);
    }
    if !has_backslash(raw) {
        return false;
    }
    key_eq_escaped(raw, want)
}

/// Whether `b` contains a backslash; a plain loop beats `memchr`'s setup on short keys
/// and values.
#[inline]
pub(crate) fn has_backslash(b: &[u8]) -> bool {
    if b.len() > 64 {
        return memchr::memchr(b'\\', b).is_some();
    }
    b.iter().fold(false, |acc, &c| acc | (c == b'\\'))
}

#[cold]
fn key_eq_escaped(raw: &[u8], want: &[u8]) -> bool {
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k.as_bytes() == want)
}

/// One member of an object, found by [`members`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member {
    /// Key bytes between the quotes.
    pub key: (usize, usize),
    /// Structural index of the value.
    pub vi: usize,
    pub kind: u8,
    /// Value bytes (strings include their quotes here).
    pub value: (usize, usize),
}

/// Calls `f` for each member of the object whose `{` is structural `oi`, in order; stops
/// early when `f` returns false. Returns the structural index after the object's `}`.
///
/// `s` must be the structural positions of valid JSON `bytes` (as the parse stage and the
/// scalar validator produce); on anything else this returns `None` rather than panic.
#[inline]
pub(crate) fn members(
    bytes: &[u8],
    s: &[u32],
    oi: usize,
    mut f: impl FnMut(Member) -> bool,
) -> Option<usize> {
    let at = |j: usize| -> Option<(usize, u8)> {
        let p = *s.get(j)? as usize;
        Some((p, *bytes.get(p)?))
    };
    if at(oi)?.1 != b'{' {
        return None;
    }
    let mut j = oi + 1;
    if at(j)?.1 == b'}' {
        return Some(j + 1);
    }
    loop {
        let (ks, _) = at(j)?;
        let (colon, _) = at(j + 1)?;
        // Keys are almost always written `"key":` with no space before the colon.
        let ke = if bytes.get(colon.wrapping_sub(1)) == Some(&b'"') {
            colon
        } else {
            trim_end(bytes, ks, colon)
        };
        let vi = j + 2;
        let (kind, vs, ve, next) = value_at(bytes, s, vi)?;
        let m = Member {
            key: (ks + 1, ke.saturating_sub(1).max(ks + 1)),
            vi,
            kind,
            value: (vs, ve),
        };
        if !f(m) {
            return Some(next);
        }
        if at(next)?.1 == b',' {
            j = next + 1;
        } else {
            return Some(next + 1);
        }
    }
}

/// The value whose first structural is `vi`: its kind, its byte range (strings with their
/// quotes), and the structural index just past it. `None` on positions that are not those
/// of valid JSON.
#[inline]
pub(crate) fn value_at(bytes: &[u8], s: &[u32], vi: usize) -> Option<(u8, usize, usize, usize)> {
    let vs = *s.get(vi)? as usize;
    let c = *bytes.get(vs)?;
    match c {
        b'{' | b'[' => {
            let mut depth = 1usize;
            let mut k = vi + 1;
            while depth > 0 {
                match bytes.get(*s.get(k)? as usize)? {
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => depth -= 1,
                    _ => {}
                }
                k += 1;
            }
            let kind = if c == b'{' {
                abi::KIND_OBJECT
            } else {
                abi::KIND_ARRAY
            };
            Some((kind, vs, *s.get(k - 1)? as usize + 1, k))
        }
        _ => {
            let np = s.get(vi + 1).map_or(bytes.len(), |&p| p as usize);
            let ve = if c == b'"' && bytes.get(np.wrapping_sub(1)) == Some(&b'"') {
                np
            } else {
                trim_end(bytes, vs, np)
            };
            Some((value_kind(c), vs, ve, vi + 1))
        }
    }
}

/// Finds the value at the path `comps` (components already split and unescaped) inside
/// the object whose `{` is structural `oi`. The last of repeated keys wins. Returns the
/// structural index of the value.
pub(crate) fn lookup_index<C: AsRef<[u8]>>(
    bytes: &[u8],
    s: &[u32],
    mut oi: usize,
    comps: &[C],
) -> Option<usize> {
    let mut found: Option<Member> = None;
    for comp in comps {
        if let Some(m) = found {
            if m.kind != abi::KIND_OBJECT {
                return None;
            }
            oi = m.vi;
        }
        let comp = comp.as_ref();
        let mut hit = None;
        members(bytes, s, oi, |m| {
            if key_eq(&bytes[m.key.0..m.key.1], comp) {
                hit = Some(m);
            }
            true
        })?;
        found = Some(hit?);
    }
    found.map(|m| m.vi)
}

/// Splits a path into its components (see `sluicebox_abi::path_syntax`): `.` separates,
/// `\.` and `\\` escape. Borrowed unless a component has escapes.
pub fn path_components(path: &[u8]) -> impl Iterator<Item = Cow<'_, [u8]>> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let p = rest?;
        let mut i = 0;
        let mut escaped = false;
        while i < p.len() {
            match p[i] {
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                b'.' => break,
                _ => i += 1,
            }
        }
        let i = i.min(p.len());
        let comp = &p[..i];
        rest = if i < p.len() { Some(&p[i + 1..]) } else { None };
        Some(if escaped {
            let mut out = Vec::with_capacity(comp.len());
            let mut k = 0;
            while k < comp.len() {
                if comp[k] == b'\\' && k + 1 < comp.len() {
                    k += 1;
                }
                out.push(comp[k]);
                k += 1;
            }
            Cow::Owned(out)
        } else {
            Cow::Borrowed(comp)
        })
    })
}

/// Finds the value at `path` in the object event `bytes` with structural positions `s`.
/// When a key repeats, the last occurrence wins.
pub fn lookup<'a>(bytes: &'a [u8], s: &[u32], path: &[u8]) -> Option<FieldRef<'a>> {
    let mut oi = 0usize;
    let mut found: Option<Member> = None;
    for comp in path_components(path) {
        if let Some(m) = found {
            if m.kind != abi::KIND_OBJECT {
                return None;
            }
            oi = m.vi;
        }
        let mut hit = None;
        members(bytes, s, oi, |m| {
            if key_eq(&bytes[m.key.0..m.key.1], &comp) {
                hit = Some(m);
            }
            true
        })?;
        found = Some(hit?);
    }
    let m = found?;
    Some(field_of(bytes, m.kind, m.value.0, m.value.1))
}

#[inline]
pub(crate) fn field_of(bytes: &[u8], code: u8, vs: usize, ve: usize) -> FieldRef<'_> {
    // Members always carry a value's kind (the parser never records KIND_MISSING).
    let kind = FieldKind::from_abi(code).unwrap_or(FieldKind::Null);
    if kind == FieldKind::String {
        let raw = &bytes[vs + 1..ve - 1];
        FieldRef {
            kind,
            raw,
            start: (vs + 1) as u32,
            escaped: has_backslash(raw),
        }
    } else {
        FieldRef {
            kind,
            raw: &bytes[vs..ve],
            start: vs as u32,
            escaped: false,
        }
    }
}

/// Appends the full-mode index of one event (every value below the top-level object, depth
/// first; see [`sluicebox_abi::Node`]) to `out`. Offsets are `base` + offset in the event.
pub(crate) fn full_index(
    bytes: &[u8],
    s: &[u32],
    base: u32,
    out: &mut Vec<abi::Node>,
    stack: &mut Vec<(usize, bool)>,
) {
    stack.clear();
    let first = out.len();
    // (node index of the open container or usize::MAX for the top level, is_object)
    stack.push((usize::MAX, true));
    let mut j = 1usize;
    while let Some(&(_, is_obj)) = stack.last() {
        let Some(&pos) = s.get(j) else { return };
        let pos = pos as usize;
        match bytes[pos] {
            b'}' | b']' => {
                let (ni, _) = stack.pop().unwrap_or((usize::MAX, true));
                if ni != usize::MAX {
                    let count = (out.len() - first) as u32;
                    let n = &mut out[ni];
                    n.value_len = (pos as u32 + base + 1) - n.value_start;
                    n.end = count;
                }
                j += 1;
                continue;
            }
            b',' => {
                j += 1;
                continue;
            }
            _ => {}
        }
        let depth = (stack.len() - 1) as u16;
        let mut node = abi::Node {
            depth,
            ..Default::default()
        };
        if is_obj {
            let ks = pos;
            let colon = s.get(j + 1).map_or(bytes.len(), |&p| p as usize);
            let ke = trim_end(bytes, ks, colon);
            node.key_start = base + ks as u32 + 1;
            node.key_len = (ke - ks).saturating_sub(2) as u32;
            if memchr::memchr(b'\\', &bytes[ks..ke]).is_some() {
                node.flags |= abi::FLAG_KEY_ESCAPED;
            }
            j += 2;
        } else {
            node.flags |= abi::FLAG_NO_KEY;
        }
        let Some(&vpos) = s.get(j) else { return };
        let vpos = vpos as usize;
        match bytes[vpos] {
            c @ (b'{' | b'[') => {
                node.kind = if c == b'{' {
                    abi::KIND_OBJECT
                } else {
                    abi::KIND_ARRAY
                };
                node.value_start = base + vpos as u32;
                out.push(node);
                stack.push((out.len() - 1, c == b'{'));
                j += 1;
            }
            _ => {
                let next = s.get(j + 1).map_or(bytes.len(), |&p| p as usize);
                let end = trim_end(bytes, vpos, next);
                let f = field_of(bytes, value_kind(bytes[vpos]), vpos, end);
                node.kind = f.kind.abi();
                node.value_start = base + f.start;
                node.value_len = f.raw.len() as u32;
                if f.escaped {
                    node.flags |= abi::FLAG_VALUE_ESCAPED;
                }
                out.push(node);
                let n = out.len() - first;
                if let Some(l) = out.last_mut() {
                    l.end = n as u32;
                }
                j += 1;
            }
        }
    }
}

/// The first top-level member of the JSON object `bytes` whose key is one of `keys`, found
/// by scanning the bytes themselves: for an event with no structural positions (one a filter
/// edited), where validating it again only to walk its members would cost far more.
/// Returns the member's value as [`field_of`]'s arguments. The text is assumed valid (events
/// leaving the parse stage or the editor are); on any other bytes it returns `None` or some
/// member, never reads out of bounds, and never panics.
///
/// Cost: one pass over the members before the one found (a `memchr2` per string), stopping
/// there.
pub(crate) fn first_member_scan(bytes: &[u8], keys: &[&[u8]]) -> Option<(u8, usize, usize)> {
    let mut hit = None;
    scan_members(bytes, 0, |key, v| {
        if keys.iter().any(|k| key_eq(key, k)) {
            hit = Some(v);
            return false;
        }
        true
    })?;
    hit
}

/// [`lookup`] for an event with no structural positions, by scanning its bytes (see
/// [`first_member_scan`] for what it assumes). The last of repeated keys wins.
///
/// Cost: one pass over the members of each object on the path.
pub(crate) fn lookup_scan<'a>(bytes: &'a [u8], path: &[u8]) -> Option<FieldRef<'a>> {
    let mut found: Option<(u8, usize, usize)> = None;
    for comp in path_components(path) {
        let at = match found {
            None => 0,
            Some((abi::KIND_OBJECT, vs, _)) => vs,
            Some(_) => return None,
        };
        let mut hit = None;
        scan_members(bytes, at, |key, v| {
            if key_eq(key, &comp) {
                hit = Some(v);
            }
            true
        })?;
        found = Some(hit?);
    }
    let (kind, vs, ve) = found?;
    Some(field_of(bytes, kind, vs, ve))
}

/// Calls `f` with each member (raw key, and value as kind, start, end) of the object that
/// opens at or after byte `at` (whitespace first), until `f` returns false. `None` when the
/// bytes are not an object as far as the scan went.
fn scan_members(
    bytes: &[u8],
    at: usize,
    mut f: impl FnMut(&[u8], (u8, usize, usize)) -> bool,
) -> Option<()> {
    let ws = |mut i: usize| {
        while bytes.get(i).is_some_and(|&c| is_ws(c)) {
            i += 1;
        }
        i
    };
    let mut i = ws(at);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    if bytes.get(i) == Some(&b'}') {
        return Some(());
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(bytes, i)?;
        let key = &bytes[i + 1..key_end];
        i = ws(key_end + 1);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let vs = ws(i + 1);
        let c = *bytes.get(vs)?;
        let ve = match c {
            b'"' => string_end(bytes, vs)? + 1,
            b'{' | b'[' => container_end(bytes, vs)?,
            _ => {
                let mut e = vs;
                while bytes
                    .get(e)
                    .is_some_and(|&b| !is_ws(b) && !matches!(b, b',' | b'}' | b']'))
                {
                    e += 1;
                }
                e
            }
        };
        if !f(key, (value_kind(c), vs, ve)) {
            return Some(());
        }
        i = ws(ve);
        match bytes.get(i) {
            Some(b',') => i = ws(i + 1),
            Some(b'}') => return Some(()),
            _ => return None,
        }
    }
}

/// The index of the quote that closes the string whose opening quote is at `open`.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut j = open + 1;
    loop {
        let k = j + memchr::memchr2(b'"', b'\\', bytes.get(j..)?)?;
        if bytes[k] == b'"' {
            return Some(k);
        }
        // An escape: the next byte is escaped whatever it is (a `\u` sequence's hex digits
        // hold no quote or backslash).
        j = k + 2;
    }
}

/// The end (exclusive) of the object or array that opens at `open`.
fn container_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = open;
    loop {
        match *bytes.get(j)? {
            b'"' => j = string_end(bytes, j)?,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
}

#[inline]
fn value_kind(c: u8) -> u8 {
    match c {
        b'"' => abi::KIND_STRING,
        b't' => abi::KIND_TRUE,
        b'f' => abi::KIND_FALSE,
        b'n' => abi::KIND_NULL,
        b'{' => abi::KIND_OBJECT,
        b'[' => abi::KIND_ARRAY,
        _ => abi::KIND_NUMBER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structurals(text: &[u8]) -> Vec<u32> {
        let mut v = text.to_vec();
        let len = v.len();
        v.resize(len + simd_json::INPUT_PADDING, 0);
        let mut b = simd_json::Buffers::new(len);
        let mut t = simd_json::Tape::null();
        simd_json::fill_tape_padded(&mut v, len, &mut b, &mut t).unwrap();
        b.structural_indexes().to_vec()
    }

    #[test]
    fn lookup_top_level_nested_and_duplicates() {
        let t = br#"{"a" : 1 , "http":{"method":"GET","x":[1,{"y":2}]},"s":"q\"x","a":"last","le\u0076el":"DEBUG"}"#;
        let s = structurals(t);
        let a = lookup(t, &s, b"a").unwrap();
        assert_eq!(a.raw, b"last");
        assert_eq!(lookup(t, &s, b"http.method").unwrap().raw, b"GET");
        assert_eq!(lookup(t, &s, b"http.x").unwrap().raw, br#"[1,{"y":2}]"#);
        assert_eq!(lookup(t, &s, b"http.x").unwrap().kind, FieldKind::Array);
        let q = lookup(t, &s, b"s").unwrap();
        assert!(q.escaped);
        assert_eq!(q.as_str().unwrap(), "q\"x");
        assert!(lookup(t, &s, b"level").unwrap().is_str("DEBUG"));
        assert!(lookup(t, &s, b"http.nope").is_none());
        assert!(lookup(t, &s, b"a.b").is_none());
    }

    #[test]
    fn escaped_path_components() {
        let comps: Vec<_> = path_components(br"a\.b.c\\d")
            .map(|c| c.into_owned())
            .collect();
        assert_eq!(comps, vec![b"a.b".to_vec(), br"c\d".to_vec()]);
        let t = br#"{"a.b":{"c":3}}"#;
        let s = structurals(t);
        assert_eq!(lookup(t, &s, br"a\.b.c").unwrap().raw, b"3");
    }

    #[test]
    fn full_index_shape() {
        let t = br#"{"a":1,"b":{"c":[true,null]},"d":"x\n"}"#;
        let s = structurals(t);
        let mut out = Vec::new();
        full_index(t, &s, 100, &mut out, &mut Vec::new());
        let kinds: Vec<u8> = out.iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            vec![
                abi::KIND_NUMBER,
                abi::KIND_OBJECT,
                abi::KIND_ARRAY,
                abi::KIND_TRUE,
                abi::KIND_NULL,
                abi::KIND_STRING
            ]
        );
        let depth: Vec<u16> = out.iter().map(|n| n.depth).collect();
        assert_eq!(depth, vec![0, 0, 1, 2, 2, 0]);
        let end: Vec<u32> = out.iter().map(|n| n.end).collect();
        assert_eq!(end, vec![1, 5, 5, 4, 5, 6]);
        let b = out[1];
        assert_eq!(
            &t[(b.value_start - 100) as usize..(b.value_start - 100 + b.value_len) as usize],
            br#"{"c":[true,null]}"#
        );
        assert_eq!(
            &t[(b.key_start - 100) as usize..(b.key_start - 100 + b.key_len) as usize],
            b"b"
        );
        assert_eq!(
            out[5].flags & abi::FLAG_VALUE_ESCAPED,
            abi::FLAG_VALUE_ESCAPED
        );
        assert_eq!(out[3].flags & abi::FLAG_NO_KEY, abi::FLAG_NO_KEY);
    }
}
