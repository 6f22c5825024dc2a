#!/usr/bin/env bash
# sweep-example.sh - size the warm pool with a sweep: deploy FUNCTIONS copies
# of the native no-op, offer them a Poisson load round-robin (each function
# is idle between its calls), and try each value of one /v1/pool knob.
# Leaves sweep.csv and sweep.svg in OUT and names the smallest setting that
# meets TARGET.
#
# The default sweeps keepalive_ms: with RATE=40 over 8 functions each sees a
# call about every 200 ms, so keep-alives shorter than that lose their
# instances between calls (cold starts, less memory) and longer ones keep
# them warm (more memory): the trade the chart shows.
#
# Environment: BUILD (default <repo>/build), OUT (.), KNOB (keepalive_ms),
# VALUES (0,50,100,250,1000,5000), FUNCTIONS (8), RATE (40), DURATION (5),
# TARGET (p99=2ms), SETTLE_MS (500).
. "$(dirname "$0")/lib.sh"

OUT=${OUT:-.}
KNOB=${KNOB:-keepalive_ms}
VALUES=${VALUES:-0,50,100,250,1000,5000}
FUNCTIONS=${FUNCTIONS:-8}
RATE=${RATE:-40}
DURATION=${DURATION:-5}
TARGET=${TARGET:-p99=2ms}
SETTLE_MS=${SETTLE_MS:-500}

need_cmd curl tar
need_built emberd ember-bench noop
need_root
mkdir -p "$OUT"

start_emberd
package_noop "$TMP/noop.tar.gz"
names=
for i in $(seq 0 $((FUNCTIONS - 1))); do
    deploy "sweep-$i" "$TMP/noop.tar.gz"
    names=${names:+$names,}sweep-$i
done

rc=0
"$EMBER_BENCH" sweep --url "http://127.0.0.1:$EMBERD_PORT" --function "$names" \
    --pattern poisson --rate "$RATE" --duration "$DURATION" --connections 16 \
    --knob "$KNOB" --values "$VALUES" --settle-ms "$SETTLE_MS" --target "$TARGET" \
    --csv "$OUT/sweep.csv" --svg "$OUT/sweep.svg" || rc=$?
# 3 means the sweep ran but no setting met the target: still a result.
[ "$rc" = 0 ] || [ "$rc" = 3 ] || die "ember-bench sweep failed (exit $rc)"
echo
echo "wrote $OUT/sweep.csv and $OUT/sweep.svg"
