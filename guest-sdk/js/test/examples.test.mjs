// Native tests of the examples: `node --test test/` in guest-sdk/js, no wasm runtime.
import { test } from "node:test";
import assert from "node:assert/strict";
import { run } from "../sluicebox.js";
import * as dropDebug from "../examples/drop_debug.js";
import * as tagService from "../examples/tag_service.js";
import * as fieldPaths from "../examples/field_paths.js";

test("drop_debug drops DEBUG only", () => {
  const out = run(dropDebug, ['{"level":"DEBUG"}', '{"level":"DEBU\\u0047"}', '{"level":"INFO"}', "{}", '{"level":["DEBUG"]}']);
  assert.deepEqual(out.map((o) => o.verdict), ["drop", "drop", "keep", "keep", "keep"]);
});

test("tag_service sets env and renames msg", () => {
  const [a, b] = run(tagService, ['{"msg":"hi","n":1}', '{"n":1}']);
  assert.equal(a.verdict, "edit");
  assert.deepEqual(a.edits, [{ op: "set", a: "env", b: '"prod"' }, { op: "rename", a: "msg", b: "message" }]);
  assert.deepEqual(b.edits, [{ op: "set", a: "env", b: '"prod"' }]);
});

test("field_paths reports kinds", () => {
  const [o] = run(fieldPaths, ['{"":{"":1},"a":{"":{"b":2}},"sp ace":9}']);
  assert.deepEqual(o.edits[0], { op: "set", a: "k", b: '"DDMOMMMMDM"' });
});
