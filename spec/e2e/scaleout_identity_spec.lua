-- End to end: one identity, one instance. Applications started with default
-- settings get client ids of their own; two instances that do share one are
-- told so instead of taking the session from each other in a loop.
local e2e = require("spec.helpers.e2e")

local APP = "spec/e2e/apps/basic"

-- A copy of the test application in <tmp>/<name> whose only route is
-- `<name>/{n}`, shared over two workers.
local function app_named(name)
  local dir = e2e.tmpdir() .. "/" .. name
  e2e.sh("mkdir -p " .. dir)
  e2e.copy_app(APP, dir)
  e2e.write(dir .. "/app/routers/e2e.lua", string.format([[
local router = require("routemq.router")
local C = require("app.controllers.record")
router.on("%s/{n}", C.count, { shared = true, worker_count = 2, qos = 1 })
]], name))
  return dir
end

local function count(text, pattern)
  local _, n = text:gsub(pattern, "")
  return n
end

describe("two applications with default settings on one host", function()
  it("connect with client ids of their own and each handles all of its messages", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local defaults = { MQTT_CLIENT_ID = "", MQTT_GROUP_NAME = "" }
    local one = e2e.routemq(b, app_named("one"), "run", defaults)
    local two = e2e.routemq(b, app_named("two"), "run", defaults)
    e2e.defer(function() one.stop(); two.stop() end)
    assert.truthy(e2e.wait_for(function() return one.ready(2) and two.ready(2) end, 15))
    local n = 500
    e2e.publish_lines(b.port, "one/1", e2e.seq(1, n), 1)
    e2e.publish_lines(b.port, "two/1", e2e.seq(1, n), 1)
    e2e.settle(one.dir, n, 5)
    e2e.settle(two.dir, n, 5)
    local lost1, dups1 = e2e.tally(one.dir, n)
    local lost2, dups2 = e2e.tally(two.dir, n)
    print(string.format("\n  two apps: one %d lost %d dup, two %d lost %d dup", lost1, dups1, lost2, dups2))
    local log1, log2 = e2e.read(one.log), e2e.read(two.log)
    assert.equal(0, lost1)
    assert.equal(0, lost2)
    assert.equal(n, #e2e.records(one.dir))
    assert.equal(n, #e2e.records(two.dir))
    assert.matches("as routemq%-one%-%x%x%x%x%-[^ ]+%-0", log1)
    assert.matches("as routemq%-two%-%x%x%x%x%-[^ ]+%-0", log2)
    assert.equal(2, count(log1, "connected to"))
    assert.equal(2, count(log2, "connected to"))
  end)
end)

describe("two instances with one identity", function()
  it("are told that the session was taken over and how to fix it, without a reconnect loop", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local id = { MQTT_CLIENT_ID = "same", E2E_SHARED_WORKERS = 1, MQTT_RETRY_MAX_DELAY = 30 }
    local first = e2e.routemq(b, APP, "run", id)
    assert.truthy(e2e.wait_for(function() return first.ready(1) end, 15))
    local second = e2e.routemq(b, APP, "run", id)
    assert.truthy(e2e.wait_for(function() return second.ready(1) end, 15))
    local either = function() return e2e.read(first.log) .. e2e.read(second.log) end
    assert.truthy(e2e.wait_for(function() return either():find("same client id") end, 10), either())
    -- One side has given up for MQTT_RETRY_MAX_DELAY (30 s): the loop, if
    -- any, would have shown by then.
    assert.truthy(e2e.wait_for(function() return either():find("retrying in 30%.0 s") end, 15), either())
    local log = either()
    -- mosquitto 2.0 closes the taken-over connection without a reason code (0x8E).
    assert.matches("the broker 127.0.0.1:" .. b.port .. " closed the connection of same%-[^ ]+%-0 2 times in a row "
      .. "within 5 s of accepting it: most likely another client uses the same client id %(two routemq instances "
      .. "with one identity: give each its own ROUTEMQ_INSTANCE or MQTT_CLIENT_ID%)", log)
    assert.matches("retrying in 30%.0 s", log)
    -- Not a loop: a couple of connections each, then one side waits.
    assert.truthy(count(log, "connected to") <= 5, log)
  end)
end)

describe("a route removed while its session was kept", function()
  it("is unsubscribed when the next generation resumes the session", function()
    local b = e2e.broker({ log_types = { "unsubscribe" } })
    e2e.defer(b.stop)
    local dir = app_named("keep")
    local routers = dir .. "/app/routers/e2e.lua"
    e2e.write(routers, e2e.read(routers) .. 'router.on("gone/{n}", C.count, { qos = 1 })\n')
    local env = { MQTT_CLIENT_ID = "stale", ROUTEMQ_RUN_DIR = dir .. "/run", WORKER_COUNT = 1 }
    local first = e2e.routemq(b, dir, "run", env)
    assert.truthy(e2e.wait_for(function() return first.ready(1) end, 15))
    assert.equal(0, first.stop())
    e2e.write(routers, (e2e.read(routers):gsub('router.on%("gone[^\n]*\n', "")))
    local second = e2e.routemq(b, dir, "run", env)
    assert.truthy(e2e.wait_for(function() return second.ready(1) end, 15))
    assert.truthy(e2e.wait_for(function() return e2e.read(second.log):find("unsubscribed gone/%+") end, 5))
    -- The broker has taken the unsubscribe (its log says so before it acts,
    -- in the same step; a publish that comes after is routed without it).
    assert.truthy(e2e.wait_for(function() return e2e.read(b.dir .. "/broker.log"):find(" gone/+", 1, true) end, 5),
      e2e.read(b.dir .. "/broker.log"))
    e2e.publish_lines(b.port, "gone/1", e2e.seq(1, 20), 1)
    e2e.publish_lines(b.port, "keep/1", e2e.seq(1, 5), 1)
    assert.truthy(e2e.wait_for(function() return #e2e.records(second.dir) >= 5 end, 10))
    local status = e2e.sh("ROUTEMQ_RUN_DIR=" .. dir .. "/run " .. e2e.bin .. " status --json --app " .. dir)
    assert.matches('"totals":{[^}]*"unmatched":0', status)
    assert.matches("unsubscribed gone/%+: the resumed session still held it, no route of this slot uses it now",
      e2e.read(second.log))
  end)
end)
