-- Test controllers: each handled message leaves one line in $E2E_OUT/<pid>.rec
-- (unbuffered, so a killed worker loses nothing it wrote).
local ffi = require("ffi")

local M = {}

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local file

local function record(ctx, tag)
  if not file then
    file = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
    file:setvbuf("no")
  end
  file:write(tag or tostring(ctx.route), "\t", ctx.payload, "\t", ffi.C.getpid(), "\t",
    tostring(ctx.redelivered), "\n")
end
ffi.cdef("int getpid(void); int usleep(unsigned int);")

function M.count(ctx) record(ctx) end

-- E2E_GATE: while that file exists, slow_count waits (a test decides when
-- the handlers in progress may finish); E2E_SLOW_US: its time per message.
local gate = os.getenv("E2E_GATE")
local slow_us = tonumber(os.getenv("E2E_SLOW_US") or "1000")

local function gate_closed()
  local f = gate and io.open(gate)
  if f then f:close() end
  return f ~= nil and f ~= false
end

function M.slow_count(ctx)
  while gate_closed() do ffi.C.usleep(10000) end
  ffi.C.usleep(slow_us)
  record(ctx)
end

function M.params(ctx)
  ctx:publish("out/params", { a = ctx.params.a, rest = ctx.params.rest, topic = ctx.topic })
end

function M.binary(ctx)
  local hex = ctx.payload:gsub(".", function(c) return string.format("%02x", c:byte()) end)
  ctx:publish("out/binary", hex .. " " .. #ctx.payload)
end

function M.json(ctx)
  local v, err = ctx:json()
  if v then ctx:publish("out/json", { ok = true, temp = v.temp })
  else ctx:publish("out/json", { ok = false, err = err }) end
end

function M.reply(ctx)
  ctx:reply({ pong = ctx.payload, user = ctx.props.user })
end

function M.fail(ctx)
  record(ctx)
  error("boom on " .. ctx.topic)
end

function M.crash(ctx)
  record(ctx)
  if ctx.payload == "poison" then
    ffi.cast("int*", 0)[0] = 1
  end
end

-- Crashes the worker on first delivery; answers the redelivered copy.
function M.crash_then_reply(ctx)
  if not ctx.redelivered then
    ffi.cast("int*", 0)[0] = 1
  end
  ctx:reply({ redelivered = ctx.redelivered, user = ctx.props.user })
end

function M.hang(ctx)
  record(ctx)
  if ctx.payload == "hang" then
    while true do end -- luacheck: ignore
  end
end

function M.slow(ctx)
  ffi.C.usleep(math.floor((tonumber(ctx.payload) or 3) * 1e6))
  record(ctx)
end

return M
