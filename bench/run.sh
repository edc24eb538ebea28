#!/bin/sh
# Benchmark suite: `make bench` runs `sh bench/run.sh build`.
#   sh bench/run.sh [BUILD_DIR]
# BENCH_QUICK=1: one run of each scenario with 20,000 messages (CI smoke
# test, under 2 minutes); the full run (about 6 minutes on 2 cores) also
# writes docs/benchmarks.{md,json,png}. See bench/run.lua for the other
# BENCH_* variables. Needs mosquitto, mosquitto_sub, luajit with lua-cjson,
# gnuplot (for the plot), and the tools built by CMake from bench/bench_*.c.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build="$root/$build" ;; esac

for tool in mosquitto mosquitto_sub luajit; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 1; }
done
command -v gnuplot >/dev/null 2>&1 || echo "bench: gnuplot is not installed: no plot" >&2

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" \
    --target routemq bench_pub bench_sub bench_replay bench_matcher >/dev/null

exec luajit "$here/run.lua" "$root" "$build"
