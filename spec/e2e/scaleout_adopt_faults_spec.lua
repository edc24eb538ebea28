-- End to end, hosts in network namespaces: an adoption survives what a worker
-- survives. The orphan's sessions hold a backlog and every handler waits at a
-- gate the test opens, so each fault lands in the middle of the adoption: the
-- adoption workers have resumed the sessions and handled nothing yet.
local e2e = require("spec.helpers.e2e")
local netns = require("spec.helpers.netns")

local APP = "spec/e2e/apps/basic"

local tally, settle = e2e.tally, e2e.settle

local describe_netns = netns.available() and describe or pending

local function count(text, pattern)
  local _, c = text:gsub(pattern, "")
  return c
end

-- Hosts A and B (and C when `third`), 2 workers each, slowshared/1 handlers
-- waiting at a closed gate. A dies; n messages are published, about half of
-- them queued in A's two sessions; B adopts them. Returns once both of B's
-- adoption workers have resumed their session.
local function adoption_in_progress(n, third, broker_opts)
  local t = { net = netns.new() }
  local net = t.net
  t.b = net.broker(broker_opts)
  t.gate = e2e.tmpdir() .. "/gate"
  e2e.write(t.gate, "closed")
  e2e.defer(function() os.remove(t.gate) end)
  t.env = { E2E_SHARED_WORKERS = 2, MQTT_CLIENT_ID = "t" .. net.prefix, MQTT_GROUP_NAME = "g" .. net.prefix,
    ROUTEMQ_ADOPT_AFTER = 3, E2E_GATE = t.gate, E2E_SLOW_US = 5000 }
  t.a = net.routemq(net.host("A"), t.b, APP, "run", t.env)
  t.bb = net.routemq(net.host("B"), t.b, APP, "run", t.env)
  if third then t.c = net.routemq(net.host("C"), t.b, APP, "run", t.env) end
  assert.truthy(e2e.wait_for(function()
    return t.a.ready(2) and t.bb.ready(2) and (not t.c or t.c.ready(2))
  end, 15))
  -- Every presence record is in: each instance sees every host.
  local hosts = { "hostA", "hostB", third and "hostC" or nil }
  for _, r in ipairs({ t.a, t.bb, t.c }) do assert.truthy(netns.sees(r, hosts, APP), netns.cluster(r, APP)) end
  t.a.kill()
  e2e.sh(string.format("seq 1 %d | mosquitto_pub -h %s -p %d -t slowshared/1 -q 1 -l", n, t.b.host, t.b.port))
  t.orphan_id = "t" .. net.prefix .. "-hostA"
  t.orphan = t.orphan_id:gsub("%p", "%%%0") -- as a pattern
  assert.truthy(e2e.wait_for(function()
    return count(e2e.read(t.bb.log), "adopting the session of " .. t.orphan .. "%-%d: resumed") == 2
  end, 20), e2e.read(t.bb.log))
  return t
end

local function adopted(log)
  local sum = 0
  for k in log:gmatch("adopted the session of [^:]+: (%d+) message") do sum = sum + tonumber(k) end
  return sum
end

describe_netns("an adoption", function()
  it("goes on after a broker restart in its middle: 0 lost", function()
    local n = 2000
    local t = adoption_in_progress(n, false, { persistence = true })
    local b, a, bb = t.b, t.a, t.bb
    b.stop()
    b.start()
    os.remove(t.gate)
    assert.truthy(e2e.wait_for(function() return e2e.read(bb.log):find("presence record is cleared") end, 60),
      e2e.read(bb.log))
    local dirs = { a.dir, bb.dir }
    settle(dirs, n, 5)
    local lost, dups = tally(dirs, n)
    local log = e2e.read(bb.log)
    print(string.format("\n  broker restart during an adoption: %d adopted, %d lost, %d duplicated",
      adopted(log), lost, dups))
    -- The adoption workers lost their connection and resumed the orphan's sessions.
    assert.equal(2, count(log, "adopt " .. t.orphan .. "%-%d%] connected to [^\n]* again, session resumed"))
    assert.equal(2, count(log, "adopted the session of " .. t.orphan .. "%-%d: %d+ messages? handled, session ended"))
    assert.truthy(adopted(log) > 0)
    assert.equal(0, lost)
    local records = e2e.sh("mosquitto_sub -h " .. b.host .. " -p " .. b.port .. " -t 'routemq/presence/#' -W 1 -v")
    assert.is_nil(records:find("hostA"), records)
  end)

  it("left by an instance that stops in its middle is finished by another: 0 lost", function()
    local n = 2000
    local t = adoption_in_progress(n, true)
    local a, bb, c = t.a, t.bb, t.c
    e2e.kill(bb.pid, "TERM")
    os.remove(t.gate)
    assert.truthy(e2e.wait_for(function() return not e2e.alive(bb.pid) end, 20))
    assert.equal(0, bb.stop())
    assert.truthy(e2e.wait_for(function() return e2e.read(c.log):find("presence record is cleared") end, 60),
      e2e.read(c.log))
    local dirs = { a.dir, bb.dir, c.dir }
    settle(dirs, n, 5)
    local lost, dups = tally(dirs, n)
    local blog, clog = e2e.read(bb.log), e2e.read(c.log)
    local left = 0
    for k in blog:gmatch("left the adoption of [^\n]* after (%d+) messages") do left = left + tonumber(k) end
    print(string.format("\n  adopting instance stopped during the adoption: B's adoption workers handled %d before "
      .. "leaving, C adopted the other %d; %d lost, %d duplicated", left, adopted(clog), lost, dups))
    assert.equal(2, count(blog, "left the adoption of " .. t.orphan .. "%-%d after %d+ messages: this instance stops"))
    assert.is_nil(blog:find("presence record is cleared"), "B must leave the record for another instance")
    assert.matches("its record says lost again", blog)
    assert.matches("adopting the sessions of instance " .. t.orphan .. " %(host hostA, lost for %d+ s; "
      .. "ROUTEMQ_ADOPT_AFTER=3%): 2 client ids", clog)
    assert.truthy(adopted(clog) > 0, clog)
    assert.equal(0, lost)
  end)

  it("replaces an adoption worker killed in its middle and replays what it held: 0 lost", function()
    local n = 2000
    local t = adoption_in_progress(n, false)
    local a, bb = t.a, t.bb
    -- Both adoption workers hold a message at the gate; kill one of them.
    local victim
    for pid in e2e.sh("pgrep -P " .. bb.pid .. " 2>/dev/null"):gmatch("%d+") do
      -- The whole title: a pattern ending in "-0" also matched slot 1's
      -- worker when the group's random prefix began with 0 ("trmq-087b-...").
      if e2e.read("/proc/" .. pid .. "/cmdline") == "routemq: adopt " .. t.orphan_id .. "-0\0" then
        victim = tonumber(pid)
      end
    end
    assert.truthy(victim, "no adoption worker found")
    e2e.kill(victim, "KILL")
    os.remove(t.gate)
    assert.truthy(e2e.wait_for(function() return e2e.read(bb.log):find("presence record is cleared") end, 60),
      e2e.read(bb.log))
    local dirs = { a.dir, bb.dir }
    settle(dirs, n, 5)
    local lost, dups = tally(dirs, n)
    local log = e2e.read(bb.log)
    local redelivered = 0
    for _, rec in ipairs((e2e.records(bb.dir))) do if rec.redelivered then redelivered = redelivered + 1 end end
    print(string.format("\n  adoption worker killed with -9 during the adoption: restarted, %d adopted, "
      .. "%d redelivered, %d lost, %d duplicated", adopted(log), redelivered, lost, dups))
    assert.matches("adoption worker of " .. t.orphan .. "%-0 %(pid " .. victim .. "%) ended: signal 9 %(SIGKILL%) "
      .. "after %d+ messages; restarting it", log)
    assert.equal(2, count(log, "adopted the session of " .. t.orphan .. "%-%d: %d+ messages? handled, session ended"))
    assert.equal(1, redelivered)
    assert.equal(0, lost)
  end)

  it("kills an adoption worker stuck past its route's timeout, restarts it, dead-letters the message", function()
    local net = netns.new()
    local b = net.broker()
    local env = { E2E_SHARED_WORKERS = 2, MQTT_CLIENT_ID = "t" .. net.prefix, MQTT_GROUP_NAME = "g" .. net.prefix,
      ROUTEMQ_ADOPT_AFTER = 3 }
    local a = net.routemq(net.host("A"), b, APP, "run", env)
    local bb = net.routemq(net.host("B"), b, APP, "run", env)
    assert.truthy(e2e.wait_for(function() return a.ready(2) and bb.ready(2) end, 15))
    -- Both presence records are in: each instance sees the other.
    assert.truthy(netns.sees(a, { "hostA", "hostB" }, APP) and netns.sees(bb, { "hostA", "hostB" }, APP))
    a.kill()
    -- hang/{n} (timeout 1 s) is a plain route of slot 0: A's slot 0 session
    -- queues the message that never returns (B's own slot 0 gets a copy too).
    e2e.sh(string.format("mosquitto_pub -h %s -p %d -t hang/1 -q 1 -m hang", b.host, b.port))
    local orphan = ("t" .. net.prefix .. "-hostA"):gsub("%p", "%%%0")
    assert.truthy(e2e.wait_for(function() return e2e.read(bb.log):find("presence record is cleared") end, 60),
      e2e.read(bb.log))
    local log = e2e.read(bb.log)
    print(string.format("\n  adoption worker stuck in a handler: killed %d times at the route's 1 s timeout, then "
      .. "the message was dead-lettered and the adoption finished",
      count(log, "adoption worker of " .. orphan .. "%-0 %(pid %d+%): handler on route hang/{n} has run")))
    assert.equal(3, count(log, "adoption worker of " .. orphan .. "%-0 %(pid %d+%): handler on route hang/{n} has run "
      .. "[%d.]+ s, past its 1 s timeout; killing it"))
    assert.matches("adoption worker of " .. orphan .. "%-0 died handling a message %(attempt 3 of 3%)", log)
    assert.matches("adopted the session of " .. orphan .. "%-0: %d+ messages? handled, session ended", log)
  end)

  it("hands the sessions back when the orphan returns in its middle: 0 lost, its record kept", function()
    local n = 2000
    local t = adoption_in_progress(n, false)
    local net, b, a, bb = t.net, t.b, t.a, t.bb
    local again = net.routemq(a.host, b, APP, "run", t.env, a.dir)
    -- B tells its adoption workers (waiting at the gate) to leave once A's
    -- record says running; A's own workers wait at the gate too.
    assert.truthy(e2e.wait_for(function()
      return count(e2e.read(bb.log), "instance " .. t.orphan .. " is back: the adoption worker of") == 2
    end, 15), e2e.read(bb.log))
    os.remove(t.gate)
    assert.truthy(e2e.wait_for(function() return again.ready(2) end, 15), e2e.read(again.log))
    assert.truthy(e2e.wait_for(function()
      return count(e2e.read(bb.log), "the adoption of " .. t.orphan .. "%-%d ended") == 2
    end, 30), e2e.read(bb.log))
    local dirs = { a.dir, bb.dir }
    settle(dirs, n, 5)
    local lost, dups = tally(dirs, n)
    print(string.format("\n  orphan back during the adoption: %d lost, %d duplicated", lost, dups))
    assert.equal(0, lost)
    local log = e2e.read(bb.log)
    assert.is_nil(log:find("presence record is cleared"), log)
    local records = e2e.sh("mosquitto_sub -h " .. b.host .. " -p " .. b.port .. " -t 'routemq/presence/#' -W 1 -v")
    assert.matches('hostA {[^\n]*"state":"running"', records)
  end)
end)
