#!/bin/sh
# Instructions per message of a routemq worker against the replay server,
# split by component (docs/benchmarks.md, "Hot path: instructions per message"):
#   sh bench/hotpath.sh [BUILD_DIR] [QOS] [MESSAGES] [HANDLER]
# The worker runs under valgrind --tool=callgrind twice, for 1,000 and for
# MESSAGES (default 20,000) messages; the difference of each component's
# self cost (exclusive instructions, callgrind_annotate) divided by the
# difference of the message counts is its cost per message, without the
# start and the stop. Self costs are summed by where the code lives, so
# callgrind's view of the call stack (which LuaJIT's coroutines and JIT
# traces confuse) does not matter. ROUTEMQ_BIN: another build (A/B).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build="$root/$build" ;; esac
qos=${2:-0}
n_big=${3:-20000}
handler=${4:-json}
n_small=1000
routemq=${ROUTEMQ_BIN:-$build/routemq}
work="$build/bench-hotpath"
rm -rf "$work"
mkdir -p "$work"

pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # SECONDS COMMAND...: polls COMMAND every 0.05 s
    limit=$(($1 * 20)); shift; i=0
    while [ "$i" -lt "$limit" ]; do "$@" && return 0; sleep 0.05; i=$((i + 1)); done
    return 1
}
wait_gone() {  # SECONDS PID
    limit=$(($1 * 20)); i=0
    while [ "$i" -lt "$limit" ] && kill -0 "$2" 2>/dev/null; do sleep 0.05; i=$((i + 1)); done
    ! kill -0 "$2" 2>/dev/null
}

# handled DIR N: the benchmark handler's count (double 0 of its record) is N.
handled() {
    for f in "$1"/w-*.bin; do
        [ -f "$f" ] && [ "$(od -A n -t f8 -N 8 "$f" | tr -d ' ')" = "$2" ] && return 0
    done
    return 1
}

# run N: one worker under callgrind for a replay of N messages; prints the
# worker's callgrind file.
run() {
    n=$1
    out="$work/$n"
    mkdir -p "$out"
    "$build/bench_replay" -n "$n" -q "$qos" -g -t 300 >"$out/replay.out" 2>"$out/replay.err" &
    rp=$!
    pids="$pids $rp"
    wait_for 5 grep -q "^listening" "$out/replay.out" 2>/dev/null || { echo "hotpath: bench_replay did not start" >&2; exit 1; }
    port=$(sed -n 's/^listening port=//p' "$out/replay.out")
    env BENCH_OUT="$out" MQTT_BROKER=127.0.0.1 MQTT_PORT="$port" MQTT_PROTOCOL=5 MQTT_CLIENT_ID=hotpath BENCH_QOS="$qos" \
        BENCH_WORKERS=1 ROUTEMQ_PRESENCE=false BENCH_HANDLER="$handler" ROUTEMQ_RUN_DIR="$out/run" LOG_LEVEL=info \
        valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$out/cg.%p" \
        "$routemq" run --app "$root/bench/app" --workers 1 >"$out/routemq.log" 2>&1 &
    mp=$!
    pids="$pids $mp"
    wait_for 120 grep -q '^subscribed_ns' "$out/replay.out" || { echo "hotpath: the worker did not subscribe" >&2; exit 1; }
    kill -USR1 "$rp"
    wait_gone 300 "$rp" || { echo "hotpath: the stream did not end in 300 s" >&2; exit 1; }
    grep -q "sent=$n" "$out/replay.out" || { echo "hotpath: the stream did not complete" >&2; exit 1; }
    # Every message handled (the handler's count, bench/app), then stop.
    wait_for 300 handled "$out" "$n" || { echo "hotpath: the worker did not handle $n messages" >&2; exit 1; }
    kill -TERM "$mp" 2>/dev/null || true
    wait_gone 60 "$mp" || kill -KILL "$mp" 2>/dev/null || true
    wait "$mp" 2>/dev/null || true
    # The worker's file: it also holds the part of the master before the
    # fork, so it is the larger of the two.
    ls -S "$out"/cg.* | head -1
}

# buckets FILE: "component instructions" lines from the self costs.
buckets() {
    callgrind_annotate --auto=no --threshold=100 "$1" 2>/dev/null | awk '
        $1 ~ /^[0-9,]+$/ && $2 ~ /^\(/ && !/PROGRAM TOTALS/ {
            ir = $1; gsub(",", "", ir)
            c = "other"
            if (/libmosquitto/) c = "libmosquitto"
            else if (/worker_keep\.c|keep_file/) c = "keep"
            else if (/worker_dispatch\.c|topic_trie\.c|topic_pattern\.c|worker_props\.c|worker_lua\.c|luavm\.c/) c = "dispatch"
            else if (/cjson|strtod|str_to_mpn|round_and_return|__mpn_|json_scan|json_decode/) c = "json"
            else if (/libluajit|\[\?\?\?\]/) c = "lua"
            else if (/libc\.so/) c = "libc"
            else if (/\/routemq\]/) c = "worker"
            else c = "other"
            sum[c] += ir; total += ir }
        END { for (c in sum) print c, sum[c]; print "total", total }'
}

small=$(run "$n_small")
big=$(run "$n_big")
buckets "$small" >"$work/small.txt"
buckets "$big" >"$work/big.txt"
echo "== instructions per message, routemq worker ($routemq), QoS $qos, handler '$handler' (callgrind, ($n_big - $n_small) messages)"
awk -v d="$((n_big - n_small))" '
    NR == FNR { small[$1] = $2; next }
    { per[$1] = ($2 - small[$1]) / d }
    END {
        split("libmosquitto keep dispatch lua json libc worker other total", order, " ")
        for (i = 1; i <= 9; i++) printf "  %-13s %8.0f\n", order[i], per[order[i]] }' "$work/small.txt" "$work/big.txt"
echo "(libmosquitto: libmosquitto.so; keep: worker_keep.c, keep_file.c; dispatch: worker_dispatch.c, topic_trie.c,"
echo " topic_pattern.c, worker_props.c, worker_lua.c, luavm.c; lua: libluajit and JIT-compiled code; json: json_scan.c,"
echo " json_decode.c, lua-cjson and glibc strtod; libc: the rest of glibc (malloc, memcpy, locks); worker: the rest of"
echo " routemq (event loop))"
