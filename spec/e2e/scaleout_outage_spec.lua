-- End to end, hosts in network namespaces: a broker that silently drops
-- every packet (a dead host, a firewall, a cloud failover) never blocks a
-- worker, is named in the log, and costs no message.
local e2e = require("spec.helpers.e2e")
local netns = require("spec.helpers.netns")

local APP = "spec/e2e/apps/basic"

local function http(h, port, path)
  local out = e2e.sh(string.format(
    "ip netns exec %s curl -s -m 2 -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d%s", h.ns, port, path))
  return tonumber(out)
end

local function count(text, pattern)
  local _, n = text:gsub(pattern, "")
  return n
end

-- Waits until the hole has lasted `least` seconds since `holed` (the
-- outage asked for by SCALEOUT_HOLE_*; 0 by default) and the log has one
-- more line matching `pattern` than `before`: the workers went through
-- another failed attempt in the hole, so a restart would have happened.
local function outlast(r, holed, least, pattern, before)
  return e2e.wait_for(function()
    return e2e.now() - holed >= least and count(e2e.read(r.log), pattern) > before
  end, least + 30, 0.1)
end

local describe_netns = netns.available() and describe or pending

-- Longer runs for the figures in the docs (the defaults keep `make test` quick):
-- SCALEOUT_HOLE_AT_START=25 SCALEOUT_HOLE_UNDER_LOAD=40 SCALEOUT_KEEPALIVE=10
local hole_at_start = tonumber(os.getenv("SCALEOUT_HOLE_AT_START") or "0")
local hole_under_load = tonumber(os.getenv("SCALEOUT_HOLE_UNDER_LOAD") or "0")
local keepalive = tonumber(os.getenv("SCALEOUT_KEEPALIVE") or "5")
local connect_timeout = tonumber(os.getenv("SCALEOUT_CONNECT_TIMEOUT") or "2")

describe_netns("a black-holed broker", function()
  it("at start: bounded connect attempts, named in the log, no worker restart, ready once it answers", function()
    local net = netns.new()
    local h = net.host("A")
    local b = net.broker()
    net.blackhole("A", true)
    local port = e2e.free_port()
    local r = net.routemq(h, b, APP, "run", { E2E_SHARED_WORKERS = 2, MQTT_CONNECT_TIMEOUT = connect_timeout,
      WORKER_HEARTBEAT_TIMEOUT = 2, ROUTEMQ_HTTP = "127.0.0.1:" .. port, MQTT_RETRY_MAX_DELAY = 1 })
    local holed = e2e.now()
    local expected = "cannot connect to " .. b.host .. ":" .. b.port .. ": timed out after " .. connect_timeout
      .. " s; retrying in"
    local pattern = expected:gsub("%p", "%%%0")
    assert.truthy(e2e.wait_for(function()
      return count(e2e.read(r.log), pattern) >= math.max(1, math.floor(8 / connect_timeout))
    end, 30), e2e.read(r.log))
    assert.truthy(outlast(r, holed, hole_at_start, pattern, count(e2e.read(r.log), pattern)), e2e.read(r.log))
    local ready_in_hole = http(h, port, "/ready")
    local status = e2e.sh("ip netns exec " .. h.ns .. " curl -s -m 2 http://127.0.0.1:" .. port .. "/status")
    local workers = r.children()
    local opened = e2e.now()
    net.blackhole("A", false)
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 10), e2e.read(r.log))
    print(string.format("\n  black hole at start: ready %.1f s after the link came back", e2e.now() - opened))
    assert.equal(503, ready_in_hole)
    assert.matches('"state":%s*"connecting"', status)
    assert.equal(200, http(h, port, "/ready"))
    local log = e2e.read(r.log)
    assert.is_nil(log:find("gen 2"), "a worker was restarted:\n" .. log)
    assert.same(workers, r.children())
    assert.equal(0, r.stop())
  end)

  it("does not hold up a stop: a connect attempt in progress is abandoned", function()
    local net = netns.new()
    local h = net.host("A")
    local b = net.broker()
    net.blackhole("A", true)
    local r = net.routemq(h, b, APP, "run", { E2E_SHARED_WORKERS = 2, MQTT_CONNECT_TIMEOUT = 30,
      WORKER_STOP_TIMEOUT = 20 })
    assert.truthy(e2e.wait_for(function() return #r.children() == 2 end, 10))
    -- Both workers are inside their connect attempt: a socket of each waits
    -- for the broker's answer (SYN sent, nothing back).
    assert.truthy(e2e.wait_for(function()
      local socks = e2e.sh(string.format("ip netns exec %s ss -Htnp state syn-sent dst %s:%d", h.ns, b.host, b.port))
      for _, pid in ipairs(r.children()) do
        if not socks:find("pid=" .. pid .. ",", 1, true) then return false end
      end
      return true
    end, 10), e2e.read(r.log))
    local t0 = e2e.now()
    assert.equal(0, r.stop())
    local took = e2e.now() - t0
    print(string.format("\n  stop during a black-holed connect: %.2f s", took))
    -- Neither the connect timeout (30 s) nor the stop timeout (20 s) held it up.
    assert.truthy(took < 15, took)
    assert.is_nil(e2e.read(r.log):find("killed"), e2e.read(r.log))
  end)

  it("on an established connection under load: noticed within 1.5 x keepalive, no restart, nothing lost", function()
    local net = netns.new()
    local h = net.host("A")
    local b = net.broker()
    local r = net.routemq(h, b, APP, "run", { E2E_SHARED_WORKERS = 2, MQTT_KEEPALIVE = keepalive,
      MQTT_CONNECT_TIMEOUT = 2, WORKER_HEARTBEAT_TIMEOUT = 2, MQTT_CLIENT_ID = "t" .. net.prefix })
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15), e2e.read(r.log))
    local n = math.max(2000, math.floor((hole_under_load + 10) * 100))
    net.publish_background(b, "shared/1", 1, n, 100, r.dir .. "/pub.log")
    -- Messages flow before the hole (100 a second).
    assert.truthy(e2e.wait_for(function() return e2e.handled(r.dir) >= 200 end, 30), e2e.read(r.log))
    local workers = r.children()
    local holed = e2e.now()
    net.blackhole("A", true)
    local noticed = e2e.wait_for(function()
      local line = e2e.read(r.log):match("[^\n]*nothing from [^\n]*")
      return line and e2e.log_time(line)
    end, keepalive * 1.5 + 5)
    -- The workers have tried to connect again in the hole, and failed.
    local failed = "cannot connect to " .. b.host:gsub("%p", "%%%0") .. ":" .. b.port
    assert.truthy(outlast(r, holed, hole_under_load, failed, count(e2e.read(r.log), failed)), e2e.read(r.log))
    local opened = e2e.now()
    net.blackhole("A", false)
    e2e.settle(r.dir, n, 10)
    local lost, dups = e2e.tally(r.dir, n)
    local log = e2e.read(r.log)
    local back = e2e.log_time(log:match("[^\n]*connected to [^\n]*session resumed[^\n]*") or "") or 0
    print(string.format("\n  %.0f s outage on an established connection (keepalive %d s): noticed after %.1f s, "
      .. "connected again %.1f s after the link came back; %d lost, %d duplicated", opened - holed, keepalive,
      (noticed or 0) - holed, back - opened, lost, dups))
    assert.truthy(noticed, log)
    assert.truthy(noticed - holed <= keepalive * 1.5 + 3, "noticed after " .. (noticed - holed) .. " s")
    assert.matches("nothing from " .. b.host:gsub("%p", "%%%0") .. ":" .. b.port .. " for", log)
    assert.equal(0, lost)
    assert.is_nil(log:find("gen 2"), "a worker was restarted:\n" .. log)
    assert.same(workers, r.children())
  end)
end)
