-- End to end: routemq run against a real mosquitto (issue: workers).
local e2e = require("spec.helpers.e2e")

local APP = "spec/e2e/apps/basic"

local seq = e2e.seq

describe("routemq run", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("spreads 30,000 QoS 1 messages of a shared route over 3 workers, each handled once", function()
    local r = e2e.routemq(broker, APP)
    assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15), e2e.read(r.log))
    local out = e2e.publish_lines(broker.port, "shared/1", seq(1, 30000), 1)
    assert.matches("rc=0", out)
    e2e.wait_for(function() return #e2e.records(r.dir) >= 30000 end, 60)
    assert.truthy(e2e.sentinels(broker.port, "shared/1", r.dir), "the sentinels were not handled")
    local list, by = e2e.records(r.dir)
    assert.equal(30000, #list)
    local missing, dups = 0, 0
    for i = 1, 30000 do
      local n = by[tostring(i)] or 0
      if n == 0 then missing = missing + 1 elseif n > 1 then dups = dups + n - 1 end
    end
    assert.equal(0, missing)
    assert.equal(0, dups)
    local per_pid, npids = {}, 0
    for _, rec in ipairs(list) do
      if not per_pid[rec.pid] then npids = npids + 1 end
      per_pid[rec.pid] = (per_pid[rec.pid] or 0) + 1
    end
    assert.equal(3, npids)
    for _, n in pairs(per_pid) do
      assert.is_true(math.abs(n - 10000) <= 1000, "worker share " .. n .. " is not within 10% of 10000")
    end
  end)

  it("handles a non-shared route's messages exactly once with 3 workers running", function()
    local r = e2e.routemq(broker, APP)
    assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15))
    e2e.publish_lines(broker.port, "single/1", seq(1, 2000), 1)
    e2e.wait_for(function() return #e2e.records(r.dir) >= 2000 end, 30)
    assert.truthy(e2e.sentinels(broker.port, "single/1", r.dir), "the sentinel was not handled")
    local list, by = e2e.records(r.dir)
    assert.equal(2000, #list)
    for i = 1, 2000 do assert.equal(1, by[tostring(i)]) end
    local pids = {}
    for _, rec in ipairs(list) do pids[rec.pid] = true end
    assert.equal(1, #(function() local t = {} for p in pairs(pids) do t[#t + 1] = p end return t end)())
  end)

  it("shares one route between two instances with one group and different ROUTEMQ_INSTANCE", function()
    local env = { E2E_SHARED_WORKERS = 2, MQTT_GROUP_NAME = "g1" }
    env.ROUTEMQ_INSTANCE = "hostA"
    local a = e2e.routemq(broker, APP, "run", env)
    env.ROUTEMQ_INSTANCE = "hostB"
    local b = e2e.routemq(broker, APP, "run", env)
    e2e.defer(function() a.stop(); b.stop() end)
    assert.truthy(e2e.wait_for(function() return a.ready(2) and b.ready(2) end, 15))
    e2e.publish_lines(broker.port, "shared/9", seq(1, 4000), 1)
    e2e.wait_for(function() return #e2e.records(a.dir) + #e2e.records(b.dir) >= 4000 end, 30)
    assert.truthy(e2e.sentinels(broker.port, "shared/9", { a.dir, b.dir }), "the sentinels were not handled")
    local la, ba = e2e.records(a.dir)
    local lb, bb = e2e.records(b.dir)
    assert.equal(4000, #la + #lb)
    assert.is_true(#la > 1000 and #lb > 1000, "both instances take a share: " .. #la .. " / " .. #lb)
    for i = 1, 4000 do
      local k = tostring(i)
      assert.equal(1, (ba[k] or 0) + (bb[k] or 0), "message " .. k)
    end
  end)
end)

describe("ctx end to end", function()
  local broker, r, sub_log, sub_pid
  setup(function()
    broker = e2e.broker()
    r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    sub_log = r.dir .. "/sub.log"
    sub_pid = e2e.spawn(string.format(
      "mosquitto_sub -p %d -V mqttv5 -t 'out/#' -t 'resp/#' -F '%%t|%%p|%%D|%%P'", broker.port), sub_log)
    assert.truthy(e2e.wait_subscribed(broker.port, "out/e2e", sub_log))
  end)
  teardown(function()
    e2e.kill(sub_pid, "TERM")
    r.stop()
    broker.stop()
  end)

  local function received(topic_prefix)
    return e2e.wait_for(function()
      for line in e2e.read(sub_log):gmatch("[^\n]+") do
        if line:sub(1, #topic_prefix) == topic_prefix then return line end
      end
    end, 10)
  end

  it("passes params, including a trailing multi-level param", function()
    e2e.publish(broker.port, "ctx/params/x1/deep/er/path", "p")
    local line = received("out/params|")
    local cjson = require("cjson")
    local v = cjson.decode(line:match("^out/params|(.-)|"))
    assert.same({ a = "x1", rest = "deep/er/path", topic = "ctx/params/x1/deep/er/path" }, v)
  end)

  it("keeps binary payloads with NUL bytes intact", function()
    e2e.sh(string.format("printf 'a\\000b\\377' | mosquitto_pub -p %d -t ctx/binary -s", broker.port))
    local line = received("out/binary|")
    assert.equal("out/binary|610062ff 4||", line)
  end)

  it("lets the handler decide on bad JSON (ctx:json returns nil, err)", function()
    e2e.publish(broker.port, "ctx/json", "{not json")
    local line = received("out/json|")
    local v = require("cjson").decode(line:match("^out/json|(.-)|"))
    assert.is_false(v.ok)
    assert.is_string(v.err)
  end)

  it("replies with ctx:reply to the response topic with the correlation data and user properties", function()
    e2e.publish(broker.port, "ctx/reply", "ping",
      "-V mqttv5 -D publish response-topic resp/1 -D publish correlation-data corr-42 -D publish user-property k v")
    local line = received("resp/1|")
    local payload, corr = line:match("^resp/1|(.-)|(.-)|")
    assert.equal("corr-42", corr)
    assert.same({ pong = "ping", user = { k = "v" } }, require("cjson").decode(payload))
  end)
end)
