-- Stores each sensor reading through an HTTP API and acknowledges it on MQTT.
-- The HTTP call waits on lua-http (cqueues): with WORKER_CONCURRENCY above 1
-- the worker handles other readings meanwhile.
local request = require("http.request")
local cjson = require("cjson.safe")

local M = {}

local function api_url()
  return os.getenv("READINGS_API_URL") or "http://127.0.0.1:8080"
end

-- readings/{sensor}: payload {"value": number, "at": number?}.
-- Publishes readings/{sensor}/ack {ok, id} once the API stored it, or
-- {ok = false, error} for a reading the API refused. Raises (the message is
-- counted as an error) when the API cannot be reached or fails.
function M.store(ctx)
  local reading, err = ctx:json()
  local ack_topic = "readings/" .. ctx.params.sensor .. "/ack"
  if not reading or type(reading.value) ~= "number" then
    ctx:publish(ack_topic, { ok = false, error = "bad reading: " .. tostring(err or "no value") },
      { qos = 1 })
    return
  end
  local req = request.new_from_uri(api_url() .. "/sensors/" .. ctx.params.sensor .. "/readings")
  req.headers:upsert(":method", "POST")
  req.headers:upsert("content-type", "application/json")
  req:set_body(cjson.encode({ sensor = ctx.params.sensor, value = reading.value, at = reading.at }))
  local headers, stream = req:go(5)
  if not headers then
    error("readings API unreachable: " .. tostring(stream))
  end
  local body = stream:get_body_as_string(5) or ""
  local status = headers:get(":status")
  if status == "201" then
    local stored = cjson.decode(body) or {}
    ctx:publish(ack_topic, { ok = true, id = stored.id }, { qos = 1 })
  elseif status:sub(1, 1) == "4" then
    ctx:publish(ack_topic, { ok = false, error = "refused: " .. body }, { qos = 1 })
  else
    error("readings API answered " .. status .. ": " .. body)
  end
end

return M
