#!/usr/bin/env bash
# cold-start.sh - what a function's first call costs: deploy COUNT copies of
# the native no-op under distinct names, call each once, report first-call
# latency p50/p99 and how each call got its sandbox (Server-Timing acquire:
# stem = a pre-forked stem cell was specialized, cold = built from nothing,
# ...), then a second call each for the warm baseline. Runs twice: with the
# daemon's default stem cells and with stem_cells=0 (every start from scratch).
#
# Environment: BUILD (default <repo>/build), COUNT (100), CONCURRENCY
# (parallel deploys, 4).
. "$(dirname "$0")/lib.sh"

COUNT=${COUNT:-100}
CONCURRENCY=${CONCURRENCY:-4}

need_cmd curl tar
need_built emberd ember-bench noop
need_root

start_emberd
package_noop "$TMP/noop.tar.gz"
URL=http://127.0.0.1:$EMBERD_PORT
# Stem cells fill in the background after start; let them.
sleep 1

echo "== $COUNT functions, default pool knobs (stem cells on)"
"$EMBER_BENCH" cold --url "$URL" --package "$TMP/noop.tar.gz" --count "$COUNT" \
    --concurrency "$CONCURRENCY" --prefix cold-a-

echo
echo "== $COUNT functions, stem_cells=0"
pool_patch '{"stem_cells": 0}'
sleep 0.5
"$EMBER_BENCH" cold --url "$URL" --package "$TMP/noop.tar.gz" --count "$COUNT" \
    --concurrency "$CONCURRENCY" --prefix cold-b-
