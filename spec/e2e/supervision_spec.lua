-- End to end: supervision and delivery (restart, watchdog, crash-safe
-- messages, graceful stop, reload, scaling, recycling) against a real broker.
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson")

local APP = "spec/e2e/apps/basic"

local seq, tally, settle = e2e.seq, e2e.tally, e2e.settle

local function rewrite(file, from, to)
  local s = e2e.read(file)
  e2e.write(file, (s:gsub(from, to)))
end

describe("supervision", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("loses no QoS 1 message while a random worker is killed every 0.5 s, 40 times", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3 })
    assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15))
    local n = 50000
    e2e.publish_background(broker.port, "slowshared/1", n, r.dir .. "/pub.log")
    local kills = e2e.kill_workers_n(r, 40)
    settle(r.dir, n, 10)
    local lost, dups = tally(r.dir, n)
    local redelivered = 0
    for _, rec in ipairs((e2e.records(r.dir))) do if rec.redelivered then redelivered = redelivered + 1 end end
    print(string.format("\n  chaos: %d kills, %d messages, %d lost, %d duplicated, %d redelivered",
      kills, n, lost, dups, redelivered))
    assert.equal(40, kills)
    assert.equal(0, lost)
    assert.is_true(dups <= kills, "more duplicates than kills")
  end)

  it("dead-letters a message whose handler segfaults the worker ROUTEMQ_POISON_ATTEMPTS times", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    local sub_log = r.dir .. "/dlq.log"
    local sub = e2e.spawn(string.format("mosquitto_sub -p %d -q 1 -t 'routemq/dlq/#' -F '%%t|%%p'", broker.port),
      sub_log)
    e2e.defer(function() e2e.kill(sub, "TERM") end)
    assert.truthy(e2e.wait_subscribed(broker.port, "routemq/dlq/e2e", sub_log))
    local function dead_letter()
      for line in e2e.read(sub_log):gmatch("[^\n]+") do
        if not line:find("e2e-probe", 1, true) then return line end
      end
    end
    local lines = seq(1, 20)
    lines[10] = "poison"
    e2e.publish_lines(broker.port, "crash/7", lines, 1)
    assert.truthy(e2e.wait_for(dead_letter, 60), e2e.read(r.log))
    e2e.wait_for(function() return #e2e.records(r.dir) >= 22 end, 60)
    -- A sentinel after them on the same route and only worker: once it is
    -- handled, a redelivered duplicate of an earlier message would be too.
    e2e.publish_lines(broker.port, "crash/7", { "sentinel" }, 1)
    assert.truthy(e2e.wait_for(function() local _, by = e2e.records(r.dir) return by.sentinel end, 30))
    local topic, payload = dead_letter():match("^(.-)|(.*)$")
    assert.equal("routemq/dlq/crash/7", topic)
    local env = cjson.decode(payload)
    assert.equal("crash/7", env.topic)
    assert.equal("poison", env.payload)
    assert.equal("crash/{n}", env.route)
    assert.equal(3, env.attempts)
    assert.matches("signal 11 %(SIGSEGV%)", env.error)
    local _, by = e2e.records(r.dir)
    assert.equal(3, by.poison)   -- the first run and two redeliveries
    for i = 1, 20 do
      if i ~= 10 then assert.equal(1, by[tostring(i)], "message " .. i) end
    end
  end)

  it("redelivers a request with its MQTT 5 properties, so the replacement can still reply", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    local sub_log = r.dir .. "/resp.log"
    local sub = e2e.spawn(string.format("mosquitto_sub -p %d -V mqttv5 -t 'resp/#' -F '%%t|%%p|%%D'", broker.port),
      sub_log)
    e2e.defer(function() e2e.kill(sub, "TERM") end)
    assert.truthy(e2e.wait_subscribed(broker.port, "resp/e2e", sub_log))
    e2e.publish(broker.port, "ctx/crashreply", "q", "-q 1 -V mqttv5 -D publish response-topic resp/9 "
      .. "-D publish correlation-data corr-9 -D publish user-property k v")
    local line = e2e.wait_for(function() return e2e.read(sub_log):match("resp/9|[^\n]+") end, 30)
    assert.truthy(line, e2e.read(r.log))
    local topic, payload, corr = line:match("^(.-)|(.-)|(.*)$")
    assert.equal("resp/9", topic)
    assert.equal("corr-9", corr)
    assert.same({ redelivered = true, user = { k = "v" } }, cjson.decode(payload))
  end)

  it("replaces a worker stuck in `while true do end` past its route's timeout and goes on", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, ROUTEMQ_POISON_ATTEMPTS = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    local first = r.slots()[0].pid
    local t0 = e2e.now()
    e2e.publish_lines(broker.port, "hang/1", { "hang", "next" }, 1)
    assert.truthy(e2e.wait_for(function()
      local s = r.slots()[0]
      return s and s.pid ~= first
    end, 30, 0.02))
    local replaced = e2e.now() - t0
    print(string.format("\n  hung handler (timeout 1 s) replaced after %.2f s", replaced))
    -- Not before its route's timeout (how soon after depends on the machine).
    assert.is_true(replaced >= 1.0, "replaced after " .. replaced .. " s")
    assert.truthy(e2e.wait_for(function()
      local _, by = e2e.records(r.dir)
      return by.next == 1
    end, 10))
    assert.matches("watchdog", e2e.read(r.log))
  end)

  it("has a killed worker subscribed again quickly (100 kills)", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 4 })
    assert.truthy(e2e.wait_for(function() return r.ready(4) end, 15))
    local lat = {}
    -- When each slot's worker was last seen subscribed: it was forked before.
    local up = {}
    for slot = 0, 3 do up[slot] = e2e.mono() end
    for i = 1, 100 do
      local slot = i % 4
      local tag = "%[worker " .. slot .. "%] connected to"
      local _, before = e2e.read(r.log):gsub(tag, "")
      -- A worker that dies younger than 1 s (POLICY_HEALTHY_NS) counts as a
      -- quick death, and the second in a row is restarted after a backoff:
      -- each one is killed only once it has lived longer than that.
      e2e.wait_for(function() return e2e.mono() - up[slot] > 1.05 end, 5, 0.01)
      local s = r.slots()[slot]
      local t_kill = e2e.now()
      e2e.kill(s.pid, "KILL")
      local line = e2e.wait_for(function()
        local log = e2e.read(r.log)
        local _, c = log:gsub(tag, "")
        if c > before then
          local last
          for l in log:gmatch("[^\n]*" .. tag .. "[^\n]*") do last = l end
          return last
        end
      end, 30, 0.005)
      assert.truthy(line, "slot " .. slot .. " did not come back")
      lat[#lat + 1] = e2e.log_time(line) - t_kill
      up[slot] = e2e.mono()
    end
    table.sort(lat)
    local function ms(x) return string.format("%.1f", x * 1000) end
    print(string.format("\n  kill -> subscribed over %d kills: min %s ms, median %s ms, p90 %s ms, max %s ms",
      #lat, ms(lat[1]), ms(lat[50]), ms(lat[90]), ms(lat[100])))
    -- Restarted at once, never after a crash-loop backoff (the latency
    -- itself depends on the machine: reported above).
    assert.is_nil(e2e.read(r.log):find("restarting in", 1, true), e2e.read(r.log))
  end)

  it("stops 8 idle workers gracefully, none at WORKER_STOP_TIMEOUT, and exits 0", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 8, WORKER_STOP_TIMEOUT = 30 })
    assert.truthy(e2e.wait_for(function() return r.ready(8) end, 15))
    local pids = r.workers()
    assert.equal(8, #pids)
    local t0 = e2e.now()
    e2e.kill(r.pid, "TERM")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(r.pid) end, 30, 0.01))
    local took = e2e.now() - t0
    print(string.format("\n  graceful stop of 8 workers: %.0f ms", took * 1000))
    -- Idle workers leave at once, neither at the flush deadline (80 % of
    -- the 30 s stop timeout) nor killed at the timeout.
    assert.is_true(took < 24)
    assert.is_nil(e2e.read(r.log):find("stopping after", 1, true), e2e.read(r.log))
    assert.is_nil(e2e.read(r.log):find("did not stop within", 1, true), e2e.read(r.log))
    assert.equal(0, r.exit_code())
    for _, pid in ipairs(pids) do assert.is_false(e2e.alive(pid)) end
  end)

  it("lets a 3 s handler finish on stop and does not lose its message", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(broker.port, "slow", { "3" }, 1)
    -- The handler has started (it blocks the worker, the master still answers).
    assert.truthy(e2e.wait_for(function()
      local st = e2e.status(r, APP)
      return st and st.slots[1].in_progress == 1
    end, 30), e2e.read(r.log))
    e2e.kill(r.pid, "TERM")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(r.pid) end, 10))
    assert.equal(0, r.exit_code())
    local _, by = e2e.records(r.dir)
    assert.equal(1, by["3"])
  end)

  it("leaves no worker behind after the master is killed with -9", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3 })
    assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15))
    local pids = r.workers()
    local t0 = e2e.now()
    e2e.kill(r.pid, "KILL")
    e2e.wait_for(function()
      for _, pid in ipairs(pids) do if e2e.alive(pid) then return false end end
      return true
    end, 30, 0.01)
    print(string.format("\n  workers gone %.0f ms after the master's kill -9", (e2e.now() - t0) * 1000))
    for _, pid in ipairs(pids) do assert.is_false(e2e.alive(pid), "worker " .. pid .. " outlived the master") end
  end)
end)

describe("reload", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("loses nothing when SIGHUP arrives 10 times while 50,000 QoS 1 messages flow", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3 })
    assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15))
    local n = 50000
    e2e.publish_background(broker.port, "slowshared/1", n, r.dir .. "/pub.log")
    for k = 1, 10 do
      -- Each reload while messages flow: 1,000 more handled since the last.
      assert.truthy(e2e.wait_for(function() return e2e.handled(r.dir) >= k * 1000 end, 60), e2e.read(r.log))
      -- One reload at a time: a SIGHUP during one is merged into one more.
      assert.truthy(e2e.wait_for(function()
        local _, done = e2e.read(r.log):gsub("reload: generation %d+ done", "")
        return done >= k - 1
      end, 60), e2e.read(r.log))
      e2e.kill(r.pid, "HUP")
    end
    settle(r.dir, n, 10)
    local lost, dups = tally(r.dir, n)
    local _, reloads = e2e.read(r.log):gsub("reload: generation", "")
    print(string.format("\n  reload x10 under load: %d lost, %d duplicated, %d reloads logged", lost, dups, reloads))
    assert.equal(0, lost)
    assert.is_true(reloads >= 10)
  end)

  it("keeps serving after a reload with a syntax error and reports it; worker_count 3 -> 5 -> 3 is applied",
    function()
      local dir = e2e.copy_app(APP)
      local router = dir .. "/app/routers/e2e.lua"
      local r = e2e.routemq(broker, dir, "run", { E2E_SHARED_WORKERS = 3 })
      assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15))
      local before = r.workers()
      local good = e2e.read(router)
      e2e.write(router, good .. "\nrouter.on(\n")
      e2e.kill(r.pid, "HUP")
      assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("reload failed: app/routers/e2e.lua:%d+:") end,
        10), e2e.read(r.log))
      assert.same(before, r.workers())
      e2e.publish_lines(broker.port, "single/1", { "still-served" }, 1)
      assert.truthy(e2e.wait_for(function() local _, by = e2e.records(r.dir) return by["still-served"] end, 5))

      e2e.write(router, good)
      rewrite(router, 'tonumber%(os.getenv%("E2E_SHARED_WORKERS"%) or "3"%)', "5")
      e2e.kill(r.pid, "HUP")
      assert.truthy(e2e.wait_for(function() return r.count_workers() == 5 and r.ready(3 + 5) end, 15))
      rewrite(router, "local workers = 5", "local workers = 3")
      e2e.kill(r.pid, "HUP")
      assert.truthy(e2e.wait_for(function() return r.count_workers() == 3 end, 15), e2e.read(r.log))
      -- The reload is over (its end retires slots 3 and 4) and both are gone:
      -- nothing is left that could change the count.
      assert.truthy(e2e.wait_for(function()
        local log = e2e.read(r.log)
        local _, done = log:gsub("reload: generation %d+ done", "")
        return done == 2 and log:find("worker 3 %(pid %d+%) retired") and log:find("worker 4 %(pid %d+%) retired")
      end, 15), e2e.read(r.log))
      assert.equal(3, r.count_workers())
    end)
end)

describe("scaling", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("adds and retires one worker with SIGTTIN / SIGTTOU", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 2 })
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15))
    e2e.kill(r.pid, "TTIN")
    assert.truthy(e2e.wait_for(function() return r.count_workers() == 3 and r.ready(3) end, 10))
    e2e.kill(r.pid, "TTOU")
    assert.truthy(e2e.wait_for(function() return r.count_workers() == 2 end, 10))
    e2e.kill(r.pid, "TTOU")
    assert.truthy(e2e.wait_for(function() return r.count_workers() == 1 end, 10))
    e2e.kill(r.pid, "TTOU")
    -- The master has taken the last SIGTTOU and refused it.
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("already at 1 worker", 1, true) end, 10),
      e2e.read(r.log))
    assert.equal(1, r.count_workers())
    -- The remaining worker still serves the shared route.
    e2e.publish_lines(broker.port, "shared/1", seq(1, 100), 1)
    assert.truthy(e2e.wait_for(function() return tally(r.dir, 100) == 0 end, 10))
  end)

  it("warns when an instance restarts with fewer workers than its last run", function()
    local run_dir = e2e.tmpdir() .. "/run"
    local a = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3, ROUTEMQ_RUN_DIR = run_dir })
    assert.truthy(e2e.wait_for(function() return a.ready(3) end, 15))
    assert.equal(0, a.stop())
    local b = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 2, ROUTEMQ_RUN_DIR = run_dir })
    assert.truthy(e2e.wait_for(function() return b.ready(2) end, 15))
    assert.matches("the last run here had 3 workers and this one has 2: the sessions of slots 2..2 keep the "
      .. "messages queued for them until MQTT_SESSION_EXPIRY %(300 s%)%. To hand them over, run with "
      .. "%-%-workers 3, then `routemq scale 2`", e2e.read(b.log))
  end)

  it("loses nothing when workers are retired under load (SIGTTOU)", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3 })
    assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15))
    local n = 9000
    e2e.publish_background(broker.port, "slowshared/1", n, r.dir .. "/pub.log")
    -- Each retirement while messages flow: after some are handled, and the
    -- second after the first has been applied and more were handled.
    assert.truthy(e2e.wait_for(function() return e2e.handled(r.dir) >= 1000 end, 30), e2e.read(r.log))
    e2e.kill(r.pid, "TTOU")
    assert.truthy(e2e.wait_for(function()
      return e2e.read(r.log):find("3 -> 2 workers", 1, true) and e2e.handled(r.dir) >= 2000
    end, 30), e2e.read(r.log))
    e2e.kill(r.pid, "TTOU")
    assert.truthy(e2e.wait_for(function() return r.count_workers() == 1 end, 15))
    settle(r.dir, n, 10)
    local lost, dups = tally(r.dir, n)
    print(string.format("\n  retire x2 under load: %d lost, %d duplicated", lost, dups))
    assert.equal(0, lost)
  end)

  it("scales up under a slow handler and back down when idle (WORKER_AUTO_SCALE)", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, WORKER_AUTO_SCALE = "true",
      WORKER_MIN_COUNT = 1, WORKER_MAX_COUNT = 3 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_background(broker.port, "slowshared/1", 15000, r.dir .. "/pub.log")
    assert.truthy(e2e.wait_for(function() return r.count_workers() >= 2 end, 15), e2e.read(r.log))
    settle(r.dir, 15000, 10)
    assert.equal(0, (tally(r.dir, 15000)))
    assert.truthy(e2e.wait_for(function() return r.count_workers() == 1 end, 40), e2e.read(r.log))
  end)

  it("recycles a worker after WORKER_MAX_MESSAGES without losing messages", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, WORKER_MAX_MESSAGES = 100 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(broker.port, "single/1", seq(1, 500), 1)
    settle(r.dir, 500, 5)
    local lost, dups = tally(r.dir, 500)
    assert.equal(0, lost)
    assert.equal(0, dups)
    local list = e2e.records(r.dir)
    local pids, n = {}, 0
    for _, rec in ipairs(list) do
      if not pids[rec.pid] then n = n + 1 end
      pids[rec.pid] = true
    end
    assert.is_true(n >= 4, n .. " worker processes handled 500 messages")
    assert.matches("recycling after", e2e.read(r.log))
  end)
end)
