#!/usr/bin/env bash
# test.sh - build ember and run every test suite twice: a normal build, then
# an AddressSanitizer + UndefinedBehaviorSanitizer build. Exits non-zero if
# any suite fails.
#
#   sudo ./scripts/test.sh
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/deps.sh"
ember_deps test || exit 1

jobs="$(nproc)"
status=0

run_suites() {
    local build="$1" label="$2"
    local failed=0
    echo "== ember tests: $label ($build) =="
    for t in "$build"/tests/unit-* "$build"/tests/it-*; do
        [ -x "$t" ] || continue
        echo "-- $(basename "$t")"
        # Criterion prints its own "Synthesis" summary line per suite. A
        # sanitizer report in a test's child does not always fail the test,
        # so the output is searched for one too.
        local out
        out="$(mktemp)"
        if ! "$t" --jobs "${EMBER_TEST_JOBS:-$jobs}" 2>&1 | tee "$out"; then
            echo "FAILED: $(basename "$t") ($label)"
            failed=1
        fi
        if grep -qE "ERROR: (Address|Leak|Thread)Sanitizer|runtime error:" "$out"; then
            echo "FAILED: sanitizer report in $(basename "$t") ($label)"
            failed=1
        fi
        rm -f "$out"
    done
    return $failed
}

build_and_test() {
    local dir="$1" label="$2"; shift 2
    cmake -S "$root" -B "$dir" -DEMBER_TESTS=ON "$@" >/dev/null || return 1
    cmake --build "$dir" -j"$jobs" || return 1
    run_suites "$dir" "$label"
}

build_and_test "$root/build" "normal build" -DCMAKE_BUILD_TYPE=RelWithDebInfo || status=1
ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
    build_and_test "$root/build-asan" "asan+ubsan build" -DCMAKE_BUILD_TYPE=Debug \
    -DEMBER_ASAN=ON -DEMBER_UBSAN=ON || status=1

# A short fuzz run of everything that parses outside input (libFuzzer needs
# clang): the same seed and number of inputs every time, so that a failure
# here is a finding that reproduces, not luck. EMBER_FUZZ_RUNS and
# EMBER_FUZZ_SEED change them; run a driver by hand for longer hunts. New
# inputs go to a scratch directory; the checked-in corpora are only read.
fuzz_runs="${EMBER_FUZZ_RUNS:-100000}"
fuzz_seed="${EMBER_FUZZ_SEED:-1}"
fuzz_cap="${EMBER_FUZZ_SECONDS:-120}" # a cap for a slow machine
if command -v clang >/dev/null && [ "$fuzz_runs" -gt 0 ]; then
    echo "== ember fuzz: $fuzz_runs inputs per driver, seed $fuzz_seed =="
    if CC=clang cmake -S "$root" -B "$root/build-fuzz" -DEMBER_TESTS=ON \
           -DCMAKE_BUILD_TYPE=Debug >/dev/null &&
       cmake --build "$root/build-fuzz" -j"$jobs" --target fuzz-manifest fuzz-package \
           fuzz-proto fuzz-http >/dev/null; then
        for name in manifest package proto http; do
            scratch="$(mktemp -d)"
            if "$root/build-fuzz/tests/fuzz-$name" -runs="$fuzz_runs" -seed="$fuzz_seed" \
                   -max_total_time="$fuzz_cap" -print_final_stats=0 \
                   -artifact_prefix="$scratch/" "$scratch" "$root/tests/fuzz/corpus/$name" \
                   >"$scratch.log" 2>&1; then
                echo "fuzz-$name: $(grep -Eo 'Done [0-9]+ runs.*' "$scratch.log" | tail -1)"
            else
                tail -40 "$scratch.log"
                echo "FAILED: fuzz-$name found a crash (see above; reproduce with" \
                     "-seed=$fuzz_seed -runs=$fuzz_runs)"
                status=1
            fi
            rm -rf "$scratch" "$scratch.log"
        done
    else
        echo "FAILED: the fuzz build"
        status=1
    fi
else
    echo "== ember fuzz: skipped (no clang) =="
fi

if [ $status -eq 0 ]; then
    echo "== ember tests: all suites passed in both builds =="
else
    echo "== ember tests: FAILURES (see above) =="
fi
exit $status
