-- Specs run without a broker: routemq.testing loads app/routers as the
-- runtime does and records what a handler publishes and logs.
-- Run them with `routemq test` (or `busted` in this directory).
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
    assert.equal("alerts/42", res.published[1].topic)
    assert.same({ device_id = "42", temp = 91 }, res.published[1].json)
  end)

  it("skips a reading that is not JSON, with a warning", function()
    local res = app:dispatch("sensors/42/data", { payload = "not json" })
    assert.is_nil(res.error)
    assert.same({}, res.published)
    assert.equal("warn", res.logs[1].level)
  end)

  it("matches nothing else", function()
    assert.is_false(app:dispatch("sensors/42").matched)
  end)
end)
