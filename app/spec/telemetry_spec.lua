-- What the default app adds to the `routemq new` template's sensors
-- (whose own spec, app/spec/sensor_spec.lua, is the template's): the
-- readings shared by two workers, and every message timed.
local testing = require("routemq.testing")

describe("telemetry", function()
  local app = testing.app(".")

  it("shares sensor readings between two workers", function()
    local route = app:route("sensors/{device_id}/data")
    assert.is_true(route.shared)
    assert.equal(2, route.worker_count)
    assert.equal("$share/routemq/sensors/+/data", route.sub)
  end)

  it("times every message", function()
    local res = app:dispatch("alerts/42", { payload = "hot" })
    assert.equal("debug", res.logs[2].level)
    assert.matches("^alerts/{device_id} handled in [%d.]+ ms$", res.logs[2].msg)
  end)
end)
