-- End to end, hosts in network namespaces: the sessions of a host that died
-- are adopted by a live instance after ROUTEMQ_ADOPT_AFTER, unless the
-- instance itself comes back first.
local e2e = require("spec.helpers.e2e")
local netns = require("spec.helpers.netns")

local APP = "spec/e2e/apps/basic"

local tally, settle = e2e.tally, e2e.settle

local describe_netns = netns.available() and describe or pending

-- Hosts A and B, each an instance with 2 workers in one share group, while n
-- QoS 1 messages are published at 500/s; returns once A has handled 200.
local function two_hosts_under_load(adopt_after, n)
  local t = { net = netns.new() }
  t.b = t.net.broker()
  t.env = { E2E_SHARED_WORKERS = 2, MQTT_CLIENT_ID = "t" .. t.net.prefix, MQTT_GROUP_NAME = "g" .. t.net.prefix,
    ROUTEMQ_ADOPT_AFTER = adopt_after, MQTT_KEEPALIVE = 5 }
  t.ha = t.net.host("A")
  t.a = t.net.routemq(t.ha, t.b, APP, "run", t.env)
  t.bb = t.net.routemq(t.net.host("B"), t.b, APP, "run", t.env)
  assert.truthy(e2e.wait_for(function() return t.a.ready(2) and t.bb.ready(2) end, 15))
  -- Both presence records are in: each instance sees the other.
  assert.truthy(netns.sees(t.a, { "hostA", "hostB" }, APP) and netns.sees(t.bb, { "hostA", "hostB" }, APP))
  t.pub = t.net.publish_background(t.b, "shared/1", 1, n, 500, t.bb.dir .. "/pub.log")
  e2e.wait_for(function() return #e2e.records(t.a.dir) > 200 end, 20)
  return t
end

describe_netns("a host that dies", function()
  it("has its sessions adopted by a live instance after ROUTEMQ_ADOPT_AFTER", function()
    local n = 3000
    local t = two_hosts_under_load(3, n)
    local net, b, env, a, bb, pub = t.net, t.b, t.env, t.a, t.bb, t.pub
    a.kill()  -- master and workers together, as when the host dies
    -- B has seen A die (its will): A is no longer running in B's view.
    assert.truthy(e2e.wait_for(function()
      return not netns.cluster(bb, APP):find("hostA%s+hostA%s+%d+%s+running")
    end, 20), netns.cluster(bb, APP))
    local c = net.routemq(net.host("C"), b, APP, "run", env)
    assert.truthy(e2e.wait_for(function() return c.ready(2) end, 15))
    e2e.wait_for(function() return not e2e.alive(pub) end, 30)
    local dirs = { a.dir, bb.dir, c.dir }
    e2e.wait_for(function() return e2e.read(bb.log):find("presence record is cleared") end, 20)
    settle(dirs, n, 5)
    local lost, dups = tally(dirs, n)
    local log = e2e.read(bb.log)
    local adopted = 0
    for k in log:gmatch("adopted the session of [^:]+: (%d+) message") do adopted = adopted + tonumber(k) end
    print(string.format("\n  host crash: A %d handled before it died, B %d (%d adopted), C %d; %d lost, %d duplicated",
      #e2e.records(a.dir), #e2e.records(bb.dir), adopted, #e2e.records(c.dir), lost, dups))
    local id = ("t" .. net.prefix .. "-hostA"):gsub("%p", "%%%0")
    assert.matches("adopting the sessions of instance " .. id .. " %(host hostA, lost for %d+ s; "
      .. "ROUTEMQ_ADOPT_AFTER=3%): 2 client ids", log)
    assert.matches("adopted the session of " .. id .. "%-0: %d+ messages? handled, session ended", log)
    assert.matches("adopted the session of " .. id .. "%-1: %d+ messages? handled, session ended", log)
    assert.is_nil(e2e.read(c.log):find("adopting"), "exactly one instance adopts")
    -- At most the message each of A's two workers had in hand when the host died.
    assert.truthy(lost <= 2, lost .. " lost")
    local records = e2e.sh("mosquitto_sub -h " .. b.host .. " -p " .. b.port .. " -t 'routemq/presence/#' -W 1 -v")
    assert.is_nil(records:find("hostA"), records)
  end)

  it("silently (no FIN, no RST) is noticed through its presence will and adopted", function()
    local n = 4000
    local t = two_hosts_under_load(3, n)
    local net, a, bb, pub = t.net, t.a, t.bb, t.pub
    -- The host vanishes from the network, then dies: nothing tells the broker.
    local died = e2e.now()
    net.blackhole("A", true)
    a.kill()
    assert.truthy(e2e.wait_for(function() return e2e.read(bb.log):find("presence record is cleared") end, 40),
      e2e.read(bb.log))
    local adopted_at = e2e.log_time(e2e.read(bb.log):match("[^\n]*adopting the sessions[^\n]*"))
    e2e.wait_for(function() return not e2e.alive(pub) end, 30)
    settle({ a.dir, bb.dir }, n, 5)
    local lost, dups = tally({ a.dir, bb.dir }, n)
    print(string.format("\n  silent host death (keepalive 5 s, adopt after 3 s): adopted %.1f s after it died; "
      .. "%d lost, %d duplicated", adopted_at - died, lost, dups))
    assert.matches("adopting the sessions of instance [^ ]+%-hostA %(host hostA, lost for", e2e.read(bb.log))
    assert.truthy(lost <= 2, lost .. " lost")
  end)

  it("that comes back within ROUTEMQ_ADOPT_AFTER resumes its own sessions: nothing adopted, nothing lost", function()
    local n = 2000
    local t = two_hosts_under_load(10, n)
    local net, b, env, ha, a, bb, pub = t.net, t.b, t.env, t.ha, t.a, t.bb, t.pub
    a.kill()
    -- The death is seen (A's will) before the same instance comes back.
    assert.truthy(e2e.wait_for(function()
      return not netns.cluster(bb, APP):find("hostA%s+hostA%s+%d+%s+running")
    end, 20), netns.cluster(bb, APP))
    local again = net.routemq(ha, b, APP, "run", env, a.dir)
    assert.truthy(e2e.wait_for(function() return again.ready(2) end, 15))
    e2e.wait_for(function() return not e2e.alive(pub) end, 30)
    settle({ a.dir, bb.dir }, n, 5)
    local lost, dups = tally({ a.dir, bb.dir }, n)
    print(string.format("\n  same instance back after 1 s: %d lost, %d duplicated", lost, dups))
    assert.is_nil(e2e.read(bb.log):find("adopting"), e2e.read(bb.log))
    assert.truthy(lost <= 2, lost .. " lost")
    assert.matches("session resumed", e2e.read(again.log))
  end)
end)
