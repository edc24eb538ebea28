-- router.every / router.init / router.health (docs/guide.md, "Handlers that wait"): the API, its errors
-- with the user's file:line, and running them through routemq.testing,
-- including a handler that waits on a local lua-http server.
local router = require("routemq.router")
local testing = require("routemq.testing")
local app_loader = require("routemq.app")
local jobs_mod = require("routemq.jobs")
local runner_mod = require("routemq.runner")
local http_server = require("http.server")
local http_headers = require("http.headers")
local cqueues = require("cqueues")

local function failure(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return err
end

local function f() end

-- A lua-http server on 127.0.0.1 run by `cq`; answers 201 with "seen <path>
-- <body>" after 10 ms. Returns its base URL and the list of bodies seen.
local function api(cq)
  local seen = {}
  local server = assert(http_server.listen({
    host = "127.0.0.1",
    port = 0,
    onstream = function(_, stream)
      local req = stream:get_headers()
      local body = stream:get_body_as_string()
      seen[#seen + 1] = body
      cqueues.sleep(0.01)
      local res = http_headers.new()
      res:append(":status", "201")
      stream:write_headers(res, false)
      stream:write_chunk("seen " .. req:get(":path") .. " " .. body, true)
    end,
  }))
  assert(server:listen())
  local _, host, port = server:localname()
  cq:wrap(function()
    assert(server:loop())
  end)
  return ("http://%s:%d"):format(host, port), seen, server
end

describe("router.every / init / health", function()
  before_each(function()
    router._reset()
  end)

  it("records timers, init functions and the health check with defaults", function()
    router.every(2, f)
    router.every(0.5, f, { name = "fast", workers = "all", timeout = 0.2 })
    router.init(f)
    router.health(f)
    local jobs = router._jobs()
    assert.equal(2, #jobs.timers)
    local t = jobs.timers[1]
    assert.equal(2, t.every)
    assert.equal("one", t.workers)
    assert.matches("^every 2s at spec/jobs_spec%.lua:%d+$", t.name)
    assert.same({ "fast", 0.5, "all", 0.2 }, { jobs.timers[2].name, jobs.timers[2].every,
      jobs.timers[2].workers, jobs.timers[2].timeout })
    assert.equal(1, #jobs.inits)
    assert.matches("^spec/jobs_spec%.lua:%d+$", jobs.inits[1].source)
    assert.same({ 10, 5, 3 }, { jobs.health.every, jobs.health.timeout, jobs.health.failures })
  end)

  it("rejects misuse with the caller's file:line", function()
    local here = "^spec/jobs_spec%.lua:%d+: "
    local cases = {
      { function() router.every(0, f) end,
        "router.every: interval must be a positive number of seconds, got 0" },
      { function() router.every(1, "f") end, "router.every: function expected, got 'f'" },
      { function() router.every(1, f, { workers = "some" }) end,
        "router.every: option 'workers' must be 'one' or 'all', got 'some'" },
      { function() router.every(1, f, { every = 1 }) end,
        "router.every: unknown option 'every'" },
      { function() router.every(1, f, { timeout = -1 }) end,
        "router.every: option 'timeout' must be a positive number of seconds, got %-1" },
      { function() router:every(1, f) end, "call router.every with a dot, not a colon" },
      { function() router.init(nil) end, "router.init: function expected, got nil" },
      { function() router.health(f, { failures = 0 }) end,
        "router.health: option 'failures' must be a positive integer, got 0" },
      { function() router.on("a", f, { ordered = "yes" }) end,
        "option 'ordered' must be a boolean, got 'yes'" },
    }
    for _, case in ipairs(cases) do
      assert.matches(here .. case[2] .. "$", failure(case[1]))
    end
    router.every(1, f, { name = "n" })
    assert.matches(here .. "router.every: duplicate timer name 'n': already registered at "
      .. "spec/jobs_spec%.lua:%d+$", failure(function() router.every(2, f, { name = "n" }) end))
    router.health(f)
    assert.matches(here .. "router.health: a health check is already registered at spec/",
      failure(function() router.health(f) end))
  end)

  it("describes them for `routemq routes`", function()
    local loaded = assert(app_loader.load("spec/fixtures/waiting"))
    local text = loaded.jobs_text
    assert.matches("every 0.5s  ticker  workers=one  timeout=0.5s  app/routers/waiting.lua:%d+\n",
      text)
    assert.matches("every 1s  broken  workers=all  timeout=1s  app/routers/waiting.lua:%d+\n", text)
    assert.matches("init  app/routers/waiting.lua:%d+\n", text)
    assert.matches("health  every=2s  timeout=1s  failures=2  app/routers/waiting.lua:%d+\n", text)
    assert.equal("", assert(app_loader.load("spec/fixtures/basic")).jobs_text)
  end)
end)

describe("routemq.testing with handlers that wait", function()
  it("runs init functions on request, and reports their error with file:line", function()
    testing.app("spec/fixtures/waiting")
    local state = package.loaded["waiting.state"]
    assert.equal(0, state.inits)
    testing.app("spec/fixtures/waiting", { init = true })
    state = package.loaded["waiting.state"]
    assert.equal(1, state.inits)
    assert.equal(0, state.init_worker)
    assert.matches("^app/routers/bad_init%.lua:3: no database$", failure(function()
      testing.app("spec/fixtures/jobs_errors", { init = true })
    end))
  end)

  it("dispatches to a handler that waits on a local HTTP server", function()
    local app = testing.app("spec/fixtures/waiting", { env = { API_URL = "" } })
    local url, seen = api(app.runner.cq)
    app.env = { API_URL = url }
    local res = app:dispatch("readings/7", { payload = "21.5", qos = 1 })
    assert.is_nil(res.error)
    assert.same({ "21.5" }, seen)
    assert.same({ status = "201", body = "seen /readings/7 21.5" }, res.published[1].json)
    assert.equal("acks/7", res.published[1].topic)
  end)

  it("ends a handler still waiting at its route's timeout with an error", function()
    local app = testing.app("spec/fixtures/waiting")
    local t0 = cqueues.monotime()
    local res = app:dispatch("sleepy")
    assert.equal("timeout after 0.2 s", res.error)
    assert.is_true(cqueues.monotime() - t0 < 2)
  end)

  it("runs a timer once with app:tick", function()
    local app = testing.app("spec/fixtures/waiting")
    local res = app:tick("ticker")
    assert.is_nil(res.error)
    assert.same({ { topic = "ticks/0", payload = "1", qos = 0, retain = false, json = 1 } },
      res.published)
    assert.same({ { level = "info", msg = "tick 1" } }, res.logs)
    res = app:tick("broken")
    assert.matches("^app/routers/waiting%.lua:%d+: timer broke\nstack traceback:", res.error)
    assert.matches("app:tick: no timer named 'nope'$", failure(function() app:tick("nope") end))
  end)
end)

describe("routemq.jobs in a worker", function()
  it("runs slot 0's timers on schedule, skips overlapping runs, counts outcomes", function()
    local loaded = assert(app_loader.load("spec/fixtures/waiting"))
    local runs = {}
    local function io_for(list)
      return {
        log = function() end,
        publish = function() return true end,
        timer = function(name, result) list[#list + 1] = name .. ":" .. result end,
      }
    end
    local r = runner_mod.new()
    local jobs = jobs_mod.new(loaded, r, io_for(runs), 0)
    assert.same({ "ticker", "broken" }, jobs:mine())
    jobs:start()
    r:run_until(function() return false end, 1.2)
    jobs:stop()
    table.sort(runs)
    assert.same({ "broken:error", "ticker:ok", "ticker:ok" }, runs)
    local other = {}
    local jobs1 = jobs_mod.new(loaded, runner_mod.new(), io_for(other), 1)
    assert.same({ "broken" }, jobs1:mine())
    -- a run still going when the next is due is skipped
    jobs1.timers.broken.def = { fn = function() cqueues.sleep(1) end, timeout = 5, every = 1 }
    assert.is_true(jobs1:tick("broken"))
    assert.is_false(jobs1:tick("broken"))
    assert.same({ "broken:skipped" }, other)
  end)

  it("reports health failures in a row", function()
    local loaded = assert(app_loader.load("spec/fixtures/waiting"))
    local state = package.loaded["waiting.state"]
    local reports = {}
    local r = runner_mod.new()
    local jobs = jobs_mod.new(loaded, r, {
      log = function() end,
      health = function(ok, err, n, limit) reports[#reports + 1] = { ok, err, n, limit } end,
    }, 0)
    local function check()
      local finished = false
      jobs:check_health(function() finished = true end)
      r:run_until(function() return finished end, 3)
    end
    check()
    state.healthy = false
    check()
    check()
    state.healthy = true
    check()
    assert.same({ { true, nil, 0, 2 }, { false, "health check returned false", 1, 2 },
      { false, "health check returned false", 2, 2 }, { true, nil, 0, 2 } }, reports)
  end)
end)
