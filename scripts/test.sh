#!/bin/sh
# Runs every test: C unit tests (plain and under ASan/UBSan, one under
# valgrind), luacheck, busted unit specs, the default app's specs and the
# end-to-end specs against a real mosquitto. Ends with "N passed, N failed".
# Usage: scripts/test.sh BUILD_DIR ASAN_DIR
set -u
BUILD=${1:-build}
ASAN=${2:-build-asan}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LOG=$(mktemp -d /tmp/routemq-test.XXXXXX)
chmod 0755 "$LOG"  # test brokers run as the mosquitto user and read files below it
passed=0
failed=0

count() {  # count NAME PASSED FAILED
  echo "== $1: $2 passed, $3 failed"
  passed=$((passed + $2))
  failed=$((failed + $3))
}

ctest_run() {  # ctest_run NAME DIR
  (cd "$2" && ctest --output-on-failure) > "$LOG/$1.log" 2>&1
  tail -n 30 "$LOG/$1.log" | grep -E "tests passed|Failed|FAILED|\*\*\*" || true
  line=$(grep -E "tests passed, [0-9]+ tests failed out of" "$LOG/$1.log" | tail -n 1)
  total=$(echo "$line" | sed -E 's/.* out of ([0-9]+).*/\1/')
  bad=$(echo "$line" | sed -E 's/.* ([0-9]+) tests failed.*/\1/')
  if [ -z "$line" ]; then cat "$LOG/$1.log"; count "$1" 0 1; return; fi
  count "$1" $((total - bad)) "$bad"
}

busted_run() {  # busted_run NAME PATHS...
  name=$1; shift
  LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;./?.lua;./?/init.lua;;" \
  LUA_CPATH="$ROOT/$BUILD/lib/?.so;;" ROUTEMQ_ROOT="$ROOT" ROUTEMQ_BIN="${ROUTEMQ_BIN_OVERRIDE:-$ROOT/$BUILD/routemq}" \
    busted --lua=luajit -o utfTerminal "$@" > "$LOG/$name.log" 2>&1
  sed -n '/Failure\|Error →\|Error ->/,$p' "$LOG/$name.log" | head -n 200
  line=$(grep -E "[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?" "$LOG/$name.log" | tail -n 1)
  if [ -z "$line" ]; then tail -n 40 "$LOG/$name.log"; count "$name" 0 1; return; fi
  ok=$(echo "$line" | grep -oE '[0-9]+ success' | grep -oE '[0-9]+')
  ko=$(echo "$line" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+')
  er=$(echo "$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
  count "$name" "$ok" $((ko + er))
}

# Every process the e2e helper starts runs under a wrapper whose command line
# names its directory below E2E_TMP: whatever still runs there after the specs
# was leaked by a test (and is stopped here).
no_leftovers() {  # no_leftovers DIR
  sleep 1
  left=$(pgrep -f "$1/" || true)
  if [ -n "$left" ]; then
    ps -o pid,args -p "$(echo $left | tr ' ' ',')" || true
    pkill -KILL -f "$1/" || true
    count "no process left behind ($1)" 0 1
  else
    count "no process left behind ($1)" 1 0
  fi
}

# The namespace specs (spec/helpers/netns.lua) name every namespace and link
# rmq-<tag>-...: any left after the specs was leaked by a test (and is removed here).
no_leftover_netns() {
  left=$( (ip netns list 2>/dev/null | awk '{print $1}'; ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1) | grep '^rmq-' || true)
  if [ -n "$left" ]; then
    echo "left behind: $left"
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^rmq-'); do ip netns del "$ns"; done
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^rmq-'); do ip link del "$l" 2>/dev/null; done
    count "no namespace or link left behind" 0 1
  else
    count "no namespace or link left behind" 1 0
  fi
}

ctest_run "C tests" "$BUILD"
ctest_run "C tests (ASan+UBSan)" "$ASAN"

if valgrind --error-exitcode=1 --leak-check=full -q "$BUILD/test_topic" > "$LOG/valgrind.log" 2>&1; then
  count "valgrind test_topic" 1 0
else
  tail -n 30 "$LOG/valgrind.log"; count "valgrind test_topic" 0 1
fi

if luacheck -q lua app spec examples bench > "$LOG/luacheck.log" 2>&1; then
  count "luacheck" 1 0
else
  cat "$LOG/luacheck.log"; count "luacheck" 0 1
fi

busted_run "busted unit specs" $(ls spec/*_spec.lua)
busted_run "default app specs" app/spec
for ex in examples/*/spec; do
  [ -d "$ex" ] && busted_run "example $(basename "$(dirname "$ex")") specs" -C "$(dirname "$ex")" spec
done
export E2E_TMP="$LOG/e2e"
busted_run "end-to-end specs" spec/e2e
unset E2E_TMP
no_leftovers "$LOG/e2e"
no_leftover_netns

# The runtime itself under ASan+UBSan: the worker and resilience specs against
# the sanitized binary, then no sanitizer report in any process's log.
export ASAN_OPTIONS=detect_leaks=1 E2E_TMP="$LOG/asan" ROUTEMQ_BIN_OVERRIDE="$ROOT/$ASAN/routemq"
busted_run "end-to-end specs (ASan+UBSan runtime)" spec/e2e/workers_spec.lua spec/e2e/resilience_spec.lua \
  spec/e2e/outgoing_spec.lua spec/e2e/scaleout_adopt_spec.lua spec/e2e/scaleout_handover_spec.lua
unset ASAN_OPTIONS E2E_TMP ROUTEMQ_BIN_OVERRIDE
no_leftovers "$LOG/asan"
no_leftover_netns
if grep -rlE "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$LOG/asan" > "$LOG/asan-reports.txt" 2>/dev/null; then
  cat "$LOG/asan-reports.txt"; count "sanitizer reports in runtime logs" 0 1
else
  count "sanitizer reports in runtime logs" 1 0
fi

echo "logs: $LOG"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
