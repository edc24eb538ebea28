-- Telemetry: readings come in on sensors/<device_id>/data, and a reading above
-- the threshold raises an alert on alerts/<device_id>.
local M = {}

-- Read once when the app loads; override with ALERT_THRESHOLD=<degrees>.
local THRESHOLD = tonumber(os.getenv("ALERT_THRESHOLD") or "") or 80

-- sensors/{device_id}/data: publish an alert when the reading is too hot.
function M.data(ctx)
  local device = ctx.params.device_id
  local reading, err = ctx:json()
  if type(reading) ~= "table" or type(reading.temp) ~= "number" then
    -- A bad reading is the sender's problem: log it, do not raise (raising
    -- would count it as a handler error).
    ctx.log.warn("ignoring bad reading from ", device, ": ", err or "no numeric 'temp'")
    return
  end
  if reading.temp > THRESHOLD then
    ctx:publish("alerts/" .. device, {
      device_id = device,
      temp = reading.temp,
      threshold = THRESHOLD,
    }, { qos = 1 })
  end
end

-- alerts/{device_id}: a real app would page someone; the example logs.
function M.alert(ctx)
  ctx.log.warn("ALERT from ", ctx.params.device_id, ": ", ctx.payload)
end

return M
