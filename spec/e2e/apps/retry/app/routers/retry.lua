-- For spec/e2e/retry_spec.lua: handlers that fail on purpose. Each success
-- leaves one line "route<TAB>payload<TAB>pid<TAB>redelivered<TAB>attempt<TAB>replayed"
-- in $E2E_OUT/<pid>.rec; each failed attempt of retry/wait leaves a file
-- $E2E_OUT/failed-<payload> first (so a test knows it failed).
local router = require("routemq.router")
local ffi = require("ffi")
ffi.cdef([[
int getpid(void);
struct retry_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct retry_timespec *ts);
]])

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local wait_delay = tonumber(os.getenv("E2E_DELAY") or "5")
local file

local function record(route, ctx)
  if not file then
    file = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
    file:setvbuf("no")
  end
  file:write(route, "\t", ctx.payload, "\t", ffi.C.getpid(), "\t", tostring(ctx.redelivered), "\t", ctx.attempt,
    "\t", tostring(ctx.replayed), "\n")
end

-- Each attempt of retry/flaky leaves "payload<TAB>attempt<TAB>wall clock
-- seconds" in $E2E_OUT/<pid>.att.
local att
local ts = ffi.new("struct retry_timespec")
local function attempt_line(ctx)
  if not att then
    att = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".att", "a"))
    att:setvbuf("no")
  end
  ffi.C.clock_gettime(0, ts)
  local now = tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
  att:write(ctx.payload, "\t", ctx.attempt, "\t", string.format("%.6f", now), "\n")
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Fails its first two attempts, succeeds on the third.
router.on("retry/flaky/{n}", function(ctx)
  attempt_line(ctx)
  if ctx.attempt < 3 then
    error("flaky " .. ctx.payload .. " attempt " .. ctx.attempt)
  end
  record("flaky", ctx)
end, { qos = 1, retry = { attempts = 3, delay = 0.2 } })

-- Never succeeds: each message ends in the dead-letter store.
router.on("retry/always/{n}", function(ctx)
  error("always fails: " .. ctx.payload .. " attempt " .. ctx.attempt)
end, { qos = 1, retry = { attempts = 2, delay = 0.1 } })

-- Fails its first attempt (leaving a marker), succeeds E2E_DELAY s later.
router.on("retry/wait/{n}", function(ctx)
  if ctx.attempt == 1 then
    local f = assert(io.open(out_dir .. "/failed-" .. ctx.payload, "w"))
    f:close()
    error("not yet: " .. ctx.payload)
  end
  record("wait", ctx)
end, { qos = 1, retry = { attempts = 2, delay = wait_delay } })

-- Fails until $E2E_OUT/fixed exists; no retry: a failure is a dead letter.
router.on("retry/replay/{n}", function(ctx)
  if not exists(out_dir .. "/fixed") then
    error("broken (replayed: " .. tostring(ctx.replayed) .. ")")
  end
  record("replay", ctx)
end, { qos = 1 })

-- An ordered route: the first message of each topic ("first") fails its
-- first attempt; the later ones must wait behind it, also at
-- WORKER_CONCURRENCY=1 (they hold the only slot while the first waits).
router.on("retry/ordered/{n}", function(ctx)
  if ctx.payload == "first" and ctx.attempt == 1 then
    error("first fails once")
  end
  record("ordered", ctx)
end, { qos = 1, ordered = true, retry = { attempts = 2, delay = tonumber(os.getenv("E2E_ORDERED_DELAY") or "0.5") } })

-- A route the next deploy removes (E2E_GONE=1): its dead letters match no route.
if os.getenv("E2E_GONE") ~= "1" then
  router.on("retry/gone/{n}", function(ctx)
    error("gone soon: " .. ctx.payload)
  end, { qos = 1 })
end
