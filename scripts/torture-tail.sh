#!/usr/bin/env bash
# kill -9 torture of the file tail source: ROUNDS (default 25) SIGKILLs at random moments
# while a writer appends and rotates; checks every line arrived at least once and prints
# the duplicate count. Usage: bash scripts/torture-tail.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export SLUICEBOX_TORTURE_ROUNDS="${1:-25}"
exec cargo test --release --test all tail::kill9_torture -- --exact --nocapture
