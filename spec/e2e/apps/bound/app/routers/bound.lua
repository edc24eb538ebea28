-- Publishing at the outgoing bound, for spec/e2e/publish_wait_spec.lua.
-- Handlers leave "tag<TAB>payload<TAB>pid<TAB>redelivered" lines in
-- $E2E_OUT/<pid>.rec (spec/helpers/e2e.lua's records).
local router = require("routemq.router")
local cqueues = require("cqueues")
local ffi = require("ffi")
ffi.cdef("int getpid(void);")

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local function record(tag, payload, redelivered)
  local f = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
  f:write(tag, "\t", payload, "\t", ffi.C.getpid(), "\t", tostring(redelivered), "\n")
  f:close()
end

local N = tonumber(os.getenv("BOUND_N") or "70000")
local PAD = string.rep("x", tonumber(os.getenv("BOUND_PAD") or "0"))
-- In its first run the handler stops publishing after this many and waits
-- there until its worker is killed: it cannot have finished by then.
local GATE = tonumber(os.getenv("BOUND_GATE") or "0")

-- One message, N QoS 1 publishes "<i> <pad>" to bound/out.
router.on("bound/many", function(ctx)
  record("start", ctx.payload, ctx.redelivered)
  for i = 1, N do
    ctx:publish("bound/out", i .. " " .. PAD, { qos = 1 })
    if i == GATE and not ctx.redelivered then
      record("gate", ctx.payload, ctx.redelivered)
      while true do
        cqueues.sleep(1)
      end
    end
  end
  record("done", ctx.payload, ctx.redelivered)
end, { qos = 1, timeout = 600 })

-- Publishes more than it can in its 1 s: cancelled at its timeout while it
-- waits at the bound.
router.on("bound/stuck", function(ctx)
  record("stuck", ctx.payload, ctx.redelivered)
  for i = 1, 1e9 do
    ctx:publish("bound/out", "stuck " .. i, { qos = 1 })
  end
  record("stuck-done", ctx.payload, ctx.redelivered)
end, { qos = 1, timeout = 1 })

-- Publishes from inside string.gsub's callback, which cannot yield: no
-- waiting, so it runs into the packet id limit.
router.on("bound/gsub", function(ctx)
  record("gsub", ctx.payload, ctx.redelivered)
  local n = 0
  ((" "):rep(N)):gsub(" ", function()
    n = n + 1
    ctx:publish("bound/out", "gsub " .. n, { qos = 1 })
  end)
  record("gsub-done", ctx.payload, ctx.redelivered)
end, { qos = 1 })

router.on("bound/quick", function(ctx)
  record("quick", ctx.payload, ctx.redelivered)
end, { qos = 1 })

-- A timer run publishing N QoS 1 messages "tick <i>".
if os.getenv("BOUND_TIMER") then
  router.every(tonumber(os.getenv("BOUND_TIMER")), function(job)
    record("tick-start", "0", false)
    for i = 1, N do
      job:publish("bound/out", "tick " .. i, { qos = 1 })
    end
    record("tick-done", "0", false)
  end, { name = "burst", timeout = 600 })
end
