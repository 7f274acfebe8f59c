// Native tests of the examples under Node.js (node --test), with testing/harness.mjs as the
// host: no sluicebox, no wasm runtime but Node's own. Build the modules first
// (`bash scripts/build-guests.sh assemblyscript`); SLUICEBOX_GUESTS names their directory
// (default: target/guests/assemblyscript from the repository root).
import { test } from "node:test";
import assert from "node:assert/strict";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { load } from "../testing/harness.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
const dir = process.env.SLUICEBOX_GUESTS ?? join(target, "guests", "assemblyscript");

test("drop_debug drops DEBUG, after unescaping, the last duplicate winning", async () => {
  const f = await load(join(dir, "drop_debug.wasm"));
  assert.deepEqual(f.fields, ["level"]);
  const out = f.run(
    '{"level":"DEBUG","msg":"a"}',
    '{"level":"DEBU\\u0047"}',
    '{"level":"INFO","level":"DEBUG"}',
    '{"level":"debug"}',
    '{"level":["DEBUG"]}',
    '{"msg":"no level"}',
  );
  assert.deepEqual(out.map((o) => o.verdict), ["drop", "drop", "drop", "keep", "keep", "keep"]);
});

test("tag_service sets env and renames msg", async () => {
  const f = await load(join(dir, "tag_service.wasm"));
  const [a, b] = f.run('{"msg":"hi"}', '{"x":1}');
  assert.equal(a.verdict, "edit");
  assert.deepEqual(a.records, ['set env "prod"', "rename msg message"]);
  assert.deepEqual(b.records, ['set env "prod"']);
});

test("field_paths resolves the path syntax over the full index", async () => {
  const f = await load(join(dir, "field_paths.wasm"));
  assert.equal(f.fields, null);
  const [o] = f.run('{"":{"":1},"a":{"":{"b":2}},"sp ace":"s","level":null}');
  assert.deepEqual(o.records, [
    'set k "DDMOMNMMSM"',
    "set v0 1",
    "set v1 2",
    'set v3 {"b":2}',
    "set v5 null",
    'set v8 "s"',
  ]);
});
