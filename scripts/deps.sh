#!/bin/sh
# Installs the Debian packages routemq needs to build, run and test, when missing.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -eu
PKGS="build-essential cmake pkg-config luajit libluajit-5.1-dev libmosquitto-dev libsqlite3-dev mosquitto
mosquitto-clients lua-cjson lua-busted lua-check luarocks libbsd-dev libmicrohttpd-dev libssl-dev openssl
lua-cqueues lua-http redis-server iproute2 curl python3 python3-paho-mqtt socat
clang valgrind"
# make package (CPack, dpkg-shlibdeps, lintian) and the console spec (tmux).
PKGS="$PKGS dpkg-dev file lintian tmux"
# routemq.pg and routemq.mysql (libpq5, libmariadb3, loaded through the FFI) and
# their specs (real PostgreSQL and MariaDB servers).
PKGS="$PKGS libpq5 postgresql libmariadb3 mariadb-server"
# The web console's browser specs: headless chromium, driven by puppeteer-core (npm, like the bench peers).
PKGS="$PKGS chromium"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
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
fi
# lua-resty-redis for the specs of routemq.ngx: Debian ships it as lua-nginx-redis,
# whose dependencies (nginx-extras, libluajit2) would remove luajit. Only its one
# pure-Lua file is needed, so it is taken out of the package without installing it.
RESTY_REDIS=/usr/local/share/lua/5.1/nginx/redis.lua
if [ ! -f "$RESTY_REDIS" ] && [ ! -f /usr/share/lua/5.1/nginx/redis.lua ] && [ "$(id -u)" -eq 0 ]; then
  tmp=$(mktemp -d)
  apt-get update -qq >/dev/null 2>&1 || true
  (cd "$tmp" && apt-get download -qq lua-nginx-redis >/dev/null 2>&1 && dpkg-deb -x lua-nginx-redis_*.deb x) &&
    mkdir -p "$(dirname "$RESTY_REDIS")" && cp "$tmp/x/usr/share/lua/5.1/nginx/redis.lua" "$RESTY_REDIS" ||
    echo "routemq: could not fetch lua-nginx-redis (nginx/redis.lua); spec/ngx_spec.lua needs it" >&2
  rm -rf "$tmp"
fi
