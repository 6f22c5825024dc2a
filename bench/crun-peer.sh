#!/usr/bin/env bash
# crun-peer.sh - a container runtime as the peer for ember's cold start:
# time RUNS x `crun run` of a bundle whose only file is a static /true built
# here from C (create namespaces, mount, start, wait, delete), and print its
# p50/p99 beside ember's first-call latency for the native no-op (stem cells
# on, and stem_cells=0) and ember's warm call.
#
# crun refuses the hybrid cgroup layout (v1 controllers plus a cgroup2 mount
# at /sys/fs/cgroup/unified); each crun run happens in a private mount
# namespace with that cgroup2 mount removed, which leaves the host alone.
#
# Environment: BUILD (default <repo>/build), RUNS (100).
. "$(dirname "$0")/lib.sh"

RUNS=${RUNS:-100}

need_cmd crun cc unshare curl tar awk
need_built emberd ember-bench noop
need_root

# ---- the bundle -----------------------------------------------------------
BUNDLE=$TMP/bundle
mkdir -p "$BUNDLE/rootfs"
printf 'int main(void) { return 0; }\n' >"$TMP/true.c"
cc -static -O2 -o "$BUNDLE/rootfs/true" "$TMP/true.c" ||
    die "cannot build a static /true (needs the C library's static archive, libc6-dev)"
(cd "$BUNDLE" && crun spec) || die "crun spec failed"
# The default spec runs an interactive "sh": run /true without a terminal.
sed -i -e 's|"sh"|"/true"|' -e 's|"terminal": true|"terminal": false|' "$BUNDLE/config.json"
grep -q '"/true"' "$BUNDLE/config.json" || die "could not edit $BUNDLE/config.json"

cat >"$TMP/crun-loop.sh" <<'EOF_INNER'
# Inside `unshare -m`: hide the cgroup2 mount, then time each run in us.
set -eu
runs=$1 bundle=$2 state=$3 out=$4
if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then
    umount /sys/fs/cgroup/unified
fi
crun --root "$state" run --bundle "$bundle" "warmup-$$" >/dev/null
for i in $(seq "$runs"); do
    t0=$EPOCHREALTIME
    crun --root "$state" run --bundle "$bundle" "bench-$$-$i" >/dev/null
    t1=$EPOCHREALTIME
    echo "$t0 $t1"
done | awk '{ printf "%.3f\n", ($2 - $1) * 1000 }' >"$out"
EOF_INNER

note "crun run x $RUNS"
mkdir -p "$TMP/crun-state"
unshare -m bash "$TMP/crun-loop.sh" "$RUNS" "$BUNDLE" "$TMP/crun-state" "$TMP/crun.ms" ||
    die "crun run failed (see above)"
read -r C_P50 C_P99 _ < <(percentiles "$TMP/crun.ms")

# ---- ember ------------------------------------------------------------------
start_emberd
package_noop "$TMP/noop.tar.gz"
URL=http://127.0.0.1:$EMBERD_PORT
sleep 1 # stem cells fill after start

# "p50 2.61 ms p90 ... p99 12.74 ms" on the line after $1, in ms.
cold_numbers() {
    awk -v section="$1" '
        function ms(v, u) { return u == "us" ? v / 1000 : u == "ns" ? v / 1e6 : u == "s" ? v * 1000 : v }
        $0 ~ "^" section { on = 1; next }
        on && /latency/ { for (i = 1; i < NF; i++) { if ($i == "p50") p50 = ms($(i + 1), $(i + 2)); if ($i == "p99") p99 = ms($(i + 1), $(i + 2)) }; on = 0 }
        END { printf "%.3f %.3f\n", p50, p99 }' "$2"
}

note "ember-bench cold x $RUNS (stem cells on)"
"$EMBER_BENCH" cold --url "$URL" --package "$TMP/noop.tar.gz" --count "$RUNS" --prefix peer-a- \
    >"$TMP/cold-a.txt" || die "ember-bench cold failed: $(cat "$TMP/cold-a.txt")"
pool_patch '{"stem_cells": 0}'
sleep 0.5
note "ember-bench cold x $RUNS (stem_cells=0)"
"$EMBER_BENCH" cold --url "$URL" --package "$TMP/noop.tar.gz" --count "$RUNS" --prefix peer-b- \
    >"$TMP/cold-b.txt" || die "ember-bench cold failed: $(cat "$TMP/cold-b.txt")"
read -r A_P50 A_P99 < <(cold_numbers "first call" "$TMP/cold-a.txt")
read -r B_P50 B_P99 < <(cold_numbers "first call" "$TMP/cold-b.txt")
read -r W_P50 W_P99 < <(cold_numbers "2nd call" "$TMP/cold-a.txt")
A_KINDS=$(awk '/^first call/ { on = 1; next } on && /acquire/ { $1 = ""; print; exit }' "$TMP/cold-a.txt")
B_KINDS=$(awk '/^first call/ { on = 1; next } on && /acquire/ { $1 = ""; print; exit }' "$TMP/cold-b.txt")
W_KINDS=$(awk '/^2nd call/ { on = 1; next } on && /acquire/ { $1 = ""; print; exit }' "$TMP/cold-a.txt")

echo
echo "$RUNS runs each, loopback, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg);"
echo "ember numbers are HTTP round trips (client side)"
printf '%-48s %10s %10s\n' "" "p50 ms" "p99 ms"
printf '%-48s %10s %10s\n' "crun run /true (create, start, wait, delete)" "$C_P50" "$C_P99"
printf '%-48s %10s %10s   acquire:%s\n' "ember first call, stem cells on" "$A_P50" "$A_P99" "$A_KINDS"
printf '%-48s %10s %10s   acquire:%s\n' "ember first call, stem_cells=0" "$B_P50" "$B_P99" "$B_KINDS"
# Warm unless the pool's memory ledger evicted the instance meanwhile
# (RUNS x memory_mb beyond memory_budget_mb): the acquire kinds tell.
printf '%-48s %10s %10s   acquire:%s\n' "ember second call" "$W_P50" "$W_P99" "$W_KINDS"
