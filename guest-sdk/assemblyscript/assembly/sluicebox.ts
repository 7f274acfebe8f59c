// sluicebox.ts: write sluicebox filters in AssemblyScript (filter ABI v1, core wasm modules).
//
//   import { Event, filter } from "../assembly/sluicebox";
//   export { sluicebox_abi_version, sluicebox_alloc, sluicebox_fields, sluicebox_filter } from "../assembly/sluicebox";
//
//   // True keeps the event; ask the host to index `level` only.
//   filter((e: Event): bool => !e.strEq("level", "DEBUG"), ["level"]);
//
// Build: npx asc f.ts --outFile f.wasm -O3 --runtime stub --use abort=
//
// Concepts
//
// - One filter per module, registered by a top-level call (it runs in the module's start
//   function): filter(fn, fields?) with fn(e: Event): bool (true keeps), map(fn, fields?) with
//   fn(e: Event, out: Edits): void, or flatMap(fn, fields?) with fn(e: Event, out: Emitter): void;
//   optionally init(fn) with fn(p: Params): string | null (null accepts, a message rejects).
// - The entry file re-exports the ABI functions it needs: always sluicebox_abi_version,
//   sluicebox_alloc and sluicebox_filter; sluicebox_fields when it declares fields;
//   sluicebox_init when it registers init.
// - `fields` asks the host for a projected index: one node per path per event, much cheaper
//   than a full index. Without it every event is fully indexed and comes with its raw bytes;
//   `raw = true` asks for raw bytes along with the fields.
// - Paths: keys separated by `.` (`http.method`); a `.` or `\` inside a key is written `\.` or
//   `\\`. Keys compare after JSON unescaping; when an object repeats a key, the last one wins.
//   In a projected module only the declared paths can be looked up, compared as text.
// - Event and Value are views into the host's batch, valid only during the callback (Values
//   come from a pool that is reused for every event). Every offset the host hands over is
//   checked before it is read.
// - Nothing allocates per event except the methods that return a `string` (str,
//   asStr, raw): with `--runtime stub` nothing is ever freed, so prefer strEq,
//   asI64, asF64 and asBool on hot paths.
// - Edits / Emitter append records to one buffer reused for every batch; the verdict follows
//   from the calls.

// ---- ABI v1 (abi/src/lib.rs is the contract) --------------------------------------------------

export const ABI_VERSION: i32 = 1;

export enum Status {
  Ok = 0,
  Failed = -1,
  BadConfig = -2,
  OutOfMemory = -3,
  BadInput = -4,
  Unsupported = -5,
}

export enum Verdict {
  Keep = 0,
  Drop = 1,
  Edit = 2,
  Replace = 3,
  Fail = 4,
}

/** The kind of a value; the numbers are the ABI's node kinds. */
export enum Kind {
  /** The path is absent. */
  Missing = 0,
  Null = 1,
  False = 2,
  True = 3,
  /** The bytes are the number's text as written. */
  Number = 4,
  /** The bytes are the text between the quotes, escapes not decoded. */
  String = 5,
  /** The bytes are the whole text, brackets included. */
  Object = 6,
  Array = 7,
}

const NODE_LEN: u32 = 24;
const ENTRY_LEN: u32 = 16;
const HEADER_LEN: u32 = 64;
const HEADER_OUT: u32 = 36;
const BATCH_PROJECTED: u32 = 1;
const BATCH_RAW: u32 = 2;
const FIELDS_RAW: u32 = 1;
const FLAG_VALUE_ESCAPED: u8 = 1;
const FLAG_KEY_ESCAPED: u8 = 2;
const FLAG_NO_KEY: u8 = 4;

const OP_SET: u8 = 1;
const OP_REMOVE: u8 = 2;
const OP_RENAME: u8 = 3;
const OP_EMIT: u8 = 4;
const OP_FAIL: u8 = 5;
const OP_ROUTE: u8 = 6;

// ---- Memory -----------------------------------------------------------------------------------

/** Whether the `len` bytes at `ptr` are all inside linear memory (and `ptr` is not 0). */
function inBounds(ptr: u32, len: u64): bool {
  if (len == 0) return true;
  return ptr != 0 && <u64>ptr + len <= (<u64>memory.size() << 16);
}

/** `sluicebox_alloc`: `size` bytes aligned to `align` (a power of two), or 0. Never freed. */
export function sluicebox_alloc(size: i32, align: i32): i32 {
  if (size < 0 || align <= 0 || (align & (align - 1)) != 0) return 0;
  // The runtime's blocks are 16-aligned; over-allocate for more.
  const extra = align > 16 ? <usize>(align - 1) : 0;
  const p = heap.alloc(<usize>max(size, 1) + extra);
  return <i32>((p + <usize>(align - 1)) & ~<usize>(align - 1));
}

export function sluicebox_abi_version(): i32 {
  return ABI_VERSION;
}

// ---- JSON strings -------------------------------------------------------------------------------

function hex(c: u32): i32 {
  if (c >= 48 && c <= 57) return <i32>c - 48;
  if (c >= 97 && c <= 102) return <i32>c - 87;
  if (c >= 65 && c <= 70) return <i32>c - 55;
  return -1;
}

function hex4(p: usize, avail: u32): i32 {
  if (avail < 4) return -1;
  let v = 0;
  for (let i: usize = 0; i < 4; i++) {
    const h = hex(load<u8>(p + i));
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

/** Writes the UTF-8 of `cp` at `out`: the number of bytes. */
function utf8(cp: u32, out: usize): u32 {
  if (cp < 0x80) {
    store<u8>(out, cp);
    return 1;
  }
  if (cp < 0x800) {
    store<u8>(out, 0xc0 | (cp >> 6));
    store<u8>(out + 1, 0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    store<u8>(out, 0xe0 | (cp >> 12));
    store<u8>(out + 1, 0x80 | ((cp >> 6) & 0x3f));
    store<u8>(out + 2, 0x80 | (cp & 0x3f));
    return 3;
  }
  store<u8>(out, 0xf0 | (cp >> 18));
  store<u8>(out + 1, 0x80 | ((cp >> 12) & 0x3f));
  store<u8>(out + 2, 0x80 | ((cp >> 6) & 0x3f));
  store<u8>(out + 3, 0x80 | (cp & 0x3f));
  return 4;
}

// The result of decodeEscape: bytes used and UTF-8 bytes written to `escOut`.
let escUsed: u32 = 0;
let escLen: u32 = 0;
const escOut: usize = memory.data(4);

/** Decodes the escape at `p` (a backslash, `avail` bytes left) into `escOut`; false when it is
 *  invalid. A surrogate pair combines; a lone surrogate decodes to U+FFFD. */
function decodeEscape(p: usize, avail: u32): bool {
  if (avail < 2) return false;
  const c = <u32>load<u8>(p + 1);
  let ch: u32 = 0;
  escUsed = 2;
  if (c == 0x22 || c == 0x5c || c == 0x2f) ch = c;
  else if (c == 0x62) ch = 8;
  else if (c == 0x66) ch = 12;
  else if (c == 0x6e) ch = 10;
  else if (c == 0x72) ch = 13;
  else if (c == 0x74) ch = 9;
  else if (c == 0x75) {
    const hi = hex4(p + 2, avail - 2);
    if (hi < 0) return false;
    escUsed = 6;
    if (hi >= 0xd800 && hi <= 0xdbff) {
      const lo = avail >= 12 && load<u8>(p + 6) == 0x5c && load<u8>(p + 7) == 0x75 ? hex4(p + 8, avail - 8) : -1;
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        ch = 0x10000 + ((<u32>hi - 0xd800) << 10) + (<u32>lo - 0xdc00);
        escUsed = 12;
      } else ch = 0xfffd;
    } else if (hi >= 0xdc00 && hi <= 0xdfff) ch = 0xfffd;
    else ch = <u32>hi;
  } else return false;
  escLen = utf8(ch, escOut);
  return true;
}

// The UTF-8 bytes of a UTF-16 string range, one at a time (a lone surrogate reads as U+FFFD).
// In path form, `\.` and `\\` stand for `.` and `\`.
let wantPtr: usize = 0;
let wantEnd: usize = 0;
let wantPath = false;
let wantBuf: u32 = 0; // pending bytes, lowest first
let wantPending: u32 = 0;

function wantStart(s: string, from: i32, to: i32, pathForm: bool): void {
  wantPtr = changetype<usize>(s) + (<usize>from << 1);
  wantEnd = changetype<usize>(s) + (<usize>to << 1);
  wantPath = pathForm;
  wantPending = 0;
}

/** The next byte, or -1 at the end. */
function wantNext(): i32 {
  if (wantPending > 0) {
    const b = wantBuf & 0xff;
    wantBuf >>= 8;
    wantPending--;
    return <i32>b;
  }
  if (wantPtr >= wantEnd) return -1;
  let c = <u32>load<u16>(wantPtr);
  wantPtr += 2;
  if (wantPath && c == 0x5c && wantPtr < wantEnd) {
    c = <u32>load<u16>(wantPtr);
    wantPtr += 2;
  }
  if (c < 0x80) return <i32>c;
  if ((c & 0xfc00) == 0xd800 && wantPtr < wantEnd && (<u32>load<u16>(wantPtr) & 0xfc00) == 0xdc00) {
    c = 0x10000 + ((c - 0xd800) << 10) + (<u32>load<u16>(wantPtr) - 0xdc00);
    wantPtr += 2;
  } else if ((c & 0xf800) == 0xd800) c = 0xfffd;
  const n = utf8(c, escOut);
  wantBuf = load<u32>(escOut) >> 8;
  wantPending = n - 1;
  return <i32>load<u8>(escOut);
}

/** Whether the string body at `p` (escapes decoded when `escaped`) equals the prepared want. */
function bodyEq(p: usize, len: u32, escaped: bool): bool {
  let i: u32 = 0;
  while (i < len) {
    const c = load<u8>(p + i);
    if (escaped && c == 0x5c) {
      if (!decodeEscape(p + i, len - i)) return false;
      i += escUsed;
      for (let k: u32 = 0; k < escLen; k++) {
        if (wantNext() != <i32>load<u8>(escOut + k)) return false;
      }
    } else {
      if (wantNext() != <i32>c) return false;
      i++;
    }
  }
  return wantNext() == -1;
}

// A scratch buffer for decoded strings (grows, reused).
let scratch: usize = 0;
let scratchCap: u32 = 0;

/** Decodes the string body at `p` into `scratch`: the length, or -1 on an invalid escape. */
function unescape(p: usize, len: u32): i32 {
  if (len > scratchCap) {
    scratch = heap.alloc(<usize>len);
    scratchCap = len;
  }
  let o: u32 = 0;
  let i: u32 = 0;
  while (i < len) {
    const c = load<u8>(p + i);
    if (c == 0x5c) {
      if (!decodeEscape(p + i, len - i)) return -1;
      memory.copy(scratch + o, escOut, escLen);
      o += escLen;
      i += escUsed;
    } else {
      store<u8>(scratch + o, c);
      o++;
      i++;
    }
  }
  return <i32>o;
}

// ---- Events -------------------------------------------------------------------------------------

/** One event of the batch. A view, valid only during the callback. */
export class Event {
  /** Position in the batch. */
  index: u32 = 0;
  /** This event's nodes. */
  nodes: usize = 0;
  nodeCount: u32 = 0;
  /** The data region of the batch. */
  data: usize = 0;
  dataLen: u32 = 0;
  /** The event's JSON text, when `hasRaw`. */
  rawPtr: usize = 0;
  rawLen: u32 = 0;
  hasRaw: bool = false;
  projected: bool = false;

  /** The value at `path`, or null when the event does not have it (or, in a projected
   *  module, when `path` is not declared). */
  get(path: string): Value | null {
    if (this.projected) {
      const fields = declaredFields!;
      for (let i = 0; i < fields.length; i++) {
        if (fields[i] == path) {
          if (<u32>i >= this.nodeCount) return null;
          return valueOf(this, this.nodes + <usize>i * NODE_LEN, 0, 0);
        }
      }
      return null;
    }
    return findPath(this, 0, this.nodeCount, 0, path);
  }

  /** Whether the event has `path`, whatever its value. */
  has(path: string): bool {
    return this.get(path) !== null;
  }

  /** Whether `path` holds the string `s` (compared after decoding), without allocating. */
  strEq(path: string, s: string): bool {
    const v = this.get(path);
    return v !== null && v.strEq(s);
  }

  /** The string at `path`, decoded (allocates), or null when missing or not a string. */
  str(path: string): string | null {
    const v = this.get(path);
    return v === null ? null : v.asStr();
  }

  /** The integer at `path`, or `fallback` (see Value.isInteger). */
  getI64(path: string, fallback: i64 = 0): i64 {
    const v = this.get(path);
    return v !== null && v.isInteger() ? v.asI64() : fallback;
  }

  /** The number at `path`, or NaN when missing or not a number. */
  getF64(path: string): f64 {
    const v = this.get(path);
    return v === null ? NaN : v.asF64();
  }

  /** The boolean at `path`, or `fallback` when missing or not a boolean. */
  getBool(path: string, fallback: bool = false): bool {
    const v = this.get(path);
    return v !== null && (v.kind == Kind.True || v.kind == Kind.False) ? v.kind == Kind.True : fallback;
  }

  /** Whether `path` holds `null` (a missing path is not null). */
  isNull(path: string): bool {
    const v = this.get(path);
    return v !== null && v.kind == Kind.Null;
  }

  /** The event's JSON text (allocates); null when the batch carries no raw bytes. */
  raw(): string | null {
    return this.hasRaw ? String.UTF8.decodeUnsafe(this.rawPtr, this.rawLen) : null;
  }
}

/** One JSON value of an event. A view, valid only during the callback. */
export class Value {
  kind: Kind = Kind.Missing;
  /** A string with backslash escapes. */
  escaped: bool = false;
  /** The value's bytes as written (see Kind). */
  ptr: usize = 0;
  len: u32 = 0;
  depth: u16 = 0;
  lo: u32 = 0;
  hi: u32 = 0;
  event: Event | null = null;

  /** Whether the value is the string `s`, compared after decoding, without allocating. */
  strEq(s: string): bool {
    if (this.kind != Kind.String) return false;
    wantStart(s, 0, s.length, false);
    return bodyEq(this.ptr, this.len, this.escaped);
  }

  /** The string, decoded (allocates); null when not a string or an escape is invalid. */
  asStr(): string | null {
    if (this.kind != Kind.String) return null;
    if (!this.escaped) return String.UTF8.decodeUnsafe(this.ptr, this.len);
    const n = unescape(this.ptr, this.len);
    return n < 0 ? null : String.UTF8.decodeUnsafe(scratch, <usize>n);
  }

  /** The value's text as written (allocates). */
  raw(): string {
    return String.UTF8.decodeUnsafe(this.ptr, this.len);
  }

  /** Whether the value is a number written as an integer in the i64 range. */
  isInteger(): bool {
    return this.kind == Kind.Number && parseI64(this.ptr, this.len);
  }

  /** The integer (0 when not isInteger()). */
  asI64(): i64 {
    return this.kind == Kind.Number && parseI64(this.ptr, this.len) ? parsedI64 : 0;
  }

  /** The number as an f64; NaN when not a number. */
  asF64(): f64 {
    return this.kind == Kind.Number ? parseF64(this.ptr, this.len) : NaN;
  }

  /** Whether the value is `true`. */
  asBool(): bool {
    return this.kind == Kind.True;
  }

  isNull(): bool {
    return this.kind == Kind.Null;
  }

  /** The value at `path` inside this object (fully indexed batches only). */
  get(path: string): Value | null {
    if (this.kind != Kind.Object || this.lo >= this.hi || this.depth == 0xffff) return null;
    return findPath(this.event!, this.lo, this.hi, this.depth + 1, path);
  }
}

// Values handed out for the current event; reused for the next one.
const pool = new Array<Value>();
let poolUsed: i32 = 0;

/** The value of the node at `node`, or null when it is missing or malformed. */
function valueOf(e: Event, node: usize, lo: u32, hi: u32): Value | null {
  const kind = <u32>load<u8>(node, 16);
  if (kind < 1 || kind > 7) return null;
  const start = load<u32>(node, 8);
  const len = load<u32>(node, 12);
  if (<u64>start + <u64>len > <u64>e.dataLen) return null;
  const ptr = e.data + start;
  // A literal whose text is not the literal is a host bug: asBool must agree with it.
  if (kind == Kind.True && !(len == 4 && load<u32>(ptr) == 0x65757274)) return null; // "true"
  if (kind == Kind.False && !(len == 5 && load<u32>(ptr) == 0x736c6166 && load<u8>(ptr, 4) == 0x65)) return null; // "false"
  if (poolUsed == pool.length) pool.push(new Value());
  const v = unchecked(pool[poolUsed++]);
  v.kind = <Kind>kind;
  v.escaped = (load<u8>(node, 17) & FLAG_VALUE_ESCAPED) != 0;
  v.ptr = ptr;
  v.len = len;
  v.depth = load<u16>(node, 18);
  v.lo = lo;
  v.hi = hi > lo ? hi : lo;
  v.event = e;
  return v;
}

/** The last node among lo..hi at `depth` whose key is path[from..to] (path form); -1 when
 *  there is none or the range is malformed (an `end` out of order, a wrong depth). */
function findKey(e: Event, lo: u32, hi: u32, depth: u32, path: string, from: i32, to: i32): i64 {
  let found: i64 = -1;
  let i = lo;
  while (i < hi) {
    const node = e.nodes + <usize>i * NODE_LEN;
    const end = load<u32>(node, 20);
    if (end <= i || end > hi || <u32>load<u16>(node, 18) != depth) return -1;
    const flags = load<u8>(node, 17);
    if ((flags & FLAG_NO_KEY) == 0) {
      const kstart = load<u32>(node);
      const klen = load<u32>(node, 4);
      if (<u64>kstart + <u64>klen > <u64>e.dataLen) return -1;
      wantStart(path, from, to, true);
      if (bodyEq(e.data + kstart, klen, (flags & FLAG_KEY_ESCAPED) != 0)) found = i;
    }
    i = end;
  }
  return found;
}

/** Finds `path` among the nodes lo..hi at `depth` of a fully indexed event. */
function findPath(e: Event, lo: u32, hi: u32, depth: u32, path: string): Value | null {
  const len = path.length;
  let at = 0;
  while (true) {
    // One segment: up to an unescaped `.`. `\x` stands for `x` (so `\.` is a dot in a key
    // and `\\` a backslash); a `\` that ends the path stands for itself (docs/abi.md 10).
    let end = at;
    while (end < len && path.charCodeAt(end) != 0x2e) {
      if (path.charCodeAt(end) == 0x5c && end + 1 < len) end++;
      end++;
    }
    const i = findKey(e, lo, hi, depth, path, at, end);
    if (i < 0) return null;
    const node = e.nodes + <usize>i * NODE_LEN;
    const nodeEnd = load<u32>(node, 20);
    if (end >= len) return valueOf(e, node, <u32>i + 1, nodeEnd);
    if (load<u8>(node, 16) != Kind.Object || depth == 0xffff) return null;
    lo = <u32>i + 1;
    hi = nodeEnd;
    depth++;
    at = end + 1;
  }
}

let parsedI64: i64 = 0;

/** Parses an integer (optional sign, digits) into parsedI64; false when it is not one or
 *  out of range. */
function parseI64(p: usize, len: u32): bool {
  if (len == 0) return false;
  let i: u32 = 0;
  const first = load<u8>(p);
  const neg = first == 0x2d;
  if (neg || first == 0x2b) {
    i = 1;
    if (len == 1) return false;
  }
  const limit: u64 = neg ? <u64>i64.MAX_VALUE + 1 : <u64>i64.MAX_VALUE;
  let n: u64 = 0;
  for (; i < len; i++) {
    const c = load<u8>(p + i);
    if (c < 0x30 || c > 0x39) return false;
    const d = <u64>(c - 0x30);
    if (n > (limit - d) / 10) return false;
    n = n * 10 + d;
  }
  parsedI64 = neg ? <i64>(0 - n) : <i64>n;
  return true;
}

/** Parses a JSON number: exactly, without allocating, when it has at most 15 significant
 *  digits and a small exponent; else through the standard library (which allocates). */
function parseF64(p: usize, len: u32): f64 {
  let i: u32 = 0;
  let neg = false;
  if (len > 0 && load<u8>(p) == 0x2d) {
    neg = true;
    i = 1;
  }
  let mant: u64 = 0;
  let digits = 0;
  let exp10 = 0;
  let simple = true;
  for (; i < len; i++) {
    const c = load<u8>(p + i);
    if (c >= 0x30 && c <= 0x39) {
      mant = mant * 10 + <u64>(c - 0x30);
      if (mant != 0) digits++;
      if (digits > 15) simple = false;
    } else if (c == 0x2e) {
      // Digits after the point lower the exponent.
      for (i++; i < len; i++) {
        const d = load<u8>(p + i);
        if (d < 0x30 || d > 0x39) break;
        mant = mant * 10 + <u64>(d - 0x30);
        if (mant != 0) digits++;
        if (digits > 15) simple = false;
        exp10--;
      }
      break;
    } else break;
  }
  if (i != len) simple = false; // an exponent: leave it to the library
  if (simple && exp10 >= -22) {
    const pow: f64 = Math.pow(10, <f64>-exp10);
    const d = <f64>mant / pow;
    return neg ? -d : d;
  }
  return parseFloat(String.UTF8.decodeUnsafe(p, len));
}

// ---- Records ------------------------------------------------------------------------------------

let recPtr: usize = 0;
let recLen: u32 = 0;
let recCap: u32 = 0;

function reserve(extra: u32): void {
  const want = <u64>recLen + <u64>extra;
  if (want <= <u64>recCap) return;
  let cap: u64 = recCap == 0 ? 1024 : <u64>recCap;
  while (cap < want) cap *= 2;
  if (cap > 0x7fffffff) unreachable();
  recPtr = recPtr == 0 ? heap.alloc(<usize>cap) : heap.realloc(recPtr, <usize>cap);
  recCap = <u32>cap;
}

/** The most bytes `s` takes as UTF-8, escaped or not. */
function maxBytes(s: string, escape: bool): u32 {
  return <u32>s.length * (escape ? 6 : 3);
}

/** Appends `s` as UTF-8, with JSON string escapes when `escape` (a lone surrogate becomes
 *  U+FFFD). Room must be reserved. */
function putString(s: string, escape: bool): void {
  const hexDigits = "0123456789abcdef";
  let p = changetype<usize>(s);
  const end = p + (<usize>s.length << 1);
  while (p < end) {
    let c = <u32>load<u16>(p);
    p += 2;
    if (escape && (c < 0x20 || c == 0x22 || c == 0x5c)) {
      let short: u32 = 0;
      if (c == 0x22 || c == 0x5c) short = c;
      else if (c == 10) short = 0x6e;
      else if (c == 13) short = 0x72;
      else if (c == 9) short = 0x74;
      else if (c == 8) short = 0x62;
      else if (c == 12) short = 0x66;
      store<u8>(recPtr + recLen, 0x5c);
      if (short != 0) {
        store<u8>(recPtr + recLen + 1, short);
        recLen += 2;
      } else {
        store<u8>(recPtr + recLen + 1, 0x75);
        store<u8>(recPtr + recLen + 2, 0x30);
        store<u8>(recPtr + recLen + 3, 0x30);
        store<u8>(recPtr + recLen + 4, hexDigits.charCodeAt(c >> 4));
        store<u8>(recPtr + recLen + 5, hexDigits.charCodeAt(c & 15));
        recLen += 6;
      }
      continue;
    }
    if (c < 0x80) {
      store<u8>(recPtr + recLen, c);
      recLen++;
      continue;
    }
    if ((c & 0xfc00) == 0xd800 && p < end && (<u32>load<u16>(p) & 0xfc00) == 0xdc00) {
      c = 0x10000 + ((c - 0xd800) << 10) + (<u32>load<u16>(p) - 0xdc00);
      p += 2;
    } else if ((c & 0xf800) == 0xd800) c = 0xfffd;
    recLen += utf8(c, recPtr + recLen);
  }
}

const B_RAW: i32 = 0; // operand B is text copied as UTF-8
const B_STRING: i32 = 1; // operand B is escaped into a JSON string

/** Appends one record: header, operand A, operand B, padding to 4 bytes. */
function push(event: u32, op: u8, a: string, b: string, how: i32): void {
  reserve(16 + maxBytes(a, false) + maxBytes(b, how == B_STRING) + 2 + 3);
  const h = recPtr + recLen;
  store<u32>(h, event);
  store<u32>(h, <u32>op, 4);
  recLen += 16;
  const aStart = recLen;
  putString(a, false);
  store<u32>(h, recLen - aStart, 8);
  const bStart = recLen;
  if (how == B_STRING) {
    store<u8>(recPtr + recLen++, 0x22);
    putString(b, true);
    store<u8>(recPtr + recLen++, 0x22);
  } else putString(b, false);
  store<u32>(h, recLen - bStart, 12);
  pad();
}

function pad(): void {
  while ((recLen & 3) != 0) store<u8>(recPtr + recLen++, 0);
}

/** The changes a map filter makes to one event.
 *
 *  Every call appends one record. No call keeps the event as it is; set/remove/rename edit
 *  it; discard() drops it and fail() dead-letters it: after those two the event's other records
 *  are withdrawn and later calls are ignored. route() sends the event to a named output. The
 *  host applies the records in order. Methods return `this` to chain. */
export class Edits {
  event: u32 = 0;
  /** Where the current event's records start. */
  start: u32 = 0;
  verdict: Verdict = Verdict.Keep;

  private get live(): bool {
    return this.verdict != Verdict.Drop && this.verdict != Verdict.Fail;
  }

  private edited(): void {
    if (this.verdict == Verdict.Keep) this.verdict = Verdict.Edit;
  }

  /** Sets `path` to `json`, the text of one JSON value (`"\"x\""`, `42`, `{"a":1}`). */
  set(path: string, json: string): Edits {
    if (this.live) {
      push(this.event, OP_SET, path, json, B_RAW);
      this.edited();
    }
    return this;
  }

  /** Sets `path` to the string `s` (escaped here). */
  setStr(path: string, s: string): Edits {
    if (this.live) {
      push(this.event, OP_SET, path, s, B_STRING);
      this.edited();
    }
    return this;
  }

  setI64(path: string, value: i64): Edits {
    return this.set(path, value.toString());
  }

  setBool(path: string, value: bool): Edits {
    return this.set(path, value ? "true" : "false");
  }

  /** Sets `path` to a copy of `value` (a value of the current event). */
  setValue(path: string, value: Value): Edits {
    if (this.live && value.kind != Kind.Missing) {
      const quote = value.kind == Kind.String;
      reserve(16 + maxBytes(path, false) + value.len + 2 + 3);
      const h = recPtr + recLen;
      store<u32>(h, this.event);
      store<u32>(h, <u32>OP_SET, 4);
      recLen += 16;
      const aStart = recLen;
      putString(path, false);
      store<u32>(h, recLen - aStart, 8);
      const bStart = recLen;
      if (quote) store<u8>(recPtr + recLen++, 0x22);
      memory.copy(recPtr + recLen, value.ptr, value.len);
      recLen += value.len;
      if (quote) store<u8>(recPtr + recLen++, 0x22);
      store<u32>(h, recLen - bStart, 12);
      pad();
      this.edited();
    }
    return this;
  }

  /** Removes `path` (an absent path is not an error). */
  remove(path: string): Edits {
    if (this.live) {
      push(this.event, OP_REMOVE, path, "", B_RAW);
      this.edited();
    }
    return this;
  }

  /** Moves the value at `from` to `to` (a missing `from` is not an error). */
  rename(from: string, to: string): Edits {
    if (this.live) {
      push(this.event, OP_RENAME, from, to, B_RAW);
      this.edited();
    }
    return this;
  }

  /** Sends the event to the output named `name`. */
  route(name: string): Edits {
    if (this.live) push(this.event, OP_ROUTE, name, "", B_RAW);
    return this;
  }

  /** Drops the event. */
  discard(): void {
    if (!this.live) return;
    recLen = this.start;
    this.verdict = Verdict.Drop;
  }

  /** Dead-letters the event with `reason`. */
  fail(reason: string): void {
    if (this.verdict == Verdict.Fail) return;
    recLen = this.start;
    push(this.event, OP_FAIL, "", reason, B_RAW);
    this.verdict = Verdict.Fail;
  }
}

/** The events a flat-map filter makes of one event, which they replace: none filters it out,
 *  one replaces it, more split it. fail() dead-letters it and withdraws what it emitted. */
export class Emitter {
  edits: Edits = new Edits();
  /** Events emitted for the current event. */
  count: u32 = 0;

  /** Emits `json`, the text of one JSON object. */
  emit(json: string): Emitter {
    const v = this.edits.verdict;
    if (v != Verdict.Drop && v != Verdict.Fail) {
      push(this.edits.event, OP_EMIT, "", json, B_RAW);
      this.count++;
    }
    return this;
  }

  route(name: string): Emitter {
    this.edits.route(name);
    return this;
  }

  fail(reason: string): void {
    this.edits.fail(reason);
  }
}

// ---- Params -------------------------------------------------------------------------------------

/** The init parameters: a JSON object of strings, decoded. */
export class Params {
  keys: string[] = [];
  values: string[] = [];

  /** The value of `key` (the last occurrence wins), or null. */
  get(key: string): string | null {
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (unchecked(this.keys[i]) == key) return unchecked(this.values[i]);
    }
    return null;
  }

  has(key: string): bool {
    return this.get(key) !== null;
  }
}

let parseAt: u32 = 0;
let parseError: string | null = null;

function skipWs(p: usize, len: u32): void {
  while (parseAt < len) {
    const c = load<u8>(p + parseAt);
    if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
    parseAt++;
  }
}

function eat(p: usize, len: u32, c: u8): bool {
  skipWs(p, len);
  if (parseAt < len && load<u8>(p + parseAt) == c) {
    parseAt++;
    return true;
  }
  return false;
}

/** The string after its opening quote, decoded; null with parseError set on an error. */
function parseString(p: usize, len: u32): string | null {
  let i = parseAt;
  while (true) {
    if (i >= len) {
      parseError = "invalid parameters: unterminated string";
      return null;
    }
    const c = load<u8>(p + i);
    if (c == 0x22) break;
    if (c < 0x20) {
      parseError = "invalid parameters: control character in a string";
      return null;
    }
    i += c == 0x5c ? 2 : 1;
  }
  const start = parseAt;
  parseAt = i + 1;
  const n = unescape(p + start, i - start);
  if (n < 0) {
    parseError = "invalid parameters: invalid escape";
    return null;
  }
  return String.UTF8.decodeUnsafe(scratch, <usize>n);
}

function parseParams(p: usize, len: u32, out: Params): bool {
  parseAt = 0;
  skipWs(p, len);
  if (parseAt == len) return true;
  if (!eat(p, len, 0x7b)) {
    parseError = "invalid parameters: expected a JSON object";
    return false;
  }
  if (!eat(p, len, 0x7d)) {
    while (true) {
      if (!eat(p, len, 0x22)) {
        parseError = "invalid parameters: expected a key";
        return false;
      }
      const k = parseString(p, len);
      if (k === null) return false;
      if (!eat(p, len, 0x3a)) {
        parseError = "invalid parameters: expected `:`";
        return false;
      }
      if (!eat(p, len, 0x22)) {
        parseError = "invalid parameters: every value must be a string";
        return false;
      }
      const v = parseString(p, len);
      if (v === null) return false;
      out.keys.push(k);
      out.values.push(v);
      if (eat(p, len, 0x2c)) continue;
      if (eat(p, len, 0x7d)) break;
      parseError = "invalid parameters: expected `,` or `}`";
      return false;
    }
  }
  skipWs(p, len);
  if (parseAt != len) {
    parseError = "invalid parameters: text after the object";
    return false;
  }
  return true;
}

// ---- Registration and the exports ----------------------------------------------------------------

const MODE_NONE = 0;
const MODE_FILTER = 1;
const MODE_MAP = 2;
const MODE_FLAT_MAP = 3;

let mode = MODE_NONE;
let filterFn: (e: Event) => bool = (e: Event): bool => true;
let mapFn: (e: Event, out: Edits) => void = (e: Event, out: Edits): void => {};
let flatMapFn: (e: Event, out: Emitter) => void = (e: Event, out: Emitter): void => {};
let initFn: (p: Params) => string | null = (p: Params): string | null => null;
let declaredFields: string[] | null = null;
let wantsRaw = false;

function declare(fields: string[] | null, raw: bool): void {
  if (mode != MODE_NONE) unreachable(); // one filter per module
  declaredFields = fields;
  wantsRaw = raw;
}

/** Registers `fn` as the module's filter: true keeps the event, false drops it. */
export function filter(fn: (e: Event) => bool, fields: string[] | null = null, raw: bool = false): void {
  declare(fields, raw);
  filterFn = fn;
  mode = MODE_FILTER;
}

/** Registers `fn` as the module's filter: it edits, drops or fails each event through `out`. */
export function map(fn: (e: Event, out: Edits) => void, fields: string[] | null = null, raw: bool = false): void {
  declare(fields, raw);
  mapFn = fn;
  mode = MODE_MAP;
}

/** Registers `fn` as the module's filter: each event is replaced by the events it emits. */
export function flatMap(fn: (e: Event, out: Emitter) => void, fields: string[] | null = null, raw: bool = false): void {
  declare(fields, raw);
  flatMapFn = fn;
  mode = MODE_FLAT_MAP;
}

/** Registers `fn` as the module's init: null accepts the parameters, a message rejects them.
 *  The entry file must also re-export `sluicebox_init`. */
export function init(fn: (p: Params) => string | null): void {
  initFn = fn;
}

const event = new Event();
const edits0 = new Edits();
const emitter = new Emitter();
let verdicts: usize = 0;
let verdictsCap: u32 = 0;
// UTF-8 bytes the host reads after a call returns, kept referenced.
let message: ArrayBuffer | null = null;
let fieldsBytes: ArrayBuffer | null = null;
const fieldsDecl: usize = memory.data(12, 4);

/** `sluicebox_fields`: re-export it only when the filter declares fields. */
export function sluicebox_fields(): i32 {
  const fields = declaredFields!; // traps when exported without declaring fields
  let joined = "";
  for (let i = 0; i < fields.length; i++) joined += (i > 0 ? "\n" : "") + fields[i];
  const bytes = String.UTF8.encode(joined);
  fieldsBytes = bytes;
  store<u32>(fieldsDecl, bytes.byteLength > 0 ? <u32>changetype<usize>(bytes) : 0);
  store<u32>(fieldsDecl, <u32>bytes.byteLength, 4);
  store<u32>(fieldsDecl, wantsRaw ? FIELDS_RAW : 0, 8);
  return <i32>fieldsDecl;
}

/** Writes the header's output fields; returns `status`. */
function finish(h: usize, status: Status, verdictsPtr: usize, text: string | null): i32 {
  const ok = status == Status.Ok;
  store<u32>(h, ok ? <u32>verdictsPtr : 0, HEADER_OUT);
  store<u32>(h, ok && recLen > 0 ? <u32>recPtr : 0, HEADER_OUT + 4);
  store<u32>(h, ok ? recLen : 0, HEADER_OUT + 8);
  if (text === null) {
    store<u32>(h, 0, HEADER_OUT + 12);
    store<u32>(h, 0, HEADER_OUT + 16);
  } else {
    const bytes = String.UTF8.encode(text);
    message = bytes;
    store<u32>(h, <u32>changetype<usize>(bytes), HEADER_OUT + 12);
    store<u32>(h, <u32>bytes.byteLength, HEADER_OUT + 16);
  }
  return status;
}

/** `sluicebox_filter`: runs the registered filter over one batch. */
export function sluicebox_filter(header: i32): i32 {
  const hp = <u32>header;
  if (!inBounds(hp, HEADER_LEN)) return Status.BadInput;
  const h = <usize>hp;
  recLen = 0;
  if (load<u32>(h) != <u32>ABI_VERSION) return finish(h, Status.Unsupported, 0, "unsupported ABI version in batch header");
  if (mode == MODE_NONE) return finish(h, Status.Failed, 0, "no filter registered (call filter, map or flatMap at top level)");
  const n = load<u32>(h, 4);
  const entriesPtr = load<u32>(h, 8);
  const nodesPtr = load<u32>(h, 12);
  const nodeTotal = load<u32>(h, 16);
  const dataPtr = load<u32>(h, 20);
  const dataLen = load<u32>(h, 24);
  const flags = load<u32>(h, 28);
  const fieldCount = load<u32>(h, 32);
  if (!inBounds(entriesPtr, <u64>n * ENTRY_LEN) || !inBounds(nodesPtr, <u64>nodeTotal * NODE_LEN) || !inBounds(dataPtr, dataLen))
    return finish(h, Status.BadInput, 0, "batch table out of bounds");
  const projected = (flags & BATCH_PROJECTED) != 0;
  const hasRaw = (flags & BATCH_RAW) != 0;
  const fields = declaredFields;
  if (projected && (fields === null || <u32>fields.length != fieldCount))
    return finish(h, Status.BadInput, 0, "projected batch does not match the declared fields");
  if (n > verdictsCap) {
    verdicts = heap.alloc(<usize>n);
    verdictsCap = n;
  }
  const edits = mode == MODE_FLAT_MAP ? emitter.edits : edits0;
  let any = false;
  for (let i: u32 = 0; i < n; i++) {
    const entry = <usize>entriesPtr + <usize>i * ENTRY_LEN;
    const rawStart = load<u32>(entry);
    const rawLen = load<u32>(entry, 4);
    const first = load<u32>(entry, 8);
    const count = load<u32>(entry, 12);
    if (<u64>first + <u64>count > <u64>nodeTotal) return finish(h, Status.BadInput, 0, "event nodes out of bounds");
    if (projected && count != fieldCount)
      return finish(h, Status.BadInput, 0, "projected event does not have one node per declared field");
    if (hasRaw && <u64>rawStart + <u64>rawLen > <u64>dataLen) return finish(h, Status.BadInput, 0, "event bytes out of bounds");
    event.index = i;
    event.nodes = <usize>nodesPtr + <usize>first * NODE_LEN;
    event.nodeCount = count;
    event.data = <usize>dataPtr;
    event.dataLen = dataLen;
    event.hasRaw = hasRaw;
    event.rawPtr = hasRaw ? <usize>dataPtr + rawStart : 0;
    event.rawLen = hasRaw ? rawLen : 0;
    event.projected = projected;
    poolUsed = 0;
    edits.event = i;
    edits.start = recLen;
    if (mode == MODE_FILTER) {
      edits.verdict = Verdict.Keep;
      if (!filterFn(event)) edits.discard();
    } else if (mode == MODE_MAP) {
      edits.verdict = Verdict.Keep;
      mapFn(event, edits);
    } else {
      edits.verdict = Verdict.Replace;
      emitter.count = 0;
      flatMapFn(event, emitter);
    }
    store<u8>(verdicts + i, <u8>edits.verdict);
    any = any || edits.verdict != Verdict.Keep;
  }
  return finish(h, Status.Ok, any ? verdicts : 0, null);
}

/** `sluicebox_init`: parses the parameters and calls the registered init. */
export function sluicebox_init(block: i32): i32 {
  const bp = <u32>block;
  if (!inBounds(bp, 20)) return Status.BadInput;
  const b = <usize>bp;
  let status = Status.Ok;
  let text: string | null = null;
  const paramsPtr = load<u32>(b, 4);
  const paramsLen = load<u32>(b, 8);
  const params = new Params();
  if (load<u32>(b) != <u32>ABI_VERSION) {
    status = Status.Unsupported;
    text = "unsupported ABI version in init block";
  } else if (!inBounds(paramsPtr, paramsLen)) {
    status = Status.BadInput;
    text = "init parameters out of bounds";
  } else if (!parseParams(<usize>paramsPtr, paramsLen, params)) {
    status = Status.BadConfig;
    text = parseError;
  } else {
    text = initFn(params);
    if (text !== null) status = Status.BadConfig;
  }
  if (text === null) {
    store<u32>(b, 0, 12);
    store<u32>(b, 0, 16);
  } else {
    const bytes = String.UTF8.encode(text);
    message = bytes;
    store<u32>(b, <u32>changetype<usize>(bytes), 12);
    store<u32>(b, <u32>bytes.byteLength, 16);
  }
  return status;
}

@external("sluicebox", "log")
declare function hostLog(level: i32, ptr: usize, len: usize): void;

/** Logs through the host (rate-limited there). Using it adds the `sluicebox.log` import. */
export function log(level: i32, text: string): void {
  const bytes = String.UTF8.encode(text);
  hostLog(level, changetype<usize>(bytes), <usize>bytes.byteLength);
}
