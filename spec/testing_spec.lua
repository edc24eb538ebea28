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

describe("routemq.testing with retries", function()
  local app = testing.app("spec/fixtures/retry")

  local function hook_calls(res)
    local out = {}
    for _, p in ipairs(res.published) do
      if p.topic:sub(1, 7) == "errors/" then
        out[#out + 1] = p.json
      end
    end
    return out
  end

  it("runs retries at once and reports them", function()
    local res = app:dispatch("flaky/7")
    assert.is_true(res.ok)
    assert.equal(3, res.attempts)
    assert.same({ 1, 2 }, res.retries)
    assert.equal(2, #res.errors)
    assert.matches("^app/routers/retry%.lua:%d+: not yet %(attempt 1%)\nstack traceback:", res.errors[1])
    assert.is_nil(res.error)
    assert.is_nil(res.dead_letter)
    assert.equal(3, res.ctx.attempt)
    assert.equal("ok", res.published[#res.published].payload)
    local calls = hook_calls(res)
    assert.equal(2, #calls)
    assert.same({ 1, false, "error", "flaky/{n}", true },
      { calls[1].attempt, calls[1].final, calls[1].reason, calls[1].route, calls[1].has_traceback })
  end)

  it("reports the dead letter of a message out of attempts", function()
    local res = app:dispatch("always")
    assert.is_false(res.ok)
    assert.equal(2, res.attempts)
    assert.equal(1, #res.retries)
    assert.equal("error", res.dead_letter.reason)
    assert.matches("always broken$", res.dead_letter.error)
    assert.matches("^stack traceback:", res.dead_letter.traceback)
    assert.equal(2, res.dead_letter.attempts)
    assert.matches("always broken\nstack traceback:", res.error)
    local calls = hook_calls(res)
    assert.same({ false, true }, { calls[1].final, calls[2].final })
  end)

  it("sends ctx:fail straight to the dead letters", function()
    local res = app:dispatch("reject", { payload = "x" })
    assert.equal(1, res.attempts)
    assert.same({}, res.retries)
    assert.equal("failed", res.dead_letter.reason)
    assert.equal("payload x is not an order", res.dead_letter.error)
    local calls = hook_calls(res)
    assert.same({ { err = "payload x is not an order", attempt = 1, final = true, reason = "failed",
      route = "reject", has_traceback = true } }, calls)
  end)

  it("does not call the hook for ctx:retry, and stops before a retry with retries = 'none'", function()
    local res = app:dispatch("later")
    assert.is_true(res.ok)
    assert.same({ 0.01 }, res.retries)
    assert.same({}, hook_calls(res))
    res = app:dispatch("later", { retries = "none" })
    assert.is_false(res.ok)
    assert.equal(1, res.attempts)
    assert.same({ 0.01 }, res.retries)
    assert.is_nil(res.dead_letter)
    res = app:dispatch("later", { retries = "sleep" })
    assert.is_true(res.ok)
    assert.equal(2, res.attempts)
  end)

  it("turns a timeout into a failed attempt with reason timeout", function()
    local res = app:dispatch("slow", { attempt = 3 })
    assert.equal(3, res.ctx.attempt)
    assert.equal("timeout", res.dead_letter.reason)
    assert.equal("timeout after 0.05 s", res.dead_letter.error)
    assert.same({ { err = "timeout after 0.05 s", attempt = 3, final = true, reason = "timeout",
      route = "slow", has_traceback = false } }, hook_calls(res))
  end)

  it("keeps a single attempt's error as before, and takes defaults from ROUTEMQ_RETRY_*", function()
    local res = app:dispatch("plain")
    assert.matches("^app/routers/retry%.lua:%d+: plain error\nstack traceback:", res.error)
    assert.equal(1, res.attempts)
    local env_app = testing.app("spec/fixtures/retry", { env = {
      ROUTEMQ_RETRY_ATTEMPTS = "4", ROUTEMQ_RETRY_DELAY = "0", ROUTEMQ_RETRY_BACKOFF = "1" } })
    res = env_app:dispatch("plain", { replayed = true })
    assert.equal(4, res.attempts)
    assert.same({ 0, 0, 0 }, res.retries)
    assert.is_true(res.ctx.replayed)
  end)

  it("rejects a bad ROUTEMQ_RETRY_* and bad dispatch fields", function()
    local ok, err = pcall(testing.app, "spec/fixtures/retry", { env = { ROUTEMQ_RETRY_ATTEMPTS = "0" } })
    assert.is_false(ok)
    assert.equal("ROUTEMQ_RETRY_ATTEMPTS: '0' is not an integer from 1 to 1000", err)
    assert.has_error(function() app:dispatch("plain", { retries = "later" }) end,
      "app:dispatch: retries must be 'now', 'sleep' or 'none', got 'later'")
    assert.has_error(function() app:dispatch("plain", { attempt = 0 }) end,
      "app:dispatch: attempt must be a positive integer, got 0")
  end)
end)
