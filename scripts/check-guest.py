#!/usr/bin/env python3
"""Checks that wasm files are sluicebox filter modules (ABI v1) with nothing extra.

    python3 scripts/check-guest.py [--exports] f.wasm...

Each file must be a core module that exports `memory`, `sluicebox_abi_version`,
`sluicebox_alloc` and `sluicebox_filter`, may export `sluicebox_fields` and `sluicebox_init`,
exports nothing else, and imports nothing but `sluicebox.log`. With --exports, prints each
module's export names (one per line) and checks nothing. Exits 1 with one line per problem.
"""
import sys

REQUIRED = {"memory", "sluicebox_abi_version", "sluicebox_alloc", "sluicebox_filter"}
OPTIONAL = {"sluicebox_fields", "sluicebox_init"}
ALLOWED_IMPORTS = {("sluicebox", "log")}


def leb(b, i):
    """Reads an unsigned LEB128 at b[i]: (value, next index)."""
    v = shift = 0
    while True:
        byte = b[i]
        i += 1
        v |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return v, i


def name(b, i):
    n, i = leb(b, i)
    return b[i : i + n].decode("utf-8", "replace"), i + n


def imports_exports(path):
    b = open(path, "rb").read()
    if b[:4] != b"\0asm" or b[4:8] != b"\1\0\0\0":
        raise ValueError("not a core wasm module (version 1)")
    imports, exports = [], []
    i = 8
    while i < len(b):
        sid = b[i]
        size, i = leb(b, i + 1)
        end = i + size
        if sid in (2, 7):  # import, export
            count, j = leb(b, i)
            for _ in range(count):
                if sid == 2:
                    module, j = name(b, j)
                    field, j = name(b, j)
                    kind = b[j]
                    j += 1
                    # Skip the import's type: func idx, table, memory, global, tag.
                    if kind == 0:
                        _, j = leb(b, j)
                    elif kind == 1:
                        j += 1
                        flags = b[j]
                        _, j = leb(b, j + 1)
                        if flags & 1:
                            _, j = leb(b, j)
                    elif kind == 2:
                        flags = b[j]
                        _, j = leb(b, j + 1)
                        if flags & 1:
                            _, j = leb(b, j)
                    elif kind == 3:
                        j += 2
                    else:
                        _, j = leb(b, j + 1)
                    imports.append((module, field))
                else:
                    field, j = name(b, j)
                    _, j = leb(b, j + 1)
                    exports.append(field)
        i = end
    return imports, exports


def main(argv):
    show = "--exports" in argv
    files = [a for a in argv if a != "--exports"]
    problems = []
    for f in files:
        try:
            imports, exports = imports_exports(f)
        except (OSError, ValueError, IndexError) as e:
            problems.append(f"{f}: cannot read: {e}")
            continue
        if show:
            print("\n".join(exports))
            continue
        for m, n in imports:
            if (m, n) not in ALLOWED_IMPORTS:
                problems.append(f"{f}: imports {m}.{n} (a filter module may import only sluicebox.log)")
        for e in sorted(REQUIRED - set(exports)):
            problems.append(f"{f}: does not export {e}")
        for e in exports:
            if e not in REQUIRED | OPTIONAL:
                problems.append(f"{f}: exports {e}, which is not part of the ABI")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
