#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another, each for SECONDS (default 20), on
# its local corpus (fuzz/corpus/TARGET, not committed) plus the committed seeds
# (fuzz/seeds/TARGET). Needs a nightly toolchain; installs cargo-fuzz 0.13.2 if missing.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]      # no TARGET: every target
#
# Prints executions, exec/s, corpus size and peak RSS per target. Exits 1 if any target
# found a crash, leak, timeout or out-of-memory (the input is in fuzz/artifacts/TARGET/;
# reproduce with `cargo +nightly fuzz run TARGET FILE`), 2 on a setup error.
#
# Environment: FUZZ_ARGS adds libFuzzer flags (e.g. FUZZ_ARGS="-runs=1000000");
# FUZZ_SANITIZER picks the sanitizer (default address).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-20}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "usage: bash scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "::: installing cargo-fuzz 0.13.2"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

fuzz=(cargo +nightly fuzz)
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi

t0=$SECONDS
echo "::: building the fuzz targets"
"${fuzz[@]}" build "${sanitizer[@]}"
echo "::: build took $((SECONDS - t0)) s"
# Run copies of the binaries just built (as `cargo fuzz run` would run them), so that a
# rebuild while the targets run (sources edited meanwhile) changes nothing in this run.
# The build goes to fuzz/target, or wherever CARGO_TARGET_DIR points.
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
tdir=$(cargo +nightly metadata --manifest-path fuzz/Cargo.toml --format-version 1 --no-deps |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
bins="$tdir/fuzz-bins"
mkdir -p "$bins"
for t in "${targets[@]}"; do
    rm -f "$bins/$t"
    if [[ -f "$tdir/$host/release/$t" ]]; then cp "$tdir/$host/release/$t" "$bins/"; fi
done
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

logs="$tdir/fuzz-logs"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
    log="$logs/$t.log"
    echo "::: $t for $seconds s (log: $log)"
    start=$SECONDS
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    "$bins/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" -timeout=30 \
        -print_final_stats=1 ${FUZZ_ARGS:-} "fuzz/corpus/$t" "fuzz/seeds/$t" \
        >"$log" 2>&1 || status=$?
    took=$((SECONDS - start))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    # libFuzzer's own corpus at the end (units/bytes), not the files on disk (which keep
    # every unit earlier runs added).
    corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | sed 's/^corp: //')
    runs=${runs:-?}
    rate="?"
    if [[ "$runs" =~ ^[0-9]+$ ]] && [[ $took -gt 0 ]]; then rate=$((runs / took)); fi
    line=$(printf '%-16s %12s execs %6s s %8s exec/s  corpus %12s  rss %6s MB' \
        "$t" "$runs" "$took" "$rate" "${corpus:-?}" "${rss:-?}")
    if [[ $status -ne 0 ]]; then
        line="$line  FAILED (exit $status)"
        failed+=("$t")
        echo "!!! $t failed; the end of its log:"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|assert' "$log" | head -20 || true
        tail -5 "$log"
    fi
    summary+=("$line")
    echo "$line"
done

echo "::: summary ($(date -u +%Y-%m-%dT%H:%MZ), $seconds s per target, total $((SECONDS - t0)) s)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "::: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
