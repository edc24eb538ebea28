-- routemq's Lua side as a rock: the Lua modules (router, testing harness, ...)
-- and the routemq.core C module (pattern compiler, topic matcher, ctx:json's decoder), so that
-- `busted --lua=luajit` can test a routemq application without the runtime.
--
-- LuaJIT speaks the Lua 5.1 C API. On Debian 12 (luarocks 3.8) build it with:
--
--   luarocks --lua-version=5.1 make --deps-mode=none --tree=/tmp/rock-tree \
--     rockspec/routemq-scm-1.rockspec
--
-- (from the repository root; add LUA_INCDIR=/usr/include/luajit-2.1 to compile
-- against LuaJIT's headers instead of Lua 5.1's, the result is the same) and
-- use it with
--
--   LUA_PATH="/tmp/rock-tree/share/lua/5.1/?.lua;;" \
--   LUA_CPATH="/tmp/rock-tree/lib/lua/5.1/?.so;;" luajit -e 'require("routemq.core")'
--
-- `make install` installs the same files (plus the routemq executable) with CMake.
-- Keep the module list below in step with lua/routemq/*.lua: spec/e2e/install_spec.lua
-- checks it.
rockspec_format = "3.0"
package = "routemq"
version = "scm-1"

source = {
  url = "git+https://github.com/routemq/routemq.git",
  branch = "main",
}

description = {
  summary = "MQTT worker runtime for LuaJIT applications: router, test harness and topic matcher",
  detailed = [[
routemq runs MQTT applications written in Lua: a C master process supervises
LuaJIT worker processes that handle the messages of the application's routes.
This rock installs the Lua side (router API, message context, middleware,
the busted test harness routemq.testing) and the routemq.core C module, the
same topic matcher the runtime uses.
]],
  homepage = "https://github.com/routemq/routemq",
  license = "MIT",
  labels = { "mqtt", "luajit", "router" },
}

dependencies = {
  "lua >= 5.1, < 5.2",
  "lua-cjson",
  "cqueues",
  "http",
}

build = {
  type = "builtin",
  modules = {
    ["routemq.app"] = "lua/routemq/app.lua",
    ["routemq.console"] = "lua/routemq/console.lua",
    ["routemq.context"] = "lua/routemq/context.lua",
    ["routemq.dbconn"] = "lua/routemq/dbconn.lua",
    ["routemq.dbpool"] = "lua/routemq/dbpool.lua",
    ["routemq.dispatch"] = "lua/routemq/dispatch.lua",
    ["routemq.dlq"] = "lua/routemq/dlq.lua",
    ["routemq.failure"] = "lua/routemq/failure.lua",
    ["routemq.forkmark"] = "lua/routemq/forkmark.lua",
    ["routemq.jobs"] = "lua/routemq/jobs.lua",
    ["routemq.mysql"] = "lua/routemq/mysql.lua",
    ["routemq.mysqlconn"] = "lua/routemq/mysqlconn.lua",
    ["routemq.ngx"] = "lua/routemq/ngx.lua",
    ["routemq.ordered"] = "lua/routemq/ordered.lua",
    ["routemq.pg"] = "lua/routemq/pg.lua",
    ["routemq.pgconn"] = "lua/routemq/pgconn.lua",
    ["routemq.pglib"] = "lua/routemq/pglib.lua",
    ["routemq.pgvalue"] = "lua/routemq/pgvalue.lua",
    ["routemq.retry"] = "lua/routemq/retry.lua",
    ["routemq.router"] = "lua/routemq/router.lua",
    ["routemq.runner"] = "lua/routemq/runner.lua",
    ["routemq.testing"] = "lua/routemq/testing.lua",
    ["routemq.util"] = "lua/routemq/util.lua",
    ["routemq.worker"] = "lua/routemq/worker.lua",
    ["routemq.core"] = {
      sources = {
        "runtime/core/json_decode.c",
        "runtime/core/json_scan.c",
        "runtime/core/lua_core.c",
        "runtime/core/lua_core_module.c",
        "runtime/core/topic_pattern.c",
        "runtime/core/topic_trie.c",
      },
      incdirs = { "runtime/core" },
      defines = { "_GNU_SOURCE" },
    },
  },
}
