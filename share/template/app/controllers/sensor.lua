-- Handlers for sensor readings: function(ctx) per route. See the `ctx` fields
-- with your editor's completion (.luarc.json points it at routemq's types).
local M = {}

-- Override with ALERT_THRESHOLD=<degrees> in the environment or in .env.
local THRESHOLD = tonumber(os.getenv("ALERT_THRESHOLD") or "") or 80

---sensors/{device_id}/data: logs the reading and raises an alert when it is too hot.
---@param ctx routemq.Context
function M.data(ctx)
  local device = ctx.params.device_id
  local reading, err = ctx:json()
  if type(reading) ~= "table" or type(reading.temp) ~= "number" then
    -- A bad reading is the sender's problem: log it rather than raise.
    ctx.log.warn("ignoring bad reading from ", device, ": ", err or "no numeric 'temp'")
    return
  end
  ctx.log.info("reading from ", device, ": ", reading.temp)
  if reading.temp > THRESHOLD then
    ctx:publish("alerts/" .. device, { device_id = device, temp = reading.temp }, { qos = 1 })
  end
end

return M
