#!/usr/bin/env bash
# vs-nginx.sh - a warm native no-op function on emberd against nginx's
# `return 200 'ok'`, both driven by wrk on loopback in the same run.
#
# Prints requests/s and p50/p99 for each and ember's share of nginx's
# throughput (goal: warm >= 0.5x nginx). If ember-bench is built, also
# offers both the same open-loop rate (half of ember's wrk throughput) and
# prints the latencies measured from intended send times.
#
# The wrk runs alternate, ROUNDS times (ember, nginx, nginx, ember, ...), and
# each round's ratio is taken from two runs made back to back: on a shared
# or virtual machine the throughput of either server drifts by a quarter
# between minutes, and one run of each would mostly measure the drift. The
# table shows each server's median run and the median of the rounds'
# ratios.
#
# Environment: BUILD (default <repo>/build), THREADS (wrk threads, 2),
# CONNS (wrk connections, 64), DURATION (s per wrk run, 10), ROUNDS (3),
# WARMUP (s, 3), NGINX_WORKERS (2), OPEN_LOOP (1; 0 skips the ember-bench
# part).
. "$(dirname "$0")/lib.sh"

THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
NGINX_WORKERS=${NGINX_WORKERS:-2}
OPEN_LOOP=${OPEN_LOOP:-1}

need_cmd wrk nginx curl tar awk
need_built emberd noop
need_root

NGINX_PID=
stop_nginx() {
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID" 2>/dev/null || true
        local _
        for _ in $(seq 50); do
            kill -0 "$NGINX_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
}
CLEANUP_HOOKS+=(stop_nginx)

start_nginx() {
    local port=$1 dir=$TMP/nginx
    mkdir -p "$dir/logs" "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 'ok'; }
    }
}
EOF
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
    NGINX_PID=$!
    local _
    for _ in $(seq 50); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && return 0
        kill -0 "$NGINX_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$dir/logs/error.log" >&2 || true
    die "nginx did not start on 127.0.0.1:$port"
}

# wrk's "50%  115.00us" and friends, in ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# run_wrk NAME URL: one wrk run; leaves NAME_rps NAME_p50 NAME_p99 NAME_err in $TMP/NAME.vars.
run_wrk() {
    local name=$1 url=$2 out=$TMP/wrk-$1.txt
    note "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency $url"
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$out" ||
        die "wrk against $name failed: $(cat "$out")"
    local rps p50 p99 non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sockerr=$(awk '/Socket errors:/ { s = 0; for (i = 3; i <= NF; i += 2) s += $(i + 1) + 0; print s }' "$out")
    [ -n "$rps" ] || die "could not read wrk's output for $name: $(cat "$out")"
    printf '%s %s %s %s\n' "$rps" "$p50" "$p99" "$((${non2xx:-0} + ${sockerr:-0}))" >"$TMP/$name.vars"
}

# open_loop NAME URL_BASE RATE [FUNCTION]: ember-bench run at RATE; prints "p50 p99 errors".
open_loop() {
    local name=$1 url=$2 rate=$3 out=$TMP/eb-$1.txt
    note "ember-bench run --url $url --rate $rate --duration $DURATION (open loop)"
    "$EMBER_BENCH" run --url "$url" --function noop --method GET --rate "$rate" \
        --duration "$DURATION" --connections "$CONNS" --quiet >"$out" || true
    awk '
        function ms(v, u) { return u == "us" ? v / 1000 : u == "ns" ? v / 1e6 : u == "s" ? v * 1000 : v }
        /^requests/ { for (i = 1; i <= NF; i++) if ($i == "errors") err = $(i - 1) }
        /^latency/ { for (i = 2; i < NF; i++) { if ($i == "p50") p50 = ms($(i + 1), $(i + 2)); if ($i == "p99") p99 = ms($(i + 1), $(i + 2)) } }
        END { printf "%.3f %.3f %s\n", p50, p99, err == "" ? "?" : err }' "$out"
}

# ---- ember --------------------------------------------------------------
start_emberd
package_noop "$TMP/noop.tar.gz"
deploy noop "$TMP/noop.tar.gz"
EMBER_URL=http://127.0.0.1:$EMBERD_PORT/fn/noop/
curl -fsS -o /dev/null "$EMBER_URL" || die "the first call to noop failed: $(tail -5 "$TMP/emberd.log")"
# The warm-up grows the pool to the concurrency the measured run needs, so
# the numbers are for warm instances only.
note "warming ember for ${WARMUP}s"
wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$EMBER_URL" >/dev/null

# ---- nginx --------------------------------------------------------------
NGINX_PORT=$(free_port)
start_nginx "$NGINX_PORT"
NGINX_URL=http://127.0.0.1:$NGINX_PORT/fn/noop/
wrk -t"$THREADS" -c"$CONNS" -d1s "$NGINX_URL" >/dev/null

# Rounds: ember then nginx, then the other way round, so that neither
# always runs second. Each round appends "rps p50 p99 errors" per server.
: >"$TMP/ember.rounds"
: >"$TMP/nginx.rounds"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="ember nginx"; else order="nginx ember"; fi
    for who in $order; do
        if [ "$who" = ember ]; then run_wrk ember "$EMBER_URL"; else run_wrk nginx "$NGINX_URL"; fi
        cat "$TMP/$who.vars" >>"$TMP/$who.rounds"
    done
done
# median FILE: the line of FILE whose first field is the median (lower middle).
median() { sort -n -k1,1 "$1" | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'; }
read -r E_RPS E_P50 E_P99 E_ERR < <(median "$TMP/ember.rounds")
read -r N_RPS N_P50 N_P99 N_ERR < <(median "$TMP/nginx.rounds")
E_ERR=$(awk '{ s += $4 } END { print s + 0 }' "$TMP/ember.rounds")
N_ERR=$(awk '{ s += $4 } END { print s + 0 }' "$TMP/nginx.rounds")
ROUND_RATIOS=$(paste -d' ' "$TMP/ember.rounds" "$TMP/nginx.rounds" |
    awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), ($5 > 0 ? $1 / $5 : 0) }')

if [ "$OPEN_LOOP" = 1 ] && [ -x "$EMBER_BENCH" ]; then
    RATE=$(awk -v r="$E_RPS" 'BEGIN { printf "%d", r / 2 }')
    read -r EO_P50 EO_P99 EO_ERR < <(open_loop ember "http://127.0.0.1:$EMBERD_PORT" "$RATE")
    read -r NO_P50 NO_P99 NO_ERR < <(open_loop nginx "http://127.0.0.1:$NGINX_PORT" "$RATE")
fi

echo
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s, $ROUNDS alternating rounds, loopback, $(nproc) CPUs," \
    "nginx $NGINX_WORKERS workers, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-26s %12s %10s %10s %8s   %s\n' "" "requests/s" "p50 ms" "p99 ms" "errors" "(median run; every run)"
printf '%-26s %12.0f %10s %10s %8s   %s\n' "nginx return 200" "$N_RPS" "$N_P50" "$N_P99" "$N_ERR" \
    "$(awk '{ printf "%s%.0f", (NR > 1 ? " " : ""), $1 }' "$TMP/nginx.rounds")"
printf '%-26s %12.0f %10s %10s %8s   %s\n' "ember warm native noop" "$E_RPS" "$E_P50" "$E_P99" "$E_ERR" \
    "$(awk '{ printf "%s%.0f", (NR > 1 ? " " : ""), $1 }' "$TMP/ember.rounds")"
RATIO=$(echo "$ROUND_RATIOS" | tr ' ' '\n' | sort -n | awk '{ r[NR] = $1 } END { print r[int((NR + 1) / 2)] }')
VERDICT=$(awk -v r="$RATIO" 'BEGIN { print ((r >= 0.5) ? "meets" : "below") }')
echo "ember/nginx throughput: ${RATIO}x, the median of the rounds' ratios ($ROUND_RATIOS) ($VERDICT the 0.5x goal)"
if [ -n "${RATE:-}" ]; then
    echo
    echo "open loop, ember-bench at $RATE req/s (half of ember's wrk rate) for ${DURATION}s; latency from intended send time"
    printf '%-26s %10s %10s %8s\n' "" "p50 ms" "p99 ms" "errors"
    printf '%-26s %10s %10s %8s\n' "nginx return 200" "$NO_P50" "$NO_P99" "$NO_ERR"
    printf '%-26s %10s %10s %8s\n' "ember warm native noop" "$EO_P50" "$EO_P99" "$EO_ERR"
fi
