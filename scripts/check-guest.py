#!/usr/bin/env python3
"""Checks that wasm files are sluicebox filter modules (ABI v1) with nothing extra.

    python3 scripts/check-guest.py [--exports] [--wasi] f.wasm...

Each file must be a core module that exports `memory`, `sluicebox_abi_version`,
`sluicebox_alloc` and `sluicebox_filter`, may export `sluicebox_fields` and `sluicebox_init`,
exports nothing else, and imports nothing but `sluicebox.log`. With --wasi (for modules the
host loads with `--wasi`, such as Go's), it may also import the WASI preview 1 functions the
host provides (`wasi_snapshot_preview1.*`, docs/abi.md section 4.2) and export `_initialize`.
With --exports, prints each module's export names (one per line) and checks nothing. Exits 1
with one line per problem.
"""
import sys

REQUIRED = {"memory", "sluicebox_abi_version", "sluicebox_alloc", "sluicebox_filter"}
OPTIONAL = {"sluicebox_fields", "sluicebox_init"}
ALLOWED_IMPORTS = {("sluicebox", "log")}
# With --wasi: the 46 functions of WASI preview 1 (src/filter/wasm/wasi.rs), and `_initialize`.
WASI_MODULE = "wasi_snapshot_preview1"
WASI_FUNCTIONS = set(
    """args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get
    fd_advise fd_allocate fd_close fd_datasync fd_fdstat_get fd_fdstat_set_flags
    fd_fdstat_set_rights fd_filestat_get fd_filestat_set_size fd_filestat_set_times fd_pread
    fd_prestat_get fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber fd_seek fd_sync
    fd_tell fd_write path_create_directory path_filestat_get path_filestat_set_times path_link
    path_open path_readlink path_remove_directory path_rename path_symlink path_unlink_file
    poll_oneoff proc_exit proc_raise sched_yield random_get sock_accept sock_recv sock_send
    sock_shutdown""".split()
)
WASI_EXPORTS = {"_initialize"}


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
    wasi = "--wasi" in argv
    files = [a for a in argv if a not in ("--exports", "--wasi")]
    allowed_imports = ALLOWED_IMPORTS | ({(WASI_MODULE, f) for f in WASI_FUNCTIONS} if wasi else set())
    allowed_exports = REQUIRED | OPTIONAL | (WASI_EXPORTS if wasi else set())
    only = "sluicebox.log and WASI preview 1" if wasi else "sluicebox.log"
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
            if (m, n) not in allowed_imports:
                problems.append(f"{f}: imports {m}.{n} (a filter module may import only {only})")
        for e in sorted(REQUIRED - set(exports)):
            problems.append(f"{f}: does not export {e}")
        for e in exports:
            if e not in allowed_exports:
                problems.append(f"{f}: exports {e}, which is not part of the ABI")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
