-- End to end: what a handler asks for when it fails (ctx:fail, ctx:retry),
-- a handler timeout, and the on_error hooks, in a real worker: the dead
-- letters get the right reason and error, hooks run (and wait) once per
-- failed attempt, and a hook's own error is logged with its file:line.
-- Needs the worker's retries and the dead-letter store (docs/guide.md, "When a handler fails").
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson")

local APP = e2e.root .. "/spec/e2e/apps/failures"

local function lines(dir)
  local out = {}
  local f = io.open(dir .. "/lines")
  if not f then return out end
  for l in f:lines() do
    local fields = {}
    for v in (l .. "\t"):gmatch("(.-)\t") do fields[#fields + 1] = v end
    out[#out + 1] = fields
  end
  f:close()
  return out
end

local function store_rows(run_dir)
  local db = run_dir .. "/dead-letters.db"
  if not io.open(db) then return {} end
  local out = e2e.sh(string.format("sqlite3 -json %s 'SELECT id, topic, route, reason, error, attempts "
    .. "FROM dead_letters ORDER BY id' 2>&1", db))
  if out:match("^%s*$") then return {} end
  local ok, rows = pcall(cjson.decode, out)
  assert(ok, "sqlite3: " .. out)
  return rows
end

describe("failed attempts in a worker", function()
  local broker, r, dir, env
  setup(function()
    broker = e2e.broker()
    dir = e2e.tmpdir()
    local id = dir:match("([^.]+)$")
    env = { MQTT_CLIENT_ID = "f" .. id, MQTT_GROUP_NAME = "g" .. id, ROUTEMQ_RUN_DIR = dir .. "/run",
      E2E_OUT = dir, WORKER_CONCURRENCY = "4" }
    r = e2e.routemq(broker, APP, "run", env)
    assert(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
  end)
  teardown(function()
    r.stop()
    broker.stop()
  end)

  local function hooks_for(prefix)
    local out = {}
    for _, l in ipairs(lines(dir)) do
      if l[1] == "hook" and l[2]:sub(1, #prefix) == prefix then out[#out + 1] = l end
    end
    table.sort(out, function(a, b) return a[2] < b[2] end)
    return out
  end

  local function rows_for(route)
    local out = {}
    for _, row in ipairs(store_rows(env.ROUTEMQ_RUN_DIR)) do
      if row.route == route then out[#out + 1] = row end
    end
    return out
  end

  it("ctx:fail sends the message to the store at once with reason failed and its text", function()
    assert.truthy(e2e.publish_lines(broker.port, "fail/reject/1", { "a", "b" }, 1):match("rc=0"))
    assert.truthy(e2e.wait_for(function() return #rows_for("fail/reject/{n}") == 2 end, 20), e2e.read(r.log))
    for _, row in ipairs(rows_for("fail/reject/{n}")) do
      assert.equal("failed", row.reason)
      assert.equal(1, row.attempts)
      assert.truthy(row.error == "rejected a" or row.error == "rejected b", row.error)
    end
    assert.truthy(e2e.wait_for(function() return #hooks_for("fail/reject/") == 2 end, 10), e2e.read(r.log))
    assert.same({ "hook", "fail/reject/1", "failed", "1", "true" }, hooks_for("fail/reject/")[1])
  end)

  it("ctx:retry runs the message again without an error and without calling the hooks", function()
    assert.truthy(e2e.publish_lines(broker.port, "fail/later/1", { "x" }, 1):match("rc=0"))
    assert.truthy(e2e.wait_for(function()
      for _, l in ipairs(lines(dir)) do
        if l[1] == "ok" and l[2] == "x" then return true end
      end
    end, 20), e2e.read(r.log))
    local oks = {}
    for _, l in ipairs(lines(dir)) do
      if l[1] == "ok" and l[2] == "x" then oks[#oks + 1] = l[3] end
    end
    assert.same({ "2" }, oks)
    assert.same({}, hooks_for("fail/later/"))
    assert.same({}, rows_for("fail/later/{n}"))
  end)

  it("a handler that waits, then fails, is retried; its hooks wait too", function()
    assert.truthy(e2e.publish_lines(broker.port, "fail/waits/1", { "w" }, 1):match("rc=0"))
    assert.truthy(e2e.wait_for(function()
      for _, l in ipairs(lines(dir)) do
        if l[1] == "ok" and l[2] == "w" then return true end
      end
    end, 20), e2e.read(r.log))
    assert.same({ { "hook", "fail/waits/1", "error", "1", "false" } }, hooks_for("fail/waits/"))
  end)

  it("a timeout is a dead letter with reason timeout; the hook runs after it", function()
    assert.truthy(e2e.publish_lines(broker.port, "fail/slow/1", { "s" }, 1):match("rc=0"))
    assert.truthy(e2e.wait_for(function() return #rows_for("fail/slow/{n}") == 1 end, 20), e2e.read(r.log))
    local row = rows_for("fail/slow/{n}")[1]
    assert.same({ "timeout", "timeout after 0.3 s" }, { row.reason, row.error })
    assert.truthy(e2e.wait_for(function() return #hooks_for("fail/slow/") == 1 end, 10), e2e.read(r.log))
    assert.same({ "hook", "fail/slow/1", "timeout", "1", "true" }, hooks_for("fail/slow/")[1])
  end)

  it("logs a hook's own error with its file:line", function()
    assert.truthy(e2e.wait_for(function()
      return e2e.read(r.log):find("on_error hook (app/routers/failures.lua:44) failed: "
        .. "app/routers/failures.lua:45: hook broke", 1, true)
    end, 10), e2e.read(r.log))
  end)
end)
