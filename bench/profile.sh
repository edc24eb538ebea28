#!/bin/sh
# Where a routemq worker's time goes, against the replay server (no broker):
#   sh bench/profile.sh [BUILD_DIR] [QOS] [MESSAGES]
# Environment: PROFILE_STEPS (default "strace perf callgrind"),
# ROUTEMQ_BIN (profile another routemq build, e.g. one of HEAD, for an A/B),
# PROFILE_CALLGRIND_MESSAGES (default 20000).
# 1. strace -c -f -p <pid>: system calls of the worker and, for comparison,
#    of the yardstick (bench_sub) for the same stream;
# 2. perf record -e cpu-clock -g -p <worker pid> (software clock: works
#    where hardware counters are not available), then perf report;
# 3. valgrind --tool=callgrind on a worker (and on the yardstick): user-space
#    instructions per message along the hot path, for the benchmark handler
#    and for an empty one (BENCH_HANDLER=noop).
# Output goes to <build>/bench-profile/ and a summary to stdout. Every
# process started here is stopped by its pid; every wait is bounded.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build="$root/$build" ;; esac
qos=${2:-0}
n=${3:-200000}
n_cg=${PROFILE_CALLGRIND_MESSAGES:-20000}
routemq=${ROUTEMQ_BIN:-$build/routemq}     # another build to compare (A/B)
steps=${PROFILE_STEPS:-strace perf callgrind}
handler=json
work="$build/bench-profile"
rm -rf "$work"
mkdir -p "$work"

pids=""
cleanup() {
    for p in $pids; do
        kill "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS COMMAND...: polls COMMAND every 0.05 s.
wait_for() {
    limit=$(($1 * 20))
    shift
    i=0
    while [ "$i" -lt "$limit" ]; do
        if "$@"; then return 0; fi
        sleep 0.05
        i=$((i + 1))
    done
    return 1
}

# wait_gone SECONDS PID: until the process has exited.
wait_gone() {
    limit=$(($1 * 20))
    i=0
    while [ "$i" -lt "$limit" ] && kill -0 "$2" 2>/dev/null; do
        sleep 0.05
        i=$((i + 1))
    done
    ! kill -0 "$2" 2>/dev/null
}

replay_start() {
    "$build/bench_replay" -n "$n" -q "$qos" -g -t 300 >"$work/replay.out" 2>"$work/replay.err" &
    rp=$!
    pids="$pids $rp"
    wait_for 5 grep -q '^listening' "$work/replay.out" || { echo "profile: bench_replay did not start" >&2; exit 1; }
    port=$(sed -n 's/^listening port=//p' "$work/replay.out")
}

# profile_pid TOOL PID OUT: attaches TOOL to PID, lets the stream run, detaches.
profile_pid() {
    case $1 in
    strace) strace -c -f -p "$2" -o "$3" 2>/dev/null & ;;
    perf) perf record -q -e cpu-clock -F 4999 -g -p "$2" -o "$3" >/dev/null 2>&1 & ;;
    esac
    tp=$!
    pids="$pids $tp"
    sleep 0.5
    kill -USR1 "$rp"
    wait_gone 300 "$rp" || echo "profile: the stream did not end in 300 s" >&2
    wait "$rp" 2>/dev/null || true
    kill -INT "$tp" 2>/dev/null || true
    wait_gone 30 "$tp" || kill -KILL "$tp" 2>/dev/null || true
    wait "$tp" 2>/dev/null || true
}

# start_routemq [WRAPPER...]: one routemq worker against the replay server
# (handler variant: $handler, see bench/app/app/controllers/bench.lua).
start_routemq() {
    env MQTT_BROKER=127.0.0.1 MQTT_PORT="$port" MQTT_PROTOCOL=5 MQTT_CLIENT_ID=profile BENCH_QOS="$qos" \
        BENCH_WORKERS=1 ROUTEMQ_PRESENCE=false BENCH_HANDLER="$handler" ROUTEMQ_RUN_DIR="$work/run" LOG_LEVEL=info \
        "$@" "$routemq" run --app "$root/bench/app" --workers 1 >"$work/routemq.log" 2>&1 &
    mp=$!
    pids="$pids $mp"
    wait_for 120 grep -q '^subscribed_ns' "$work/replay.out" || { echo "profile: the worker did not subscribe" >&2; exit 1; }
}

stop_routemq() {
    kill -TERM "$mp" 2>/dev/null || true
    wait_gone 60 "$mp" || kill -KILL "$mp" 2>/dev/null || true
    wait "$mp" 2>/dev/null || true
}

# run_worker TOOL OUT: attach TOOL to the worker for one replay stream.
run_worker() {
    replay_start
    start_routemq
    wpid=$(pgrep -P "$mp" -f '^routemq: worker 0' | head -1)
    [ -n "$wpid" ] || { echo "profile: no worker process under master $mp" >&2; exit 1; }
    profile_pid "$1" "$wpid" "$2"
    stop_routemq
}

run_yardstick() {
    replay_start
    "$build/bench_sub" -p "$port" -n "$n" -q "$qos" -t 300 >"$work/sub.out" 2>&1 &
    sp=$!
    pids="$pids $sp"
    wait_for 5 grep -q '^subscribed_ns' "$work/sub.out" || { echo "profile: bench_sub did not subscribe" >&2; exit 1; }
    profile_pid "$1" "$sp" "$2"
    wait_gone 10 "$sp" || true
}

# Calls per message from an strace -c table (columns: % seconds usecs/call
# calls [errors] syscall).
per_msg() {
    awk -v n="$n" '
        $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
            printf "  %-16s %9d calls  %6.2f per message  (%s s)\n", $NF, $4, $4 / n, $2; total += $4 }
        END { printf "  %-16s %9d calls  %6.2f per message\n", "total", total, total / n }' "$1"
}

step() { case " $steps " in *" $1 "*) return 0 ;; esac; return 1; }

echo "== routemq worker ($routemq) vs bench_sub, replay of $n messages at QoS $qos"
if step strace; then
    run_worker strace "$work/strace-worker.txt"
    run_yardstick strace "$work/strace-yardstick.txt"
    echo "-- system calls, routemq worker (strace -c):"
    per_msg "$work/strace-worker.txt"
    echo "-- system calls, bench_sub (strace -c):"
    per_msg "$work/strace-yardstick.txt"
fi

if ! step perf; then
    :
elif perf record -q -e cpu-clock -o "$work/perf-check.data" true >/dev/null 2>&1; then
    run_worker perf "$work/perf-worker.data"
    echo "-- CPU profile of the routemq worker (perf, cpu-clock; top symbols, self time):"
    perf report -i "$work/perf-worker.data" --stdio --no-children --sort dso,symbol 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | head -40
    perf report -i "$work/perf-worker.data" --stdio --no-children --sort dso 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | head -12 >"$work/perf-worker-dso.txt"
    echo "-- by library:"
    cat "$work/perf-worker-dso.txt"
    run_yardstick perf "$work/perf-yardstick.data"
    echo "-- CPU profile of bench_sub, by library:"
    perf report -i "$work/perf-yardstick.data" --stdio --no-children --sort dso 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | head -12
else
    echo "-- perf record does not work here; skipped"
fi
# 3. Instructions per message (user space) with callgrind: deterministic,
# so small differences show. The worker runs under valgrind (it follows the
# master's fork); the yardstick too, for the same stream.
cg_report() {  # FILE LABEL: inclusive instructions per message of the hot path
    echo "-- $2: instructions per message (callgrind, inclusive):"
    callgrind_annotate --inclusive=yes "$1" 2>/dev/null | awk -v n="$n_cg" '
        { ir = $1; gsub(",", "", ir) }
        ir ~ /^[0-9]+$/ && !/=>/ && /mosquitto_loop_read |worker_on_message |:dispatch |luavm_pcall |topic_trie_match |lua_pcal'"'"'2 |strtod |lua_pushlstring |lua_rawset |bench_sub.c:on_message / {
            name = $0; sub(/^ *[0-9,]+ *\([ 0-9.%]*\) */, "", name); sub(/ \[.*$/, "", name)
            printf "  %8.0f  %s\n", ir / n, name }'
}
if ! step callgrind; then
    :
elif command -v valgrind >/dev/null 2>&1 && command -v callgrind_annotate >/dev/null 2>&1; then
    n_saved=$n
    n=$n_cg
    for handler in json noop; do
        replay_start
        start_routemq valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$work/cg-$handler.%p"
        kill -USR1 "$rp"
        wait_gone 300 "$rp" || echo "profile: the stream did not end in 300 s" >&2
        stop_routemq
        for f in "$work"/cg-"$handler".*; do
            [ "$f" = "$work/cg-$handler.$mp" ] && continue
            cg_report "$f" "routemq worker, handler '$handler' (BENCH_HANDLER)"
        done
    done
    handler=json
    replay_start
    valgrind --tool=callgrind --callgrind-out-file="$work/cg-yardstick.out" \
        "$build/bench_sub" -p "$port" -n "$n" -q "$qos" -t 300 >"$work/sub.out" 2>/dev/null &
    sp=$!
    pids="$pids $sp"
    wait_for 60 grep -q '^subscribed_ns' "$work/sub.out" || { echo "profile: bench_sub did not subscribe" >&2; exit 1; }
    kill -USR1 "$rp"
    wait_gone 300 "$sp" || true
    cg_report "$work/cg-yardstick.out" "bench_sub (yardstick)"
    n=$n_saved
else
    echo "-- valgrind not installed; callgrind skipped"
fi
echo "(raw output in $work)"
