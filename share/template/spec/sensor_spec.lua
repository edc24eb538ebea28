-- Specs run without a broker: routemq.testing loads app/routers as the
-- runtime does and records what a handler publishes and logs.
-- Run them with `routemq test` (or `busted` in this directory).
-- (routemq's own default app runs this same file: app/spec/sensor_spec.lua.)
local testing = require("routemq.testing")

describe("sensors/{device_id}/data", function()
  local app = testing.app(".")

  it("logs every reading", function()
    local res = app:dispatch("sensors/42/data", { json = { temp = 21.5 }, qos = 1 })
    assert.is_nil(res.error)
    assert.equal("sensors/{device_id}/data", res.route)
    assert.same({ level = "info", msg = "reading from 42: 21.5" }, res.logs[1])
    assert.same({}, res.published)
  end)

  it("publishes an alert when a reading is too hot", function()
    local res = app:dispatch("sensors/42/data", { json = { temp = 91 }, qos = 1 })
    assert.is_nil(res.error)
    assert.equal(1, #res.published)
    local alert = res.published[1]
    assert.equal("alerts/42", alert.topic)
    assert.equal(1, alert.qos)
    assert.same({ device_id = "42", temp = 91, threshold = 80 }, alert.json)
  end)

  it("skips a reading that is not JSON, with a warning", function()
    local res = app:dispatch("sensors/42/data", { payload = "not json" })
    assert.is_nil(res.error)
    assert.same({}, res.published)
    assert.equal("warn", res.logs[1].level)
    assert.matches("ignoring bad reading from 42", res.logs[1].msg, 1, true)
  end)

  it("reads the threshold from ALERT_THRESHOLD", function()
    local strict = testing.app(".", { env = { ALERT_THRESHOLD = "20" } })
    local res = strict:dispatch("sensors/7/data", { json = { temp = 25 } })
    assert.equal("alerts/7", res.published[1].topic)
  end)

  it("matches nothing else", function()
    assert.is_false(app:dispatch("sensors/42").matched)
  end)
end)

describe("alerts/{device_id}", function()
  local app = testing.app(".")

  it("logs the alert", function()
    local res = app:dispatch("alerts/42", { payload = "hot" })
    assert.is_nil(res.error)
    assert.same({ level = "warn", msg = "ALERT from 42: hot" }, res.logs[1])
  end)
end)
