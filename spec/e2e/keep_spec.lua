-- A worker takes only what it can keep, and the keep survives the master
-- (docs/delivery.md): WORKER_MAX_KEPT bounds what a worker holds while its
-- publishes wait for the broker; what was kept when the master and its
-- workers were killed, or when a stop reached WORKER_STOP_TIMEOUT, is
-- handled first by the next start on the same run directory; a keep that
-- cannot be reserved stops the worker from starting.
local e2e = require("spec.helpers.e2e")

local APP = e2e.root .. "/spec/e2e/apps/keep"

-- Environment for runs that share one identity and run directory.
local function identity(extra)
  local dir = e2e.tmpdir()
  local id = dir:match("([^.]+)$")
  local env = { MQTT_CLIENT_ID = "k" .. id, MQTT_GROUP_NAME = "g" .. id, ROUTEMQ_RUN_DIR = dir .. "/run",
    E2E_OUT = dir }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env, dir
end

local function with(env, extra)
  local e = {}
  for k, v in pairs(env) do e[k] = v end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local function status(env)
  return e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s %s status --json --app %s 2>/dev/null", env.ROUTEMQ_RUN_DIR,
    e2e.bin, APP))
end

local function kept(env)
  return tonumber(status(env):match('"kept":(%d+)') or "-1")
end

local function start(b, env, no_wait)
  local r = e2e.routemq(b, APP, "run", env)
  if not no_wait then assert(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log)) end
  return r
end

-- The held messages 1..n were kept at the end of the first run: the next run
-- handles each once, as redelivered, before any message published after it started.
local function assert_replayed_first(dir, n, new)
  local list = e2e.records(dir)
  assert.equal(n + new, #list)
  local seen = {}
  for i, rec in ipairs(list) do
    if i <= n then
      assert.truthy(tonumber(rec.payload), "a new message was handled before a kept one: " .. rec.payload)
      assert.is_true(rec.redelivered)
      seen[rec.payload] = true
    else
      assert.truthy(rec.payload:match("^new"), rec.payload)
    end
  end
  for i = 1, n do assert.truthy(seen[tostring(i)], "kept message " .. i .. " not handled") end
end

-- Makes "nothing more is handled" certain instead of timed: one more new
-- message on the same topic, behind the others in the only worker (kept ones
-- first, then in order); once it is handled, a message handled twice would
-- have been too. It is the (new+1)th new message for assert_replayed_first.
local function sentinel(b, dir, new)
  local payload = "new" .. (new + 1)
  e2e.publish_lines(b.port, "keep/hold/x", { payload }, 1)
  assert(e2e.wait_for(function()
    local _, by = e2e.records(dir)
    return by[payload]
  end, 15), "the sentinel " .. payload .. " was not handled")
end

describe("the keep's bounds", function()
  local function check(env)
    return e2e.sh(string.format("cd %s && env %s %s check --app %s 2>&1 >/dev/null; echo rc=$?", e2e.root, env, e2e.bin,
      APP))
  end

  it("are checked at start, naming the variable", function()
    assert.equal("routemq: WORKER_MAX_KEPT: '0' is not a whole number from 1 to 1000000\nrc=1\n",
      check("WORKER_MAX_KEPT=0"))
    assert.equal("routemq: WORKER_MAX_KEPT_MB: 'lots' is not a whole number from 1 to 65536\nrc=1\n",
      check("WORKER_MAX_KEPT_MB=lots"))
    assert.equal("routemq: WORKER_MAX_KEPT: 2 is less than WORKER_CONCURRENCY 5 (each message in progress is kept)"
      .. "\nrc=1\n", check("WORKER_MAX_KEPT=2 WORKER_CONCURRENCY=5"))
  end)
end)

describe("the keep", function()
  it("bounds what a worker takes while its publishes wait for the broker, and loses nothing", function()
    -- The issue's case scaled down (E2E_KEEP_N, E2E_KEEP_FAN, E2E_KEEP_MAX; by hand: 300000, 100, 10000).
    local N = tonumber(os.getenv("E2E_KEEP_N") or "2000")
    local FAN = tonumber(os.getenv("E2E_KEEP_FAN") or "50")
    local MAX = tonumber(os.getenv("E2E_KEEP_MAX") or "50")
    local b = e2e.broker()
    e2e.defer(function() b.stop() end)
    local env, dir = identity({ WORKER_MAX_KEPT = MAX, E2E_FAN = FAN })
    -- The session exists; the messages queue while the instance is down.
    local r = start(b, env)
    assert.equal(0, r.stop())
    -- In parts: one mosquitto_pub -l of 300,000 lines got only ~38,000 queued.
    for from = 1, N, 10000 do
      e2e.publish_lines(b.port, "keep/fan/x", e2e.seq(from, math.min(N, from + 9999)), 1)
    end
    -- Sampled from the start: the backlog comes right after the CONNACK.
    local t0 = e2e.now()
    r = start(b, env, true)
    local peak, rss = 0, 0
    local done = e2e.wait_for(function()
      local s = status(env)
      peak = math.max(peak, tonumber(s:match('"kept":(%d+)') or "0"))
      rss = math.max(rss, tonumber(s:match('"rss_kb":(%d+)') or "0"))
      return #e2e.records(dir) >= N
    end, 3600, 0.1)
    print(string.format("\n  %d x %d fan-out, WORKER_MAX_KEPT=%d: %d handled in %.1f s, kept peak %d, RSS peak %.1f MB",
      N, FAN, MAX, #e2e.records(dir), e2e.now() - t0, peak, rss / 1024))
    assert.truthy(done, e2e.read(r.log))
    local lost, dups = e2e.tally(dir, N)
    assert.equal(0, lost)
    assert.equal(0, dups)
    assert.truthy(peak <= MAX, "kept " .. peak .. " messages, above WORKER_MAX_KEPT=" .. MAX)
    assert.truthy(rss < 100 * 1024, "worker RSS " .. rss .. " kB")
    local log = e2e.read(r.log)
    assert.is_nil(log:find("lost"), log)
    assert.is_nil(log:find("handler error"), log)
    assert.equal(0, r.stop())
  end)

  it("survives a kill -9 of the master and its workers: the next start handles it first, redelivered", function()
    local b = e2e.broker()
    e2e.defer(function() b.stop() end)
    local env, dir = identity({ WORKER_CONCURRENCY = 10 })
    local r = start(b, with(env, { E2E_HOLD = "1" }))
    e2e.publish_lines(b.port, "keep/hold/x", e2e.seq(1, 20), 1)
    -- 10 handlers wait and 10 messages are queued behind them: all 20 kept.
    assert(e2e.wait_for(function() return kept(env) == 20 end, 15), status(env))
    e2e.kill_all(r)
    r = start(b, env)
    e2e.publish_lines(b.port, "keep/hold/x", { "new1", "new2", "new3" }, 1)
    assert(e2e.wait_for(function() return #e2e.records(dir) >= 23 end, 15), e2e.read(r.log))
    sentinel(b, dir, 3)
    assert_replayed_first(dir, 20, 4)
    assert.matches("20 messages kept by an earlier run of the instance will be handled first", e2e.read(r.log))
    assert.equal(0, r.stop())
  end)

  it("keeps what a stop could not handle within WORKER_STOP_TIMEOUT for the next start", function()
    local b = e2e.broker()
    e2e.defer(function() b.stop() end)
    local env, dir = identity({ WORKER_CONCURRENCY = 10, WORKER_STOP_TIMEOUT = 1 })
    local r = start(b, with(env, { E2E_HOLD = "1" }))
    e2e.publish_lines(b.port, "keep/hold/x", e2e.seq(1, 20), 1)
    assert(e2e.wait_for(function() return kept(env) == 20 end, 15), status(env))
    r.stop()
    local log = e2e.read(r.log)
    assert.matches("worker 0 stopped with 20 unfinished messages; they stay kept for the next start", log)
    assert.is_nil(log:find("lost"), log)
    -- The next start runs another version of the application (one more
    -- route): the kept messages are data, handled with its routes.
    local app2 = e2e.copy_app(APP)
    e2e.write(app2 .. "/app/routers/zz.lua", 'require("routemq.router").on("other/{n}", function() end)\n')
    r = e2e.routemq(b, app2, "run", env)
    assert(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    e2e.publish_lines(b.port, "keep/hold/x", { "new1", "new2", "new3" }, 1)
    assert(e2e.wait_for(function() return #e2e.records(dir) >= 23 end, 15), e2e.read(r.log))
    sentinel(b, dir, 3)
    assert_replayed_first(dir, 20, 4)
    assert.matches("the kept messages were taken by a different version of the application", e2e.read(r.log))
    assert.equal(0, r.stop())
  end)

  it("does not handle a QoS 0 message again after its worker died (at-most-once)", function()
    local b = e2e.broker()
    e2e.defer(function() b.stop() end)
    local env, dir = identity({ WORKER_CONCURRENCY = 5, E2E_HOLD = "1" })
    local r = start(b, env)
    e2e.publish_lines(b.port, "keep/hold0/x", e2e.seq(1, 10), 0)
    -- 5 handlers wait, 5 messages are queued behind them.
    assert(e2e.wait_for(function() return kept(env) == 10 end, 15), status(env))
    local victim = r.workers()[1]
    e2e.kill(victim, "KILL")
    assert(e2e.wait_for(function()
      return e2e.read(r.log):find("10 QoS 0 messages a previous worker took are not handled again")
    end, 15), e2e.read(r.log))
    -- new1 is the marker: the worker starts kept messages first, then the
    -- others in order, and this handler records at its start; once new1
    -- has started, a message taken again would have started before it.
    e2e.publish_lines(b.port, "keep/hold0/x", { "new1" }, 0)
    assert(e2e.wait_for(function() local _, by = e2e.records(dir) return by.new1 end, 15))
    local list = e2e.records(dir)
    assert.equal(6, #list)
    for _, rec in ipairs(list) do assert.is_false(rec.redelivered) end
    r.stop()
  end)

  it("that cannot be reserved stops the worker from starting, with the reason", function()
    local b = e2e.broker()
    e2e.defer(function() b.stop() end)
    local env = identity({ WORKER_MAX_KEPT_MB = 16 })
    -- A run directory on a tmpfs too small for the keep.
    assert(os.execute("mkdir -p " .. env.ROUTEMQ_RUN_DIR .. " && mount -t tmpfs -o size=4m,mode=0700 tmpfs " ..
      env.ROUTEMQ_RUN_DIR))
    e2e.defer(function() os.execute("umount -l " .. env.ROUTEMQ_RUN_DIR) end)
    local r = e2e.routemq(b, APP, "run", env)
    local want = "cannot reserve [%d.]+ MB for the keep in " .. env.ROUTEMQ_RUN_DIR:gsub("%p", "%%%0") ..
      "/keep%-0: No space left on device; the worker does not start"
    assert(e2e.wait_for(function() return e2e.read(r.log):find(want) end, 15), e2e.read(r.log))
    -- The master has reaped that worker (a SIGBUS would be its exit reason);
    -- it can neither crash nor connect any more.
    assert(e2e.wait_for(function() return e2e.read(r.log):find("worker 0 %(pid %d+%) exited") end, 15),
      e2e.read(r.log))
    local log = e2e.read(r.log)
    assert.is_nil(log:find("SIGBUS"), log)
    assert.is_nil(log:find("connected to"), log)
    -- Nothing half-made is left in the way.
    assert.is_nil(e2e.sh("ls " .. env.ROUTEMQ_RUN_DIR):find("keep"))
    r.stop()
  end)
end)
