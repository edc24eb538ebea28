-- End to end: handler errors, broker outages, unreachable brokers and refused logins.
local e2e = require("spec.helpers.e2e")

local APP = "spec/e2e/apps/basic"

local seq = e2e.seq

describe("a handler that raises", function()
  it("is logged with the user's file:line and traceback, counted, and the same pid goes on", function()
    local b = e2e.broker()
    local r = e2e.routemq(b, APP, "run", { E2E_SHARED_WORKERS = 1 })
    e2e.defer(function() r.stop(); b.stop() end)
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    e2e.publish_lines(b.port, "fail/1", { "a", "b" }, 1)
    e2e.publish_lines(b.port, "single/1", { "after" }, 1)
    e2e.wait_for(function() return #e2e.records(r.dir) >= 3 end, 30)
    local list = e2e.records(r.dir)
    assert.equal(3, #list)
    assert.equal(list[1].pid, list[3].pid)
    local log = e2e.read(r.log)
    local expected = "handler error route=fail/{n} topic=fail/1: app/controllers/record.lua:60: boom on fail/1"
    local _, n = log:gsub(expected:gsub("%p", "%%%0"), "")
    assert.equal(2, n)
    assert.matches("stack traceback:\n[^\n]*\n%s+app/controllers/record.lua:60: in function", log)
  end)
end)

describe("a broker outage", function()
  it("is survived: workers reconnect by themselves and no QoS 1 message is lost", function()
    local b = e2e.broker({ persistence = true })
    local r = e2e.routemq(b, APP, "run", { E2E_SHARED_WORKERS = 2 })
    e2e.defer(function() r.stop(); b.stop() end)
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15))
    -- 3 s of work queued at the broker (1 ms per message over 2 workers) ...
    e2e.publish_lines(b.port, "slowshared/1", seq(1, 3000), 1)
    -- ... then the broker goes away for 5 s in the middle of it.
    b.stop()
    local before = #e2e.records(r.dir)
    -- The outage is felt: both workers lost the connection and an attempt
    -- to connect again failed.
    assert.truthy(e2e.wait_for(function()
      local log = e2e.read(r.log)
      local _, lost = log:gsub("lost the connection to 127%.0%.0%.1:" .. b.port, "")
      local _, failed = log:gsub("cannot connect to 127%.0%.0%.1:" .. b.port, "")
      return lost >= 2 and failed >= 2
    end, 30), e2e.read(r.log))
    b.start()
    assert.truthy(e2e.wait_for(function() return #e2e.records(r.dir) >= 3000 end, 30))
    assert.truthy(e2e.sentinels(b.port, "slowshared/1", r.dir), "the sentinels were not handled")
    local list, by = e2e.records(r.dir)
    local missing, dups = 0, 0
    for i = 1, 3000 do
      local n = by[tostring(i)] or 0
      if n == 0 then missing = missing + 1 elseif n > 1 then dups = dups + n - 1 end
    end
    print(string.format("\n  outage: %d handled before, %d after; %d lost, %d duplicated", before,
      #list - before, missing, dups))
    assert.equal(0, missing)
    assert.matches("lost the connection to 127.0.0.1:" .. b.port, e2e.read(r.log))
  end)
end)

describe("an unreachable broker", function()
  it("is retried with a clear error, without a crash loop", function()
    local port = e2e.free_port()
    local r = e2e.routemq({ port = port }, APP, "run", { E2E_SHARED_WORKERS = 1, MQTT_RETRY_MIN_DELAY = 0.2 })
    e2e.wait_for(function() return e2e.read(r.log):find("cannot connect", 1, true) end, 30)
    -- Three more attempts fail meanwhile (0.2, 0.4, 0.8 s apart), none of
    -- them a restart.
    assert.truthy(e2e.wait_for(function()
      local _, n = e2e.read(r.log):gsub("cannot connect", "")
      return n >= 4
    end, 30), e2e.read(r.log))
    local log = e2e.read(r.log)
    local alive = e2e.alive(r.pid)
    local workers = r.workers()
    r.stop()
    assert.is_true(alive)
    assert.matches("cannot connect to 127.0.0.1:" .. port .. ": Connection refused; retrying in", log)
    assert.is_nil(log:find("gen 2"), "workers were restarted: " .. log)
    assert.equal(1, #workers)
  end)
end)

describe("a wrong password", function()
  it("gives a clear error naming the broker and ends `run` with exit 2", function()
    local dir = e2e.tmpdir()
    e2e.sh("mosquitto_passwd -b -c " .. dir .. "/passwd alice right 2>&1; chmod 0755 " .. dir
      .. "; chmod 0644 " .. dir .. "/passwd")
    local b = e2e.broker({ password_file = dir .. "/passwd" })
    local r = e2e.routemq(b, APP, "run", { E2E_SHARED_WORKERS = 1, MQTT_USERNAME = "alice",
      MQTT_PASSWORD = "s3cret-wrong" })
    e2e.defer(function() r.stop(); b.stop() end)
    assert.truthy(e2e.wait_for(function() return not e2e.alive(r.pid) end, 20), "run did not give up")
    assert.equal(2, r.exit_code())
    local log = e2e.read(r.log)
    assert.matches("the broker 127.0.0.1:" .. b.port .. " refused the connection of t[^:]+%-0: ", log)
    assert.matches("check MQTT_USERNAME and MQTT_PASSWORD", log)
    assert.is_nil(log:find("s3cret-wrong", 1, true), "the password leaked into the log")
  end)
end)

describe("a wrong password with the right one", function()
  it("connects with MQTT_USERNAME/MQTT_PASSWORD", function()
    local dir = e2e.tmpdir()
    e2e.sh("mosquitto_passwd -b -c " .. dir .. "/passwd alice right 2>&1; chmod 0755 " .. dir
      .. "; chmod 0644 " .. dir .. "/passwd")
    local b = e2e.broker({ password_file = dir .. "/passwd", user = "alice", pass = "right" })
    local r = e2e.routemq(b, APP, "run", { E2E_SHARED_WORKERS = 1, MQTT_USERNAME = "alice",
      MQTT_PASSWORD = "right" })
    e2e.defer(function() r.stop(); b.stop() end)
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    e2e.publish_lines(b.port, "single/1", seq(1, 10), 1, "-u alice -P right")
    assert.truthy(e2e.wait_for(function() return #e2e.records(r.dir) >= 10 end, 10))
  end)
end)
