local router = require("routemq.router")
local app = require("routemq.app")
local testing = require("routemq.testing")

local ERRORS = "spec/fixtures/router_errors/"

-- Runs one fixture router file the way the loader does (chunk name relative
-- to the app root) and returns the error it raised.
local function router_error(case)
  local rel = "app/routers/" .. case .. ".lua"
  local f = assert(io.open(ERRORS .. rel, "rb"))
  local chunk = assert(loadstring(f:read("*a"), "@" .. rel))
  f:close()
  router._reset()
  local ok, err = pcall(chunk)
  assert.is_false(ok, case .. " should fail")
  return err
end

local function h() end

describe("routemq.router", function()
  before_each(function()
    router._reset()
  end)

  describe("on", function()
    it("records a route with its defaults", function()
      router.on("sensors/{device_id}/data", h)
      local r = router._routes()[1]
      assert.equal("sensors/{device_id}/data", r.pattern)
      assert.equal("sensors/+/data", r.filter)
      assert.same({ "device_id" }, r.names)
      assert.equal(h, r.handler)
      assert.equal(0, r.qos)
      assert.is_false(r.shared)
      assert.equal(1, r.worker_count)
      assert.is_nil(r.group)   -- filled in by the loader
      assert.is_nil(r.timeout) -- filled in by the loader
      assert.equal("sensors/{device_id}/data", r.name)
      assert.equal("new", r.retained)
      assert.same({}, r.middleware)
      assert.matches("^spec/router_spec%.lua:%d+$", r.source)
    end)

    it("records every option", function()
      local mw = function(_, next) return next() end
      router.on("a/{x...}", h, { qos = 2, shared = true, worker_count = 4, group = "g",
        timeout = 1.5, name = "all", retained = "always", middleware = { mw } })
      router.on("b", h, { retained = "none" })
      assert.equal("none", router._routes()[2].retained)
      local r = router._routes()[1]
      assert.equal("a/#", r.filter)
      assert.same({ "x" }, r.names)
      assert.equal(2, r.qos)
      assert.is_true(r.shared)
      assert.equal(4, r.worker_count)
      assert.equal("g", r.group)
      assert.equal(1.5, r.timeout)
      assert.equal("all", r.name)
      assert.equal("always", r.retained)
      assert.same({ mw }, r.middleware)
    end)

    it("accepts raw wildcards and callable tables", function()
      local callable = setmetatable({}, { __call = function() end })
      router.on("logs/+/#", callable)
      local r = router._routes()[1]
      assert.equal("logs/+/#", r.filter)
      assert.same({ false, false }, r.names)
      assert.equal(callable, r.handler)
    end)

    it("keeps registration order", function()
      router.on("b", h)
      router.on("a", h)
      router.on("c", h)
      local patterns = {}
      for i, r in ipairs(router._routes()) do
        patterns[i] = r.pattern
      end
      assert.same({ "b", "a", "c" }, patterns)
    end)

    it("forgets everything on _reset", function()
      router.on("a", h)
      router.use(h)
      router._reset()
      assert.same({}, router._routes())
      assert.same({}, router._middleware())
      router.on("a", h) -- no longer a duplicate
    end)
  end)

  describe("group", function()
    it("joins nested prefixes with '/'", function()
      router.group({ prefix = "devices/{id}" }, function(r)
        r.on("status", h)
        r.on("", h) -- the prefix itself
        r.group({ prefix = "commands" }, function(c)
          c.on("{command}", h)
          c.group({}, function(n)
            n.on("x", h)
          end)
        end)
      end)
      local patterns = {}
      for i, r in ipairs(router._routes()) do
        patterns[i] = r.pattern
      end
      assert.same({
        "devices/{id}/status",
        "devices/{id}",
        "devices/{id}/commands/{command}",
        "devices/{id}/commands/x",
      }, patterns)
      assert.same({ "id", "command" }, router._routes()[3].names)
    end)

    it("gives routes group middleware then route middleware, global kept apart", function()
      local g, outer, inner, own, used = h, function() end, function() end,
        function() end, function() end
      router.use(g)
      router.group({ prefix = "a", middleware = { outer } }, function(r)
        r.group({ prefix = "b", middleware = { inner } }, function(n)
          n.on("c", h, { middleware = { own } })
        end)
        r.use(used)
      end)
      assert.same({ outer, used, inner, own }, router._routes()[1].middleware)
      assert.same({ g }, router._middleware())
    end)
  end)

  describe("errors name the user's file and line", function()
    local cases = {
      unknown_option = "unknown option 'qoss'",
      qos_range = "option 'qos' must be 0, 1 or 2, got 3",
      qos_type = "option 'qos' must be 0, 1 or 2, got '1'",
      shared_type = "option 'shared' must be a boolean, got 'yes'",
      worker_count_zero = "option 'worker_count' must be a positive integer, got 0",
      worker_count_fraction = "option 'worker_count' must be a positive integer, got 1.5",
      group_empty = "option 'group' must be a non-empty string without '/', '+' or '#', got ''",
      group_slash =
        "option 'group' must be a non-empty string without '/', '+' or '#', got 'a/b'",
      middleware_type = "option 'middleware' must be a list of functions, got a function",
      middleware_item = "option 'middleware' item 2 must be a function, got 'auth'",
      middleware_hole = "option 'middleware' item 2 must be a function, got nil",
      middleware_map =
        "option 'middleware' must be a list of functions, got a table with key 'auth'",
      timeout_negative = "option 'timeout' must be a positive number of seconds, got -1",
      timeout_type = "option 'timeout' must be a positive number of seconds, got '30'",
      name_type = "option 'name' must be a non-empty string, got 5",
      retained_value =
        "option 'retained' of route 'state/{id}' must be 'new', 'always' or 'none', got 'old'",
      options_type = "options must be a table, got 'qos=1'",
      retry_type = "option 'retry' of route 'orders/{id}' must be a table, got 5",
      retry_unknown = "option 'retry' of route 'orders/{id}': unknown field 'attemps' "
        .. "(fields: attempts, delay, backoff, max_delay, jitter)",
      retry_attempts_zero =
        "option 'retry.attempts' of route 'orders/{id}' must be an integer from 1 to 1000, got 0",
      retry_attempts_big =
        "option 'retry.attempts' of route 'orders/{id}' must be an integer from 1 to 1000, got 1001",
      retry_attempts_fraction =
        "option 'retry.attempts' of route 'orders/{id}' must be an integer from 1 to 1000, got 2.5",
      retry_delay_negative =
        "option 'retry.delay' of route 'orders/{id}' must be a number of seconds >= 0, got -1",
      retry_backoff_small =
        "option 'retry.backoff' of route 'orders/{id}' must be a number >= 1, got 0.5",
      retry_max_delay_type =
        "option 'retry.max_delay' of route 'orders/{id}' must be a number of seconds >= 0, got '5m'",
      retry_jitter_big =
        "option 'retry.jitter' of route 'orders/{id}' must be a number from 0 to 1, got 1.5",
      on_error_type = "router.on_error: function expected, got 'report'",
      on_error_colon = "call router.on_error with a dot, not a colon",
      pattern_type = "pattern must be a string, got 42",
      colon = "call router.on with a dot, not a colon",
      use_type = "middleware must be a function, got 'auth'",
      group_unknown = "unknown group option 'prefx'",
      group_prefix = "group option 'prefix' must not start or end with '/', got 'devices/'",
      group_body = "group body must be a function, got nil",
      group_middleware_item = "group option 'middleware' item 1 must be a function, got 'x'",
    }
    for case, reason in pairs(cases) do
      it(case, function()
        assert.equal("app/routers/" .. case .. ".lua:4: " .. reason, router_error(case))
      end)
    end

    it("a handler that is nil (a typo in the controller's function name)", function()
      assert.equal("app/routers/handler_missing.lua:4: handler for 'sensors/{id}/data' "
        .. "must be a function, got nil", router_error("handler_missing"))
    end)

    it("an invalid pattern, with the matcher's reason", function()
      assert.equal("app/routers/invalid_pattern.lua:4: invalid pattern 'a/#/b': "
        .. "'#' must be the last level", router_error("invalid_pattern"))
    end)

    it("a $share/ prefix typed by hand", function()
      assert.equal("app/routers/share_by_hand.lua:4: invalid pattern '$share/g/a': "
        .. "'$share/' is reserved for shared subscriptions: use shared = true",
        router_error("share_by_hand"))
    end)

    it("a duplicate filter, pointing at the first registration", function()
      assert.equal("app/routers/duplicate.lua:5: duplicate route 'a/+': "
        .. "already registered at app/routers/duplicate.lua:4", router_error("duplicate"))
      assert.equal("app/routers/duplicate_named.lua:5: duplicate route 'a/{y}' "
        .. "(filter 'a/+'): already registered at app/routers/duplicate_named.lua:4",
        router_error("duplicate_named"))
      assert.equal("app/routers/group_duplicate.lua:6: duplicate route "
        .. "'devices/{id}/status' (filter 'devices/+/status'): already registered at "
        .. "app/routers/group_duplicate.lua:4", router_error("group_duplicate"))
    end)

    it("inside nested groups, with the full pattern", function()
      assert.equal("app/routers/group_nested.lua:6: invalid pattern "
        .. "'devices/{id}/cmd/x/#/y': '#' must be the last level", router_error("group_nested"))
      assert.equal("app/routers/group_colon.lua:5: call router.on with a dot, not a colon",
        router_error("group_colon"))
      assert.equal("app/routers/group_slash_pattern.lua:5: invalid pattern '/status' in "
        .. "group 'devices/{id}': must not start with '/'", router_error("group_slash_pattern"))
    end)

    it("through app.load", function()
      local loaded, err = app.load("spec/fixtures/bad_pattern")
      assert.is_nil(loaded)
      assert.equal("app/routers/bad.lua:3: invalid pattern 'a/#/b': '#' must be the last level",
        err)
    end)
  end)

  describe("retry and on_error", function()
    it("records the route's retry option, a copy of the fields given", function()
      local retry = { attempts = 5, delay = 0.5, backoff = 1, max_delay = 0, jitter = 0 }
      router.on("a", h, { retry = retry })
      router.on("b", h)
      local routes = router._routes()
      assert.same(retry, routes[1].retry)
      assert.are_not.equal(retry, routes[1].retry)
      assert.is_nil(routes[2].retry)
    end)

    it("records on_error hooks in order with where they were registered", function()
      local h1, h2 = function() end, function() end
      router.on_error(h1)
      router.on_error(h2)
      local hooks = router._jobs().on_error
      assert.equal(2, #hooks)
      assert.equal(h1, hooks[1].fn)
      assert.equal(h2, hooks[2].fn)
      assert.matches("^spec/router_spec%.lua:%d+$", hooks[1].source)
    end)
  end)

  describe("middleware at dispatch", function()
    local mwapp = testing.app("spec/fixtures/middleware")

    local function trace(topic)
      local res = mwapp:dispatch(topic)
      assert.is_nil(res.error)
      return res.ctx.trace
    end

    it("runs global middleware, even registered after the route", function()
      assert.same({ "global", "late-global", "handler" }, trace("plain"))
    end)

    it("runs route middleware in list order after global", function()
      assert.same({ "global", "late-global", "route-1", "route-2", "handler" }, trace("own"))
    end)

    it("orders global, group (outer to inner, use() included), route", function()
      assert.same({ "global", "late-global", "group", "group-use", "route", "handler" },
        trace("g/r"))
      assert.same({ "global", "late-global", "group", "group-use", "inner", "handler" },
        trace("g/inner/42"))
      assert.same({ "global", "late-global", "no-prefix", "handler" }, trace("flat"))
    end)

    it("stops the chain when a middleware does not call next", function()
      assert.same({ "global", "late-global", "stop" }, trace("stopped"))
    end)
  end)
end)
