-- The soak application's handlers (spec/soak/soak.lua). Each handled message
-- leaves one line "route<TAB>payload<TAB>pid<TAB>redelivered" in
-- $E2E_OUT/<pid>.rec (the records of spec/helpers/e2e.lua), unbuffered so a
-- killed worker loses nothing it wrote. While the file $E2E_OUT/slow exists
-- every handler waits SOAK_SLOW_MS first, so a backlog builds.
local cqueues = require("cqueues")
local ffi = require("ffi")
ffi.cdef("int getpid(void);")

local M = {}

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local fan = tonumber(os.getenv("SOAK_FAN") or "10")
local wait_s = tonumber(os.getenv("SOAK_WAIT_MS") or "20") / 1000
local slow_s = tonumber(os.getenv("SOAK_SLOW_MS") or "100") / 1000
local slow_flag = out_dir .. "/slow"
local file

local function record(tag, ctx)
  if not file then
    file = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
    file:setvbuf("no")
  end
  file:write(tag, "\t", ctx.payload, "\t", ffi.C.getpid(), "\t", tostring(ctx.redelivered), "\n")
end

local function maybe_slow()
  local f = io.open(slow_flag)
  if f then
    f:close()
    cqueues.sleep(slow_s)
  end
end

--- Records the message under its route's kind (soak/<kind>/...).
function M.plain(ctx)
  maybe_slow()
  record(ctx.topic:match("^soak/(%w+)/"), ctx)
end

--- Retained publications: a copy the broker sent because of a subscribe
-- (ctx.retain) is tagged apart, so the soak can tell it from a live one.
function M.state(ctx)
  maybe_slow()
  record(ctx.retain and "retained" or "state", ctx)
end

--- Waits (yielding to the worker's other messages), then records.
function M.wait(ctx)
  maybe_slow()
  cqueues.sleep(wait_s * (0.5 + math.random()))
  record(ctx.topic:match("^soak/(%w+)/"), ctx)
end

--- Yields briefly (an ordered route runs one message of a topic at a time:
-- a long wait would make it the bottleneck of slot 0), then records.
function M.ordered(ctx)
  maybe_slow()
  cqueues.sleep(0.002 * math.random())
  record(ctx.topic:match("^soak/(%w+)/"), ctx)
end

--- Publishes SOAK_FAN QoS 1 messages "<id>:<j>" to soak/out/<id>, then records.
function M.fan(ctx)
  maybe_slow()
  local id = ctx.payload
  for j = 1, fan do
    ctx:publish("soak/out/" .. id, id .. ":" .. j, { qos = 1 })
  end
  record(ctx.topic:match("^soak/(%w+)/"), ctx)
end

return M
