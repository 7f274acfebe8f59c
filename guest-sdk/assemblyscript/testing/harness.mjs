// Runs a compiled AssemblyScript filter (any module of the filter ABI v1, in fact) under
// Node.js, without sluicebox: this file plays the host. It indexes each event the way the host
// does (docs/abi.md: a projected index when the module declares fields, else the full index
// with the raw text), calls `sluicebox_filter` once per batch, and decodes the verdicts and
// the records.
//
//     import { load } from "../testing/harness.mjs";
//     const f = await load("target/guests/assemblyscript/tag_service.wasm");
//     f.init({ key: "value" });            // null, or the message that rejects the params
//     const [o] = f.run('{"msg":"hi"}');   // { verdict: "edit", records: ['set env "prod"', ...] }

import { readFileSync } from "node:fs";

const VERDICTS = ["keep", "drop", "edit", "replace", "fail"];
const OPS = ["?", "set", "remove", "rename", "emit", "fail", "route"];
const KIND = { null: 1, false: 2, true: 3, number: 4, string: 5, object: 6, array: 7 };
const FLAG_VALUE_ESCAPED = 1, FLAG_KEY_ESCAPED = 2, FLAG_NO_KEY = 4;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** The full index of one JSON object (UTF-8 bytes): nodes as the host builds them. */
export function index(bytes) {
  const nodes = [];
  let at = 0;
  const ws = () => { while (at < bytes.length && " \t\r\n".includes(String.fromCharCode(bytes[at]))) at++; };
  const fail = (what) => { throw new Error(`not a JSON object: ${what} at byte ${at}`); };
  const string = () => {
    const start = ++at;
    let escaped = false;
    while (at < bytes.length && bytes[at] !== 0x22) {
      if (bytes[at] < 0x20) fail("control character in a string");
      if (bytes[at] === 0x5c) { escaped = true; at++; }
      at++;
    }
    if (at >= bytes.length) fail("unterminated string");
    at++;
    return { start, len: at - 1 - start, escaped };
  };
  const value = (depth, key, flags) => {
    ws();
    const me = nodes.length;
    const node = { keyStart: key ? key.start : 0, keyLen: key ? key.len : 0, flags, depth, kind: 0, start: at, len: 0, end: 0 };
    nodes.push(node);
    const c = bytes[at];
    if (c === 0x22) {
      const s = string();
      Object.assign(node, { kind: KIND.string, start: s.start, len: s.len });
      if (s.escaped) node.flags |= FLAG_VALUE_ESCAPED;
    } else if (c === 0x7b || c === 0x5b) {
      at++;
      container(depth + 1, c === 0x7b);
      Object.assign(node, { kind: c === 0x7b ? KIND.object : KIND.array, len: at - node.start });
    } else {
      while (at < bytes.length && !" \t\r\n,]}".includes(String.fromCharCode(bytes[at]))) at++;
      const text = dec.decode(bytes.subarray(node.start, at));
      node.len = at - node.start;
      if (text in KIND && text !== "string" && text !== "object" && text !== "array" && text !== "number") node.kind = KIND[text];
      else if (/^-?\d/.test(text) && !Number.isNaN(Number(text))) node.kind = KIND.number;
      else fail("invalid value");
    }
    node.end = nodes.length;
    return me;
  };
  const container = (depth, object) => {
    const close = object ? 0x7d : 0x5d;
    ws();
    if (bytes[at] === close) { at++; return; }
    for (;;) {
      ws();
      let key = null;
      let flags = FLAG_NO_KEY;
      if (object) {
        if (bytes[at] !== 0x22) fail("expected a key");
        key = string();
        flags = key.escaped ? FLAG_KEY_ESCAPED : 0;
        ws();
        if (bytes[at] !== 0x3a) fail("expected `:`");
        at++;
      }
      value(depth, key, flags);
      ws();
      if (bytes[at] === 0x2c) { at++; continue; }
      if (bytes[at] === close) { at++; return; }
      fail("expected `,` or a closing bracket");
    }
  };
  ws();
  if (bytes[at] !== 0x7b) fail("expected `{`");
  at++;
  container(0, true);
  ws();
  if (at !== bytes.length) fail("text after the object");
  return nodes;
}

/** The components of a path (docs/abi.md section 10): `\x` is `x`, a final `\` is itself. */
function components(path) {
  const out = [];
  let cur = "";
  for (let i = 0; i < path.length; i++) {
    const c = path[i];
    if (c === "\\" && i + 1 < path.length) cur += path[++i];
    else if (c === ".") { out.push(cur); cur = ""; }
    else cur += c;
  }
  out.push(cur);
  return out;
}

/** The node `path` names in a full index (the last duplicate key wins), or -1. */
export function lookup(bytes, nodes, path) {
  let lo = 0, hi = nodes.length, depth = 0, found = -1;
  for (const key of components(path)) {
    found = -1;
    for (let i = lo; i < hi; i = nodes[i].end) {
      const n = nodes[i];
      if (n.depth !== depth || n.flags & FLAG_NO_KEY) continue;
      const raw = bytes.subarray(n.keyStart, n.keyStart + n.keyLen);
      const k = n.flags & FLAG_KEY_ESCAPED ? JSON.parse(`"${dec.decode(raw)}"`) : dec.decode(raw);
      if (k === key) found = i;
    }
    if (found < 0) return -1;
    if (nodes[found].kind !== KIND.object) { lo = hi = 0; }
    else { lo = found + 1; hi = nodes[found].end; }
    depth++;
  }
  return found;
}

/** Loads a module; see the file's comment. */
export async function load(path) {
  const imports = {
    sluicebox: { log: (level, ptr, len) => console.error(`[${level}] ${dec.decode(mem().subarray(ptr, ptr + len))}`) },
    env: { abort: () => { throw new Error("abort"); } },
  };
  const { instance } = await WebAssembly.instantiate(readFileSync(path), imports);
  const x = instance.exports;
  const mem = () => new Uint8Array(x.memory.buffer);
  const view = () => new DataView(x.memory.buffer);
  const put = (bytes) => {
    const p = x.sluicebox_alloc(Math.max(bytes.length, 1), 8);
    if (!p) throw new Error("sluicebox_alloc failed");
    mem().set(bytes, p);
    return p;
  };
  const text = (ptr, len) => dec.decode(mem().slice(ptr, ptr + len));

  let fields = null, raw = true;
  if (x.sluicebox_fields) {
    const d = x.sluicebox_fields();
    const v = view();
    const joined = text(v.getUint32(d, true), v.getUint32(d + 4, true));
    fields = joined === "" ? [] : joined.split("\n");
    raw = (v.getUint32(d + 8, true) & 1) !== 0;
  }

  return {
    fields,
    /** Runs init with `params` (strings): null when accepted, else the message. */
    init(params = {}) {
      if (!x.sluicebox_init) return null;
      const p = enc.encode(JSON.stringify(params));
      const pp = put(p);
      const block = put(new Uint8Array(20));
      const v = view();
      v.setUint32(block, 1, true);
      v.setUint32(block + 4, pp, true);
      v.setUint32(block + 8, p.length, true);
      const status = x.sluicebox_init(block);
      const w = view();
      const msg = text(w.getUint32(block + 12, true), w.getUint32(block + 16, true));
      return status === 0 ? null : msg || `status ${status}`;
    },
    /** Runs one batch of events (JSON text each): one outcome per event. */
    run(...events) {
      const datas = events.map((e) => enc.encode(e));
      const data = new Uint8Array(datas.reduce((s, d) => s + d.length, 0));
      const entries = [], all = [];
      let off = 0;
      for (const d of datas) {
        data.set(d, off);
        const full = index(d);
        const mine = fields && fields.length
          ? fields.map((f) => {
              const i = lookup(d, full, f);
              return i < 0 ? { keyStart: 0, keyLen: 0, flags: 0, depth: 0, kind: 0, start: 0, len: 0 } : { ...full[i], keyStart: 0, keyLen: 0, flags: full[i].flags & FLAG_VALUE_ESCAPED, depth: 0 };
            }).map((n, k) => ({ ...n, end: k + 1 }))
          : full;
        entries.push([off, d.length, all.length, mine.length]);
        for (const n of mine) all.push({ ...n, keyStart: n.keyLen ? n.keyStart + off : 0, start: n.kind ? n.start + off : 0 });
        off += d.length;
      }
      const projected = fields !== null && fields.length > 0;
      const nodeBytes = new Uint8Array(all.length * 24);
      const nv = new DataView(nodeBytes.buffer);
      all.forEach((n, i) => {
        const b = i * 24;
        nv.setUint32(b, n.keyStart, true); nv.setUint32(b + 4, n.keyLen, true);
        nv.setUint32(b + 8, n.start, true); nv.setUint32(b + 12, n.len, true);
        nv.setUint8(b + 16, n.kind); nv.setUint8(b + 17, n.flags); nv.setUint16(b + 18, n.depth, true);
        nv.setUint32(b + 20, n.end, true);
      });
      const entryBytes = new Uint8Array(entries.length * 16);
      const ev = new DataView(entryBytes.buffer);
      entries.forEach((e, i) => e.forEach((x2, k) => ev.setUint32(i * 16 + k * 4, x2, true)));
      const dp = put(data), np = put(nodeBytes), ep = put(entryBytes), h = put(new Uint8Array(64));
      const v = view();
      v.setUint32(h, 1, true);
      v.setUint32(h + 4, events.length, true);
      v.setUint32(h + 8, ep, true);
      v.setUint32(h + 12, np, true);
      v.setUint32(h + 16, all.length, true);
      v.setUint32(h + 20, dp, true);
      v.setUint32(h + 24, data.length, true);
      v.setUint32(h + 28, (projected ? 1 : 0) | (raw || !projected ? 2 : 0), true);
      v.setUint32(h + 32, projected ? fields.length : 0, true);
      const status = x.sluicebox_filter(h);
      const w = view();
      if (status !== 0) throw new Error(`sluicebox_filter: status ${status}: ${text(w.getUint32(h + 48, true), w.getUint32(h + 52, true))}`);
      const vp = w.getUint32(h + 36, true), rp = w.getUint32(h + 40, true), rl = w.getUint32(h + 44, true);
      const out = events.map((_, i) => ({ verdict: VERDICTS[vp ? w.getUint8(vp + i) : 0], records: [] }));
      for (let at = rp; at + 16 <= rp + rl;) {
        const ev2 = w.getUint32(at, true), op = w.getUint8(at + 4);
        const al = w.getUint32(at + 8, true), bl = w.getUint32(at + 12, true);
        const a = text(at + 16, al), b = text(at + 16 + al, bl);
        const name = OPS[op] ?? "?";
        const line = op === 4 || op === 5 ? `${name} ${b}` : op === 2 || op === 6 ? `${name} ${a}` : `${name} ${a} ${b}`;
        out[ev2].records.push(line);
        at += (16 + al + bl + 3) & ~3;
      }
      return out;
    },
  };
}
