# shellcheck shell=bash
# lib.sh - shared by the bench/*.sh scripts (sourced, not run).
#
# Everything runs on loopback, in a temporary directory removed on exit,
# and every process a script starts is stopped by its EXIT trap.
#
# Environment:
#   BUILD   build directory holding emberd, ember-bench and
#           tests/functions/*.so (default: <repo>/build)

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac

EMBERD=$BUILD/emberd
EMBER_BENCH=$BUILD/ember-bench
NOOP_SO=$BUILD/tests/functions/t_noop.so

. "$ROOT/scripts/deps.sh"
ember_deps bench # the peers (wrk, nginx, crun), when missing

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ember-bench.XXXXXX")
EMBERD_PID=
EMBERD_PORT=
CLEANUP_HOOKS=()

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

note() {
    echo "== $*" >&2
}

# Runs on every exit path: the scripts' own hooks first (nginx...), then emberd.
cleanup() {
    local rc=$?
    trap - EXIT HUP INT PIPE TERM
    local h
    for h in "${CLEANUP_HOOKS[@]}"; do
        $h || true
    done
    if [ -n "$EMBERD_PID" ] && kill -0 "$EMBERD_PID" 2>/dev/null; then
        kill -TERM "$EMBERD_PID" 2>/dev/null || true
        # SIGTERM drains; give it 10 s, then make sure.
        local _
        for _ in $(seq 100); do
            kill -0 "$EMBERD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$EMBERD_PID" 2>/dev/null || true
        wait "$EMBERD_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "needs '$c' on PATH"
    done
}

need_file() {
    [ -e "$1" ] || die "$1 not found: $2 (BUILD=$BUILD)"
}

need_built() {
    local what
    for what in "$@"; do
        case $what in
        emberd) need_file "$EMBERD" "build emberd first (cmake --build $BUILD --target emberd)" ;;
        ember-bench) need_file "$EMBER_BENCH" "build it first (cmake --build $BUILD --target ember-bench)" ;;
        noop) need_file "$NOOP_SO" "build the test functions first (cmake --build $BUILD --target test-functions)" ;;
        esac
    done
}

need_root() {
    [ "$(id -u)" = 0 ] || die "needs root: emberd's sandboxes use namespaces and cgroups"
}

# A TCP port nobody listens on right now (small race, fine on a bench box).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

# start_emberd [extra emberd args...]: on port 0 with a fresh state dir; sets
# EMBERD_PID and EMBERD_PORT.
start_emberd() {
    mkdir -p "$TMP/state"
    : >"$TMP/emberd.log" # exists before the background shell opens it
    "$EMBERD" --listen 127.0.0.1:0 --state "$TMP/state" "$@" 2>"$TMP/emberd.log" &
    EMBERD_PID=$!
    local _
    for _ in $(seq 100); do
        EMBERD_PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$TMP/emberd.log" | head -n1)
        [ -n "$EMBERD_PORT" ] && return 0
        kill -0 "$EMBERD_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP/emberd.log" >&2
    die "emberd did not start (log above)"
}

# package_noop OUT.tar.gz: t_noop.so with its function.json.
package_noop() {
    mkdir -p "$TMP/pkg-noop"
    cp "$NOOP_SO" "$TMP/pkg-noop/t_noop.so"
    printf '{"runtime":"native","handler":"t_noop.so"}\n' >"$TMP/pkg-noop/function.json"
    tar -czf "$1" -C "$TMP/pkg-noop" function.json t_noop.so
}

# deploy NAME PACKAGE: PUT and check 200/201.
deploy() {
    local code
    code=$(curl -sS -o "$TMP/deploy.out" -w '%{http_code}' -X PUT --data-binary "@$2" \
        "http://127.0.0.1:$EMBERD_PORT/v1/functions/$1") || die "PUT $1: curl failed"
    case $code in 200 | 201) ;; *) die "PUT $1: HTTP $code $(cat "$TMP/deploy.out")" ;; esac
}

# pool_patch JSON: PATCH /v1/pool and check 200.
pool_patch() {
    local code
    code=$(curl -sS -o "$TMP/patch.out" -w '%{http_code}' -X PATCH -H 'Content-Type: application/json' \
        --data "$1" "http://127.0.0.1:$EMBERD_PORT/v1/pool") || die "PATCH /v1/pool: curl failed"
    [ "$code" = 200 ] || die "PATCH /v1/pool $1: HTTP $code $(cat "$TMP/patch.out")"
}

# percentiles FILE: "p50 p99 n" of the numbers in FILE (one per line), nearest rank.
percentiles() {
    sort -n "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a n/a 0"; exit }
        i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
        if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
        printf "%s %s %d\n", v[i50], v[i99], NR }'
}
