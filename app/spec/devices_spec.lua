local testing = require("routemq.testing")

describe("device commands", function()
  local app = testing.app(".")
  local request = { response_topic = "clients/c1/replies", correlation_data = "req-1" }

  it("answers ping on the response topic", function()
    local res = app:dispatch("devices/d9/commands/ping", { props = request, qos = 1 })
    assert.is_nil(res.error)
    local reply = res.published[1]
    assert.equal("clients/c1/replies", reply.topic)
    assert.equal("req-1", reply.props.correlation_data)
    assert.same({ ok = true, device = "d9" }, reply.json)
  end)

  it("answers an unknown command with an error", function()
    local res = app:dispatch("devices/d9/commands/selfdestruct", { props = request })
    assert.same({ ok = false, error = "unknown command 'selfdestruct'" }, res.published[1].json)
  end)

  it("warns instead of failing when there is no response topic", function()
    local res = app:dispatch("devices/d9/commands/ping")
    assert.is_nil(res.error)
    assert.same({}, res.published)
    assert.equal("warn", res.logs[1].level)
  end)

  it("ignores topics no route matches", function()
    local res = app:dispatch("devices/d9/firmware")
    assert.is_false(res.matched)
    assert.is_nil(res.error)
  end)
end)
