//! Write sluicebox filters in Zig: a plain function plus one `comptime` export call becomes a
//! WebAssembly module that speaks the sluicebox filter ABI v1 (`abi/src/lib.rs`).
//!
//! ```zig
//! const sb = @import("sluicebox");
//!
//! /// True keeps the event.
//! fn dropDebug(e: *const sb.Event) bool {
//!     const level = e.get("level") orelse return true;
//!     return !level.strEq("DEBUG");
//! }
//!
//! comptime {
//!     sb.exportFilter(dropDebug, .{ .fields = &.{"level"} });
//! }
//! ```
//!
//! Build (this file is the `sluicebox` module of the build):
//!
//! ```sh
//! zig build-exe -target wasm32-freestanding -fno-entry -rdynamic -O ReleaseSmall \
//!     --dep sluicebox -Mroot=drop_debug.zig -Msluicebox=sluicebox.zig -femit-bin=drop_debug.wasm
//! ```
//!
//! # Concepts
//!
//! * One filter per module: `exportFilter(f, opts)` with `f: fn (*const Event) bool` (true keeps;
//!   may also return `!bool`), `exportMap(f, opts)` with `f: fn (*const Event, *Edits) !void`, or
//!   `exportFlatMap(f, opts)` with `f: fn (*const Event, *Emitter) !void`; optionally
//!   `exportInit(f)` with `f: fn (*const Params) !void`. An error returned by `f` dead-letters
//!   the event with the error's name as reason (`error.OutOfMemory` fails the whole batch); from
//!   init it rejects the configuration (`Params.reject` sets a message).
//! * `Options.fields` asks the host for a projected index: one node per path per event, much
//!   cheaper than a full index. Without it every event is fully indexed and comes with its raw
//!   bytes; `Options.raw` asks for raw bytes along with the fields.
//! * Paths: keys separated by `.` (`http.method`); a `.` or `\` inside a key is written `\.` or
//!   `\\`. Keys compare after JSON unescaping; when an object repeats a key, the last one wins.
//!   In a projected module only the declared paths can be looked up, compared as text.
//! * `Event` and `Value` are views into the host's batch: nothing is copied, every offset the
//!   host hands over is checked before it is read, and they are valid only during the call.
//! * `Edits` / `Emitter` append records to one buffer reused for every batch; the verdict
//!   follows from the calls.
//! * Memory: `allocator` (std.heap.wasm_allocator) backs the SDK's buffers and the exported
//!   `sluicebox_alloc`. The steady state allocates nothing.
const std = @import("std");
const builtin = @import("builtin");

/// Whether this is the module build. Natively (`zig test`) the `export*` functions export
/// nothing and `testing` runs a filter over JSON text instead.
const is_wasm = builtin.cpu.arch == .wasm32;

/// The allocator behind the SDK and `sluicebox_alloc`; guests may use it too. (Natively, for
/// tests: the page allocator.)
pub const allocator = if (is_wasm) std.heap.wasm_allocator else std.heap.page_allocator;

// ---- ABI v1 (abi/src/lib.rs is the contract) -------------------------------------------------

pub const abi_version: u32 = 1;

/// Status codes of `sluicebox_init` / `sluicebox_filter`.
pub const Status = enum(i32) {
    ok = 0,
    failed = -1,
    bad_config = -2,
    out_of_memory = -3,
    bad_input = -4,
    unsupported = -5,
};

/// The verdict of one event.
pub const Verdict = enum(u8) { keep = 0, drop = 1, edit = 2, replace = 3, fail = 4 };

/// The kind of a JSON value; the numbers are the ABI's node kinds.
pub const Kind = enum(u8) {
    null = 1,
    false = 2,
    true = 3,
    /// The bytes are the number's text as written.
    number = 4,
    /// The bytes are the text between the quotes, escapes not decoded.
    string = 5,
    /// The bytes are the whole text, brackets included.
    object = 6,
    array = 7,
};

pub const LogLevel = enum(i32) { err = 0, warn = 1, info = 2, debug = 3 };

const node_len = 24;
const entry_len = 16;
const header_len = 64;
const header_out = 36;
const batch_projected = 1;
const batch_raw = 2;
const fields_raw = 1;
const flag_value_escaped = 1;
const flag_key_escaped = 2;
const flag_no_key = 4;

const op_set = 1;
const op_remove = 2;
const op_rename = 3;
const op_emit = 4;
const op_fail = 5;
const op_route = 6;

pub const Error = error{OutOfMemory};

// ---- Memory ----------------------------------------------------------------------------------

/// The `len` bytes at `ptr` when they are all inside linear memory (and `ptr` is not 0).
fn slice(ptr: u32, len: u64) ?[]const u8 {
    if (len == 0) return &.{};
    const size: u64 = @as(u64, @wasmMemorySize(0)) * 65536;
    if (ptr == 0 or @as(u64, ptr) + len > size) return null;
    const p: [*]const u8 = @ptrFromInt(ptr);
    return p[0..@intCast(len)];
}

fn rd32(b: []const u8, at: usize) u32 {
    return std.mem.readInt(u32, b[at..][0..4], .little);
}

fn addr(p: anytype) u32 {
    return @intCast(@intFromPtr(p));
}

// ---- JSON strings ----------------------------------------------------------------------------

/// Decodes the escape at `s[0] == '\\'` into UTF-8 in `out`: (bytes used, bytes written), or
/// null when it is invalid. A surrogate pair combines; a lone surrogate decodes to U+FFFD.
fn decodeEscape(s: []const u8, out: *[4]u8) ?struct { usize, usize } {
    if (s.len < 2) return null;
    const ch: u21 = switch (s[1]) {
        '"' => '"',
        '\\' => '\\',
        '/' => '/',
        'b' => 8,
        'f' => 12,
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'u' => {
            const hi = hex4(s[2..]) orelse return null;
            var used: usize = 6;
            var cp: u21 = undefined;
            if (hi >= 0xD800 and hi <= 0xDBFF) {
                const lo: ?u16 = if (s.len >= 12 and s[6] == '\\' and s[7] == 'u') hex4(s[8..]) else null;
                if (lo != null and lo.? >= 0xDC00 and lo.? <= 0xDFFF) {
                    cp = 0x10000 + ((@as(u21, hi) - 0xD800) << 10) + (lo.? - 0xDC00);
                    used = 12;
                } else cp = 0xFFFD;
            } else if (hi >= 0xDC00 and hi <= 0xDFFF) {
                cp = 0xFFFD;
            } else cp = hi;
            return .{ used, std.unicode.utf8Encode(cp, out) catch unreachable };
        },
        else => return null,
    };
    return .{ 2, std.unicode.utf8Encode(ch, out) catch unreachable };
}

fn hex4(s: []const u8) ?u16 {
    if (s.len < 4) return null;
    var v: u16 = 0;
    for (s[0..4]) |c| v = v * 16 + (std.fmt.charToDigit(c, 16) catch return null);
    return v;
}

/// Whether the string body `s` (escapes decoded when `escaped`) equals `want`; in path form,
/// `\.` and `\\` in `want` stand for `.` and `\`.
fn bodyEql(s: []const u8, escaped: bool, want: []const u8, path_form: bool) bool {
    var i: usize = 0;
    var j: usize = 0;
    while (i < s.len) {
        var buf: [4]u8 = undefined;
        var got: []const u8 = s[i .. i + 1];
        if (escaped and s[i] == '\\') {
            const used, const n = decodeEscape(s[i..], &buf) orelse return false;
            got = buf[0..n];
            i += used;
        } else i += 1;
        for (got) |c| {
            if (j >= want.len) return false;
            var w = want[j];
            j += 1;
            if (path_form and w == '\\' and j < want.len) {
                w = want[j];
                j += 1;
            }
            if (c != w) return false;
        }
    }
    return j == want.len;
}

/// Appends `s` to `out` as a JSON string, quotes included.
fn writeString(out: *std.ArrayList(u8), s: []const u8) Error!void {
    const hex = "0123456789abcdef";
    try out.ensureUnusedCapacity(allocator, s.len * 6 + 2);
    out.appendAssumeCapacity('"');
    for (s) |c| {
        const short: u8 = switch (c) {
            '"' => '"',
            '\\' => '\\',
            '\n' => 'n',
            '\r' => 'r',
            '\t' => 't',
            8 => 'b',
            12 => 'f',
            else => 0,
        };
        if (short != 0) {
            out.appendSliceAssumeCapacity(&.{ '\\', short });
        } else if (c < 0x20) {
            out.appendSliceAssumeCapacity(&.{ '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] });
        } else out.appendAssumeCapacity(c);
    }
    out.appendAssumeCapacity('"');
}

// ---- Events ----------------------------------------------------------------------------------

const Node = struct {
    key_start: u32,
    key_len: u32,
    value_start: u32,
    value_len: u32,
    kind: u8,
    flags: u8,
    depth: u16,
    end: u32,

    fn read(nodes: []const u8, i: usize) ?Node {
        if (i >= nodes.len / node_len) return null;
        const b = nodes[i * node_len ..][0..node_len];
        return .{
            .key_start = rd32(b, 0),
            .key_len = rd32(b, 4),
            .value_start = rd32(b, 8),
            .value_len = rd32(b, 12),
            .kind = b[16],
            .flags = b[17],
            .depth = std.mem.readInt(u16, b[18..20], .little),
            .end = rd32(b, 20),
        };
    }
};

fn region(data: []const u8, start: u32, len: u32) ?[]const u8 {
    if (@as(u64, start) + len > data.len) return null;
    return data[start..][0..len];
}

/// One event of the batch. Valid only during the call.
pub const Event = struct {
    /// Position in the batch.
    index: u32,
    nodes: []const u8,
    data: []const u8,
    /// The event's JSON text as it arrived, when the batch carries raw bytes.
    raw: ?[]const u8,
    /// The declared paths when the batch is projected.
    declared: ?[]const []const u8,

    /// The value at `path`, or null when the event does not have it (or, in a projected
    /// module, when `path` is not declared).
    pub fn get(self: *const Event, path: []const u8) ?Value {
        if (self.declared) |declared| {
            for (declared, 0..) |p, i| {
                if (std.mem.eql(u8, p, path)) return Value.fromNode(Node.read(self.nodes, i) orelse return null, self, 0, 0);
            }
            return null;
        }
        return findPath(self, 0, self.nodes.len / node_len, 0, path);
    }

    /// The string at `path`, decoded into `buf` when it has escapes (see `Value.asStr`).
    pub fn str(self: *const Event, path: []const u8, buf: []u8) ?[]const u8 {
        return (self.get(path) orelse return null).asStr(buf);
    }

    /// Whether `path` holds the string `s` (compared after decoding).
    pub fn strEq(self: *const Event, path: []const u8, s: []const u8) bool {
        return (self.get(path) orelse return false).strEq(s);
    }

    pub fn getI64(self: *const Event, path: []const u8) ?i64 {
        return (self.get(path) orelse return null).asI64();
    }

    pub fn getF64(self: *const Event, path: []const u8) ?f64 {
        return (self.get(path) orelse return null).asF64();
    }

    pub fn getBool(self: *const Event, path: []const u8) ?bool {
        return (self.get(path) orelse return null).asBool();
    }

    /// Whether `path` holds `null` (a missing path is not null).
    pub fn isNull(self: *const Event, path: []const u8) bool {
        return (self.get(path) orelse return false).kind == .null;
    }

    /// Whether the event has `path`, whatever its value.
    pub fn has(self: *const Event, path: []const u8) bool {
        return self.get(path) != null;
    }
};

/// Finds `path` among the nodes `lo..hi` at `depth` of a fully indexed event.
fn findPath(e: *const Event, lo_: usize, hi_: usize, depth_: u16, path: []const u8) ?Value {
    var lo = lo_;
    var hi = hi_;
    var depth = depth_;
    var at: usize = 0;
    while (true) {
        // One segment: up to an unescaped `.`. `\x` stands for `x` (so `\.` is a dot in a key
        // and `\\` a backslash); a `\` that ends the path stands for itself (docs/abi.md 10).
        var end = at;
        while (end < path.len and path[end] != '.') : (end += 1) {
            if (path[end] == '\\' and end + 1 < path.len) end += 1;
        }
        const i = findKey(e, lo, hi, depth, path[at..end]) orelse return null;
        const n = Node.read(e.nodes, i) orelse return null;
        if (end >= path.len) return Value.fromNode(n, e, i + 1, n.end);
        if (n.kind != @intFromEnum(Kind.object) or depth == std.math.maxInt(u16)) return null;
        lo = i + 1;
        hi = n.end;
        depth += 1;
        at = end + 1;
    }
}

/// The last node among `lo..hi` at `depth` whose key is `key` (path form); null when there is
/// none or the range is malformed (an `end` out of order, a wrong depth).
fn findKey(e: *const Event, lo: usize, hi: usize, depth: u16, key: []const u8) ?usize {
    var found: ?usize = null;
    var i = lo;
    while (i < hi) {
        const n = Node.read(e.nodes, i) orelse return null;
        if (n.end <= i or n.end > hi or n.depth != depth) return null;
        if (n.flags & flag_no_key == 0) {
            const k = region(e.data, n.key_start, n.key_len) orelse return null;
            if (bodyEql(k, n.flags & flag_key_escaped != 0, key, true)) found = i;
        }
        i = n.end;
    }
    return found;
}

/// One JSON value of an event. A view, valid only during the call.
pub const Value = struct {
    kind: Kind,
    /// A string with backslash escapes (`str` decodes them).
    escaped: bool,
    /// The value's bytes as written (see `Kind`).
    bytes: []const u8,
    event: *const Event,
    depth: u16,
    lo: usize,
    hi: usize,

    fn fromNode(n: Node, e: *const Event, lo: usize, hi: usize) ?Value {
        if (n.kind < 1 or n.kind > 7) return null;
        const bytes = region(e.data, n.value_start, n.value_len) orelse return null;
        const kind: Kind = @enumFromInt(n.kind);
        // A literal whose text is not the literal is a host bug: `boolean` must agree with it.
        if (kind == .true and !std.mem.eql(u8, bytes, "true")) return null;
        if (kind == .false and !std.mem.eql(u8, bytes, "false")) return null;
        return .{
            .kind = kind,
            .escaped = n.flags & flag_value_escaped != 0,
            .bytes = bytes,
            .event = e,
            .depth = n.depth,
            .lo = lo,
            .hi = @max(lo, hi),
        };
    }

    /// Whether the value is the string `s`, compared after decoding, without copying.
    pub fn strEq(self: Value, s: []const u8) bool {
        return self.kind == .string and bodyEql(self.bytes, self.escaped, s, false);
    }

    /// The string: its bytes when it has no escapes, else decoded into `buf`. Null when the
    /// value is not a string, has an invalid escape or does not fit (`bytes.len` always fits).
    pub fn asStr(self: Value, buf: []u8) ?[]const u8 {
        if (self.kind != .string) return null;
        if (!self.escaped) return self.bytes;
        var o: usize = 0;
        var i: usize = 0;
        while (i < self.bytes.len) {
            var tmp: [4]u8 = undefined;
            var got: []const u8 = self.bytes[i .. i + 1];
            if (self.bytes[i] == '\\') {
                const used, const n = decodeEscape(self.bytes[i..], &tmp) orelse return null;
                got = tmp[0..n];
                i += used;
            } else i += 1;
            if (o + got.len > buf.len) return null;
            @memcpy(buf[o..][0..got.len], got);
            o += got.len;
        }
        return buf[0..o];
    }

    /// The string decoded into new memory from `gpa` (the caller frees it).
    pub fn asStrAlloc(self: Value, gpa: std.mem.Allocator) Error!?[]u8 {
        if (self.kind != .string) return null;
        const buf = try gpa.alloc(u8, self.bytes.len);
        const s = self.asStr(buf) orelse {
            gpa.free(buf);
            return null;
        };
        if (s.ptr != buf.ptr) @memcpy(buf[0..s.len], s);
        return gpa.realloc(buf, s.len) catch buf[0..s.len];
    }

    /// The integer, when the value is a number written as an integer in the `i64` range.
    pub fn asI64(self: Value) ?i64 {
        if (self.kind != .number) return null;
        for (self.bytes, 0..) |c, i| {
            if (!(std.ascii.isDigit(c) or (i == 0 and (c == '-' or c == '+')))) return null;
        }
        return std.fmt.parseInt(i64, self.bytes, 10) catch null;
    }

    /// The number as an `f64` (correctly rounded).
    pub fn asF64(self: Value) ?f64 {
        if (self.kind != .number) return null;
        return std.fmt.parseFloat(f64, self.bytes) catch null;
    }

    /// The boolean, when the value is `true` or `false`.
    pub fn asBool(self: Value) ?bool {
        return switch (self.kind) {
            .true => true,
            .false => false,
            else => null,
        };
    }

    /// The value at `path` inside this object (fully indexed batches only).
    pub fn get(self: Value, path: []const u8) ?Value {
        if (self.kind != .object or self.lo >= self.hi or self.depth == std.math.maxInt(u16)) return null;
        return findPath(self.event, self.lo, self.hi, self.depth + 1, path);
    }
};

// ---- Edits -----------------------------------------------------------------------------------

/// The changes a map filter makes to one event.
///
/// Every call appends one record. No call keeps the event as it is; `set*`/`remove`/`rename`
/// edit it; `discard` drops it and `fail` dead-letters it: after those two the event's other
/// records are withdrawn and later calls are ignored. `route` sends the event to a named
/// output. The host applies the records in order.
pub const Edits = struct {
    /// The record stream of the whole batch.
    buf: std.ArrayList(u8) = .empty,
    event: u32 = 0,
    /// Where the current event's records start.
    start: usize = 0,
    verdict: Verdict = .keep,

    fn live(self: *const Edits) bool {
        return self.verdict != .drop and self.verdict != .fail;
    }

    fn begin(self: *Edits, event: u32, verdict: Verdict) void {
        self.event = event;
        self.start = self.buf.items.len;
        self.verdict = verdict;
    }

    /// Appends a record whose operand B is `b` as is, or escaped as a JSON string.
    fn push(self: *Edits, op: u8, a: []const u8, b: []const u8, how: enum { bytes, string, quoted }) Error!void {
        const out = &self.buf;
        const header = out.items.len;
        try out.ensureUnusedCapacity(allocator, 16 + a.len + b.len + 5);
        var h: [16]u8 = @splat(0);
        std.mem.writeInt(u32, h[0..4], self.event, .little);
        h[4] = op;
        std.mem.writeInt(u32, h[8..12], @intCast(a.len), .little);
        out.appendSliceAssumeCapacity(&h);
        out.appendSliceAssumeCapacity(a);
        const b_start = out.items.len;
        switch (how) {
            .bytes => out.appendSliceAssumeCapacity(b),
            .quoted => {
                out.appendAssumeCapacity('"');
                out.appendSliceAssumeCapacity(b);
                out.appendAssumeCapacity('"');
            },
            .string => writeString(out, b) catch |err| {
                out.shrinkRetainingCapacity(header);
                return err;
            },
        }
        std.mem.writeInt(u32, out.items[header + 12 ..][0..4], @intCast(out.items.len - b_start), .little);
        try out.appendNTimes(allocator, 0, (4 - out.items.len % 4) % 4);
    }

    fn edit(self: *Edits, op: u8, a: []const u8, b: []const u8, quoted: bool) Error!void {
        if (!self.live()) return;
        try self.push(op, a, b, if (quoted) .string else .bytes);
        if (self.verdict == .keep) self.verdict = .edit;
    }

    /// Sets `path` to `json`, the text of one JSON value (`"\"x\""`, `42`, `{"a":1}`).
    pub fn set(self: *Edits, path: []const u8, json: []const u8) Error!void {
        return self.edit(op_set, path, json, false);
    }

    /// Sets `path` to the string `s` (escaped here).
    pub fn setStr(self: *Edits, path: []const u8, s: []const u8) Error!void {
        return self.edit(op_set, path, s, true);
    }

    pub fn setI64(self: *Edits, path: []const u8, value: i64) Error!void {
        var buf: [20]u8 = undefined;
        return self.set(path, std.fmt.bufPrint(&buf, "{d}", .{value}) catch unreachable);
    }

    pub fn setBool(self: *Edits, path: []const u8, value: bool) Error!void {
        return self.set(path, if (value) "true" else "false");
    }

    /// Sets `path` to a copy of `value` (of any event of the batch).
    pub fn setValue(self: *Edits, path: []const u8, value: Value) Error!void {
        if (!self.live()) return;
        try self.push(op_set, path, value.bytes, if (value.kind == .string) .quoted else .bytes);
        if (self.verdict == .keep) self.verdict = .edit;
    }

    /// Removes `path` (an absent path is not an error).
    pub fn remove(self: *Edits, path: []const u8) Error!void {
        return self.edit(op_remove, path, "", false);
    }

    /// Moves the value at `from` to `to` (a missing `from` is not an error).
    pub fn rename(self: *Edits, from: []const u8, to: []const u8) Error!void {
        return self.edit(op_rename, from, to, false);
    }

    /// Sends the event to the output named `name`.
    pub fn route(self: *Edits, name: []const u8) Error!void {
        if (self.live()) try self.push(op_route, name, "", .bytes);
    }

    /// Drops the event.
    pub fn discard(self: *Edits) void {
        if (!self.live()) return;
        self.buf.shrinkRetainingCapacity(self.start);
        self.verdict = .drop;
    }

    /// Dead-letters the event with `reason`.
    pub fn fail(self: *Edits, reason: []const u8) Error!void {
        if (self.verdict == .fail) return;
        self.buf.shrinkRetainingCapacity(self.start);
        self.verdict = .fail;
        try self.push(op_fail, "", reason, .bytes);
    }
};

/// The events a flat-map filter makes of one event, which they replace: none filters it out,
/// one replaces it, more split it. `fail` dead-letters it and withdraws what it emitted.
pub const Emitter = struct {
    edits: Edits = .{ .verdict = .replace },
    /// Events emitted for the current event.
    count: u32 = 0,

    /// Emits `json`, the text of one JSON object.
    pub fn emit(self: *Emitter, json: []const u8) Error!void {
        if (!self.edits.live()) return;
        try self.edits.push(op_emit, "", json, .bytes);
        self.count += 1;
    }

    pub fn route(self: *Emitter, name: []const u8) Error!void {
        return self.edits.route(name);
    }

    pub fn fail(self: *Emitter, reason: []const u8) Error!void {
        return self.edits.fail(reason);
    }
};

// ---- Params ----------------------------------------------------------------------------------

/// The init parameters: a JSON object of strings, decoded. Keys and values live as long as the
/// instance, so init may keep them.
pub const Params = struct {
    keys: []const []const u8,
    values: []const []const u8,

    /// The value of `key` (the last occurrence wins).
    pub fn get(self: *const Params, key: []const u8) ?[]const u8 {
        var i = self.keys.len;
        while (i > 0) {
            i -= 1;
            if (std.mem.eql(u8, self.keys[i], key)) return self.values[i];
        }
        return null;
    }

    /// Rejects the configuration with `message` (which must outlive the call):
    /// `return params.reject("n must be a number");`
    pub fn reject(_: *const Params, message: []const u8) error{BadConfig} {
        state.init_message = message;
        return error.BadConfig;
    }
};

const Parser = struct {
    s: []const u8,
    at: usize = 0,

    fn ws(p: *Parser) void {
        while (p.at < p.s.len and std.mem.indexOfScalar(u8, " \t\n\r", p.s[p.at]) != null) p.at += 1;
    }

    fn eat(p: *Parser, c: u8) bool {
        p.ws();
        if (p.at < p.s.len and p.s[p.at] == c) {
            p.at += 1;
            return true;
        }
        return false;
    }

    /// The string after its opening quote, decoded into new memory; or a message.
    fn string(p: *Parser) union(enum) { ok: []const u8, err: []const u8 } {
        var i = p.at;
        while (true) {
            if (i >= p.s.len) return .{ .err = "invalid parameters: unterminated string" };
            const c = p.s[i];
            if (c == '"') break;
            if (c < 0x20) return .{ .err = "invalid parameters: control character in a string" };
            i += if (c == '\\') 2 else 1;
        }
        const body = p.s[p.at..i];
        p.at = i + 1;
        const buf = allocator.alloc(u8, body.len) catch return .{ .err = "out of memory" };
        const v: Value = .{ .kind = .string, .escaped = true, .bytes = body, .event = undefined, .depth = 0, .lo = 0, .hi = 0 };
        return .{ .ok = v.asStr(buf) orelse return .{ .err = "invalid parameters: invalid escape" } };
    }

    fn parse(p: *Parser) union(enum) { ok: Params, err: []const u8 } {
        var keys: std.ArrayList([]const u8) = .empty;
        var values: std.ArrayList([]const u8) = .empty;
        p.ws();
        if (p.at < p.s.len) {
            if (!p.eat('{')) return .{ .err = "invalid parameters: expected a JSON object" };
            if (!p.eat('}')) while (true) {
                if (!p.eat('"')) return .{ .err = "invalid parameters: expected a key" };
                const k = switch (p.string()) {
                    .ok => |s| s,
                    .err => |m| return .{ .err = m },
                };
                if (!p.eat(':')) return .{ .err = "invalid parameters: expected `:`" };
                if (!p.eat('"')) return .{ .err = "invalid parameters: every value must be a string" };
                const v = switch (p.string()) {
                    .ok => |s| s,
                    .err => |m| return .{ .err = m },
                };
                keys.append(allocator, k) catch return .{ .err = "out of memory" };
                values.append(allocator, v) catch return .{ .err = "out of memory" };
                if (p.eat(',')) continue;
                if (p.eat('}')) break;
                return .{ .err = "invalid parameters: expected `,` or `}`" };
            };
            p.ws();
            if (p.at != p.s.len) return .{ .err = "invalid parameters: text after the object" };
        }
        return .{ .ok = .{ .keys = keys.items, .values = values.items } };
    }
};

// ---- Logging ---------------------------------------------------------------------------------

const host = struct {
    extern "sluicebox" fn log(level: i32, ptr: u32, len: u32) void;
};

/// Logs through the host (rate-limited there). Using it adds the `sluicebox.log` import.
pub fn log(level: LogLevel, message: []const u8) void {
    if (!is_wasm) return std.debug.print("[{s}] {s}\n", .{ @tagName(level), message });
    host.log(@intFromEnum(level), addr(message.ptr), @intCast(message.len));
}

// ---- Runtime ---------------------------------------------------------------------------------

/// What a module declares about the fields it reads.
pub const Options = struct {
    /// The paths to index (a projected index); null indexes everything and passes raw bytes.
    fields: ?[]const []const u8 = null,
    /// Raw bytes along with `fields`.
    raw: bool = false,
};

const State = struct {
    out: Emitter = .{},
    verdicts: std.ArrayList(u8) = .empty,
    message: []const u8 = "",
    init_message: []const u8 = "",
    fields_decl: [3]u32 = .{ 0, 0, 0 },
};

var state: State = .{};

const Mode = enum { filter, map, flat_map };

fn finish(h: []const u8, status: Status, verdicts: u32, message: []const u8) i32 {
    const ok = status == .ok;
    const records = if (ok) state.out.edits.buf.items else &[_]u8{};
    const words = [5]u32{
        if (ok) verdicts else 0,
        if (records.len > 0) addr(records.ptr) else 0,
        @intCast(records.len),
        if (message.len > 0) addr(message.ptr) else 0,
        @intCast(message.len),
    };
    const out: [*]u8 = @ptrFromInt(@intFromPtr(h.ptr) + header_out);
    for (words, 0..) |w, i| std.mem.writeInt(u32, out[i * 4 ..][0..4], w, .little);
    return @intFromEnum(status);
}

/// The reason an error returned by a callback gives its event.
fn failWith(edits: *Edits, err: anyerror) Error!void {
    if (err == error.OutOfMemory) return error.OutOfMemory;
    try edits.fail(@errorName(err));
}

fn run(header: i32, comptime opts: Options, comptime mode: Mode, comptime f: anytype) i32 {
    const h = slice(@bitCast(header), header_len) orelse return @intFromEnum(Status.bad_input);
    const edits = &state.out.edits;
    edits.buf.clearRetainingCapacity();
    state.verdicts.clearRetainingCapacity();
    if (rd32(h, 0) != abi_version) return finish(h, .unsupported, 0, "unsupported ABI version in batch header");
    const n = rd32(h, 4);
    const node_total = rd32(h, 16);
    const flags = rd32(h, 28);
    const field_count = rd32(h, 32);
    const entries = slice(rd32(h, 8), @as(u64, n) * entry_len);
    const nodes = slice(rd32(h, 12), @as(u64, node_total) * node_len);
    const data = slice(rd32(h, 20), rd32(h, 24));
    if (entries == null or nodes == null or data == null) return finish(h, .bad_input, 0, "batch table out of bounds");
    const projected = flags & batch_projected != 0;
    const has_raw = flags & batch_raw != 0;
    if (projected and (opts.fields == null or opts.fields.?.len != field_count))
        return finish(h, .bad_input, 0, "projected batch does not match the declared fields");
    state.verdicts.ensureTotalCapacity(allocator, n) catch return finish(h, .out_of_memory, 0, "out of memory");
    var any = false;
    for (0..n) |i| {
        const entry = entries.?[i * entry_len ..][0..entry_len];
        const raw_start = rd32(entry, 0);
        const raw_len = rd32(entry, 4);
        const first = rd32(entry, 8);
        const count = rd32(entry, 12);
        if (@as(u64, first) + count > node_total) return finish(h, .bad_input, 0, "event nodes out of bounds");
        if (projected and count != field_count)
            return finish(h, .bad_input, 0, "projected event does not have one node per declared field");
        const raw: ?[]const u8 = if (has_raw)
            region(data.?, raw_start, raw_len) orelse return finish(h, .bad_input, 0, "event bytes out of bounds")
        else
            null;
        const event: Event = .{
            .index = @intCast(i),
            .nodes = nodes.?[@as(usize, first) * node_len ..][0 .. @as(usize, count) * node_len],
            .data = data.?,
            .raw = raw,
            .declared = if (projected) opts.fields else null,
        };
        handle(&event, @intCast(i), mode, f) catch return finish(h, .out_of_memory, 0, "out of memory for records");
        state.verdicts.appendAssumeCapacity(@intFromEnum(edits.verdict));
        any = any or edits.verdict != .keep;
    }
    return finish(h, .ok, if (any) addr(state.verdicts.items.ptr) else 0, "");
}

/// Calls the user's function for one event; only running out of memory is an error here.
inline fn handle(event: *const Event, i: u32, comptime mode: Mode, comptime f: anytype) Error!void {
    const edits = &state.out.edits;
    switch (mode) {
        .filter => {
            edits.begin(i, .keep);
            const keep = switch (@typeInfo(@TypeOf(f(event)))) {
                .error_union => f(event) catch |err| return failWith(edits, err),
                else => f(event),
            };
            if (!keep) edits.discard();
        },
        .map => {
            edits.begin(i, .keep);
            switch (@typeInfo(@TypeOf(f(event, edits)))) {
                .error_union => f(event, edits) catch |err| return failWith(edits, err),
                else => f(event, edits),
            }
        },
        .flat_map => {
            edits.begin(i, .replace);
            state.out.count = 0;
            switch (@typeInfo(@TypeOf(f(event, &state.out)))) {
                .error_union => f(event, &state.out) catch |err| return failWith(edits, err),
                else => f(event, &state.out),
            }
        },
    }
}

fn exportCommon(comptime opts: Options) void {
    const S = struct {
        fn version() callconv(.c) i32 {
            return abi_version;
        }
        fn alloc(size: i32, alignment: i32) callconv(.c) i32 {
            if (size < 0 or alignment <= 0 or !std.math.isPowerOfTwo(alignment)) return 0;
            const a = std.mem.Alignment.fromByteUnits(@intCast(alignment));
            const p = allocator.rawAlloc(@max(@as(usize, @intCast(size)), 1), a, @returnAddress()) orelse return 0;
            return @bitCast(addr(p));
        }
        fn fields() callconv(.c) i32 {
            const paths = opts.fields.?;
            const joined = comptime blk: {
                var s: []const u8 = "";
                for (paths, 0..) |p, i| s = s ++ (if (i > 0) "\n" else "") ++ p;
                break :blk s;
            };
            state.fields_decl = .{ if (joined.len > 0) addr(joined.ptr) else 0, joined.len, if (opts.raw) fields_raw else 0 };
            return @bitCast(addr(&state.fields_decl));
        }
    };
    @export(&S.version, .{ .name = "sluicebox_abi_version" });
    @export(&S.alloc, .{ .name = "sluicebox_alloc" });
    if (opts.fields != null) @export(&S.fields, .{ .name = "sluicebox_fields" });
}

/// Exports `f: fn (*const Event) bool` (or `!bool`) as the module's filter: true keeps the
/// event, false drops it, an error dead-letters it.
pub fn exportFilter(comptime f: anytype, comptime opts: Options) void {
    if (!is_wasm) return;
    exportCommon(opts);
    const S = struct {
        fn filter(header: i32) callconv(.c) i32 {
            return run(header, opts, .filter, f);
        }
    };
    @export(&S.filter, .{ .name = "sluicebox_filter" });
}

/// Exports `f: fn (*const Event, *Edits) !void` (or `void`) as the module's filter.
pub fn exportMap(comptime f: anytype, comptime opts: Options) void {
    if (!is_wasm) return;
    exportCommon(opts);
    const S = struct {
        fn filter(header: i32) callconv(.c) i32 {
            return run(header, opts, .map, f);
        }
    };
    @export(&S.filter, .{ .name = "sluicebox_filter" });
}

/// Exports `f: fn (*const Event, *Emitter) !void` (or `void`) as the module's filter: each
/// event is replaced by the events `f` emits for it.
pub fn exportFlatMap(comptime f: anytype, comptime opts: Options) void {
    if (!is_wasm) return;
    exportCommon(opts);
    const S = struct {
        fn filter(header: i32) callconv(.c) i32 {
            return run(header, opts, .flat_map, f);
        }
    };
    @export(&S.filter, .{ .name = "sluicebox_filter" });
}

/// Exports `f: fn (*const Params) !void` as the module's init: an error rejects the
/// configuration, with the message of `Params.reject` or else the error's name.
pub fn exportInit(comptime f: anytype) void {
    if (!is_wasm) return;
    const S = struct {
        fn init(ptr: i32) callconv(.c) i32 {
            const block = slice(@bitCast(ptr), 20) orelse return @intFromEnum(Status.bad_input);
            const status: Status = blk: {
                state.init_message = "";
                if (rd32(block, 0) != abi_version) {
                    state.init_message = "unsupported ABI version in init block";
                    break :blk .unsupported;
                }
                const text = slice(rd32(block, 4), rd32(block, 8)) orelse {
                    state.init_message = "init parameters out of bounds";
                    break :blk .bad_input;
                };
                var parser: Parser = .{ .s = text };
                const params = switch (parser.parse()) {
                    .ok => |p| p,
                    .err => |m| {
                        state.init_message = m;
                        break :blk .bad_config;
                    },
                };
                const result = f(&params);
                if (@typeInfo(@TypeOf(result)) == .error_union) {
                    result catch |err| {
                        if (state.init_message.len == 0) state.init_message = @errorName(err);
                        break :blk .bad_config;
                    };
                }
                break :blk .ok;
            };
            const m = state.init_message;
            const out: [*]u8 = @ptrFromInt(@intFromPtr(block.ptr) + 12);
            std.mem.writeInt(u32, out[0..4], if (m.len > 0) addr(m.ptr) else 0, .little);
            std.mem.writeInt(u32, out[4..8], @intCast(m.len), .little);
            return @intFromEnum(status);
        }
    };
    @export(&S.init, .{ .name = "sluicebox_init" });
}

// ---- Native tests ----------------------------------------------------------------------------

/// Runs a filter natively, in `zig test`, with no wasm runtime: each call indexes one event
/// the way the host does (a projected index when `opts.fields` is set, else the full index
/// with the raw text), calls `f` through the same code as the module's export, and returns the
/// verdict and the records, one line each: `set PATH JSON`, `remove PATH`, `rename FROM TO`,
/// `route NAME`, `emit JSON`, `fail REASON`.
///
///     test "drops DEBUG" {
///         const o = try sb.testing.filter(dropDebug, options, "{\"level\":\"DEBUG\"}");
///         try std.testing.expectEqual(sb.Verdict.drop, o.verdict);
///     }
pub const testing = struct {
    /// What the filter did with one event. `records` is valid until the next call.
    pub const Outcome = struct { verdict: Verdict, records: []const u8 };

    var nodes: std.ArrayList(u8) = .empty;
    var projected: std.ArrayList(u8) = .empty;
    var text: std.ArrayList(u8) = .empty;

    pub fn filter(comptime f: anytype, comptime opts: Options, json: []const u8) !Outcome {
        return runOne(f, opts, .filter, json);
    }

    pub fn map(comptime f: anytype, comptime opts: Options, json: []const u8) !Outcome {
        return runOne(f, opts, .map, json);
    }

    pub fn flatMap(comptime f: anytype, comptime opts: Options, json: []const u8) !Outcome {
        return runOne(f, opts, .flat_map, json);
    }

    /// Runs `f` (an init) with `params`, a JSON object of strings: null when it accepts them,
    /// else the message.
    pub fn init(comptime f: anytype, params: []const u8) ?[]const u8 {
        var parser: Parser = .{ .s = params };
        const p = switch (parser.parse()) {
            .ok => |p| p,
            .err => |m| return m,
        };
        state.init_message = "";
        const result = f(&p);
        if (@typeInfo(@TypeOf(result)) == .error_union) {
            result catch |err| return if (state.init_message.len > 0) state.init_message else @errorName(err);
        }
        return null;
    }

    fn runOne(comptime f: anytype, comptime opts: Options, comptime mode: Mode, json: []const u8) !Outcome {
        nodes.clearRetainingCapacity();
        var p: IndexParser = .{ .s = json };
        p.ws();
        if (!p.eat('{')) return error.NotAJsonObject;
        try p.members(0);
        p.ws();
        if (p.at != json.len) return error.NotAJsonObject;
        const full: Event = .{ .index = 0, .nodes = nodes.items, .data = json, .raw = json, .declared = null };
        var event = full;
        if (opts.fields) |paths| {
            // One node per declared path, resolved over the full index as the host does.
            projected.clearRetainingCapacity();
            for (paths, 0..) |path, i| {
                var n: [node_len]u8 = @splat(0);
                if (full.get(path)) |v| {
                    std.mem.writeInt(u32, n[8..12], @intCast(@intFromPtr(v.bytes.ptr) - @intFromPtr(json.ptr)), .little);
                    std.mem.writeInt(u32, n[12..16], @intCast(v.bytes.len), .little);
                    n[16] = @intFromEnum(v.kind);
                    n[17] = if (v.escaped) flag_value_escaped else 0;
                }
                std.mem.writeInt(u32, n[20..24], @intCast(i + 1), .little);
                try projected.appendSlice(allocator, &n);
            }
            event = .{ .index = 0, .nodes = projected.items, .data = json, .raw = if (opts.raw) json else null, .declared = paths };
        }
        state.out.edits.buf.clearRetainingCapacity();
        try handle(&event, 0, mode, f);
        return .{ .verdict = state.out.edits.verdict, .records = try render(state.out.edits.buf.items) };
    }

    fn render(records: []const u8) ![]const u8 {
        const names = [_][]const u8{ "?", "set", "remove", "rename", "emit", "fail", "route" };
        text.clearRetainingCapacity();
        var at: usize = 0;
        while (at + 16 <= records.len) {
            const op = records[at + 4];
            const a_len = rd32(records, at + 8);
            const b_len = rd32(records, at + 12);
            const a = records[at + 16 ..][0..a_len];
            const b = records[at + 16 + a_len ..][0..b_len];
            if (text.items.len > 0) try text.append(allocator, '\n');
            try text.appendSlice(allocator, if (op < names.len) names[op] else "?");
            if (op != op_emit and op != op_fail) try text.appendSlice(allocator, &.{ ' ' });
            if (op != op_emit and op != op_fail) try text.appendSlice(allocator, a);
            if (op != op_remove and op != op_route) {
                try text.append(allocator, ' ');
                try text.appendSlice(allocator, b);
            }
            at += (16 + a_len + b_len + 3) & ~@as(usize, 3);
        }
        return text.items;
    }

    /// The full index of a JSON object, as the host builds it (docs/abi.md).
    const IndexParser = struct {
        s: []const u8,
        at: usize = 0,

        fn ws(p: *IndexParser) void {
            while (p.at < p.s.len and std.mem.indexOfScalar(u8, " \t\n\r", p.s[p.at]) != null) p.at += 1;
        }

        fn eat(p: *IndexParser, c: u8) bool {
            p.ws();
            if (p.at < p.s.len and p.s[p.at] == c) {
                p.at += 1;
                return true;
            }
            return false;
        }

        /// A string whose quote is at the cursor: its body and whether it has escapes.
        fn string(p: *IndexParser) !struct { usize, usize, bool } {
            p.at += 1;
            const start = p.at;
            var escaped = false;
            while (p.at < p.s.len and p.s[p.at] != '"') : (p.at += 1) {
                if (p.s[p.at] < 0x20) return error.NotAJsonObject;
                if (p.s[p.at] == '\\') {
                    escaped = true;
                    p.at += 1;
                }
            }
            if (p.at >= p.s.len) return error.NotAJsonObject;
            p.at += 1;
            return .{ start, p.at - 1 - start, escaped };
        }

        fn members(p: *IndexParser, depth: u16) anyerror!void {
            if (p.eat('}')) return;
            while (true) {
                p.ws();
                if (p.at >= p.s.len or p.s[p.at] != '"') return error.NotAJsonObject;
                const ks, const kl, const esc = try p.string();
                if (!p.eat(':')) return error.NotAJsonObject;
                try p.value(depth, ks, kl, if (esc) flag_key_escaped else 0);
                if (p.eat(',')) continue;
                if (p.eat('}')) return;
                return error.NotAJsonObject;
            }
        }

        fn elements(p: *IndexParser, depth: u16) anyerror!void {
            if (p.eat(']')) return;
            while (true) {
                try p.value(depth, 0, 0, flag_no_key);
                if (p.eat(',')) continue;
                if (p.eat(']')) return;
                return error.NotAJsonObject;
            }
        }

        fn value(p: *IndexParser, depth: u16, key_start: usize, key_len: usize, flags_: u8) anyerror!void {
            p.ws();
            if (p.at >= p.s.len) return error.NotAJsonObject;
            const me = nodes.items.len;
            try nodes.appendNTimes(allocator, 0, node_len);
            var flags = flags_;
            var start = p.at;
            var len: usize = 0;
            var kind: Kind = undefined;
            switch (p.s[p.at]) {
                '"' => {
                    start, len, const esc = try p.string();
                    kind = .string;
                    if (esc) flags |= flag_value_escaped;
                },
                '{', '[' => |c| {
                    p.at += 1;
                    if (depth == std.math.maxInt(u16)) return error.NotAJsonObject;
                    if (c == '{') try p.members(depth + 1) else try p.elements(depth + 1);
                    kind = if (c == '{') .object else .array;
                    len = p.at - start;
                },
                else => {
                    while (p.at < p.s.len and std.mem.indexOfScalar(u8, " \t\n\r,]}", p.s[p.at]) == null) p.at += 1;
                    const t = p.s[start..p.at];
                    len = t.len;
                    kind = if (std.mem.eql(u8, t, "null")) .null else if (std.mem.eql(u8, t, "true")) .true else if (std.mem.eql(u8, t, "false")) .false else blk: {
                        _ = std.fmt.parseFloat(f64, t) catch return error.NotAJsonObject;
                        break :blk .number;
                    };
                },
            }
            const n = nodes.items[me..][0..node_len];
            std.mem.writeInt(u32, n[0..4], @intCast(key_start), .little);
            std.mem.writeInt(u32, n[4..8], @intCast(key_len), .little);
            std.mem.writeInt(u32, n[8..12], @intCast(start), .little);
            std.mem.writeInt(u32, n[12..16], @intCast(len), .little);
            n[16] = @intFromEnum(kind);
            n[17] = flags;
            std.mem.writeInt(u16, n[18..20], depth, .little);
            std.mem.writeInt(u32, n[20..24], @intCast(nodes.items.len / node_len), .little);
        }
    };
};
