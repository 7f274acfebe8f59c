#!/usr/bin/env bash
# The README's test command. On a fresh machine it installs what it needs (the wasm targets
# come from rust-toolchain.toml; guest toolchains from scripts/build-guests.sh), builds the
# example guests, and runs every test of the workspace in the release profile (one build of
# wasmtime serves the tests, the CLI and the benches).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GUEST_TESTS=1 bash scripts/build-guests.sh
cargo test --release --workspace
