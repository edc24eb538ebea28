-- The benchmark application: one shared route over the sensor topics.
-- BENCH_WORKERS sets its worker_count (default 1; `--workers N` overrides it)
-- and BENCH_QOS its QoS (default 0).
local router = require("routemq.router")

-- BENCH_JITV=<dir>: log LuaJIT trace compilation and aborts to
-- <dir>/jitv-<pid>.log (bench/profile.sh).
if os.getenv("BENCH_JITV") then
  local ffi = require("ffi")
  pcall(ffi.cdef, "int getpid(void);")
  require("jit.v").start(os.getenv("BENCH_JITV") .. "/jitv-" .. ffi.C.getpid() .. ".log")
end

local Bench = require("app.controllers.bench")

local function env_int(name, default)
  local v = os.getenv(name)
  return v and tonumber(v) or default
end

router.on("sensors/{id}/data", Bench.data, {
  shared = true,
  worker_count = env_int("BENCH_WORKERS", 1),
  qos = env_int("BENCH_QOS", 0),
})

-- BENCH_RR=1: request/reply (bench/bench_rr.c sends to bench/rr/req); the
-- handler answers with ctx:reply at the route's QoS.
if os.getenv("BENCH_RR") == "1" then
  router.on("bench/rr/req", Bench.reply, {
    shared = true,
    qos = env_int("BENCH_QOS", 0),
  })
end
