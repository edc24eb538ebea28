-- End to end: handlers that wait (docs/guide.md, "Handlers that wait") against a real broker: many
-- messages in progress per worker, ordered routes, in-worker timeouts, crash
-- safety of every message in progress, timers, init and health checks.
local e2e = require("spec.helpers.e2e")
local csocket = require("cqueues.socket")

local APP = e2e.root .. "/spec/e2e/apps/wait"

local seq, tally, settle = e2e.seq, e2e.tally, e2e.settle

-- Records of the app, filtered by route tag.
local function records(dir, tag)
  local out = {}
  for _, rec in ipairs((e2e.records(dir))) do
    if rec.route == tag or (tag == nil) then out[#out + 1] = rec end
  end
  return out
end

describe("handlers that wait", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  -- Runs the application in `app` (the wait app by default) until the test
  -- ends; returns once n workers (1 by default) are ready.
  local function start(env, n, app)
    local r = e2e.routemq(broker, app or APP, "run", env)
    assert.truthy(e2e.wait_for(function() return r.ready(n or 1) end, 15), e2e.read(r.log))
    return r
  end

  -- Publishes payloads 1..n to topic at QoS 1 and waits until r's workers
  -- have handled each once (none lost, none twice); returns the seconds that
  -- took.
  local function handle_all(r, topic, n)
    local t0 = e2e.now()
    e2e.publish_lines(broker.port, topic, seq(1, n), 1)
    settle(r.dir, n, 5)
    assert.same({ 0, 0 }, { tally(r.dir, n) })
    return e2e.now() - t0
  end

  -- Payloads the handlers of r hold (see the app's HOLD_FILE), by pid.
  local function held(r)
    local by_pid = {}
    for file in e2e.sh("ls " .. r.dir .. "/*.held 2>/dev/null"):gmatch("[^\n]+") do
      local list = {}
      for p in e2e.read(file):gmatch("[^\n]+") do list[#list + 1] = p end
      by_pid[tonumber(file:match("(%d+)%.held$"))] = list
    end
    return by_pid
  end

  it("has many messages in progress per worker, and one at a time with WORKER_CONCURRENCY=1", function()
    local hold = e2e.tmpdir() .. "/hold"
    local h = start({ WORKER_CONCURRENCY = 256, WAIT_MS = 10, HOLD_FILE = hold })
    -- 256 in progress at once for certain: handlers wait while the hold file
    -- exists; 300 published, 256 are held, the rest wait for a free place.
    e2e.write(hold, "")
    e2e.publish_lines(broker.port, "wait/sleep", seq(1, 300), 1)
    local pid = h.workers()[1]
    assert.truthy(e2e.wait_for(function()
      local list = held(h)[pid]
      return list and #list >= 256
    end, 30), e2e.read(h.log))
    assert.equal(256, #held(h)[pid])
    os.remove(hold)
    settle(h.dir, 300, 5)
    assert.same({ 0, 0 }, { tally(h.dir, 300) })
    assert.equal(0, h.stop())

    local r = start({ WORKER_CONCURRENCY = 256, WAIT_MS = 10 })
    local n = 5000
    local took = handle_all(r, "wait/sleep", n)
    local pids = {}
    for _, rec in ipairs(records(r.dir, "sleep")) do pids[rec.pid] = true end
    assert.equal(1, #(function() local l = {} for p in pairs(pids) do l[#l + 1] = p end return l end)())

    local one = start({ WORKER_CONCURRENCY = 1, WAIT_MS = 10 })
    local t1 = e2e.now()
    e2e.publish_lines(broker.port, "wait/sleep", seq(1, 100), 1)
    settle(one.dir, 100, 5)
    local took1 = e2e.now() - t1
    local got = {}
    for i, rec in ipairs(records(one.dir, "sleep")) do got[i] = rec.payload end
    assert.same(seq(1, 100), got)
    print(string.format("\n  10 ms handler, 1 worker: concurrency 256 %.0f msg/s (%d messages), concurrency 1 "
      .. "%.0f msg/s (%d messages, in publish order); publishing included", n / took, n, 100 / took1, 100))
  end)

  it("loads cqueues only when a handler first needs it, and then waits as well", function()
    local dir = e2e.tmpdir()
    e2e.sh("mkdir -p " .. dir .. "/app/routers")
    -- Each handler waits while the hold file exists, after a line in lazy.held.
    e2e.write(dir .. "/app/routers/lazy.lua", [[
local router = require("routemq.router")
local out = os.getenv("E2E_OUT")
local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
router.on("lazy/{n}", function(ctx)
  local cqueues = require("cqueues")
  local h = assert(io.open(out .. "/lazy.held", "a"))
  h:write(ctx.payload, "\n")
  h:close()
  repeat cqueues.sleep(0.05) until not exists(os.getenv("HOLD_FILE"))
  local f = assert(io.open(out .. "/lazy.rec", "a"))
  f:write("lazy\t", ctx.payload, "\t0\tfalse\n")
  f:close()
end, { qos = 1 })
]])
    local hold = dir .. "/hold"
    local r = start({ WORKER_CONCURRENCY = 50, HOLD_FILE = hold }, 1, dir)
    local pid = r.workers()[1]
    local maps = e2e.read("/proc/" .. pid .. "/maps")
    assert.is_nil(maps:find("lua5.1-cqueues", 1, true), maps:match("[^\n]*lua5.1%-cqueues[^\n]*"))
    -- All 50 wait at once: one after the other, the first would hold the rest.
    e2e.write(hold, "")
    e2e.publish_lines(broker.port, "lazy/1", seq(1, 50), 1)
    assert.truthy(e2e.wait_for(function()
      local _, lines = e2e.read(r.dir .. "/lazy.held"):gsub("\n", "")
      return lines >= 50
    end, 30), e2e.read(r.log))
    os.remove(hold)
    settle(r.dir, 50, 5)
    assert.same({ 0, 0 }, { tally(r.dir, 50) })
    assert.truthy(e2e.read("/proc/" .. pid .. "/maps"):find("lua5.1-cqueues", 1, true))
  end)

  it("calls a local HTTP API with lua-http from many handlers at once", function()
    local port = e2e.free_port()
    local dir = e2e.tmpdir()
    local srv = e2e.spawn("luajit " .. e2e.root .. "/spec/e2e/apps/wait/http_server.lua " .. port,
      dir .. "/http.log")
    e2e.defer(function() e2e.kill(srv, "KILL") end)
    assert(e2e.wait_for(function()
      local s = csocket.connect({ host = "127.0.0.1", port = port })
      local ok = pcall(s.connect, s, 0.2)
      s:close()
      return ok
    end, 10), e2e.read(dir .. "/http.log"))
    local r = start({ WORKER_CONCURRENCY = 256, API_URL = "http://127.0.0.1:" .. port })
    local n = 2000
    local took = handle_all(r, "wait/http", n)
    print(string.format("\n  lua-http to a 10 ms API, 1 worker, concurrency 256: %d messages in %.2f s (%.0f msg/s, "
      .. "publishing included)", n, took, n / took))
  end)

  it("INCRs a Redis key through lua-resty-redis exactly once per message (20,000, concurrency 64)", function()
    local port = e2e.free_port()
    local dir = e2e.tmpdir()
    local pid = e2e.spawn("redis-server --bind 127.0.0.1 --port " .. port .. " --save '' --appendonly no --dir "
      .. dir, dir .. "/redis.log")
    e2e.defer(function() e2e.kill(pid, "KILL") end)
    assert(e2e.wait_for(function()
      return e2e.sh("redis-cli -p " .. port .. " ping 2>/dev/null"):match("PONG")
    end, 10), e2e.read(dir .. "/redis.log"))
    local r = start({ WORKER_CONCURRENCY = 64, REDIS_PORT = port })
    local n = 20000
    local t0 = e2e.now()
    e2e.publish_lines(broker.port, "wait/incr", seq(1, n), 1)
    assert(e2e.wait_for(function()
      return tonumber(e2e.sh("redis-cli -p " .. port .. " get counter"):match("%d+") or 0) >= n
    end, 60))
    local took = e2e.now() - t0
    -- No INCR is still to come: a sentinel on another route of the same
    -- worker comes after anything the broker had sent it, and then no
    -- handler is in progress.
    assert.truthy(e2e.sentinels(broker.port, "wait/quick", r.dir), "the sentinel was not handled")
    assert.truthy(e2e.wait_for(function() return e2e.idle(r, APP) end, 10))
    assert.equal(tostring(n), e2e.sh("redis-cli -p " .. port .. " get counter"):match("%d+"))
    print(string.format("\n  lua-resty-redis INCR, 1 worker, concurrency 64: %d messages in %.2f s (%.0f msg/s, "
      .. "publishing included), counter %d", n, took, n / took, n))
  end)

  it("handles each topic of an ordered route in publish order; without ordered they mix", function()
    local r = start({ WORKER_CONCURRENCY = 64 })
    local topics, per = 50, 200
    local function publish_all(prefix)
      local script = {}
      for t = 1, topics do
        script[#script + 1] = string.format("seq 1 %d | mosquitto_pub -p %d -t %s/%d -q 1 -l &", per, broker.port,
          prefix, t)
      end
      script[#script + 1] = "wait"
      e2e.sh(table.concat(script, "\n"))
    end
    local function check(prefix)
      local total = topics * per
      assert(e2e.wait_for(function()
        local c = 0
        for _, rec in ipairs(records(r.dir)) do
          if rec.route:sub(1, #prefix) == prefix then c = c + 1 end
        end
        return c >= total
      end, 60), "not all handled")
      local last, reordered, count = {}, 0, 0
      for _, rec in ipairs(records(r.dir)) do
        if rec.route:sub(1, #prefix) == prefix then
          local v = tonumber(rec.payload)
          count = count + 1
          if last[rec.route] and v < last[rec.route] then reordered = reordered + 1 end
          last[rec.route] = math.max(v, last[rec.route] or 0)
        end
      end
      return reordered, count
    end
    publish_all("wait/ordered")
    local reordered, count = check("wait/ordered")
    assert.equal(topics * per, count)
    assert.equal(0, reordered)
    publish_all("wait/unordered")
    reordered, count = check("wait/unordered")
    assert.equal(topics * per, count)
    print(string.format("\n  without ordered: %d of %d messages came after a later one of their topic",
      reordered, count))
    assert.is_true(reordered > 0)
  end)

  it("cancels a handler still waiting at its timeout in the worker; a CPU loop is still killed", function()
    local r = start({ WORKER_CONCURRENCY = 4 })
    local pid = r.workers()[1]
    e2e.publish(broker.port, "wait/stuck", "s1", "-q 1")
    assert(e2e.wait_for(function() return e2e.read(r.log):find("timeout after 1 s", 1, true) end, 10),
      e2e.read(r.log))
    e2e.publish(broker.port, "wait/quick", "q1", "-q 1")
    assert(e2e.wait_for(function() return #records(r.dir, "quick") == 1 end, 5))
    assert.same({ pid }, r.workers())
    assert.equal(pid, records(r.dir, "quick")[1].pid)
    assert.equal(1, #records(r.dir, "stuck-start"))  -- not replayed: it ended as an error
    assert.matches("handler error", e2e.read(r.log))

    e2e.publish(broker.port, "wait/spin", "p1", "-q 1")
    assert(e2e.wait_for(function() return #records(r.dir, "spin") == 2 end, 15), e2e.read(r.log))
    local spins = records(r.dir, "spin")
    table.sort(spins, function(a, b) return not a.redelivered and b.redelivered end)
    assert.same({ false, true }, { spins[1].redelivered, spins[2].redelivered })
    assert.equal(pid, spins[1].pid)
    assert.are_not.equal(pid, spins[2].pid)
    assert.matches("handler timeout after 1 s on route wait/spin", e2e.read(r.log))
  end)

  it("loses no message in progress when random workers are killed with -9 (3 workers x 64)", function()
    -- Messages in progress at every kill, for certain: while the hold file
    -- exists, handlers wait for it to go (first runs only) and list their
    -- payload in <pid>.held; each round kills a worker holding some, then
    -- removes the file and waits until those were handled again.
    local hold = e2e.tmpdir() .. "/hold"
    local r = start({ WORKER_CONCURRENCY = 64, WAIT_MS = 5, SLEEP_WORKERS = 3, HOLD_FILE = hold }, 3)
    local rounds, batch = 20, 500
    local n = rounds * batch
    local kills = 0
    for round = 1, rounds do
      e2e.write(hold, "")
      local before = held(r)
      e2e.publish_lines(broker.port, "wait/sleep", seq((round - 1) * batch + 1, round * batch), 1)
      local victim, payloads
      assert(e2e.wait_for(function()
        for pid, list in pairs(held(r)) do
          local old = before[pid] and #before[pid] or 0
          if #list > old then
            victim, payloads = pid, { unpack(list, old + 1) }
            return true
          end
        end
      end, 30), "no handler held in round " .. round .. "\n" .. e2e.read(r.log))
      assert.is_true(e2e.kill(victim, "KILL"))
      kills = kills + 1
      os.remove(hold)
      -- Its replacement handles them again, before the next kill.
      assert(e2e.wait_for(function()
        local again = {}
        for _, rec in ipairs(records(r.dir, "sleep")) do
          if rec.redelivered then again[rec.payload] = true end
        end
        for _, p in ipairs(payloads) do
          if not again[p] then return false end
        end
        return true
      end, 60), "round " .. round .. ": not redelivered\n" .. e2e.read(r.log))
    end
    settle(r.dir, n, 10)
    local lost, dups = tally(r.dir, n)
    local redelivered = 0
    for _, rec in ipairs((e2e.records(r.dir))) do if rec.redelivered then redelivered = redelivered + 1 end end
    print(string.format("\n  kill -9 with messages in progress: %d kills, %d messages, %d lost, %d duplicated, "
      .. "%d redelivered (at most %d in progress per kill)", kills, n, lost, dups, redelivered, 64))
    assert.equal(0, lost)
    assert.is_true(redelivered >= kills)  -- each kill found messages in progress
    assert.is_true(dups <= kills * 64)
    assert.is_nil(e2e.read(r.log):find("dead-letter", 1, true))
  end)

  it("runs timers on slot 0 only, or on every slot", function()
    -- Ticks by slot of the instance r (its records).
    local function ticks(r)
      local by_slot = { ["0"] = 0, ["1"] = 0 }
      for _, rec in ipairs(records(r.dir, "tick")) do by_slot[rec.payload] = by_slot[rec.payload] + 1 end
      return by_slot
    end
    local r = start({ SLEEP_WORKERS = 2 }, 2)
    assert.truthy(e2e.wait_for(function() return ticks(r)["0"] >= 5 end, 30), e2e.read(r.log))
    assert.equal(0, ticks(r)["1"])
    local port = e2e.free_port()
    local all = start({ SLEEP_WORKERS = 2, TICK_WORKERS = "all", ROUTEMQ_HTTP = "127.0.0.1:" .. port }, 2)
    assert.truthy(e2e.wait_for(function() return ticks(all)["0"] >= 5 and ticks(all)["1"] >= 5 end, 30))
    local metrics
    assert.truthy(e2e.wait_for(function()
      metrics = e2e.sh("curl -s --max-time 5 http://127.0.0.1:" .. port .. "/metrics")
      local ok_runs = tonumber(metrics:match('routemq_timer_runs_total{name="ticker",result="ok"} (%d+)'))
      return ok_runs and ok_runs >= 8
    end, 30), metrics)
    assert.matches('routemq_timer_runs_total{name="ticker",result="skipped"} 0', metrics)
    assert.matches('routemq_in_progress{slot="1"} 0', metrics)
  end)

  it("runs init in each worker start before its first message, and fails the start on an error", function()
    local port = e2e.free_port()
    local dir = e2e.tmpdir()
    local srv = e2e.spawn(string.format("python3 -c %s", e2e.quote(string.format([[
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen(16)
while True:
    c, _ = s.accept(); data = c.recv(100); c.close()
    open("%s/hellos", "a").write(data.decode())
]], port, dir))), dir .. "/srv.log")
    e2e.defer(function() e2e.kill(srv, "KILL") end)
    assert(e2e.wait_for(function() -- listening (the probe appends nothing)
      local s = csocket.connect({ host = "127.0.0.1", port = port })
      local ok = pcall(s.connect, s, 0.2)
      s:close()
      return ok
    end, 10), e2e.read(dir .. "/srv.log"))
    local r = start({ INIT_PORT = port, SLEEP_WORKERS = 2 }, 2)
    local hellos
    e2e.wait_for(function()
      hellos = {}
      for l in e2e.read(dir .. "/hellos"):gmatch("[^\r\n]+") do hellos[#hellos + 1] = l end
      return #hellos >= 2
    end, 10)
    table.sort(hellos)
    assert.same({ "hello from 0", "hello from 1" }, hellos)
    local pid = r.workers()[1]
    e2e.kill(pid, "KILL")
    assert(e2e.wait_for(function() return #records(r.dir, "init") == 3 end, 10))
    e2e.publish(broker.port, "wait/quick", "after", "-q 1")
    assert(e2e.wait_for(function() return #records(r.dir, "quick") == 1 end, 5))
    for _, rec in ipairs(records(r.dir)) do
      -- the first line each process wrote is its init's
      if rec.route == "quick" then
        local first = nil
        for _, x in ipairs(records(r.dir)) do if x.pid == rec.pid then first = first or x end end
        assert.equal("init", first.route)
      end
    end
    e2e.kill(srv, "KILL")
    local bad = e2e.routemq(broker, APP, "run", { INIT_PORT = e2e.free_port() })
    assert(e2e.wait_for(function() return e2e.read(bad.log):find("init failed", 1, true) end, 10))
    assert.matches("init failed: app/routers/wait%.lua:%d+: ", e2e.read(bad.log))
  end)

  it("replaces a worker whose health check keeps failing, with reason health", function()
    local flag = e2e.tmpdir() .. "/unhealthy"
    local port = e2e.free_port()
    local r = start({ HEALTH_FLAG = flag, ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    local pid = r.workers()[1]
    -- More checks than `failures` (3) have passed: none replaced the worker.
    assert(e2e.wait_for(function() return #records(r.dir, "health") >= 4 end, 10), e2e.read(r.log))
    assert.same({ pid }, r.workers())
    e2e.write(flag, "x")
    assert(e2e.wait_for(function()
      return e2e.sh("curl -s --max-time 5 http://127.0.0.1:" .. port .. "/ready"):find("worker 0 is unhealthy", 1, true)
    end, 15), e2e.read(r.log))
    assert(e2e.wait_for(function() return e2e.read(r.log):find("health check failed", 1, true) end, 5))
    os.remove(flag)
    assert(e2e.wait_for(function() local p = r.workers()[1]; return p and p ~= pid end, 10), e2e.read(r.log))
    assert.matches("its health check failed: health check returned false; replacing it", e2e.read(r.log))
    -- At least one: each worker started while the flag was still there fails too.
    assert(e2e.wait_for(function()
      local n = e2e.sh("curl -s --max-time 5 http://127.0.0.1:" .. port .. "/metrics")
        :match('routemq_worker_restarts_total{reason="health"} (%d+)')
      return n and tonumber(n) >= 1
    end, 10))
  end)

  it("finishes or replays the 64 messages in progress on stop and on reload: 0 lost", function()
    local id = tostring(math.random(1e9))
    local port = e2e.free_port()
    local env = { WORKER_CONCURRENCY = 64, WAIT_MS = 300, MQTT_CLIENT_ID = "w" .. id, MQTT_GROUP_NAME = "w" .. id,
      ROUTEMQ_HTTP = "127.0.0.1:" .. port }
    local r = start(env)
    e2e.publish_lines(broker.port, "wait/sleep", seq(1, 200), 1)
    -- status: the oldest message in progress and its route, though every handler waits
    local status
    e2e.wait_for(function()
      status = e2e.sh("curl -s --max-time 5 http://127.0.0.1:" .. port .. "/status")
      return status:find('"in_flight":{"route":"wait/sleep"', 1, true)
    end, 10)
    assert.matches('"in_flight":{"route":"wait/sleep"', status)
    e2e.kill(r.pid, "HUP")
    -- The stop comes once the reload is over: the new worker has the
    -- messages the old one left in progress (a stop in the middle of the
    -- reload keeps them in this run directory's keep, which the next run
    -- here does not use).
    assert(e2e.wait_for(function() return e2e.read(r.log):find("reload: generation 2 done", 1, true) end, 10),
      e2e.read(r.log))
    assert.equal(0, r.stop())
    env.E2E_OUT = r.dir
    env.ROUTEMQ_HTTP = nil
    e2e.routemq(broker, APP, "run", env)
    settle(r.dir, 200, 5)
    local lost, dups = tally(r.dir, 200)
    print(string.format("\n  stop and reload with 64 in progress: %d lost, %d duplicated", lost, dups))
    assert.equal(0, lost)
  end)
end)
