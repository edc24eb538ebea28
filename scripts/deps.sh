#!/bin/sh
# Installs the Debian packages one tier of routemq's work needs, when missing.
#   sh scripts/deps.sh build    compile build/routemq (make, make build)
#   sh scripts/deps.sh run      build + what a running routemq loads (make run)
#   sh scripts/deps.sh unit     run + busted, luacheck, redis (make unittest)
#   sh scripts/deps.sh e2e      unit + everything the end-to-end specs drive (make functionaltest)
#   sh scripts/deps.sh fuzz     build + clang's libFuzzer (make fuzz)
#   sh scripts/deps.sh package  build + CPack's and lintian's tools (make package)
#   sh scripts/deps.sh all      every tier, plus valgrind (make test, make deps)
# As root it runs apt-get; otherwise it names exactly what is missing and the command to run.
set -eu
TIER=${1:-all}
BUILD="build-essential cmake pkg-config luajit libluajit-5.1-dev libmosquitto-dev libsqlite3-dev
libbsd-dev libmicrohttpd-dev libssl-dev"
# A worker loads these at run time: the broker and its clients for make run,
# lua-cjson and cqueues/lua-http for handlers that decode and wait.
RUN="mosquitto mosquitto-clients lua-cjson lua-cqueues lua-http openssl"
# The unit specs: busted, luacheck, and spec/ngx_spec.lua's real redis-server.
UNIT="lua-busted lua-check redis-server"
# The end-to-end specs: the rock spec (luarocks), network namespaces (iproute2),
# the HTTP and TCP probes, the paho peer, the console spec (tmux), the package
# spec (dpkg-dev, file, lintian), routemq.pg and routemq.mysql against real
# servers, and the console's browser specs (headless chromium, driven by
# puppeteer-core from npm, like the bench peers).
E2E="luarocks iproute2 curl python3 python3-paho-mqtt socat tmux dpkg-dev file lintian
libpq5 postgresql libmariadb3 mariadb-server chromium"
FUZZ="clang"
PACKAGE="dpkg-dev file lintian"
case "$TIER" in
  build) PKGS="$BUILD" ;;
  run) PKGS="$BUILD $RUN" ;;
  unit) PKGS="$BUILD $RUN $UNIT" ;;
  e2e) PKGS="$BUILD $RUN $UNIT $E2E" ;;
  fuzz) PKGS="$BUILD $FUZZ" ;;
  package) PKGS="$BUILD $PACKAGE" ;;
  all) PKGS="$BUILD $RUN $UNIT $E2E $FUZZ valgrind" ;;
  *) echo "scripts/deps.sh: unknown tier '$TIER' (build, run, unit, e2e, fuzz, package, all)" >&2; exit 2 ;;
esac
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "routemq: the $TIER tier is missing Debian packages:$missing" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
  fi
  echo "routemq: installing ($TIER tier):$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
case "$TIER" in build|run|fuzz|package) exit 0 ;; esac
# lua-resty-redis for the specs of routemq.ngx: Debian ships it as lua-nginx-redis,
# whose dependencies (nginx-extras, libluajit2) would remove luajit. Only its one
# pure-Lua file is needed, so it is taken out of the package without installing it.
RESTY_REDIS=/usr/local/share/lua/5.1/nginx/redis.lua
if [ ! -f "$RESTY_REDIS" ] && [ ! -f /usr/share/lua/5.1/nginx/redis.lua ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "routemq: the $TIER tier is missing lua-resty-redis ($RESTY_REDIS, for spec/ngx_spec.lua)" >&2
    echo "run as root: sh scripts/deps.sh $TIER" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  apt-get update -qq >/dev/null 2>&1 || true
  (cd "$tmp" && apt-get download -qq lua-nginx-redis >/dev/null 2>&1 && dpkg-deb -x lua-nginx-redis_*.deb x) &&
    mkdir -p "$(dirname "$RESTY_REDIS")" && cp "$tmp/x/usr/share/lua/5.1/nginx/redis.lua" "$RESTY_REDIS" ||
    echo "routemq: could not fetch lua-nginx-redis (nginx/redis.lua); spec/ngx_spec.lua needs it" >&2
  rm -rf "$tmp"
fi
