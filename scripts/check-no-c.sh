#!/usr/bin/env bash
# Checks that no C code enters the library's default dependency tree (a cargo-deny-style
# check done with `cargo tree`):
#   - no `*-sys` crate except linux-raw-sys (pure Rust syscall bindings, no C);
#   - the only crate that builds C with `cc` is wasmtime (its small helpers.c, see
#     ../shared/TOOLCHAINS.md), and nothing builds with cmake or pkg-config.
# Exits 1 with one line per problem.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail=0
normal="$(cargo tree -p sluicebox -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)"
for crate in $normal; do
    case "$crate" in
    linux-raw-sys) ;;
    *-sys)
        echo "check-no-c: C bindings crate in the library's tree: $crate" >&2
        fail=1
        ;;
    esac
done
for builder in cc cmake pkg-config; do
    users="$(cargo tree -p sluicebox -e normal,build -i "$builder" --depth 1 --prefix none --format '{p}' 2>/dev/null |
        awk '{print $1}' | sort -u | grep -v -x "$builder" || true)"
    for user in $users; do
        if [ "$builder" = cc ] && [ "$user" = wasmtime ]; then
            continue
        fi
        echo "check-no-c: $user builds native code with $builder" >&2
        fail=1
    done
done
if [ "$fail" -eq 0 ]; then
    echo "check-no-c: ok ($(echo "$normal" | wc -w) crates; only wasmtime's helpers.c is C)"
fi
exit "$fail"
