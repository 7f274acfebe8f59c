#!/usr/bin/env bash
# kill -9 torture of the tail sources: ROUNDS (default 25) SIGKILLs at random moments while a
# writer appends, rotates and deletes; checks that every line the reader had a chance to read
# arrived at least once (and whole), that every duplicate is one the checkpoint at its kill did
# not cover, and prints the counts.
#   WHICH = file        the `file` source (rename + create, copytruncate, deletions); default
#         = kubernetes  the `kubernetes_logs` source over a fake /var/log/pods (CRI and Docker
#                       lines, partials, kubelet rotation and compression, pods deleted)
#         = all         both, one after the other
# SLUICEBOX_TORTURE_SEED=<seed> replays a run's choices (not its timing).
# Usage: bash scripts/torture-tail.sh [ROUNDS] [WHICH]
set -euo pipefail
cd "$(dirname "$0")/.."
export SLUICEBOX_TORTURE_ROUNDS="${1:-25}"
which="${2:-file}"
run() {
    cargo test --release --workspace --test all "$1" -- --exact --nocapture
}
case "$which" in
    file) run tail::kill9_torture ;;
    kubernetes) run kubernetes::kubernetes_kill9_torture ;;
    all) run tail::kill9_torture && run kubernetes::kubernetes_kill9_torture ;;
    *) echo "torture-tail: unknown WHICH '$which' (file, kubernetes, all)" >&2; exit 2 ;;
esac
