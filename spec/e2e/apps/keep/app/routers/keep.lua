-- For spec/e2e/keep_spec.lua: a fan-out behind a backlog, and handlers that
-- wait until the instance is killed. Each handled message leaves one line
-- "route<TAB>payload<TAB>pid<TAB>redelivered" in $E2E_OUT/<pid>.rec.
local router = require("routemq.router")
local cqueues = require("cqueues")
local ffi = require("ffi")
ffi.cdef("int getpid(void);")

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local fan = tonumber(os.getenv("E2E_FAN") or "100")
local hold = os.getenv("E2E_HOLD") == "1"
local file

local function record(route, payload, redelivered)
  if not file then
    file = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
    file:setvbuf("no")
  end
  file:write(route, "\t", payload, "\t", ffi.C.getpid(), "\t", tostring(redelivered), "\n")
end

-- Each message publishes E2E_FAN QoS 1 messages.
router.on("keep/fan/{n}", function(ctx)
  for j = 1, fan do
    ctx:publish("keep/out", ctx.payload .. ":" .. j, { qos = 1 })
  end
  record("fan", ctx.payload, ctx.redelivered)
end, { qos = 1 })

-- With E2E_HOLD=1 it waits until its worker is killed: what was taken is
-- certainly kept (in progress or queued behind) at the kill.
router.on("keep/hold/{n}", function(ctx)
  while hold do cqueues.sleep(3600) end
  record("hold", ctx.payload, ctx.redelivered)
end, { qos = 1, timeout = 3600 })

-- A QoS 0 route: each start of its handler leaves a line, then it waits
-- like keep/hold.
router.on("keep/hold0/{n}", function(ctx)
  record("hold0", ctx.payload, ctx.redelivered)
  while hold do cqueues.sleep(3600) end
end, { qos = 0, timeout = 3600 })
