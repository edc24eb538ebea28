local testing = require("routemq.testing")

describe("routemq.testing", function()
  local app = testing.app("spec/fixtures/basic")

  it("exposes the loaded routes", function()
    assert.equal(5, #app.routes)
    assert.equal("a/one", app.routes[1].pattern)
    assert.equal(app.routes[2], app:route("a/{id}/data"))
    assert.is_nil(app:route("nope"))
  end)

  it("dispatches a matched message and records what it published", function()
    local res = app:dispatch("a/one", { payload = "hi\0there" })
    assert.is_true(res.matched)
    assert.equal("a/one", res.route)
    assert.same({}, res.params)
    assert.is_nil(res.error)
    assert.same({ { topic = "echo/a/one", payload = "hi\0there", qos = 0, retain = false } },
      res.published)
    assert.equal("a/one", res.ctx.topic)
  end)

  it("passes params and message fields to the ctx", function()
    local props = { response_topic = "r", user = { k = "v" } }
    local res = app:dispatch("a/7/data", { payload = "x", qos = 1, retain = true, dup = true,
      redelivered = true, props = props })
    assert.same({ id = "7" }, res.params)
    assert.equal(1, res.ctx.qos)
    assert.is_true(res.ctx.retain)
    assert.is_true(res.ctx.dup)
    assert.is_true(res.ctx.redelivered)
    assert.equal(props, res.ctx.props)
    assert.equal(0, res.ctx.worker)
  end)

  it("encodes the json field as the payload and decodes JSON publishes", function()
    local res = app:dispatch("a/one", { json = { temp = 99 } })
    assert.equal('{"temp":99}', res.ctx.payload)
    assert.same({ temp = 99 }, res.ctx:json())
    assert.same({ temp = 99 }, res.published[1].json)
  end)

  it("reports a handler error with its traceback instead of raising", function()
    local res = app:dispatch("b/x1")
    assert.is_true(res.matched)
    assert.matches("^app/controllers/thing%.lua:8: no luck with x1\nstack traceback:", res.error)
  end)

  it("records logs of every level", function()
    local res = app:dispatch("logs/a/b", { payload = "12345" })
    assert.same({
      { level = "info", msg = "got 5 bytes on logs/a/b" },
      { level = "debug", msg = "details" },
    }, res.logs)
  end)

  it("keeps results of separate dispatches apart", function()
    local first = app:dispatch("a/one", { payload = "1" })
    local second = app:dispatch("a/one", { payload = "2" })
    assert.equal(1, #first.published)
    assert.equal("2", second.published[1].payload)
  end)

  it("returns matched = false for a topic no route matches", function()
    local res = app:dispatch("nothing/here")
    assert.is_false(res.matched)
    assert.is_nil(res.route)
    assert.is_nil(res.error)
    assert.same({}, res.published)
  end)

  it("rejects mistakes in the test itself", function()
    assert.has_error(function() app:dispatch("a/one", { paylod = "x" }) end,
      "app:dispatch: unknown message field 'paylod'")
    assert.has_error(function() app:dispatch("a/one", { payload = "x", json = {} }) end,
      "app:dispatch: give either payload or json, not both")
    assert.has_error(function() app:dispatch("a/+") end)
    assert.has_error(function() app:dispatch("a/one", { payload = 5 }) end,
      "app:dispatch: payload must be a string, got 5")
  end)

  it("raises the load error", function()
    -- pcall, not has_error: has_error strips the "file:line: " being checked.
    local ok, err = pcall(testing.app, "spec/fixtures/router_error")
    assert.is_false(ok)
    assert.equal("app/routers/boom.lua:4: boom", err)
    assert.has_error(function() testing.app("spec/fixtures/basic", { evn = {} }) end,
      "testing.app: unknown option 'evn'")
  end)

  describe("env", function()
    local env_app = testing.app("spec/fixtures/env", {
      env = { MQTT_GROUP_NAME = "lab", WORKER_HANDLER_TIMEOUT = "7", EXTRA = "yes" },
    })

    it("applies MQTT_GROUP_NAME and WORKER_HANDLER_TIMEOUT like the runtime", function()
      local route = env_app:route("env/{name}")
      assert.equal("$share/lab/env/+", route.sub)
      assert.equal(7, route.timeout)
    end)

    it("shows the variables to os.getenv while the app loads and runs, only then", function()
      assert.equal("loaded with EXTRA=yes", env_app:route("env/{name}").name)
      assert.equal("yes", env_app:dispatch("env/EXTRA").published[1].payload)
      assert.equal(os.getenv("HOME"), env_app:dispatch("env/HOME").published[1].payload)
      assert.is_nil(os.getenv("EXTRA"))
    end)
  end)
end)
