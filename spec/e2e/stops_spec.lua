-- End to end: a retiring worker ends its session only once the broker has
-- stopped sending (its drain marker came back), however long the backlog of
-- its share takes; and a stop never drops what was taken.
local e2e = require("spec.helpers.e2e")
local netns = require("spec.helpers.netns")

local APP = "spec/e2e/apps/basic"

local tally, settle = e2e.tally, e2e.settle

local describe_netns = netns.available() and describe or pending

-- Publishes payloads 1..n on topic at QoS 1, `rate` per second, in the
-- background; every 100 messages it writes how many went out to progress.
local function publish_paced(port, topic, n, rate, dir)
  local script = dir .. "/feed.py"
  e2e.write(script, string.format("import sys, time\nfor i in range(1, %d):\n"
    .. "    print(i, flush=True)\n"
    .. "    if i %% 100 == 0:\n        open('%s/progress', 'w').write(str(i))\n"
    .. "    time.sleep(%g)\n", n + 1, dir, 1 / rate))
  local pid = e2e.spawn(string.format("sh -c 'python3 %s | mosquitto_pub -p %d -t %s -q 1 -l'", script, port, topic),
    dir .. "/pub.log")
  e2e.defer(function()
    if not e2e.alive(pid) then return end
    e2e.sh("pkill -KILL -P " .. pid)
    e2e.kill(pid, "KILL")
  end)
  return pid, function() return tonumber(e2e.read(dir .. "/progress"):match("%d+")) or 0 end
end

describe("scale down", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("drains the retired slot's whole share while the broker keeps sending it: 0 lost", function()
    local gate = e2e.tmpdir() .. "/gate"
    e2e.write(gate, "closed")
    -- WORKER_STOP_TIMEOUT=2: the retired slot's backlog takes far longer
    -- than that to handle; a retirement that ended its session at a
    -- deadline would drop the rest of it.
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3, E2E_GATE = gate, E2E_SLOW_US = 2000,
      WORKER_STOP_TIMEOUT = 2 })
    assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15))
    local slot2 = r.slots()[2].pid
    local n = 16000
    local pub, published = publish_paced(broker.port, "slowshared/1", n, 2000, r.dir)
    -- Every handler waits at the gate: the broker queues each slot's share.
    assert.truthy(e2e.wait_for(function() return published() >= 9000 end, 30))
    e2e.kill(r.pid, "TTOU")
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("scale %(SIGTTOU%): 3 %-> 2") end, 10))
    os.remove(gate)
    assert.truthy(e2e.wait_for(function() return r.count_workers() == 2 end, 120), e2e.read(r.log))
    e2e.wait_for(function() return not e2e.alive(pub) end, 60)
    settle(r.dir, n, 10)
    local lost, dups = tally(r.dir, n)
    local by_retired = 0
    for _, rec in ipairs((e2e.records(r.dir))) do
      if rec.pid == slot2 then by_retired = by_retired + 1 end
    end
    print(string.format("\n  scale down 3 -> 2 with the broker sending the retired slot its share: the retired slot "
      .. "handled %d; %d lost, %d duplicated", by_retired, lost, dups))
    -- Its backlog was real: more than it could handle within WORKER_STOP_TIMEOUT.
    assert.truthy(by_retired > 2000, by_retired .. " handled by the retired slot")
    assert.equal(0, lost)
    assert.matches("worker 2 %(pid " .. slot2 .. "%) retired: exit 0", e2e.read(r.log))
  end)
end)

describe("scale down and up again", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("stops the retirement and leaves the session's backlog to the slot's next worker: 0 lost", function()
    local gate = e2e.tmpdir() .. "/gate"
    e2e.write(gate, "closed")
    e2e.defer(function() os.remove(gate) end)
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3, E2E_GATE = gate, E2E_SLOW_US = 2000 })
    assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15))
    local slot2 = r.slots()[2].pid
    local n = 6000
    e2e.publish_lines(broker.port, "slowshared/1", e2e.seq(1, n), 1)
    -- Slot 2 waits at the gate with its share queued: it reads both
    -- signals together, retires and is told to stay.
    e2e.kill(r.pid, "TTOU")
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("scale %(SIGTTOU%): 3 %-> 2") end, 10))
    e2e.kill(r.pid, "TTIN")
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("scale %(SIGTTIN%): 2 %-> 3") end, 10))
    os.remove(gate)
    assert.truthy(e2e.wait_for(function()
      local s = r.slots()[2]
      return s and s.pid ~= slot2 and r.ready(4)
    end, 30), e2e.read(r.log))
    settle(r.dir, n, 10)
    local lost, dups = tally(r.dir, n)
    print(string.format("\n  scale 3 -> 2 -> 3 while the retiring slot had its share queued: %d lost, %d duplicated",
      lost, dups))
    assert.matches("%[worker 2%] no longer retiring: the session stays for the slot's next worker", e2e.read(r.log))
    assert.equal(0, lost)
  end)
end)

describe("a stop", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("that reaches WORKER_STOP_TIMEOUT leaves what was taken kept for the next start, never lost", function()
    local gate = e2e.tmpdir() .. "/gate"
    e2e.write(gate, "closed")
    e2e.defer(function() os.remove(gate) end)
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, E2E_GATE = gate, WORKER_STOP_TIMEOUT = 2 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(broker.port, "slowshared/1", e2e.seq(1, 20), 1)
    -- The handler waits at the gate for the whole stop: the worker holds
    -- messages it took and cannot finish.
    local status = "ROUTEMQ_RUN_DIR=" .. r.dir .. "/run " .. e2e.bin .. " status --json --app " .. APP
    assert.truthy(e2e.wait_for(function() return e2e.sh(status):find('"in_progress":1') end, 10), e2e.sh(status))
    e2e.kill(r.pid, "TERM")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(r.pid) end, 15))
    local log = e2e.read(r.log)
    print("\n  " .. (log:match("[^\n]*kept for the next start") or "?"))
    assert.matches("worker 0 stopped with %d+ unfinished messages?; %a+ stays? kept for the next start", log)
    assert.is_nil(log:find("lost"), log)
    assert.is_nil(log:find("dropped"), log)
  end)
end)

describe_netns("a stop that hands over", function()
  it("keeps a session the broker is still sending to past WORKER_STOP_TIMEOUT, and it is adopted: 0 lost",
    function()
    local net = netns.new()
    local b = net.broker()
    local gate = e2e.tmpdir() .. "/gate"
    e2e.write(gate, "closed")
    e2e.defer(function() os.remove(gate) end)
    local env = { E2E_SHARED_WORKERS = 2, MQTT_CLIENT_ID = "t" .. net.prefix, MQTT_GROUP_NAME = "g" .. net.prefix,
      ROUTEMQ_ADOPT_AFTER = 2, E2E_GATE = gate, E2E_SLOW_US = 5000 }
    local a_env = { WORKER_STOP_TIMEOUT = 2 }
    for k, v in pairs(env) do a_env[k] = v end
    local a = net.routemq(net.host("A"), b, APP, "run", a_env)
    local bb = net.routemq(net.host("B"), b, APP, "run", env)
    assert.truthy(e2e.wait_for(function() return a.ready(2) and bb.ready(2) end, 15))
    -- Both presence records are in: each instance sees the other.
    assert.truthy(netns.sees(a, { "hostA", "hostB" }, APP) and netns.sees(bb, { "hostA", "hostB" }, APP))
    -- Every handler waits at the gate: A's sessions queue their share
    -- (about 1,000 messages, 5 s of handling: more than WORKER_STOP_TIMEOUT).
    local n = 2000
    e2e.sh(string.format("seq 1 %d | mosquitto_pub -h %s -p %d -t slowshared/1 -q 1 -l", n, b.host, b.port))
    e2e.kill(a.pid, "TERM")
    assert.truthy(e2e.wait_for(function() return e2e.read(a.log):find("stop: ending the sessions") end, 10))
    os.remove(gate)
    assert.truthy(e2e.wait_for(function() return not e2e.alive(a.pid) end, 20))
    assert.truthy(e2e.wait_for(function() return e2e.read(bb.log):find("presence record is cleared") end, 30),
      e2e.read(bb.log))
    local dirs = { a.dir, bb.dir }
    settle(dirs, n, 5)
    local lost, dups = tally(dirs, n)
    local alog, blog = e2e.read(a.log), e2e.read(bb.log)
    local adopted = 0
    for k in blog:gmatch("adopted the session of [^:]+: (%d+) message") do adopted = adopted + tonumber(k) end
    print(string.format("\n  handover stop with 5 s of backlog and WORKER_STOP_TIMEOUT=2: A handled %d, B adopted "
      .. "the rest of A's sessions (%d); %d lost, %d duplicated", #e2e.records(a.dir), adopted, lost, dups))
    assert.matches("with the broker still sending: the session of t[%w-]+%-hostA%-%d is kept", alog)
    assert.matches("worker %d %(pid %d+%) stopped: its session is kept", alog)
    assert.truthy(adopted > 0, blog)
    assert.equal(0, lost)
  end)
end)
