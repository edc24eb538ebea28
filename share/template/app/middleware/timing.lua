-- Middleware: function(ctx, next). Whatever runs before next() runs before
-- the handler; not calling next() stops the message there. This one logs how
-- long each message took, middleware included.
-- (routemq's own default app, `make run`, runs this same file.)
local monotime = require("routemq.core").monotime

---@param ctx routemq.Context
---@param next fun(): any
return function(ctx, next)
  local started = monotime()
  local result = next()
  ctx.log.debug(tostring(ctx.route), " handled in ",
    string.format("%.3f", (monotime() - started) * 1000), " ms")
  return result
end
