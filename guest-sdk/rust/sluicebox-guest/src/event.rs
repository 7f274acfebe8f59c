//! Read-only views of the events of a batch: [`Event`], [`Value`], [`Member`].
//!
//! The views decode the host's tables on the fly, straight from the bytes, so a malformed table
//! can make a lookup come back empty but can never read outside the batch.

use alloc::borrow::Cow;
use alloc::vec::Vec;

use sluicebox_abi as abi;

use crate::json;
use crate::path::Segments;

/// Size of one [`abi::Node`] in the node table.
pub(crate) const NODE_LEN: usize = core::mem::size_of::<abi::Node>();

/// The kind of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number, kept as the text it was written as.
    Number,
    /// A string.
    String,
    /// An object.
    Object,
    /// An array.
    Array,
}

/// One node of the table, decoded from its 24 little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawNode {
    pub(crate) key_start: u32,
    pub(crate) key_len: u32,
    pub(crate) value_start: u32,
    pub(crate) value_len: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) depth: u16,
    pub(crate) end: u32,
}

fn le32(b: &[u8; NODE_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Node `i` of a node table, or `None` past its end.
#[inline]
pub(crate) fn read_node(nodes: &[u8], i: usize) -> Option<RawNode> {
    let at = i.checked_mul(NODE_LEN)?;
    let b: &[u8; NODE_LEN] = nodes.get(at..at.checked_add(NODE_LEN)?)?.try_into().ok()?;
    Some(RawNode {
        key_start: le32(b, 0),
        key_len: le32(b, 4),
        value_start: le32(b, 8),
        value_len: le32(b, 12),
        kind: b[16],
        flags: b[17],
        depth: u16::from_le_bytes([b[18], b[19]]),
        end: le32(b, 20),
    })
}

/// `data[start .. start + len]`, or `None` when it is not inside `data`.
pub(crate) fn region(data: &[u8], start: u32, len: u32) -> Option<&[u8]> {
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

/// One event of the batch.
///
/// Cheap to copy: it borrows the batch. Look fields up by path (see
/// [`sluicebox_abi::path_syntax`]); in a module that declared `fields`, only the declared paths
/// can be found, and `get` compares the path with them as text.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    index: u32,
    nodes: &'a [u8],
    data: &'a [u8],
    raw: Option<&'a [u8]>,
    /// The declared paths in a projected batch; `None` in a fully indexed one.
    declared: Option<&'a [&'a str]>,
}

impl core::fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("index", &self.index)
            .field("nodes", &(self.nodes.len() / NODE_LEN))
            .field("projected", &self.declared.is_some())
            .field(
                "raw",
                &self
                    .raw
                    .map(|r| core::str::from_utf8(r).unwrap_or("<not UTF-8>")),
            )
            .finish()
    }
}

impl<'a> Event<'a> {
    /// A view of one event: `nodes` are its bytes of the node table, `data` the whole data
    /// region. Nothing is checked here; every accessor checks what it reads.
    pub(crate) fn new(
        index: u32,
        nodes: &'a [u8],
        data: &'a [u8],
        raw: Option<&'a [u8]>,
        declared: Option<&'a [&'a str]>,
    ) -> Self {
        Self {
            index,
            nodes,
            data,
            raw,
            declared,
        }
    }

    /// The event's position in its batch.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The event's JSON text as it arrived, when the batch carries raw bytes: always without
    /// `fields`, and with `fields` only when the module asked for `raw = true`.
    pub fn raw(&self) -> Option<&'a [u8]> {
        self.raw
    }

    fn node_count(&self) -> usize {
        self.nodes.len() / NODE_LEN
    }

    /// The value at `path`, or `None` when the event does not have it (or, in a module that
    /// declared `fields`, when `path` is not one of them).
    ///
    /// When a key repeats, the last occurrence wins.
    #[inline]
    pub fn get(&self, path: &str) -> Option<Value<'a>> {
        match self.declared {
            Some(declared) => {
                // A literal path is usually the very string the declaration holds.
                let i = declared
                    .iter()
                    .position(|p| core::ptr::eq(*p, path))
                    .or_else(|| {
                        declared
                            .iter()
                            .position(|p| sluicebox_abi::bytes_eq(p.as_bytes(), path.as_bytes()))
                    })?;
                let node = read_node(self.nodes, i)?;
                Value::from_node(node, self.nodes, self.data, 0..0)
            }
            None => {
                let i = find_path(self.nodes, self.data, 0, self.node_count(), 0, path)?;
                let node = read_node(self.nodes, i)?;
                Value::from_node(node, self.nodes, self.data, i + 1..node.end as usize)
            }
        }
    }

    /// The string at `path`: borrowed from the batch when it has no escapes, decoded otherwise.
    /// `None` when the path is missing or not a string.
    pub fn str(&self, path: &str) -> Option<Cow<'a, str>> {
        self.get(path)?.as_str()
    }

    /// Whether `path` holds the string `s`, compared after decoding, without allocating. False
    /// when the path is missing or not a string.
    pub fn str_eq(&self, path: &str, s: &str) -> bool {
        self.get(path).is_some_and(|v| v.str_eq(s))
    }

    /// The integer at `path`. `None` when missing, not a number, not an integer (`1.5`, `1e3`)
    /// or out of the `i64` range.
    pub fn get_i64(&self, path: &str) -> Option<i64> {
        self.get(path)?.as_i64()
    }

    /// The number at `path` as an `f64`. `None` when missing or not a number.
    pub fn get_f64(&self, path: &str) -> Option<f64> {
        self.get(path)?.as_f64()
    }

    /// The boolean at `path`. `None` when missing or not a boolean.
    pub fn get_bool(&self, path: &str) -> Option<bool> {
        self.get(path)?.as_bool()
    }

    /// Whether `path` holds `null` (a missing path is not null).
    pub fn is_null(&self, path: &str) -> bool {
        self.get(path).is_some_and(|v| v.is_null())
    }

    /// Whether the event has `path`, whatever its value.
    pub fn has(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// The top-level members, in order, duplicates included. Empty in a module that declared
    /// `fields` (the host indexes only the declared paths then).
    pub fn members(&self) -> Members<'a> {
        let end = if self.declared.is_some() {
            0
        } else {
            self.node_count()
        };
        Members::new(self.nodes, self.data, 0, end, 0)
    }
}

/// Finds `path` among the nodes `lo..hi` at `depth` (a full index): the node index of the last
/// match, or `None`. A malformed range (an `end` out of order, a wrong depth) finds nothing.
fn find_path(
    nodes: &[u8],
    data: &[u8],
    mut lo: usize,
    mut hi: usize,
    mut depth: u16,
    path: &str,
) -> Option<usize> {
    let mut segments = Segments::new(path).peekable();
    let mut found = None;
    while let Some(segment) = segments.next() {
        let i = find_key(nodes, data, lo, hi, depth, &segment)?;
        if segments.peek().is_some() {
            let node = read_node(nodes, i)?;
            if node.kind != abi::KIND_OBJECT {
                return None;
            }
            lo = i + 1;
            hi = node.end as usize;
            depth = depth.checked_add(1)?;
        }
        found = Some(i);
    }
    found
}

/// The last node among `lo..hi` at `depth` whose key is `key` (decoded).
fn find_key(
    nodes: &[u8],
    data: &[u8],
    lo: usize,
    hi: usize,
    depth: u16,
    key: &[u8],
) -> Option<usize> {
    let mut found = None;
    let mut children = Children::new(nodes, lo, hi, depth);
    while let Some((i, node)) = children.next_node() {
        if node.flags & abi::FLAG_NO_KEY != 0 {
            continue;
        }
        let written = region(data, node.key_start, node.key_len)?;
        if json::key_matches(written, node.flags & abi::FLAG_KEY_ESCAPED != 0, key) {
            found = Some(i);
        }
    }
    if children.malformed {
        return None;
    }
    found
}

/// Walks the direct children of a node: the nodes of `lo..hi` at `depth`, skipping subtrees
/// with `end`. Stops, setting `malformed`, at an `end` out of order or a wrong depth.
#[derive(Clone)]
struct Children<'a> {
    nodes: &'a [u8],
    at: usize,
    hi: usize,
    depth: u16,
    malformed: bool,
}

impl<'a> Children<'a> {
    fn new(nodes: &'a [u8], lo: usize, hi: usize, depth: u16) -> Self {
        Self {
            nodes,
            at: lo,
            hi,
            depth,
            malformed: false,
        }
    }

    fn next_node(&mut self) -> Option<(usize, RawNode)> {
        if self.at >= self.hi || self.malformed {
            return None;
        }
        let i = self.at;
        let node = read_node(self.nodes, i);
        match node {
            Some(n)
                if (n.end as usize) > i && (n.end as usize) <= self.hi && n.depth == self.depth =>
            {
                self.at = n.end as usize;
                Some((i, n))
            }
            _ => {
                self.malformed = true;
                None
            }
        }
    }
}

/// One JSON value of an event.
///
/// Cheap to copy: it borrows the batch. In a fully indexed batch an object or array value can
/// be walked ([`Value::get`], [`Value::members`], [`Value::elements`]); in a projected one it
/// is text only ([`Value::raw`]).
#[derive(Clone, Copy)]
pub struct Value<'a> {
    kind: Kind,
    escaped: bool,
    bytes: &'a [u8],
    nodes: &'a [u8],
    data: &'a [u8],
    /// The node range of the descendants (empty in projected mode) and their parent's depth.
    lo: usize,
    hi: usize,
    depth: u16,
}

impl core::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Value")
            .field("kind", &self.kind)
            .field(
                "raw",
                &core::str::from_utf8(self.bytes).unwrap_or("<not UTF-8>"),
            )
            .finish()
    }
}

impl<'a> Value<'a> {
    #[inline]
    fn from_node(
        node: RawNode,
        nodes: &'a [u8],
        data: &'a [u8],
        descendants: core::ops::Range<usize>,
    ) -> Option<Self> {
        let kind = match node.kind {
            abi::KIND_NULL => Kind::Null,
            abi::KIND_FALSE | abi::KIND_TRUE => Kind::Bool,
            abi::KIND_NUMBER => Kind::Number,
            abi::KIND_STRING => Kind::String,
            abi::KIND_OBJECT => Kind::Object,
            abi::KIND_ARRAY => Kind::Array,
            _ => return None,
        };
        let bytes = region(data, node.value_start, node.value_len)?;
        // A literal whose text is not the literal is a host bug; do not let `as_bool` disagree
        // with `raw`.
        let bytes = match node.kind {
            abi::KIND_TRUE if bytes != b"true" => return None,
            abi::KIND_FALSE if bytes != b"false" => return None,
            _ => bytes,
        };
        Some(Self {
            kind,
            escaped: node.flags & abi::FLAG_VALUE_ESCAPED != 0,
            bytes,
            nodes,
            data,
            lo: descendants.start,
            hi: descendants.end,
            depth: node.depth,
        })
    }

    /// The value's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The value's bytes as written: for a string, the text between the quotes with its
    /// escapes; for an object or array, the whole text with brackets; otherwise the literal or
    /// number text.
    pub fn raw(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether this string value contains backslash escapes (so [`Value::as_str`] allocates).
    pub fn is_escaped(&self) -> bool {
        self.escaped
    }

    /// The string, borrowed when it has no escapes, decoded otherwise. `None` when the value is
    /// not a string (or its escapes are invalid).
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        if self.kind != Kind::String {
            return None;
        }
        json::body_to_str(self.bytes, self.escaped)
    }

    /// Whether the value is the string `s`, compared after decoding, without allocating.
    #[inline]
    pub fn str_eq(&self, s: &str) -> bool {
        self.kind == Kind::String && json::key_matches(self.bytes, self.escaped, s.as_bytes())
    }

    /// The integer, when the value is a number written as an integer in the `i64` range.
    pub fn as_i64(&self) -> Option<i64> {
        if self.kind != Kind::Number {
            return None;
        }
        core::str::from_utf8(self.bytes).ok()?.parse().ok()
    }

    /// The number as an `f64`, when the value is a number.
    pub fn as_f64(&self) -> Option<f64> {
        if self.kind != Kind::Number {
            return None;
        }
        core::str::from_utf8(self.bytes).ok()?.parse().ok()
    }

    /// The boolean, when the value is `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        (self.kind == Kind::Bool).then(|| self.bytes == b"true")
    }

    /// Whether the value is `null`.
    pub fn is_null(&self) -> bool {
        self.kind == Kind::Null
    }

    /// The value at `path` inside this object (fully indexed batches only).
    pub fn get(&self, path: &str) -> Option<Value<'a>> {
        if self.kind != Kind::Object {
            return None;
        }
        let depth = self.depth.checked_add(1)?;
        let i = find_path(self.nodes, self.data, self.lo, self.hi, depth, path)?;
        let node = read_node(self.nodes, i)?;
        Value::from_node(node, self.nodes, self.data, i + 1..node.end as usize)
    }

    /// The members of this object, in order (fully indexed batches only; empty otherwise).
    pub fn members(&self) -> Members<'a> {
        let hi = if self.kind == Kind::Object {
            self.hi
        } else {
            self.lo
        };
        Members::new(
            self.nodes,
            self.data,
            self.lo,
            hi,
            self.depth.saturating_add(1),
        )
    }

    /// The elements of this array, in order (fully indexed batches only; empty otherwise).
    pub fn elements(&self) -> Elements<'a> {
        let hi = if self.kind == Kind::Array {
            self.hi
        } else {
            self.lo
        };
        Elements(Members::new(
            self.nodes,
            self.data,
            self.lo,
            hi,
            self.depth.saturating_add(1),
        ))
    }

    /// Appends the value as JSON text to `out`: the raw bytes, with quotes around a string.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        if self.kind == Kind::String {
            out.push(b'"');
            out.extend_from_slice(self.bytes);
            out.push(b'"');
        } else {
            out.extend_from_slice(self.bytes);
        }
    }
}

/// A member of an object: a key and a [`Value`].
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    key: &'a [u8],
    key_escaped: bool,
    value: Value<'a>,
}

impl<'a> Member<'a> {
    /// The key, borrowed when it has no escapes, decoded otherwise (`None` if they are invalid).
    pub fn key(&self) -> Option<Cow<'a, str>> {
        json::body_to_str(self.key, self.key_escaped)
    }

    /// The key as written, escapes included.
    pub fn raw_key(&self) -> &'a [u8] {
        self.key
    }

    /// Whether the key is `key`, compared after decoding, without allocating.
    pub fn key_eq(&self, key: &str) -> bool {
        json::key_matches(self.key, self.key_escaped, key.as_bytes())
    }

    /// The value.
    pub fn value(&self) -> Value<'a> {
        self.value
    }
}

/// Iterator over the members of an object; see [`Event::members`] and [`Value::members`].
#[derive(Clone)]
pub struct Members<'a> {
    children: Children<'a>,
    data: &'a [u8],
}

impl<'a> Members<'a> {
    fn new(nodes: &'a [u8], data: &'a [u8], lo: usize, hi: usize, depth: u16) -> Self {
        Self {
            children: Children::new(nodes, lo, hi, depth),
            data,
        }
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = Member<'a>;

    fn next(&mut self) -> Option<Member<'a>> {
        let (i, node) = self.children.next_node()?;
        let key = if node.flags & abi::FLAG_NO_KEY != 0 {
            &[][..]
        } else {
            region(self.data, node.key_start, node.key_len)?
        };
        let value = Value::from_node(
            node,
            self.children.nodes,
            self.data,
            i + 1..node.end as usize,
        )?;
        Some(Member {
            key,
            key_escaped: node.flags & abi::FLAG_KEY_ESCAPED != 0,
            value,
        })
    }
}

/// Iterator over the elements of an array; see [`Value::elements`].
#[derive(Clone)]
pub struct Elements<'a>(Members<'a>);

impl<'a> Iterator for Elements<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        self.0.next().map(|m| m.value)
    }
}
