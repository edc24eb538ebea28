-- The measurement behind routemq.pgconn being LuaJIT FFI rather than a C
-- module: the cost of turning libpq results into Lua rows, through the FFI
-- binding against the same loop in C (bench/pg_binding_crows.c). Usage:
--   gcc -O2 -shared -fPIC -I/usr/include/luajit-2.1 -I/usr/include/postgresql \
--     bench/pg_binding_crows.c -o /tmp/pgbench/crows.so -lpq
--   CROWS_DIR=/tmp/pgbench luajit bench/pg_binding.lua 'host=... port=... user=... dbname=...'
-- Queries run synchronously (PQexec) in both, so only the binding differs.
local ffi = require("ffi")
local pgconn = require("routemq.pgconn")
local pq = pgconn.lib
ffi.cdef [[
  PGconn *PQconnectdb(const char *conninfo);
  PGresult *PQexec(PGconn *conn, const char *query);
]]
local conninfo = assert(arg[1], "usage: luajit bench/pg_binding.lua CONNINFO")
package.cpath = (os.getenv("CROWS_DIR") or "/tmp/pgbench") .. "/?.so;" .. package.cpath
local crows = require("crows")

local function ffi_rows(sql, n)
  local c = pq.PQconnectdb(conninfo)
  local total = 0
  for _ = 1, n do
    local res = pq.PQexec(c, sql)
    total = total + #pgconn._rows(res)
    pq.PQclear(res)
  end
  pq.PQfinish(c)
  return total
end

local cases = {
  { "one row (an insert's returning id)", "select 1::int4 as id", 20000 },
  { "10,000 rows x 5 columns", "select g::int4 as id, g * 1.5::float8 as x, 'name ' || g as name, "
    .. "g % 2 = 0 as even, g::int8 * 1000 as big from generate_series(1, 10000) g", 30 },
}
for _, case in ipairs(cases) do
  local name, sql, n = case[1], case[2], case[3]
  local best = {}
  for _, impl in ipairs({ { "ffi", ffi_rows }, { "c", function(s, k) return crows(conninfo, s, k) end } }) do
    local t = math.huge
    for _ = 1, 3 do
      local t0 = os.clock()
      impl[2](sql, n)
      t = math.min(t, os.clock() - t0)
    end
    best[impl[1]] = t
  end
  print(("%-36s %6d queries: FFI %.3f s CPU, C %.3f s CPU (FFI/C %.2f)"):format(name, n, best.ffi, best.c,
    best.ffi / best.c))
end
