local testing = require("routemq.testing")

describe("inventory", function()
  local app = testing.app(".")
  local tenant = { user = { tenant = "acme" } }

  it("applies adjustments and announces the new quantity", function()
    local res = app:dispatch("inventory/sku-1/adjust", { json = { delta = 5 }, qos = 1, props = tenant })
    assert.is_nil(res.error)
    assert.equal("inventory/sku-1/changed", res.published[1].topic)
    assert.same({ quantity = 5, tenant = "acme" }, res.published[1].json)
  end)

  it("never goes below zero", function()
    local res = app:dispatch("inventory/sku-2/adjust", { json = { delta = -3 }, props = tenant })
    assert.same({ quantity = 0, tenant = "acme" }, res.published[1].json)
  end)

  it("answers get requests with ctx:reply", function()
    app:dispatch("inventory/sku-3/adjust", { json = { delta = 2 }, props = tenant })
    local res = app:dispatch("inventory/sku-3/get", {
      props = { user = { tenant = "acme" }, response_topic = "replies/me", correlation_data = "c-1" } })
    assert.equal("replies/me", res.published[1].topic)
    assert.equal("c-1", res.published[1].props.correlation_data)
    assert.same({ sku = "sku-3", quantity = 2 }, res.published[1].json)
  end)

  it("drops messages without a tenant", function()
    local res = app:dispatch("inventory/sku-1/adjust", { json = { delta = 1 } })
    assert.same({}, res.published)
    assert.matches("no tenant", res.logs[1].msg)
  end)

  it("shares adjustments over 4 workers", function()
    local route = app:route("inventory/{sku}/adjust")
    assert.is_true(route.shared)
    assert.equal(4, route.worker_count)
  end)
end)
