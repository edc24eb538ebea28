#!/bin/sh
# Runs the randomized soak (spec/soak/soak.lua) against the routemq of BUILD;
# its options come from the environment (SOAK_SECONDS, SOAK_SEED, SOAK_OPS,
# SOAK_ROUTES, ...: spec/soak/README.md). Exit 0 when every invariant holds.
#   scripts/soak.sh [BUILD]
set -u
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# Test brokers run as the mosquitto user and read their files below E2E_TMP.
if [ -z "${E2E_TMP:-}" ]; then
  E2E_TMP=$(mktemp -d /tmp/routemq-soak.XXXXXX)
  chmod 0755 "$E2E_TMP"
  made=1
else
  made=0
fi
LUA_PATH="$ROOT/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/$BUILD/lib/?.so;;" \
  ROUTEMQ_ROOT="$ROOT" ROUTEMQ_BIN="${ROUTEMQ_BIN:-$ROOT/$BUILD/routemq}" E2E_TMP="$E2E_TMP" \
  luajit spec/soak/soak.lua
rc=$?
# An empty directory of our own goes; one with a failed run's logs stays.
[ "$made" = 1 ] && rmdir "$E2E_TMP" 2>/dev/null
exit $rc
