-- Logs how long each message took, middleware included. Registered globally
-- in app/routers/telemetry.lua, so it wraps every route of the app.
local core = require("routemq.core")

local monotime = core.monotime

return function(ctx, next)
  local started = monotime()
  local result = next()
  ctx.log.debug(ctx.route, " handled in ",
    string.format("%.3f", (monotime() - started) * 1000), " ms")
  return result
end
