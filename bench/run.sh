#!/bin/sh
# Benchmark suite: `make bench` runs `sh bench/run.sh build`.
#   sh bench/run.sh [BUILD_DIR]
# BENCH_QUICK=1: one run of each scenario with 20,000 messages (CI smoke
# test, about a minute); the full run (about 30 minutes on 2 cores) also
# writes docs/benchmarks.{md,json,png}. See bench/run.lua for the other
# BENCH_* variables. Needs mosquitto, mosquitto_sub, luajit with lua-cjson,
# gnuplot (for the plot), and the tools built by CMake from bench/bench_*.c;
# for the peers node + npm and /usr/bin/python3 (installed here when missing).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build="$root/$build" ;; esac

for tool in mosquitto mosquitto_sub luajit; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 1; }
done

# What the plot and the peer consumers (bench/peers/) need, installed when
# missing: Debian packages with apt-get (as root; otherwise the command to
# run is printed), mqtt.js from bench/peers/node/package-lock.json with
# `npm ci`. A peer whose runtime is missing is skipped by run.lua, which
# says so in its output and in the report.
apt_install() {
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing $*" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; } ||
            echo "bench: could not install $*" >&2
    else
        echo "bench: $* missing; run: sudo apt-get install -y $*" >&2
    fi
}
command -v gnuplot >/dev/null 2>&1 || apt_install gnuplot-nox
command -v gnuplot >/dev/null 2>&1 || echo "bench: gnuplot is not installed: no plot" >&2
# Section 3d (db): a PostgreSQL server, and lua-sql-postgres for the blocking row.
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || apt_install postgresql
luajit -e 'require("luasql.postgres")' >/dev/null 2>&1 || apt_install lua-sql-postgres
# The Python peer runs on Debian's interpreter, which finds python3-paho-mqtt
# (a python3 first on PATH, e.g. pyenv's, would not).
if [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null || apt_install python3-paho-mqtt
fi
node_dir="$here/peers/node"
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    if [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
       ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.package-lock.json.src" 2>/dev/null; then
        echo "bench: npm ci in bench/peers/node (mqtt.js, from package-lock.json)" >&2
        if (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
            cp "$node_dir/package-lock.json" "$node_dir/node_modules/.package-lock.json.src"
        else
            echo "bench: npm ci failed in bench/peers/node" >&2
        fi
    fi
fi

if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" \
    --target routemq bench_pub bench_sub bench_replay bench_matcher bench_rr >/dev/null

exec luajit "$here/run.lua" "$root" "$build"
