-- Handlers for sensor readings: function(ctx) per route. See the `ctx` fields
-- with your editor's completion (.luarc.json points it at routemq's types).
-- Readings come in on sensors/<device_id>/data; one above the threshold
-- raises an alert on alerts/<device_id>.
-- (routemq's own default app, `make run`, runs this same file.)
local M = {}

-- Read once when the app loads; override with ALERT_THRESHOLD=<degrees> in
-- the environment or in .env.
local THRESHOLD = tonumber(os.getenv("ALERT_THRESHOLD") or "") or 80

---sensors/{device_id}/data: logs the reading and raises an alert when it is too hot.
---@param ctx routemq.Context
function M.data(ctx)
  local device = ctx.params.device_id
  local reading, err = ctx:json()
  if type(reading) ~= "table" or type(reading.temp) ~= "number" then
    -- A bad reading is the sender's problem: log it, do not raise (raising
    -- would count it as a handler error).
    ctx.log.warn("ignoring bad reading from ", device, ": ", err or "no numeric 'temp'")
    return
  end
  ctx.log.info("reading from ", device, ": ", reading.temp)
  if reading.temp > THRESHOLD then
    ctx:publish("alerts/" .. device, {
      device_id = device,
      temp = reading.temp,
      threshold = THRESHOLD,
    }, { qos = 1 })
  end
end

---alerts/{device_id}: a real app would page someone; this one logs.
---@param ctx routemq.Context
function M.alert(ctx)
  ctx.log.warn("ALERT from ", ctx.params.device_id, ": ", ctx.payload)
end

return M
