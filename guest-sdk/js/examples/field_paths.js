// The path syntax of docs/abi.md section 10, resolved by the host: sets "k" to one letter per
// path of PATHS telling what it found (M missing, N null, F false, T true, D number, S string,
// O object, A array) and copies each value found to "v0".."v9". `\.` is a dot inside a key,
// `\x` is x, a final `\` is itself, and components may be empty (`a..b` is a, "", b).
export const PATHS = [".", "a..b", ".a", "a.", "e\\", "\\l\\e\\v\\e\\l", "http.st\\atus", "u.😀.x", "sp ace", "a\\\\.b"];
export const fields = PATHS;

function letter(v) {
  if (v === null) return "M";
  switch (v.kind()) {
    case "null": return "N";
    case "bool": return v.asBool() ? "T" : "F";
    case "number": return "D";
    case "string": return "S";
    case "object": return "O";
    default: return "A";
  }
}

export function map(event, edits) {
  const found = PATHS.map((p) => event.get(p));
  edits.setStr("k", found.map(letter).join(""));
  found.forEach((v, n) => {
    if (v !== null) edits.setValue(`v${n}`, v);
  });
}
