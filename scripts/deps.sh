#!/bin/sh
# Installs the Debian packages routemq needs to build, run and test, when missing.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -eu
PKGS="build-essential cmake pkg-config luajit libluajit-5.1-dev libmosquitto-dev mosquitto
mosquitto-clients lua-cjson lua-busted lua-check luarocks libbsd-dev libmicrohttpd-dev
clang valgrind"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "routemq: missing Debian packages:$missing" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
  exit 1
fi
echo "routemq: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
