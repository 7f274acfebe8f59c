"""The path syntax of docs/abi.md section 10, resolved by the host: sets "k" to one letter per
path of PATHS telling what it found (M missing, N null, F false, T true, D number, S string,
O object, A array) and copies each value found to "v0".."v9". `\\.` is a dot inside a key,
`\\x` is x, a final `\\` is itself, and components may be empty (`a..b` is a, "", b)."""

PATHS = [".", "a..b", ".a", "a.", "e\\", "\\l\\e\\v\\e\\l", "http.st\\atus", "u.😀.x", "sp ace", "a\\\\.b"]
FIELDS = PATHS

_LETTERS = {"null": "N", "number": "D", "string": "S", "object": "O", "array": "A"}


def _letter(v):
    if v is None:
        return "M"
    if v.kind() == "bool":
        return "T" if v.as_bool() else "F"
    return _LETTERS[v.kind()]


def map(event, edits):
    found = [event.get(p) for p in PATHS]
    edits.set_str("k", "".join(_letter(v) for v in found))
    for n, v in enumerate(found):
        if v is not None:
            edits.set_value(f"v{n}", v)
