#!/usr/bin/env bash
# Checks that no C code enters the library's default dependency tree (a cargo-deny-style
# check done with `cargo tree`):
#   - no `*-sys` crate except linux-raw-sys (pure Rust syscall bindings, no C);
#   - the only crate that builds C with `cc` is wasmtime (its small helpers.c, see
#     ../shared/TOOLCHAINS.md), and nothing builds with cmake or pkg-config.
# The one allowed exception is `ring` (rustls' crypto provider), and only behind the optional
# features `tls` (https for the network sinks, TLS listeners) and `kafka` (krafka): it runs on
# network threads, never on the parse or filter path. The second pass checks that nothing
# else builds C with those features on.
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

# builds_c FEATURES ALLOWED...: reports each crate of the tree with FEATURES that builds
# native code, other than the ALLOWED users of `cc`.
builds_c() {
    local features="$1"
    shift
    local args=(-p sluicebox)
    if [ -n "$features" ]; then args+=(--features "$features"); fi
    local builder user a allowed users
    for builder in cc cmake pkg-config; do
        users="$(cargo tree "${args[@]}" -e normal,build -i "$builder" --depth 1 --prefix none --format '{p}' 2>/dev/null |
            awk '{print $1}' | sort -u | grep -v -x "$builder" || true)"
        for user in $users; do
            allowed=0
            for a in "$@"; do
                if [ "$builder" = cc ] && [ "$user" = "$a" ]; then allowed=1; fi
            done
            if [ "$allowed" -eq 0 ]; then
                echo "check-no-c: $user builds native code with $builder${features:+ (features $features)}" >&2
                fail=1
            fi
        done
    done
}
builds_c "" wasmtime
builds_c "tls,kafka" wasmtime ring

if [ "$fail" -eq 0 ]; then
    echo "check-no-c: ok ($(echo "$normal" | wc -w) crates; only wasmtime's helpers.c is C; with tls/kafka also ring)"
fi
exit "$fail"
