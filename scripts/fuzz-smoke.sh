#!/usr/bin/env bash
# Fuzz smoke run: builds the cargo-fuzz targets in fuzz/ and runs each for a
# few seconds from generated seeds (scripts/fuzz-seeds.py). A crash, panic,
# timeout or allocation past the RSS limit fails the run; the reproducer is
# left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz-smoke.sh                     # CI: 10 s per target
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh    # the longer run (docs/RELIABILITY.md)
#   FUZZ_TARGETS="nifti unpickle" scripts/fuzz-smoke.sh
#
# The smoke build does what `cargo fuzz build -O -s none` does (coverage
# instrumentation, no sanitizer) with plain cargo: stable Rust takes these
# flags, so CI needs neither cargo-fuzz nor RUSTC_BOOTSTRAP. The longer runs
# (docs/RELIABILITY.md) use `cargo fuzz run` with AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-10}
targets=${FUZZ_TARGETS:-"nifti safetensors_header unpickle checkpoint"}
triple=$(rustc -vV | sed -n 's/^host: //p')
tdir=fuzz/target-smoke

python3 scripts/fuzz-seeds.py fuzz/corpus
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --quiet --release --manifest-path fuzz/Cargo.toml --target "$triple" --target-dir "$tdir" --bins

passed=0
failed=0
mkdir -p fuzz/logs
for t in $targets; do mkdir -p "fuzz/artifacts/$t"; done
for t in $targets; do
    log=fuzz/logs/$t.log
    # -rss_limit_mb: a header that makes the reader allocate gigabytes is a
    # finding. -max_len: headers and pickles are small; 64 KiB leaves room
    # for whole small files.
    if "$tdir/$triple/release/$t" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        passed=$((passed + 1))
        status=ok
    else
        failed=$((failed + 1))
        status=FAILED
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -oE '#[0-9]+.*cov: [0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+' || echo 'cov: ?')
    echo "fuzz-smoke: $t: $status, $runs executions in ${seconds} s, $cov, corpus $(ls "fuzz/corpus/$t" | wc -l) files"
    if [ "$status" = FAILED ]; then
        tail -40 "$log"
    fi
done
echo "fuzz-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
