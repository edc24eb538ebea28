local context = require("routemq.context")
local dispatch = require("routemq.dispatch")
local cjson = require("cjson")

local ROUTE = { pattern = "devices/{id}/cmd", name = "cmd", filter = "devices/+/cmd", qos = 1 }

-- A ctx whose publishes land in `sent`.
local function make(payload, props, sent)
  local io = {
    publish = function(topic, body, qos, retain, p)
      sent[#sent + 1] = { topic = topic, payload = body, qos = qos, retain = retain, props = p }
      return "sent"
    end,
    log = function() end,
  }
  return context.new(context.route_view(ROUTE), "devices/7/cmd", { id = "7" }, payload, 1,
    false, false, props, false, 3, {}, io)
end

-- The message raised by fn, which must fail.
local function failure(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return err
end

describe("routemq.context", function()
  local sent

  before_each(function()
    sent = {}
  end)

  it("exposes the message fields", function()
    local ctx = make("hi", nil, sent)
    assert.equal("devices/7/cmd", ctx.topic)
    assert.same({ id = "7" }, ctx.params)
    assert.equal("hi", ctx.payload)
    assert.equal(1, ctx.qos)
    assert.is_false(ctx.retain)
    assert.is_false(ctx.dup)
    assert.is_false(ctx.redelivered)
    assert.equal(3, ctx.worker)
    assert.equal(1, ctx.attempt)
    assert.is_false(ctx.replayed)
  end)

  it("gives the attempt and replayed flag the runtime passes", function()
    local ctx = context.new(context.route_view(ROUTE), "t", nil, "", 1, false, false, nil, false,
      0, {}, {}, 5, 1, 4, true)
    assert.equal(4, ctx.attempt)
    assert.is_true(ctx.replayed)
  end)

  it("ctx:retry and ctx:fail end the handler with a private object, their request on ctx", function()
    local ctx = make("x", nil, sent)
    local ok, err = pcall(ctx.retry, ctx, 2.5)
    assert.is_false(ok)
    assert.equal(context.RETRY, err)
    assert.same({ context.RETRY, 2.5 }, { ctx._signal, ctx._signal_arg })
    ctx = make("x", nil, sent)
    ok, err = pcall(ctx.fail, ctx, "unknown device")
    assert.is_false(ok)
    assert.equal(context.FAIL, err)
    assert.same({ context.FAIL, "unknown device" }, { ctx._signal, ctx._signal_arg })
    assert.equal("ctx:retry", tostring(context.RETRY))
  end)

  it("ctx:retry and ctx:fail check their argument", function()
    local ctx = make("x", nil, sent)
    assert.matches("^spec/context_spec%.lua:%d+: ctx:retry: seconds must be a number >= 0 "
      .. "%(or nil for the route's backoff%), got %-?nan$", failure(function() ctx:retry(0 / 0) end))
    assert.matches("^spec/context_spec%.lua:%d+: ctx:fail: reason must be a non%-empty string, "
      .. "got 5$", failure(function() ctx:fail(5) end))
    assert.is_nil(ctx._signal)
  end)

  it("gives an empty, read-only props table when the message has none", function()
    local ctx = make("", nil, sent)
    assert.same({}, ctx.props)
    assert.is_nil(ctx.props.response_topic)
    assert.has_error(function()
      ctx.props.x = 1
    end)
  end)

  it("exposes the route's pattern, name, filter and qos; tostring gives the pattern", function()
    local ctx = make("", nil, sent)
    assert.equal("devices/{id}/cmd", ctx.route.pattern)
    assert.equal("cmd", ctx.route.name)
    assert.equal("devices/+/cmd", ctx.route.filter)
    assert.equal(1, ctx.route.qos)
    assert.equal("devices/{id}/cmd", tostring(ctx.route))
  end)

  it("keeps binary payloads intact", function()
    local bytes = "a\0b\255\0"
    local ctx = make(bytes, nil, sent)
    assert.equal(5, #ctx.payload)
    assert.equal(bytes, ctx.payload)
    ctx:publish("out", ctx.payload)
    assert.equal(bytes, sent[1].payload)
  end)

  describe("json", function()
    it("decodes the payload and caches the result", function()
      local ctx = make('{"temp":99,"tags":["a"]}', nil, sent)
      local value = ctx:json()
      assert.same({ temp = 99, tags = { "a" } }, value)
      ctx.payload = "changed"
      assert.equal(value, ctx:json())
    end)

    it("returns nil and an error on bad JSON, without raising, also when cached", function()
      local ctx = make("{oops", nil, sent)
      local value, err = ctx:json()
      assert.is_nil(value)
      assert.is_string(err)
      local again, err2 = ctx:json()
      assert.is_nil(again)
      assert.equal(err, err2)
      assert.is_nil((make("", nil, sent):json()))
    end)

    it("caches false", function()
      local ctx = make("false", nil, sent)
      assert.is_false(ctx:json())
      ctx.payload = "{"
      assert.is_false(ctx:json())
    end)
  end)

  describe("publish", function()
    it("sends a string payload with default options", function()
      local ctx = make("", nil, sent)
      assert.equal("sent", ctx:publish("a/b", "x"))
      assert.same({ topic = "a/b", payload = "x", qos = 0, retain = false }, sent[1])
    end)

    it("encodes a table payload as JSON", function()
      local ctx = make("", nil, sent)
      ctx:publish("a/b", { temp = 99 }, { qos = 2, retain = true })
      assert.is_string(sent[1].payload)
      assert.same({ temp = 99 }, cjson.decode(sent[1].payload))
      assert.equal(2, sent[1].qos)
      assert.is_true(sent[1].retain)
    end)

    it("sends nil as an empty payload", function()
      make("", nil, sent):publish("a/b")
      assert.equal("", sent[1].payload)
    end)

    it("passes properties", function()
      local props = { content_type = "application/json", response_topic = "r/1",
        correlation_data = "\0id", message_expiry = 60, user = { k = "v" } }
      make("", nil, sent):publish("a/b", "x", { props = props })
      assert.same(props, sent[1].props)
    end)

    it("waits while the runtime says the outgoing bound is reached, then publishes", function()
      local calls, waits = {}, 0
      local io = {
        publish = function(_, _, _, _, _, _, nowait)
          calls[#calls + 1] = nowait or false
          if #calls < 3 and not nowait then return false end
          return true
        end,
        wait_outgoing = function()
          waits = waits + 1
          return true
        end,
      }
      local ctx = context.new(context.route_view(ROUTE), "t", nil, "", 1, false, false, nil, false, 0, {}, io)
      assert.is_true(ctx:publish("a/b", "x"))
      assert.same({ false, false, false }, calls)
      assert.equal(2, waits)
      -- Code that cannot wait publishes regardless (nowait).
      calls = {}
      io.wait_outgoing = function() return false end
      assert.is_true(ctx:publish("a/b", "x"))
      assert.same({ false, true }, calls)
    end)

    it("raises clear errors that point at the caller", function()
      local ctx = make("", nil, sent)
      local here = "^spec/context_spec%.lua:%d+: "
      local cases = {
        { function() ctx:publish("a/+", "x") end, "ctx:publish: invalid topic 'a/%+': .+" },
        { function() ctx:publish("", "x") end, "ctx:publish: invalid topic '': .+" },
        { function() ctx:publish(nil, "x") end, "ctx:publish: topic must be a string, got nil" },
        { function() ctx:publish("a", 5) end,
          "ctx:publish: payload must be a string or a table, got 5" },
        { function() ctx:publish("a", { f = print }) end,
          "ctx:publish: cannot encode the payload as JSON: .+" },
        { function() ctx:publish("a", "x", { qos = 3 }) end,
          "ctx:publish: option 'qos' must be 0, 1 or 2, got 3" },
        { function() ctx:publish("a", "x", { retain = 1 }) end,
          "ctx:publish: option 'retain' must be a boolean, got 1" },
        { function() ctx:publish("a", "x", { qso = 1 }) end,
          "ctx:publish: unknown option 'qso'" },
        { function() ctx:publish("a", "x", 1) end,
          "ctx:publish: options must be a table, got 1" },
        { function() ctx:publish("a", "x", { props = { colour = "x" } }) end,
          "ctx:publish: unknown property 'colour'" },
        { function() ctx:publish("a", "x", { props = { response_topic = "r/#" } }) end,
          "ctx:publish: props.response_topic 'r/#' is not a valid topic: .+" },
        { function() ctx:publish("a", "x", { props = { message_expiry = -1 } }) end,
          "ctx:publish: props.message_expiry must be a whole number of seconds, got %-1" },
        { function() ctx:publish("a", "x", { props = { content_type = 1 } }) end,
          "ctx:publish: props.content_type must be a string, got 1" },
        { function()
            ctx:publish("a", "x", { props = { correlation_data = ("x"):rep(65536) } })
          end, "ctx:publish: props.correlation_data is longer than 65535 bytes" },
        { function() ctx:publish("a", "x", { props = { user = { k = 1 } } }) end,
          "ctx:publish: props.user must map strings to strings, got 'k' = 1" },
      }
      for _, case in ipairs(cases) do
        assert.matches(here .. case[2] .. "$", failure(case[1]))
      end
      assert.same({}, sent)
    end)
  end)

  describe("reply", function()
    it("publishes to response_topic with the request's correlation_data", function()
      local ctx = make("", { response_topic = "clients/1/inbox", correlation_data = "\1\0c" },
        sent)
      ctx:reply({ ok = true }, { qos = 1 })
      assert.equal("clients/1/inbox", sent[1].topic)
      assert.same({ ok = true }, cjson.decode(sent[1].payload))
      assert.equal(1, sent[1].qos)
      assert.same({ correlation_data = "\1\0c" }, sent[1].props)
    end)

    it("merges the caller's properties, which win", function()
      local ctx = make("", { response_topic = "r", correlation_data = "c" }, sent)
      ctx:reply("x", { props = { content_type = "text/plain", user = { a = "b" } } })
      assert.same({ correlation_data = "c", content_type = "text/plain", user = { a = "b" } },
        sent[1].props)
      ctx:reply("x", { props = { correlation_data = "mine" } })
      assert.same({ correlation_data = "mine" }, sent[2].props)
    end)

    it("works without correlation_data", function()
      make("", { response_topic = "r" }, sent):reply("x")
      assert.equal("r", sent[1].topic)
      assert.is_nil(sent[1].props)
    end)

    it("raises when the message has no response_topic", function()
      local err = failure(function()
        make("", nil, sent):reply("x")
      end)
      assert.matches("^spec/context_spec%.lua:%d+: ctx:reply: the message has no response_topic$",
        err)
    end)
  end)

  describe("log", function()
    local app = {
      middleware = {},
      routes = { { pattern = "a/{x}", name = "a", filter = "a/+", qos = 0,
        handler = function(ctx)
          ctx.log.info("n=", 1, " ", nil, " ", true)
          ctx.log:warn("called with a colon")
          ctx.log.debug("quiet")
          ctx.log.error(ctx.route)
        end } },
    }

    it("concatenates like ngx.log, tags the ctx, and drops lines below io.level", function()
      local lines = {}
      local d = dispatch.new(app, {
        publish = function() end,
        log = function(level, msg, ctx)
          lines[#lines + 1] = { level, msg, ctx.topic, ctx.worker }
        end,
        level = "info",
      }, 2)
      d.call(1, "a/1", "", 0, false, false, nil, false, { x = "1" })
      assert.same({
        { "info", "n=1 nil true", "a/1", 2 },
        { "warn", "called with a colon", "a/1", 2 },
        { "error", "a/{x}", "a/1", 2 },
      }, lines)
    end)

    it("shares one log table between messages", function()
      local d = dispatch.new(app, { publish = print, log = function() end }, 0)
      d.call(1, "a/1", "", 0, false, false, nil, false, {})
      local first = d.current()
      d.call(1, "a/2", "", 0, false, false, nil, false, {})
      assert.are_not.equal(first, d.current())
      assert.equal(first.log, d.current().log)
      assert.equal(first.route, d.current().route)
    end)
  end)

  describe("dispatch.call", function()
    it("passes the message fields through and runs the handler to its end", function()
      local seen
      local d = dispatch.new({ routes = { { pattern = "t/{x}", filter = "t/+", qos = 0,
        handler = function(ctx)
          seen = ctx
          return "done", 2
        end } } }, { publish = print, log = print }, 5)
      local props = { content_type = "text/plain" }
      assert.is_true(d.call(1, "t/1", "p\0", 2, true, true, props, true, { x = "1" }))
      assert.equal("t/1", seen.topic)
      assert.equal("p\0", seen.payload)
      assert.equal(2, seen.qos)
      assert.is_true(seen.retain)
      assert.is_true(seen.dup)
      assert.is_true(seen.redelivered)
      assert.equal(props, seen.props)
      assert.same({ x = "1" }, seen.params)
      assert.equal(5, seen.worker)
    end)

    it("lets errors through to the caller", function()
      local d = dispatch.new({ routes = { { pattern = "t", filter = "t", qos = 0,
        handler = function() error("bad") end } } }, { publish = print, log = print }, 0)
      assert.has_error(function()
        d.call(1, "t", "", 0, false, false, nil, false, {})
      end)
    end)
  end)
end)
