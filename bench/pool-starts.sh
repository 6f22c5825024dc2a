#!/usr/bin/env bash
# pool-starts.sh - what each way of getting an instance costs, in one run:
#
#   stem      first call of a function while a stem cell is ready
#   cold      first call with no stem cell (stem_cells=0): build everything
#   zygote    a new instance forked from the function's zygote
#             (max_calls_per_instance=1 recycles after every call, so every
#             call after the first forks); the zygote forked it ahead, after
#             the previous fork (zygote_prefork=1, the default)
#   zygote*   the same with zygote_prefork=0: fork() on the call's path
#   warm      an idle instance
#   snapshot  microVM: a stem monitor restored from the function's snapshot
#
# Each call is paced so that the pool has refilled before the next one; the
# table shows the client's latency (curl's time_total, request to last byte)
# and the pool's own acquire time from Server-Timing, p50 and p99. Then:
# sandbox creation rate (stem cells made per second when the pool is asked
# for many), PSS of an idle warm instance (smaps_rollup of its process), and
# crun run of a /bin/true bundle as the peer, in the same run. If
# ember-probe is built, what this machine charges for a fork, a
# copy-on-write fault and a wake-up, for reading the zygote row.
#
# Environment: BUILD (default <repo>/build), COUNT (calls per row, 100).
. "$(dirname "$0")/lib.sh"

COUNT=${COUNT:-100}
need_cmd curl tar awk
need_built emberd ember-bench noop
need_root

start_emberd
package_noop "$TMP/noop.tar.gz"
URL=http://127.0.0.1:$EMBERD_PORT

# call NAME OUTFILE: one call; appends "total_ms acquire_kind acquire_ms".
call() {
    curl -sS -o /dev/null -D "$TMP/h" -w '%{time_total}\n' "$URL/fn/$1/" >"$TMP/t" ||
        die "call $1 failed"
    local total kind acq
    total=$(awk '{ printf "%.3f", $1 * 1000 }' "$TMP/t")
    kind=$(sed -n 's/.*acquire;desc="\([a-z]*\)".*/\1/p' "$TMP/h" | tr -d '\r')
    acq=$(sed -n 's/.*acquire;desc="[a-z]*";dur=\([0-9.]*\).*/\1/p' "$TMP/h" | tr -d '\r')
    echo "$total $kind $acq" >>"$2"
}

stems_ready() {
    curl -sS "$URL/v1/pool" | sed -n 's/.*"container":{"available":true,"stem_cells_ready":\([0-9]*\).*/\1/p'
}

# pool_quiet N: wait until N stem cells are ready and none is starting, so
# that a call measures its own start, not its overlap with the refills (and
# the background zygote) that the previous call set off on two cores.
pool_quiet() {
    local _ st
    for _ in $(seq 400); do
        st=$(curl -sS "$URL/v1/pool")
        case $st in
        *'"container":{"available":true,"stem_cells_ready":'"$1"',"stem_cells_starting":0'*) return 0 ;;
        esac
        sleep 0.005
    done
}

pss() { # pss PID LABEL
    awk '/^Pss:/ { pss = $2 } /^Rss:/ { rss = $2 } END { printf "%s (pid '"$1"'): PSS %d KiB, RSS %d KiB\n", "'"$2"'", pss, rss }' \
        "/proc/$1/smaps_rollup"
}

row() { # row LABEL FILE WANT_KIND
    local n p_tot p_acq
    awk -v k="$3" '$2 == k { print $1 }' "$2" >"$TMP/tot"
    awk -v k="$3" '$2 == k { print $3 }' "$2" >"$TMP/acq"
    read -r t50 t99 n < <(percentiles "$TMP/tot")
    read -r a50 a99 _ < <(percentiles "$TMP/acq")
    other=$(awk -v k="$3" '$2 != k' "$2" | wc -l)
    printf '%-10s %6s %9s %9s %11s %11s   (%s calls of another kind)\n' "$1" "$n" "$t50" "$t99" \
        "$a50" "$a99" "$other"
}

echo "== deploying $COUNT functions"
for i in $(seq "$COUNT"); do deploy "f$i" "$TMP/noop.tar.gz"; done

echo "== stem: first calls with a stem cell ready"
pool_patch '{"stem_cells": 2}'
for i in $(seq "$COUNT"); do
    pool_quiet 2
    call "f$i" "$TMP/stem"
done

echo "== cold: first calls with no stem cell"
pool_patch '{"stem_cells": 0, "keepalive_ms": 0}'
sleep 0.5
for i in $(seq "$COUNT"); do deploy "g$i" "$TMP/noop.tar.gz"; done
for i in $(seq "$COUNT"); do call "g$i" "$TMP/cold"; sleep 0.01; done

echo "== zygote: every call forks a new instance"
pool_patch '{"keepalive_ms": 600000, "functions": {"f1": {"max_calls_per_instance": 1}}}'
call f1 "$TMP/zwarmup"
for _ in $(seq "$COUNT"); do call f1 "$TMP/zygote"; sleep 0.01; done
sleep 0.2
# The instance f1's zygote keeps forked ahead, waiting: its memory is the
# price of that row.
ahead=''
for pid in $(pgrep -x ember-agent); do
    ppid=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
    [ "$(cat "/proc/$ppid/comm" 2>/dev/null)" = ember-agent ] && ahead=$pid
done
pss_ahead=''
[ -n "$ahead" ] && pss_ahead=$(pss "$ahead" "instance forked ahead, before its first call")
pool_patch '{"functions": {"f1": {"zygote_prefork": 0}}}'
call f1 "$TMP/zwarmup"
for _ in $(seq "$COUNT"); do call f1 "$TMP/zygote0"; sleep 0.01; done

echo "== warm"
for _ in $(seq "$COUNT"); do call f2 "$TMP/warm"; done

echo
echo "acquire    calls   p50 ms    p99 ms  acq p50 ms  acq p99 ms   (total = client latency; acq = Server-Timing acquire)"
row stem "$TMP/stem" stem
row cold "$TMP/cold" cold
row zygote "$TMP/zygote" zygote
row 'zygote*' "$TMP/zygote0" zygote
row warm "$TMP/warm" warm

# What the platform charges for the zygote row's parts, without ember.
if [ -x "$BUILD/ember-probe" ]; then
    echo
    echo "this machine, for reading the zygote row (ember-probe):"
    "$BUILD/ember-probe" | sed 's/^/  /'
fi

# PSS of idle warm instances, of both kinds. A forked one (its parent is
# another ember-agent, its zygote): give f1 one that stays. A function's
# first instance is its specialized stem cell (parent emberd): f2's, the
# agent that has run the most (the warm row's 100 calls).
# (No instance waits forked ahead now, to be taken for a forked one.)
pool_patch '{"zygote_prefork": 0, "functions": {"f1": {"max_calls_per_instance": 0}}}'
call f1 "$TMP/pss-call"
echo
[ -n "$pss_ahead" ] && echo "$pss_ahead"
forked='' served='' most=-1
for pid in $(pgrep -x ember-agent); do
    ppid=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
    if [ "$(cat "/proc/$ppid/comm" 2>/dev/null)" = ember-agent ]; then
        forked=$pid
    else
        cpu=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null)
        if [ -n "$cpu" ] && [ "$cpu" -gt "$most" ]; then most=$cpu served=$pid; fi
    fi
done
[ -n "$forked" ] && pss "$forked" "idle warm instance, forked from its zygote"
[ -n "$served" ] && pss "$served" "idle warm instance, the function's first (its stem cell)"

# Creation rate: ask for many container stem cells at once (none of the
# microVM backend, which would share the CPUs) and count how fast they come.
# The functions go first: the zygotes their first calls left wanting would
# take stem cells as they come.
for i in $(seq "$COUNT"); do
    curl -sS -o /dev/null -X DELETE "$URL/v1/functions/f$i"
    curl -sS -o /dev/null -X DELETE "$URL/v1/functions/g$i"
done
pool_patch '{"stem_cells": 0}'
sleep 0.5
pool_patch '{"stem_cells": {"container": 200, "microvm": 0}, "memory_budget_mb": 100000}'
# One reading while they are still coming, timed at the middle of its
# request: polling until all 200 are there measured the poll's 50 ms step
# as much as the rate (~12% of a 0.4 s run), and faster polling would
# take CPU from the creation.
t0=$(date +%s.%N)
sleep 0.2
ta=$(date +%s.%N)
made=$(stems_ready)
tb=$(date +%s.%N)
awk -v n="$made" -v a="$t0" -v b="$ta" -v c="$tb" 'BEGIN {
    t = (b + c) / 2 - a
    printf "sandbox creation: %d stem cells in %.3f s = %s%.0f/s\n", n, t, (n >= 200 ? ">= " : ""), n / t }'
for _ in $(seq 2000); do [ "$(stems_ready)" -ge 200 ] 2>/dev/null && break; sleep 0.05; done
pool_patch '{"stem_cells": 2}'

if [ -x "$(dirname "$0")/crun-peer.sh" ] && command -v crun >/dev/null; then
    echo
    COUNT=$COUNT bash "$(dirname "$0")/crun-peer.sh" 2>&1 | tail -4
fi
