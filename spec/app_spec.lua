local app = require("routemq.app")
local dispatch = require("routemq.dispatch")

local FIXTURES = "spec/fixtures/"

local function load_ok(name, opts)
  local loaded, err = app.load(FIXTURES .. name, opts)
  assert(loaded, err)
  return loaded
end

local function patterns(loaded)
  local out = {}
  for i, r in ipairs(loaded.routes) do
    out[i] = r.pattern
  end
  return out
end

-- Dispatches one message with a recording io and returns (ok, err, published).
local function run(loaded, topic, payload)
  local published = {}
  local d = dispatch.new(loaded, {
    publish = function(t, p)
      published[#published + 1] = { topic = t, payload = p }
    end,
    log = function() end,
  }, 0)
  local index, params = d.match(topic)
  assert(index, "no route for " .. topic)
  local ok, err = xpcall(function()
    return d.call(index, topic, payload or "", 0, false, false, nil, false, params)
  end, debug.traceback)
  return ok, err, published
end

describe("routemq.app", function()
  describe("load", function()
    it("loads every router file in name order, skipping dotfiles and non-Lua files",
      function()
        local loaded = load_ok("basic")
        assert.equal(FIXTURES .. "basic", loaded.root)
        assert.same({ "app/routers/a_first.lua", "app/routers/b_second.lua" }, loaded.files)
        assert.same({ "a/one", "a/{id}/data", "a/{id}/pinned", "logs/#", "b/{x}" },
          patterns(loaded))
      end)

    it("numbers routes and fills defaults and subscription topics", function()
      local routes = load_ok("basic", { group_name = "fleet", handler_timeout = 12 }).routes
      for i, r in ipairs(routes) do
        assert.equal(i, r.index)
      end
      assert.equal("first", routes[1].name)
      assert.equal("a/one", routes[1].sub)
      assert.equal("fleet", routes[1].group)
      assert.equal(12, routes[1].timeout)
      assert.equal("$share/fleet/a/+/data", routes[2].sub)
      assert.equal(3, routes[2].worker_count)
      assert.equal("$share/pinned/a/+/pinned", routes[3].sub)
      assert.equal(5, routes[3].timeout)
      assert.equal("logs/#", routes[4].sub)
    end)

    it("defaults to group routemq and a 30 s timeout", function()
      local r = load_ok("basic").routes[2]
      assert.equal("routemq", r.group)
      assert.equal(30, r.timeout)
      assert.equal("$share/routemq/a/+/data", r.sub)
    end)

    it("records the file:line of each route", function()
      local routes = load_ok("basic").routes
      assert.equal("app/routers/a_first.lua:5", routes[1].source)
      assert.equal("app/routers/b_second.lua:4", routes[5].source)
    end)

    it("requires app modules, init.lua included, with chunk names relative to the root",
      function()
        local loaded = load_ok("basic")
        local ok, err = run(loaded, "b/x1")
        assert.is_false(ok)
        assert.matches("^app/controllers/thing%.lua:8: no luck with x1", err)
        local info = debug.getinfo(loaded.routes[3].handler, "S")
        assert.equal("@app/controllers/pkg/init.lua", info.source)
      end)

    it("loads fresh app modules on every load, and none from a previous app", function()
      local first = load_ok("basic").routes[1].handler
      local second = load_ok("basic").routes[1].handler
      assert.are_not.equal(first, second)
      local other = load_ok("other")
      local ok, _, published = run(other, "other/7")
      assert.is_true(ok)
      assert.same({ { topic = "other", payload = "7" } }, published)
      assert.is_nil(package.loaded["app.controllers.pkg"])
    end)

    it("allows an app with no routes", function()
      local loaded = load_ok("empty")
      assert.same({}, loaded.routes)
      assert.same({}, loaded.middleware)
    end)

    it("returns the global middleware", function()
      assert.equal(2, #load_ok("middleware").middleware)
    end)

    it("fails without an app/routers directory", function()
      local loaded, err = app.load("spec/fixtures")
      assert.is_nil(loaded)
      assert.equal("no app/routers directory in spec/fixtures", err)
      loaded, err = app.load("spec/fixtures/nowhere/")
      assert.is_nil(loaded)
      assert.equal("no app/routers directory in spec/fixtures/nowhere", err)
    end)

    it("reports a syntax error in a router with file:line", function()
      local loaded, err = app.load(FIXTURES .. "broken")
      assert.is_nil(loaded)
      assert.equal("app/routers/broken.lua:4: ')' expected (to close '(' at line 3) near 'router'",
        err)
    end)

    it("reports a runtime error in a router with file:line and a traceback", function()
      local loaded, err, traceback = app.load(FIXTURES .. "router_error")
      assert.is_nil(loaded)
      assert.equal("app/routers/boom.lua:4: boom", err)
      assert.matches("stack traceback:", traceback, 1, true)
      assert.matches("app/routers/boom.lua:8:", traceback, 1, true)
    end)

    it("reports an error in a controller at load time with the controller's file:line",
      function()
        local loaded, err, traceback = app.load(FIXTURES .. "controller_error")
        assert.is_nil(loaded)
        assert.equal("app/controllers/bad.lua:4: attempt to index local 'settings' (a nil value)",
          err)
        assert.matches("app/routers/uses_bad.lua:2:", traceback, 1, true)
      end)

    it("leaves no routes behind after a failed load", function()
      app.load(FIXTURES .. "router_error")
      assert.same({}, require("routemq.router")._routes())
    end)

    it("rejects bad options", function()
      assert.same(
        { nil, "app.load: group_name must be a non-empty string without '/', '+' or '#'" },
        { app.load(FIXTURES .. "basic", { group_name = "a/b" }) })
      assert.same({ nil, "app.load: handler_timeout must be a positive number" },
        { app.load(FIXTURES .. "basic", { handler_timeout = 0 }) })
    end)
  end)

  describe("dispatch", function()
    it("matches the most specific route and passes params", function()
      local d = dispatch.new(load_ok("basic"), { publish = print, log = print }, 0)
      assert.equal(1, (d.match("a/one")))
      local index, params = d.match("a/two/data")
      assert.equal(2, index)
      assert.same({ id = "two" }, params)
      assert.equal(4, (d.match("logs/x/y")))
      assert.is_nil(d.match("zzz"))
    end)

    it("refuses an unknown route index", function()
      local d = dispatch.new(load_ok("basic"), { publish = print, log = print }, 0)
      assert.has_error(function()
        d.call(99, "t", "", 0, false, false, nil, false, {})
      end)
    end)

    it("checks its io", function()
      assert.has_error(function()
        dispatch.new(load_ok("basic"), { publish = print }, 0)
      end)
      assert.has_error(function()
        dispatch.new(load_ok("basic"), { publish = print, log = print, level = "loud" }, 0)
      end)
    end)
  end)
end)
