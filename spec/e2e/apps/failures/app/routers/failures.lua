-- For spec/e2e/failures_spec.lua: ctx:fail, ctx:retry, a timeout and the
-- on_error hooks in a real worker. Successes append "ok<TAB>payload<TAB>attempt"
-- and the first hook appends "hook<TAB>topic<TAB>reason<TAB>attempt<TAB>final"
-- to $E2E_OUT/lines.
local router = require("routemq.router")
local cqueues = require("cqueues")

local out_dir = os.getenv("E2E_OUT") or "/tmp"

local function line(...)
  local f = assert(io.open(out_dir .. "/lines", "a"))
  f:write(table.concat({ ... }, "\t"), "\n")
  f:close()
end

router.on("fail/reject/{n}", function(ctx)
  ctx:fail("rejected " .. ctx.payload)
end, { qos = 1, retry = { attempts = 5 } })

router.on("fail/later/{n}", function(ctx)
  if ctx.attempt == 1 then
    ctx:retry(0.1)
  end
  line("ok", ctx.payload, ctx.attempt)
end, { qos = 1, retry = { attempts = 2 } })

router.on("fail/slow/{n}", function()
  cqueues.sleep(30)
end, { qos = 1, timeout = 0.3 })

router.on("fail/waits/{n}", function(ctx)
  cqueues.sleep(0.01)
  if ctx.attempt == 1 then
    error("waited, then failed: " .. ctx.payload)
  end
  line("ok", ctx.payload, ctx.attempt)
end, { qos = 1, retry = { attempts = 2, delay = 0.1 } })

router.on_error(function(ctx, _, info)
  cqueues.sleep(0.01) -- a hook may wait
  line("hook", ctx.topic, info.reason, info.attempt, tostring(info.final))
end)

router.on_error(function()
  error("hook broke")
end)
