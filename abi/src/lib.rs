//! The sluicebox filter ABI, version 1: every constant and memory layout that the host and a
//! guest must agree on, in one `no_std` crate that both sides compile, so the two cannot drift.
//!
//! `docs/abi.md` is the normative description; this crate is its machine-checked twin. All
//! multi-byte integers are little-endian (wasm's own order), all structs are 4-byte aligned,
//! and all pointers are offsets into the guest's exported `memory`.
//!
//! The shape of one call:
//! 1. the host writes a [`BatchHeader`], an [`EventEntry`] table, a [`Node`] table and a data
//!    region into a buffer it got from the guest's `sluicebox_alloc`;
//! 2. the host calls `sluicebox_filter(header_ptr)`, once for the whole batch;
//! 3. the guest writes one verdict byte per event and, optionally, a stream of [`RecordHeader`]
//!    records (edits, new events, failures, routes), stores their pointers in the header's
//!    output fields and returns [`STATUS_OK`] or a negative [`ErrorCode`].
#![no_std]

/// The ABI version this crate describes. A guest's `sluicebox_abi_version` export must return it.
pub const ABI_VERSION: u32 = 1;
/// Every ABI version the host speaks.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// Export names. A module must export [`EXPORT_MEMORY`], [`EXPORT_ABI_VERSION`],
/// [`EXPORT_ALLOC`] and [`EXPORT_FILTER`]; the others are optional.
pub const EXPORT_MEMORY: &str = "memory";
/// `() -> i32`: returns the ABI version the module speaks.
pub const EXPORT_ABI_VERSION: &str = "sluicebox_abi_version";
/// `(size: i32, align: i32) -> i32`: returns a pointer to `size` writable bytes aligned to
/// `align`, or 0 when out of memory. The host never frees what it allocates.
pub const EXPORT_ALLOC: &str = "sluicebox_alloc";
/// `(init_ptr: i32) -> i32` (optional): called once per instance with an [`InitBlock`].
pub const EXPORT_INIT: &str = "sluicebox_init";
/// `() -> i32` (optional): returns a pointer to a [`FieldsDecl`]; called after init.
pub const EXPORT_FIELDS: &str = "sluicebox_fields";
/// `(header_ptr: i32) -> i32`: filters one batch; returns [`STATUS_OK`] or a negative [`ErrorCode`].
pub const EXPORT_FILTER: &str = "sluicebox_filter";
/// `()` (optional): WASI reactors' initializer, called first when present (Go, C with libc).
pub const EXPORT_WASI_INITIALIZE: &str = "_initialize";

/// Import module of the host functions.
pub const IMPORT_MODULE: &str = "sluicebox";
/// `(level: i32, ptr: i32, len: i32)`: log a UTF-8 message; levels are [`LogLevel`]. Rate-limited.
pub const IMPORT_LOG: &str = "log";

/// Return value of `sluicebox_init` and `sluicebox_filter` on success.
pub const STATUS_OK: i32 = 0;

/// Negative status codes a guest returns from `sluicebox_init` or `sluicebox_filter`.
/// A message may accompany any of them through the block's `message_ptr`/`message_len`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Something failed; the message says what.
    Failed = -1,
    /// The configuration (init parameters) was rejected.
    BadConfig = -2,
    /// The guest could not allocate memory.
    OutOfMemory = -3,
    /// The input did not match what the guest expected (e.g. wrong ABI layout).
    BadInput = -4,
    /// The guest does not support something the host asked for.
    Unsupported = -5,
}

impl ErrorCode {
    /// The code for a raw status, if it is one of the defined codes.
    pub fn from_i32(code: i32) -> Option<Self> {
        Some(match code {
            -1 => Self::Failed,
            -2 => Self::BadConfig,
            -3 => Self::OutOfMemory,
            -4 => Self::BadInput,
            -5 => Self::Unsupported,
            _ => return None,
        })
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::BadConfig => "bad config",
            Self::OutOfMemory => "out of memory",
            Self::BadInput => "bad input",
            Self::Unsupported => "unsupported",
        }
    }
}

/// Levels of the `sluicebox.log` import.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Routed to `tracing::error!`.
    Error = 0,
    /// Routed to `tracing::warn!`.
    Warn = 1,
    /// Routed to `tracing::info!`.
    Info = 2,
    /// Routed to `tracing::debug!`.
    Debug = 3,
}

/// Passed to `sluicebox_init`. 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitBlock {
    /// In: [`ABI_VERSION`].
    pub abi_version: u32,
    /// In: pointer to the parameters, a UTF-8 JSON object whose values are strings.
    pub params_ptr: u32,
    /// In: byte length of the parameters.
    pub params_len: u32,
    /// Out: pointer to a UTF-8 message explaining a negative status.
    pub message_ptr: u32,
    /// Out: byte length of that message.
    pub message_len: u32,
}

/// What `sluicebox_fields` returns a pointer to. 12 bytes.
///
/// `paths` is a list of field paths separated by `\n` (see [`path syntax`](crate#path-syntax)).
/// The host then builds a *projected* index: exactly one [`Node`] per path per event, in the
/// declared order. An empty list means the module reads no fields, and no index is built.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldsDecl {
    /// Pointer to the `\n`-separated paths.
    pub paths_ptr: u32,
    /// Byte length of the paths.
    pub paths_len: u32,
    /// [`FIELDS_RAW`] when the guest also wants each event's raw bytes in the data region.
    pub flags: u32,
}

/// [`FieldsDecl::flags`]: copy every event's raw bytes into the data region as well.
pub const FIELDS_RAW: u32 = 1;
/// Most paths one module may declare.
pub const MAX_FIELDS: usize = 256;

/// At `header_ptr` when `sluicebox_filter` is called. 64 bytes. Offsets 0..36 are written by
/// the host; offsets 36..56 are written by the guest before it returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchHeader {
    /// In: [`ABI_VERSION`].
    pub abi_version: u32,
    /// In: number of events in this batch (n).
    pub event_count: u32,
    /// In: pointer to `[EventEntry; n]`.
    pub events_ptr: u32,
    /// In: pointer to the node table.
    pub nodes_ptr: u32,
    /// In: total number of nodes.
    pub node_count: u32,
    /// In: pointer to the data region. Every offset in [`EventEntry`] and [`Node`] is relative to it.
    pub data_ptr: u32,
    /// In: byte length of the data region.
    pub data_len: u32,
    /// In: [`BATCH_PROJECTED`], [`BATCH_RAW`].
    pub flags: u32,
    /// In: the number of declared paths (projected mode), else 0.
    pub field_count: u32,
    /// Out: pointer to `[u8; n]` verdicts ([`Verdict`]), or 0 for "keep every event".
    pub verdicts_ptr: u32,
    /// Out: pointer to the record stream, or 0 for none.
    pub records_ptr: u32,
    /// Out: byte length of the record stream.
    pub records_len: u32,
    /// Out: pointer to a UTF-8 message explaining a negative status.
    pub message_ptr: u32,
    /// Out: byte length of that message.
    pub message_len: u32,
    /// Reserved, zero.
    pub reserved: [u32; 2],
}

/// [`BatchHeader::flags`]: the node table is projected (fixed stride of `field_count`).
pub const BATCH_PROJECTED: u32 = 1;
/// [`BatchHeader::flags`]: the data region holds each event's raw bytes.
pub const BATCH_RAW: u32 = 2;

/// Byte offset of [`BatchHeader::verdicts_ptr`], for guests that write fields by offset.
pub const HEADER_OUT_OFFSET: u32 = 36;

/// One per event. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventEntry {
    /// Offset of the event's raw bytes in the data region (0 when the batch has no raw bytes).
    pub raw_start: u32,
    /// Length of the event's raw bytes (0 when the batch has no raw bytes).
    pub raw_len: u32,
    /// Index of the event's first node in the node table.
    pub node_start: u32,
    /// Number of nodes that belong to the event.
    pub node_count: u32,
}

/// One indexed JSON value. 24 bytes.
///
/// In projected mode the nodes of event `i` are `nodes[i*F .. (i+1)*F]`, one per declared path
/// in declared order, with `kind == KIND_MISSING` where the path is absent; key fields are 0.
/// In full mode they are every value below the top-level object, depth first: each member of
/// the top-level object has depth 0, its children depth 1, and so on. Array elements have
/// `key_len == 0` and `FLAG_NO_KEY`. `end` is the index, relative to the event's first node,
/// one past the node's last descendant, so a guest skips a subtree with `i = node.end`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// Offset of the key's bytes (inside its quotes) in the data region.
    pub key_start: u32,
    /// Length of the key's bytes, as written (escapes not decoded).
    pub key_len: u32,
    /// Offset of the value's bytes in the data region. For strings: inside the quotes.
    pub value_start: u32,
    /// Length of the value's bytes. For strings: without the quotes, escapes not decoded.
    /// For objects and arrays: the whole text including brackets.
    pub value_len: u32,
    /// One of the `KIND_*` constants.
    pub kind: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Nesting depth (full mode); 0 in projected mode.
    pub depth: u16,
    /// Full mode: one past the subtree, relative to the event's first node. Projected mode: 0.
    pub end: u32,
}

/// The path is absent (projected mode only).
pub const KIND_MISSING: u8 = 0;
/// `null`.
pub const KIND_NULL: u8 = 1;
/// `false`.
pub const KIND_FALSE: u8 = 2;
/// `true`.
pub const KIND_TRUE: u8 = 3;
/// A number; the value bytes are its text as written.
pub const KIND_NUMBER: u8 = 4;
/// A string; the value bytes are the text between the quotes.
pub const KIND_STRING: u8 = 5;
/// An object; the value bytes are its whole text.
pub const KIND_OBJECT: u8 = 6;
/// An array; the value bytes are its whole text.
pub const KIND_ARRAY: u8 = 7;

/// [`Node::flags`]: the string value contains backslash escapes and must be unescaped to read it.
pub const FLAG_VALUE_ESCAPED: u8 = 1;
/// [`Node::flags`]: the key contains backslash escapes.
pub const FLAG_KEY_ESCAPED: u8 = 2;
/// [`Node::flags`]: the node is an array element and has no key.
pub const FLAG_NO_KEY: u8 = 4;

/// Verdict bytes, one per event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The event leaves unchanged, byte for byte. Only `ROUTE` records may name it.
    Keep = 0,
    /// The event is filtered out on purpose. No record may name it.
    Drop = 1,
    /// The event's `SET`/`REMOVE`/`RENAME` records are applied in order (`ROUTE` allowed too).
    /// An `Edit` event with no records leaves unchanged.
    Edit = 2,
    /// The event is replaced by the events of its `EMIT` records, in order: zero (filtered
    /// out), one (a replacement) or more (flat map). `ROUTE` allowed too.
    Replace = 3,
    /// The event is dead-lettered with the reason in its `FAIL` record (optional).
    Fail = 4,
}

impl Verdict {
    /// The verdict for a raw byte, if it is one.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Keep,
            1 => Self::Drop,
            2 => Self::Edit,
            3 => Self::Replace,
            4 => Self::Fail,
            _ => return None,
        })
    }
}

/// The fixed part of one record in the record stream. 16 bytes, followed by `a_len` bytes of
/// operand A, then `b_len` bytes of operand B, then zero to three bytes of padding so that the
/// next record starts at a multiple of 4 from the stream's start. Records name events in
/// non-decreasing order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// Index of the event in this batch.
    pub event: u32,
    /// One of the `OP_*` constants.
    pub op: u8,
    /// Reserved, zero.
    pub reserved: [u8; 3],
    /// Length of operand A.
    pub a_len: u32,
    /// Length of operand B.
    pub b_len: u32,
}

/// Size of [`RecordHeader`].
pub const RECORD_HEADER_LEN: usize = 16;

/// `SET`: A = path, B = a JSON value. Creates missing parent objects.
pub const OP_SET: u8 = 1;
/// `REMOVE`: A = path, B empty. Removing an absent path is not an error.
pub const OP_REMOVE: u8 = 2;
/// `RENAME`: A = source path, B = destination path. A missing source is not an error.
pub const OP_RENAME: u8 = 3;
/// `EMIT`: A empty, B = a JSON object: one output event of a `Replace` verdict.
pub const OP_EMIT: u8 = 4;
/// `FAIL`: A empty, B = the UTF-8 reason of a `Fail` verdict.
pub const OP_FAIL: u8 = 5;
/// `ROUTE`: A = UTF-8 name of the output the event goes to, B empty.
pub const OP_ROUTE: u8 = 6;

/// Rounds `n` up to the next multiple of 4.
pub const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

// Compile-time checks that the layouts are the sizes docs/abi.md states.
const _: () = assert!(core::mem::size_of::<InitBlock>() == 20);
const _: () = assert!(core::mem::size_of::<FieldsDecl>() == 12);
const _: () = assert!(core::mem::size_of::<BatchHeader>() == 64);
const _: () = assert!(core::mem::size_of::<EventEntry>() == 16);
const _: () = assert!(core::mem::size_of::<Node>() == 24);
const _: () = assert!(core::mem::size_of::<RecordHeader>() == RECORD_HEADER_LEN);
const _: () =
    assert!(core::mem::offset_of!(BatchHeader, verdicts_ptr) == HEADER_OUT_OFFSET as usize);

/// # Path syntax
///
/// A path names a field by its keys from the top-level object, separated by `.`: `level`,
/// `http.method`. A key that contains `.` or `\` writes them as `\.` and `\\`. Array elements
/// are not addressable in v1. Keys compare after JSON unescaping, so `"le\u0076el"` matches
/// `level`. When an object repeats a key, the last occurrence wins (as in serde_json,
/// JavaScript and Python).
pub mod path_syntax {}

/// `a == b` without a call to `memcmp`: eight bytes per step. Host and guests compare short
/// keys and paths, where the call costs more than the compare (on wasm32, `memcmp` is a
/// byte-at-a-time loop in compiler-builtins). Shared here so both sides use one version.
#[inline]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    while let (Some((x, ra)), Some((y, rb))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if u64::from_ne_bytes(*x) != u64::from_ne_bytes(*y) {
            return false;
        }
        (a, b) = (ra, rb);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}
