-- Middleware: function(ctx, next). Whatever runs before next() runs before
-- the handler; not calling next() stops the message there.
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
