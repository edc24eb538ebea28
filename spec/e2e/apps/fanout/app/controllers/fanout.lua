-- Test controllers for what handlers publish: each message fans out to
-- E2E_FAN QoS 1 messages "n:j" on fanout/out, and leaves one line in
-- $E2E_OUT/<pid>.rec (the format of spec/helpers/e2e.lua's records).
local ffi = require("ffi")
ffi.cdef("int getpid(void); int usleep(unsigned int);")

local M = {}

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local fan = tonumber(os.getenv("E2E_FAN") or "100")
local grow_at = tonumber(os.getenv("E2E_GROW_AT") or "0")
local handled, ballast = 0, nil
local file

local function record(ctx)
  if not file then
    file = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
    file:setvbuf("no")
  end
  file:write(tostring(ctx.route), "\t", ctx.payload, "\t", ffi.C.getpid(), "\t",
    tostring(ctx.redelivered), "\n")
end

local function publish_all(ctx)
  local n = ctx.payload
  for j = 1, fan do
    ctx:publish("fanout/out", n .. ":" .. j, { qos = 1 })
  end
end

function M.fan(ctx)
  publish_all(ctx)
  record(ctx)
  handled = handled + 1
  -- Memory the worker does not give back: WORKER_MAX_MEMORY_MB recycles it.
  if grow_at > 0 and handled == grow_at then
    ballast = {}
    for i = 1, 64 do ballast[i] = string.rep(string.char(65 + i % 26), 1024 * 1024 - i) end
  end
end

function M.slow_fan(ctx)
  ffi.C.usleep(4000000)
  publish_all(ctx)
  record(ctx)
end

-- Publishes more than MQTT allows in one message: ctx:publish must raise.
function M.too_big(ctx)
  record(ctx)
  ctx:publish("out/big", string.rep("x", 268435456), { qos = 1 })
end

-- Kills its worker the first time; the replacement publishes the length and
-- a checksum of what it got, so a large message can be compared intact.
function M.crash_once(ctx)
  if not ctx.redelivered then
    ffi.cast("int*", 0)[0] = 1
  end
  local sum = 0
  local p = ctx.payload
  for i = 1, #p, 997 do sum = (sum * 31 + p:byte(i)) % 2147483647 end
  ctx:publish("out/huge", #p .. " " .. sum, { qos = 1 })
end

M.ballast = function() return ballast end

return M
