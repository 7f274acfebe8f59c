// The sluicebox JavaScript guest SDK: write a filter as a plain function per event; `adapt`
// turns the module into the batch-level export of the WIT world `sluicebox:filter/guest@1.0.0`
// (wit/sluicebox.wit, docs/abi.md part II). Runs unchanged in QuickJS (componentize-qjs) and
// in Node.js (`node --test`), with no wasm runtime for native tests.
//
// A filter module exports exactly one of
//   filter(event)        -> true keeps the event, false drops it
//   map(event, edits)    -> edits.set/setStr/setI64/setBool/setValue/remove/rename/route/
//                           discard/fail
//   flatMap(event, out)  -> out.emit(json) zero or more times, out.route, out.fail
// and optionally `fields` (the paths it reads; default none), `raw` (true to get each event's
// JSON text from event.raw()), and `init(params)` (params: a plain object of strings; throw
// to reject them). An exception from the function fails the whole call: the host then splits
// the batch and dead-letters only the event that throws, with the exception's message.

const KIND_NAMES = [null, "null", "bool", "bool", "number", "string", "object", "array"];
const KIND_MISSING = 0, KIND_FALSE = 2, KIND_TRUE = 3, KIND_NUMBER = 4, KIND_STRING = 5;
const FLAG_VALUE_ESCAPED = 1;
const KEEP = 0, DROP = 1, EDIT = 2, REPLACE = 3, FAIL = 4;

// UTF-8 <-> string without TextDecoder (QuickJS has none).
function utf8Decode(bytes, start, end) {
  let s = "";
  let i = start;
  while (i < end) {
    const b = bytes[i];
    if (b < 0x80) {
      // Runs of ASCII in one go.
      let j = i + 1;
      while (j < end && bytes[j] < 0x80) j++;
      s += String.fromCharCode.apply(null, bytes.subarray ? bytes.subarray(i, j) : bytes.slice(i, j));
      i = j;
      continue;
    }
    let c;
    if (b < 0xe0) { c = ((b & 0x1f) << 6) | (bytes[i + 1] & 0x3f); i += 2; }
    else if (b < 0xf0) { c = ((b & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f); i += 3; }
    else {
      c = ((b & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) | ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f);
      i += 4;
    }
    s += String.fromCodePoint(c);
  }
  return s;
}

function utf8Encode(s) {
  const out = [];
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
  }
  return out;
}

/** One value of an event: its kind and JSON text, as the host found it. */
export class Value {
  constructor(kind, bytes, start, end, escaped) {
    this._kind = kind;
    this._bytes = bytes;
    this._start = start;
    this._end = end;
    this._escaped = escaped;
  }
  /** "null", "bool", "number", "string", "object" or "array". */
  kind() { return KIND_NAMES[this._kind]; }
  /** Whether a string value has escapes (`\`). */
  isEscaped() { return this._escaped; }
  /** The value's JSON text (a string with its quotes). */
  raw() {
    const t = utf8Decode(this._bytes, this._start, this._end);
    return this._kind === KIND_STRING ? '"' + t + '"' : t;
  }
  /** The string, escapes decoded, or null if the value is not a string. */
  asStr() {
    if (this._kind !== KIND_STRING) return null;
    const t = utf8Decode(this._bytes, this._start, this._end);
    return this._escaped ? JSON.parse('"' + t + '"') : t;
  }
  /** Whether the value is the string `s` (escapes decoded). */
  strEq(s) {
    if (this._kind !== KIND_STRING) return false;
    if (this._escaped) return this.asStr() === s;
    const len = this._end - this._start;
    if (len < s.length) return false;
    let ascii = true;
    for (let k = 0; k < s.length; k++) if (s.charCodeAt(k) >= 0x80) { ascii = false; break; }
    const want = ascii ? null : utf8Encode(s);
    const wlen = ascii ? s.length : want.length;
    if (len !== wlen) return false;
    for (let k = 0; k < wlen; k++) {
      const w = ascii ? s.charCodeAt(k) : want[k];
      if (this._bytes[this._start + k] !== w) return false;
    }
    return true;
  }
  /** The number as a double, or null. */
  asF64() { return this._kind === KIND_NUMBER ? Number(this.raw()) : null; }
  /** The number as an integer if it is one exactly, or null. */
  asI64() {
    const t = this._kind === KIND_NUMBER ? this.raw() : null;
    if (t === null || !/^-?(0|[1-9][0-9]*)$/.test(t)) return null;
    const n = Number(t);
    return Number.isSafeInteger(n) ? n : null;
  }
  /** true or false, or null if the value is not a boolean. */
  asBool() { return this._kind === KIND_TRUE ? true : this._kind === KIND_FALSE ? false : null; }
  isNull() { return this._kind === 1; }
  /** The value as a JavaScript value (JSON.parse of its text). */
  json() { return JSON.parse(this.raw()); }
}

/** One event: the declared fields, read from the host's index. */
export class Event {
  constructor(batch, i, paths) {
    this._b = batch;
    this._i = i;
    this._paths = paths;
  }
  /** The event's position in the call's batch. */
  index() { return this._i; }
  _slot(path) {
    const f = this._paths.get(path);
    if (f === undefined) {
      throw new Error(`field \`${path}\` was not declared: add it to \`fields\``);
    }
    return this._i * this._b.fieldCount + f;
  }
  /** The value at `path`, or null when it is missing. */
  get(path) {
    const s = this._slot(path);
    const kind = this._b.kinds[s];
    if (kind === KIND_MISSING) return null;
    const start = this._b.spans[2 * s];
    return new Value(kind, this._b.data, start, start + this._b.spans[2 * s + 1],
      (this._b.flags[s] & FLAG_VALUE_ESCAPED) !== 0);
  }
  /** Whether `path` is present (any kind, null included). */
  has(path) { return this._b.kinds[this._slot(path)] !== KIND_MISSING; }
  /** The string at `path`, escapes decoded, or null. */
  str(path) { const v = this.get(path); return v === null ? null : v.asStr(); }
  /** Whether `path` holds the string `s`. */
  strEq(path, s) { const v = this.get(path); return v !== null && v.strEq(s); }
  getI64(path) { const v = this.get(path); return v === null ? null : v.asI64(); }
  getF64(path) { const v = this.get(path); return v === null ? null : v.asF64(); }
  getBool(path) { const v = this.get(path); return v === null ? null : v.asBool(); }
  isNull(path) { const v = this.get(path); return v !== null && v.isNull(); }
  /** The event's JSON text; needs `export const raw = true`. */
  raw() {
    if (this._b.rawSpans.length === 0) {
      throw new Error("event.raw() needs `export const raw = true`");
    }
    const start = this._b.rawSpans[2 * this._i];
    return utf8Decode(this._b.raw, start, start + this._b.rawSpans[2 * this._i + 1]);
  }
}

function record(answer, i, op, a, b) {
  answer.edits.push({ event: i, op, a, b });
}

/** What a `map` function does to its event. */
export class Edits {
  constructor(answer, i) { this._a = answer; this._i = i; this._mark = answer.edits.length; }
  _edit(op, a, b) {
    if (this._a.verdicts[this._i] === FAIL) return this;
    if (this._a.verdicts[this._i] === KEEP) this._a.verdicts[this._i] = EDIT;
    record(this._a, this._i, op, a, b);
    return this;
  }
  /** Sets `path` to the JSON text `json`. */
  set(path, json) { return this._edit("set", path, json); }
  setStr(path, s) { return this._edit("set", path, JSON.stringify(String(s))); }
  setI64(path, n) {
    if (!Number.isSafeInteger(n)) throw new Error(`setI64: ${n} is not a safe integer`);
    return this._edit("set", path, String(n));
  }
  setBool(path, b) { return this._edit("set", path, b ? "true" : "false"); }
  /** Copies a Value (from event.get) to `path`. */
  setValue(path, v) { return this._edit("set", path, v.raw()); }
  remove(path) { return this._edit("remove", path, ""); }
  rename(from, to) { return this._edit("rename", from, to); }
  /** Sends the event to the output `name`. */
  route(name) {
    if (this._a.verdicts[this._i] !== FAIL) record(this._a, this._i, "route", name, "");
    return this;
  }
  /** Drops the event. */
  discard() {
    this._a.edits.length = this._mark;
    this._a.verdicts[this._i] = DROP;
  }
  /** Dead-letters the event with `reason`; earlier edits of it are dropped. */
  fail(reason) {
    this._a.edits.length = this._mark;
    this._a.verdicts[this._i] = FAIL;
    record(this._a, this._i, "fail", "", String(reason));
  }
}

/** What a `flatMap` function emits in place of its event. */
export class Emitter {
  constructor(answer, i) { this._a = answer; this._i = i; this._mark = answer.edits.length; this._n = 0; }
  /** Adds one output event: a JSON object text, or a plain object (JSON.stringify'd). */
  emit(json) {
    if (this._a.verdicts[this._i] === FAIL) return this;
    record(this._a, this._i, "emit", "", typeof json === "string" ? json : JSON.stringify(json));
    this._n++;
    return this;
  }
  count() { return this._n; }
  route(name) {
    if (this._a.verdicts[this._i] !== FAIL) record(this._a, this._i, "route", name, "");
    return this;
  }
  fail(reason) {
    this._a.edits.length = this._mark;
    this._a.verdicts[this._i] = FAIL;
    record(this._a, this._i, "fail", "", String(reason));
  }
}

function kindOf(user) {
  const kinds = ["filter", "map", "flatMap"].filter((k) => typeof user[k] === "function");
  if (kinds.length !== 1) {
    throw new Error("a sluicebox filter module exports exactly one of filter, map, flatMap");
  }
  return kinds[0];
}

/**
 * Adapts a filter module (its exports, as an object) to the WIT export
 * `sluicebox:filter/guest@1.0.0`: { init, fields, filter } over whole batches.
 */
export function adapt(user) {
  const kind = kindOf(user);
  const paths = new Map();
  const declared = Array.isArray(user.fields) ? user.fields.map(String) : [];
  declared.forEach((p, f) => { if (!paths.has(p)) paths.set(p, f); });
  return {
    init(params) {
      if (typeof user.init === "function") {
        const obj = {};
        for (const [k, v] of params) obj[k] = v;
        try {
          user.init(obj);
        } catch (e) {
          throw String(e && e.message !== undefined ? e.message : e);
        }
      }
    },
    fields() {
      return { paths: declared, raw: user.raw === true };
    },
    filter(batch) {
      const n = batch.count;
      const answer = { verdicts: new Uint8Array(n), edits: [] };
      try {
        for (let i = 0; i < n; i++) {
          const event = new Event(batch, i, paths);
          if (kind === "filter") {
            if (!user.filter(event)) answer.verdicts[i] = DROP;
          } else if (kind === "map") {
            user.map(event, new Edits(answer, i));
          } else {
            answer.verdicts[i] = REPLACE;
            user.flatMap(event, new Emitter(answer, i));
          }
        }
      } catch (e) {
        throw String(e && e.message !== undefined ? e.message : e);
      }
      return answer;
    },
  };
}

/**
 * Native testing: runs a filter module over events (JSON strings) without wasm, with the
 * host's batch shape. Returns one outcome per event: { verdict: "keep"|"drop"|"edit"|"replace"|
 * "fail", edits: [{op, a, b}] }. Paths are resolved with JSON.parse and the path rules of
 * docs/abi.md section 10 (last duplicate key wins, as on the host).
 */
export function run(user, events, params = {}) {
  const guest = adapt(user);
  guest.init(Object.entries(params).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const decl = guest.fields();
  const batch = buildBatch(events, decl);
  const answer = guest.filter(batch);
  const names = ["keep", "drop", "edit", "replace", "fail"];
  return events.map((_, i) => ({
    verdict: names[answer.verdicts[i]],
    edits: answer.edits.filter((e) => e.event === i).map(({ op, a, b }) => ({ op, a, b })),
  }));
}

/** Splits a path into keys: `\x` is x, a final `\` is itself, components may be empty. */
export function pathKeys(path) {
  const keys = [];
  let cur = "";
  for (let k = 0; k < path.length; k++) {
    const c = path[k];
    if (c === "\\" && k + 1 < path.length) { cur += path[++k]; }
    else if (c === ".") { keys.push(cur); cur = ""; }
    else cur += c;
  }
  keys.push(cur);
  return keys;
}

// The host's lookup over a parsed event: JSON text of the value at `path` or null. Uses a
// reviver-free parse of the raw text to keep numbers as written.
function findText(text, keys) {
  let pos = 0;
  const ws = () => { while (" \t\r\n".includes(text[pos])) pos++; };
  const skipString = () => { pos++; while (text[pos] !== '"') pos += text[pos] === "\\" ? 2 : 1; pos++; };
  const skipValue = () => {
    ws();
    const start = pos;
    const c = text[pos];
    if (c === '"') skipString();
    else if (c === "{" || c === "[") {
      let depth = 0;
      do {
        const d = text[pos];
        if (d === '"') { skipString(); continue; }
        if (d === "{" || d === "[") depth++;
        if (d === "}" || d === "]") depth--;
        pos++;
      } while (depth > 0);
    } else { while (pos < text.length && !",}] \t\r\n".includes(text[pos])) pos++; }
    return [start, pos];
  };
  let span = [0, text.length];
  for (const key of keys) {
    pos = span[0];
    ws();
    if (text[pos] !== "{") return null;
    pos++;
    let found = null;
    ws();
    if (text[pos] === "}") return null;
    for (;;) {
      ws();
      const ks = pos;
      skipString();
      const k = JSON.parse(text.slice(ks, pos));
      ws(); pos++; // ':'
      const v = skipValue();
      if (k === key) found = v;
      ws();
      if (text[pos] === ",") { pos++; continue; }
      break;
    }
    if (found === null) return null;
    span = found;
  }
  return text.slice(span[0], span[1]);
}

/** Builds the `batch` record the host would pass for `events` (JSON strings). */
export function buildBatch(events, decl) {
  const F = decl.paths.length;
  const kinds = [], flags = [], spans = [], data = [], rawSpans = [], raw = [];
  for (const text of events) {
    if (decl.raw) {
      const b = utf8Encode(text);
      rawSpans.push(raw.length, b.length);
      raw.push(...b);
    }
    for (const p of decl.paths) {
      const t = findText(text, pathKeys(p));
      if (t === null) { kinds.push(KIND_MISSING); flags.push(0); spans.push(0, 0); continue; }
      let kind, body = t;
      if (t[0] === '"') { kind = KIND_STRING; body = t.slice(1, -1); }
      else if (t[0] === "{") kind = 6;
      else if (t[0] === "[") kind = 7;
      else if (t === "null") kind = 1;
      else if (t === "true") kind = KIND_TRUE;
      else if (t === "false") kind = KIND_FALSE;
      else kind = KIND_NUMBER;
      const b = utf8Encode(body);
      kinds.push(kind);
      flags.push(kind === KIND_STRING && body.includes("\\") ? FLAG_VALUE_ESCAPED : 0);
      spans.push(data.length, b.length);
      data.push(...b);
    }
  }
  return {
    count: events.length, fieldCount: F,
    kinds: Uint8Array.from(kinds), flags: Uint8Array.from(flags),
    spans: Uint32Array.from(spans), data: Uint8Array.from(data),
    rawSpans: Uint32Array.from(rawSpans), raw: Uint8Array.from(raw),
  };
}
