#!/usr/bin/env bash
# start.sh - build ember, start emberd with the example functions deployed,
# and print how to call them. Ctrl-C (SIGTERM) drains and stops it.
#
#   sudo ./scripts/start.sh [--listen 127.0.0.1:8080] [--state ./ember-state]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/deps.sh"
ember_deps

listen="127.0.0.1:8080"
state="$root/ember-state"
while [ $# -gt 0 ]; do
    case "$1" in
    --listen) listen="$2"; shift 2 ;;
    --state) state="$2"; shift 2 ;;
    *) echo "usage: $0 [--listen HOST:PORT] [--state DIR]" >&2; exit 2 ;;
    esac
done

cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBER_TESTS=OFF >/dev/null
cmake --build "$root/build" -j"$(nproc)"

log="$state.log"
mkdir -p "$state"
"$root/build/emberd" --listen "$listen" --state "$state" 2> >(tee "$log" >&2) &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM

for _ in $(seq 1 200); do
    grep -q "listening on http://" "$log" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || { echo "emberd failed to start" >&2; exit 1; }
    sleep 0.05
done
url=$(grep -o "listening on http://[^ ]*" "$log" | tail -1 | sed 's/listening on //')

deploy() {
    local name="$1" pkg="$2"
    [ -f "$pkg" ] || { echo "(skipping $name: $pkg was not built)" >&2; return 0; }
    printf 'deploy %-10s ' "$name"
    curl -sS -X PUT --data-binary @"$pkg" "$url/v1/functions/$name"
    echo
}
deploy hello "$root/build/examples/hello.tar.gz"
deploy echo "$root/build/examples/echo.tar.gz"
if [ -e /dev/kvm ]; then
    deploy hello-vm "$root/build/examples/hello-vm.tar.gz"
fi

cat <<MSG

emberd is running at $url (state in $state, log in $log). Try:

  curl '$url/fn/hello?name=Ada'
  curl '$url/fn/hello-vm?name=Ada'      (the same function in a microVM, where /dev/kvm exists)
  curl -X POST --data-binary 'some bytes' '$url/fn/echo/any/path?x=1'
  curl '$url/v1/functions'
  curl '$url/metrics'

Ctrl-C stops it (it drains: in-flight calls finish, sandboxes are destroyed).
MSG
wait $pid
