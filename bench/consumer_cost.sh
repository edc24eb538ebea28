#!/bin/sh
# What a consumer's own cost per message does to the broker's (docs/benchmarks.md,
# "What a consumer's sleep costs the broker"): bench_sub -W USEC spins that
# long per message; for each value, one run of N QoS 0 messages through a
# private mosquitto (set_tcp_nodelay true, as make bench's), and one line:
# rate, the consumer's and the broker's CPU per message, and the consumer's
# wake-ups (voluntary context switches) per message. "node" in WS runs the
# Node.js peer (bench/peers/node/consumer.js) instead, for comparison.
#   sh bench/consumer_cost.sh [BUILD_DIR]     environment: N (200000), WS ("0 4 8 12 node")
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
N=${N:-200000}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\nset_tcp_nodelay true\n' \
    "$port" > "$dir/mosquitto.conf"
mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; rm -rf "$dir"' EXIT
sleep 0.5
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for w in ${WS:-0 4 8 12 node}; do
    if [ "$w" = node ]; then
        set -- node "$here/peers/node/consumer.js" -p "$port" -n "$N" -q 0
        name="node consumer.js"
    else
        set -- "$build/bench_sub" -p "$port" -n "$N" -q 0 -W "$w"
        name=$(printf 'bench_sub -W %2d' "$w")
    fi
    /usr/bin/time -f 'voluntary=%w' "$@" > "$dir/sub.out" 2> "$dir/sub.err" &
    sub=$!
    tries=0
    until grep -q subscribed_ns "$dir/sub.out" 2>/dev/null; do
        tries=$((tries + 1)); [ "$tries" -lt 200 ] || { echo "bench_sub did not subscribe" >&2; exit 1; }
        sleep 0.05
    done
    t0=$(ticks "$broker")
    "$build/bench_pub" -p "$port" -n "$N" -q 0 -T 100 -w 100 -t 120 > "$dir/pub.out"
    wait "$sub"
    t1=$(ticks "$broker")
    first=$(sed -n 's/.*first_publish_ns=\([0-9]*\).*/\1/p' "$dir/pub.out")
    count=$(tr ' ' '\n' < "$dir/sub.out" | sed -n 's/^count=//p')
    last=$(tr ' ' '\n' < "$dir/sub.out" | sed -n 's/^last_ns=//p')
    cpu=$(tr ' ' '\n' < "$dir/sub.out" | sed -n 's/^cpu_us=//p')
    vol=$(sed -n 's/^voluntary=//p' "$dir/sub.err")
    awk -v w="$name" -v n="$count" -v f="$first" -v l="$last" -v c="$cpu" -v b=$((t1 - t0)) -v hz="$hz" -v v="$vol" \
        'BEGIN { printf "%s: %6.0f msg/s  consumer %5.2f us/msg  broker %5.2f us/msg  consumer wake-ups %.2f/msg\n",
                 w, n / ((l - f) / 1e9), c / n, b * 1e6 / hz / n, v / n }'
done
