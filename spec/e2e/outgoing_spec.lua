-- What handlers publish is delivered: a message is finished only when the
-- broker has acknowledged its publishes, exits flush, the outgoing backlog is
-- bounded, and stops take no new work. Each run fans every incoming QoS 1
-- message out to FAN QoS 1 messages and counts what a subscriber receives.
local e2e = require("spec.helpers.e2e")

local APP = e2e.root .. "/spec/e2e/apps/fanout"
-- E2E_FAN_N: incoming messages per run (the issue's 5,000 by hand; 1,000 keeps make test short).
local N, FAN = tonumber(os.getenv("E2E_FAN_N") or "1000"), 100

-- A QoS 1 subscriber with a session of its own, one line per message.
local function subscriber(b, topic)
  local dir = e2e.tmpdir()
  local s = { file = dir .. "/received" }
  s.pid = e2e.spawn(string.format("stdbuf -oL mosquitto_sub -p %d -t %s -q 1 -i sub%s -c", b.port, topic,
    dir:match("([^.]+)$")), s.file)
  -- Its subscription is in place once a probe message comes back.
  assert(e2e.wait_for(function()
    e2e.publish(b.port, topic, "probe", "-q 1")
    return e2e.read(s.file):find("probe") ~= nil
  end, 10), "the subscriber did not subscribe")
  function s.count()
    local seen, total, dups = {}, 0, 0
    for line in e2e.read(s.file):gmatch("[^\n]+") do
      if line ~= "probe" then
        total = total + 1
        if seen[line] then dups = dups + 1 else seen[line] = true end
      end
    end
    return total - dups, dups
  end
  -- Waits until `want` distinct messages arrived or nothing new came for
  -- `quiet` s (at least 30: only a failing run waits that long).
  function s.settle(want, quiet)
    local last, since = -1, e2e.now()
    quiet = math.max(quiet or 5, 30)
    e2e.wait_for(function()
      local got = s.count()
      if got >= want then return true end
      if got ~= last then last, since = got, e2e.now() end
      return e2e.now() - since >= quiet
    end, math.huge, 0.2)
  end
  function s.stop()
    if e2e.alive(s.pid) then e2e.kill(s.pid, "TERM") end
  end
  return s
end

local function start(env)
  local b = e2e.broker()
  local sub = subscriber(b, "fanout/out")
  local e = { WORKER_STOP_TIMEOUT = 30, E2E_FAN = FAN }
  for k, v in pairs(env or {}) do e[k] = v end
  local r = e2e.routemq(b, APP, "run", e)
  e2e.defer(function() r.stop(); sub.stop(); b.stop() end)
  return b, sub, r
end

local function handled(r) return #e2e.records(r.dir) end

local function report(what, sub, extra)
  local got, dups = sub.count()
  print(string.format("\n  %s: %d of %d received, %d duplicated%s", what, got, N * FAN, dups, extra or ""))
  return got, dups
end

describe("what handlers publish", function()
  it("is all delivered when the instance is stopped in the middle of the backlog", function()
    local b, sub, r = start()
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(b.port, "fan/x", e2e.seq(1, N), 1)
    assert.truthy(e2e.wait_for(function() return handled(r) >= N / 4 end, 30))
    assert.equal(0, r.stop())
    sub.settle(N * FAN, 5)
    local got = report("SIGTERM after " .. handled(r) .. " incoming handled", sub)
    assert.equal(N * FAN, got)
    assert.equal(N, handled(r))
    assert.is_nil(e2e.read(r.log):find("dropped"), e2e.read(r.log))
  end)

  it("is all delivered across a reload, and the reloading worker takes no new message", function()
    local b, sub, r = start()
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(b.port, "fan/x", e2e.seq(1, N), 1)
    assert.truthy(e2e.wait_for(function() return handled(r) >= N / 4 end, 30))
    e2e.kill(r.pid, "HUP")
    sub.settle(N * FAN, 10)
    local got, dups = report("reload after " .. N / 4 .. " incoming", sub)
    assert.equal(N * FAN, got)
    assert.equal(0, dups)
    local lost, dup_in = e2e.tally(r.dir, N)
    assert.equal(0, lost)
    assert.equal(0, dup_in)
    -- The reloading worker started none of the messages it had taken but not
    -- started: it left them to the next worker of its slot.
    assert.matches("worker 0 left %d+ unfinished messages; the next worker of the slot handles them", e2e.read(r.log))
  end)

  it("is all delivered when a worker is recycled by WORKER_MAX_MEMORY_MB", function()
    local b, sub, r = start({ WORKER_MAX_MEMORY_MB = 40, E2E_GROW_AT = N / 5 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(b.port, "fan/x", e2e.seq(1, N), 1)
    sub.settle(N * FAN, 10)
    local got, dups = report("memory recycling", sub)
    local log = e2e.read(r.log)
    assert.matches("above WORKER_MAX_MEMORY_MB=40", log)
    assert.equal(N * FAN, got)
    assert.equal(0, dups)
    assert.equal(0, (e2e.tally(r.dir, N)))
  end)

  it("is all delivered when `routemq scale` retires a worker in the middle of the backlog", function()
    local b, sub, r = start({ E2E_SHARED_WORKERS = 2 })
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15))
    e2e.publish_lines(b.port, "fan/x", e2e.seq(1, N), 1)
    assert.truthy(e2e.wait_for(function() return handled(r) >= N / 4 end, 30))
    local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s/run %s scale 1 --app %s 2>&1; echo rc=$?", r.dir, e2e.bin,
      APP))
    assert.matches("rc=0", out)
    sub.settle(N * FAN, 10)
    local got = report("retire by scale 2 -> 1", sub)
    assert.equal(N * FAN, got)
    assert.equal(0, (e2e.tally(r.dir, N)))
    -- The retired worker leaves once nothing arrived for 300 ms.
    assert.truthy(e2e.wait_for(function() return #r.workers() == 1 end, 15))
  end)

  it("is delivered at least once when the worker is killed in the middle of the backlog", function()
    local b, sub, r = start()
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(b.port, "fan/x", e2e.seq(1, N), 1)
    assert.truthy(e2e.wait_for(function() return handled(r) >= N / 4 end, 30))
    local victim = r.workers()[1]
    e2e.kill(victim, "KILL")
    sub.settle(N * FAN, 10)
    local got = report("kill -9 after " .. N / 4 .. " incoming", sub)
    assert.equal(N * FAN, got)
    assert.equal(0, (e2e.tally(r.dir, N)))
  end)

  it("keeps the worker's memory bounded however large the backlog", function()
    local b, sub, r = start({ E2E_FAN = 1000 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(b.port, "fan/x", e2e.seq(1, 200), 1)
    local peak_out = 0
    local pid = r.workers()[1]
    local cjson = require("cjson")
    -- At least 20 samples, 0.1 s apart, and until one saw the backlog (however slow the start).
    local samples = 0
    e2e.wait_for(function()
      samples = samples + 1
      local status = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s/run %s status --json --app %s", r.dir, e2e.bin, APP))
      local ok, s = pcall(cjson.decode, status)
      if ok and s.slots[1].outgoing > peak_out then peak_out = s.slots[1].outgoing end
      return samples >= 20 and peak_out > 0
    end, 60, 0.1)
    sub.settle(200 * 1000, 10)
    local peak = tonumber(e2e.read("/proc/" .. pid .. "/status"):match("VmHWM:%s*(%d+)"))
    local got = sub.count()
    print(string.format("\n  200 x 1000 fan-out: %d received, worker RSS peak %.1f MB, outgoing peak %d", got,
      peak / 1024, peak_out))
    assert.equal(200 * 1000, got)
    -- The bound is WORKER_MAX_OUTGOING (1,000): a handler's publishes wait there.
    assert.is_true(peak_out > 0 and peak_out <= 1000, "outgoing peak " .. peak_out)
    -- The sanitizers' shadow memory and quarantine add tens of MB (measured
    -- under ASan: 100.4 MB VmHWM where the plain build peaks at 8.6 MB).
    local bound = os.getenv("ASAN_OPTIONS") and 160 or 48
    assert.is_true(peak < bound * 1024, "RSS peak " .. peak .. " kB")
  end)
end)

describe("a stop", function()
  it("kills a handler at WORKER_STOP_TIMEOUT without counting it towards the poison limit", function()
    local b, sub, r = start({ WORKER_STOP_TIMEOUT = 2, E2E_FAN = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish(b.port, "slowfan/1", "x", "-q 1")
    for gen = 2, 4 do
      -- The handler is in progress in the worker of the generation the
      -- reload replaces (the message is redelivered to each new one).
      assert.truthy(e2e.wait_for(function()
        local st = e2e.status(r, APP)
        local s = st and st.slots[1]
        return s and s.generation == gen - 1 and s.in_progress == 1
      end, 15), e2e.read(r.log))
      e2e.kill(r.pid, "HUP")
      assert.truthy(e2e.wait_for(function()
        return e2e.read(r.log):find("generation " .. gen .. " done", 1, true)
      end, 15))
    end
    -- The fourth worker is left alone: the 4 s handler finishes.
    assert.truthy(e2e.wait_for(function() return handled(r) >= 1 end, 15))
    sub.settle(1, 3)
    local log = e2e.read(r.log)
    assert.is_nil(log:find("dead-lettered"), log)
    assert.matches("not counted as a failed attempt", log)
    assert.equal(1, (sub.count()))
  end)
end)

describe("ctx:publish", function()
  it("raises when the runtime cannot publish, and the handler error is counted", function()
    local b, _, r = start()
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish(b.port, "big/1", "x", "-q 1")
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("handler error") end, 15))
    local log = e2e.read(r.log)
    assert.matches("fanout.lua:%d+: ctx:publish: cannot publish to 'out/big': payload larger than MQTT allows", log)
  end)
end)

describe("a large message", function()
  it("is kept whole while its handler runs: a 5 MB payload whose handler crashes once is handled again intact",
    function()
      local b, _, r = start()
      local sub = subscriber(b, "out/huge")
      e2e.defer(function() sub.stop() end)
      assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
      local file = r.dir .. "/huge.bin"
      e2e.sh("head -c 5242880 /dev/urandom > " .. file)
      local data = e2e.read(file)
      local sum = 0
      for i = 1, #data, 997 do sum = (sum * 31 + data:byte(i)) % 2147483647 end
      e2e.sh(string.format("mosquitto_pub -p %d -t huge/1 -q 1 -f %s", b.port, file))
      assert.truthy(e2e.wait_for(function() return e2e.read(sub.file):find("5242880 ") end, 20), e2e.read(r.log))
      assert.matches("5242880 " .. sum, e2e.read(sub.file), 1, true)
      assert.matches("redelivering the message on huge/1", e2e.read(r.log), 1, true)
    end)
end)
