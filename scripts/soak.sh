#!/bin/sh
# Runs the randomized soak (spec/soak/soak.lua) against the routemq of BUILD;
# its options come from the environment (SOAK_SECONDS, SOAK_SEED, SOAK_OPS,
# SOAK_ROUTES, ...: spec/soak/README.md). Exit 0 when every invariant holds.
#   scripts/soak.sh [BUILD]
set -u
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# A directory of its own (below E2E_TMP when set): every process the soak
# starts has it in its command line, so an interrupted run leaves nothing.
mkdir -p "${E2E_TMP:-/tmp}"
DIR=$(mktemp -d "${E2E_TMP:-/tmp}/routemq-soak.XXXXXX")
chmod 0755 "$DIR"  # test brokers run as the mosquitto user and read their files below it
sweep() {
  # What the soak recorded starting (some, like mosquitto_sub, do not name $DIR).
  for p in $(cat "$DIR/pids" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  rm -f "$DIR/pids"
  for p in $(ls /proc | grep -E '^[0-9]+$'); do
    case "$(tr '\0' ' ' 2>/dev/null < /proc/$p/cmdline)" in
      *"$DIR/"*) kill -KILL "$p" 2>/dev/null ;;
    esac
  done
}
LUA_PATH="$ROOT/?.lua;$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/$BUILD/lib/?.so;;" \
  ROUTEMQ_ROOT="$ROOT" ROUTEMQ_BIN="${ROUTEMQ_BIN:-$ROOT/$BUILD/routemq}" E2E_TMP="$DIR" \
  luajit spec/soak/soak.lua &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid; sweep; echo "soak: interrupted; records in $DIR"; exit 130' INT TERM
wait $pid
rc=$?
sweep
# An empty directory goes; one with a failed run's records and logs stays.
rmdir "$DIR" 2>/dev/null
exit $rc
