-- End to end, hosts in network namespaces around one mosquitto: instances
-- know each other through their presence records, and a stop hands its
-- sessions over when another instance serves the same shared routes.
local e2e = require("spec.helpers.e2e")
local netns = require("spec.helpers.netns")

local APP = "spec/e2e/apps/basic"

local tally, settle = e2e.tally, e2e.settle

local function sees(r, hosts) return netns.sees(r, hosts, APP) end

local describe_netns = netns.available() and describe or pending

describe_netns("a rolling update over hosts", function()
  it("hands the stopped host's sessions over: nothing lost, nothing stranded", function()
    local net = netns.new()
    local b = net.broker()
    local env = { E2E_SHARED_WORKERS = 2, MQTT_CLIENT_ID = "t" .. net.prefix, MQTT_GROUP_NAME = "g" .. net.prefix }
    local a = net.routemq(net.host("A"), b, APP, "run", env)
    local bb = net.routemq(net.host("B"), b, APP, "run", env)
    assert.truthy(e2e.wait_for(function() return a.ready(2) and bb.ready(2) end, 15))
    -- Both presence records are in: each instance sees the other.
    assert.truthy(sees(a, { "hostA", "hostB" }) and sees(bb, { "hostA", "hostB" }))
    local n = 10000
    local pub = net.publish_background(b, "shared/1", 1, n, 1000, a.dir .. "/pub.log")
    e2e.wait_for(function() return #e2e.records(a.dir) + #e2e.records(bb.dir) > 2000 end, 20)
    assert.equal(0, a.stop())
    -- B has seen A's stop: A is no longer running in its view of the group.
    assert.truthy(e2e.wait_for(function()
      return not netns.cluster(bb, APP):find("hostA%s+hostA%s+%d+%s+running")
    end, 20), netns.cluster(bb, APP))
    local c = net.routemq(net.host("C"), b, APP, "run", env)
    assert.truthy(e2e.wait_for(function() return c.ready(2) end, 15))
    e2e.wait_for(function() return not e2e.alive(pub) end, 60)
    local dirs = { a.dir, bb.dir, c.dir }
    settle(dirs, n, 5)
    local lost, dups = tally(dirs, n)
    local log = e2e.read(a.log)
    print(string.format("\n  rolling update: A %d, B %d, C %d handled; %d lost, %d duplicated",
      #e2e.records(a.dir), #e2e.records(bb.dir), #e2e.records(c.dir), lost, dups))
    assert.matches("stop: ending the sessions %(ROUTEMQ_STOP_SESSIONS=auto: instance t" .. net.prefix:gsub("%p", "%%%0")
      .. "%-hostB serves the same shared routes", log)
    assert.equal(0, lost)
    -- The status of the group from B: A is gone (its sessions ended), B and C run.
    local cluster = e2e.sh("ROUTEMQ_RUN_DIR=" .. bb.dir .. "/run " .. e2e.bin .. " status --cluster --app " .. APP)
    assert.matches("hostB%s+hostB%s+%d+%s+running", cluster)
    assert.matches("hostC%s+hostC%s+%d+%s+running", cluster)
    assert.is_nil(cluster:find("hostA"), cluster)
  end)

  it("keeps the sessions of the last instance and refuses a second one with the same identity", function()
    local net = netns.new()
    local b = net.broker()
    local env = { E2E_SHARED_WORKERS = 1, MQTT_CLIENT_ID = "t" .. net.prefix, MQTT_GROUP_NAME = "g" .. net.prefix }
    local a = net.routemq(net.host("A"), b, APP, "run", env)
    assert.truthy(e2e.wait_for(function() return a.ready(1) end, 15))
    assert.truthy(sees(a, { "hostA" }))  -- its presence record is in
    -- Another host started with A's identity (same ROUTEMQ_INSTANCE) is refused.
    local twin_env = { ROUTEMQ_INSTANCE = "hostA" }
    for k, v in pairs(env) do twin_env[k] = v end
    local twin = net.routemq(net.host("T"), b, APP, "run", twin_env)
    assert.truthy(e2e.wait_for(function() return e2e.read(twin.rcfile) ~= "" end, 10))
    assert.equal(1, tonumber(e2e.read(twin.rcfile):match("%d+")))
    local id = ("t" .. net.prefix .. "-hostA"):gsub("%p", "%%%0")
    assert.matches("cannot start: the identity " .. id .. " is live on host hostA %(pid " .. a.pid .. "%)",
      e2e.read(twin.log))
    -- The last instance keeps its sessions: what is published meanwhile waits for it.
    assert.equal(0, a.stop())
    assert.matches("stop: keeping the sessions %(ROUTEMQ_STOP_SESSIONS=auto: no other live instance serves the "
      .. "shared routes, a restart resumes them%)", e2e.read(a.log))
    local status = e2e.sh("mosquitto_sub -h " .. b.host .. " -p " .. b.port .. " -t 'routemq/presence/#' -W 1 -v")
    assert.matches('"state":"stopped","sessions":"kept"', status)
    e2e.sh(string.format("seq 1 200 | mosquitto_pub -h %s -p %d -t shared/1 -q 1 -l", b.host, b.port))
    local again = net.routemq(a.host, b, APP, "run", env, a.dir)
    assert.truthy(e2e.wait_for(function() return again.ready(1) end, 15))
    e2e.wait_for(function() return #e2e.records(a.dir) >= 200 end, 10)
    assert.equal(0, tally({ a.dir }, 200))
  end)
end)
