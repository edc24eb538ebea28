-- The client side of routemq.pg alone (no MQTT, no worker): jobs on a
-- routemq.runner inserting one row each through a pool, N in progress, as a
-- worker's handlers would. Prints queries per second and this process's CPU
-- per query. Usage (a PostgreSQL with a table bench_rows(seq bigint)):
--   LUA_PATH='lua/?.lua;;' luajit bench/pg_pool.lua URL [IN_PROGRESS] [POOL] [QUERIES]
-- e.g. URL postgres://postgres@127.0.0.1:55432/postgres, defaults 16 4 20000.
local cqueues = require("cqueues")
local runner_mod = require("routemq.runner")
local pg = require("routemq.pg")

local url = assert(arg[1], "usage: luajit bench/pg_pool.lua URL [IN_PROGRESS] [POOL] [QUERIES]")
local n, size, total = tonumber(arg[2] or 16), tonumber(arg[3] or 4), tonumber(arg[4] or 20000)

local r = runner_mod.new()
local db = pg.pool({ url = url, size = size })
local finished, started = 0, 0
local function job(i)
  assert(db:query("insert into bench_rows(seq) values ($1)", i))
end
local function done(_, ok, err)
  assert(ok, err)
  finished = finished + 1
end

-- Connections opened and statements prepared before the clock starts.
for i = 1, 100 do
  r:start(job, i, 30, done)
end
assert(r:run_until(function() return finished == 100 end, 10), "warm-up did not finish")
finished = 0

local t0, c0 = cqueues.monotime(), os.clock()
while finished < total do
  while r.active < n and started < total do
    started = started + 1
    r:start(job, started, 30, done)
  end
  assert(r:step(r.active >= n and 1 or 0))
end
local t1, c1 = cqueues.monotime(), os.clock()
print(("in progress %d, pool %d: %.0f queries/s, client CPU %.1f us/query"):format(n, size, total / (t1 - t0),
  (c1 - c0) / total * 1e6))
