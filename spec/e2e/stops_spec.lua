-- End to end: a retiring worker ends its session only once the broker has
-- stopped sending (its drain marker came back), however long the backlog of
-- its share takes; and a stop never drops what was taken.
local e2e = require("spec.helpers.e2e")

local APP = "spec/e2e/apps/basic"

local tally, settle = e2e.tally, e2e.settle

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
    e2e.defer(function() r.stop() end)
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
