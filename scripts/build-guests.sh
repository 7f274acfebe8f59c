#!/usr/bin/env bash
# Builds the Rust example guests as wasm modules into target/guests/rust/<name>.wasm.
#
# Uses the workspace's `guest` profile (size-optimised, LTO, panic = abort) and the
# wasm32-unknown-unknown target, which rust-toolchain.toml installs. Works from any directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Every crate under guest-sdk/rust/examples/<name> is the package guest-<name with - for _>.
names=()
packages=()
for manifest in guest-sdk/rust/examples/*/Cargo.toml; do
    name="$(basename "$(dirname "$manifest")")"
    names+=("$name")
    packages+=(-p "guest-${name//_/-}")
done

cargo build --profile guest --target wasm32-unknown-unknown "${packages[@]}"

target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="$target_dir/guests/rust"
mkdir -p "$out"
for name in "${names[@]}"; do
    src="$target_dir/wasm32-unknown-unknown/guest/guest_${name}.wasm"
    cp "$src" "$out/$name.wasm"
    printf '%8d bytes  %s\n' "$(stat -c %s "$out/$name.wasm")" "$out/$name.wasm"
done
