// field_paths: the path syntax of docs/abi.md section 10, resolved by the SDK over the full
// index (no field is declared). Sets "k" to one letter per path of PATHS telling what it found
// (M missing, N null, F false, T true, D number, S string, O object, A array) and copies each
// value found to "v0".."v9". `\.` is a dot inside a key, `\x` is `x`, a final `\` is itself,
// and components may be empty (`a..b` is a, "", b).
import { Edits, Event, Kind, Value, map } from "../assembly/sluicebox";
export { sluicebox_abi_version, sluicebox_alloc, sluicebox_filter } from "../assembly/sluicebox";

const PATHS: string[] = [".", "a..b", ".a", "a.", "e\\", "\\l\\e\\v\\e\\l", "http.st\\atus", "u.😀.x", "sp ace", "a\\\\.b"];

function letter(v: Value | null): string {
  if (v === null) return "M";
  switch (v.kind) {
    case Kind.Null: return "N";
    case Kind.False: return "F";
    case Kind.True: return "T";
    case Kind.Number: return "D";
    case Kind.String: return "S";
    case Kind.Object: return "O";
    case Kind.Array: return "A";
  }
  return "?";
}

function fieldPaths(e: Event, out: Edits): void {
  let k = "";
  for (let i = 0; i < PATHS.length; i++) k += letter(e.get(PATHS[i]));
  out.setStr("k", k);
  for (let i = 0; i < PATHS.length; i++) {
    const v = e.get(PATHS[i]);
    if (v !== null) out.setValue("v" + i.toString(), v);
  }
}

map(fieldPaths);
