-- End to end: `routemq dev` starts a private mosquitto, reloads when the
-- application's files change, and leaves nothing running when it stops.
local e2e = require("spec.helpers.e2e")

describe("routemq dev", function()
  it("runs on a private broker, reloads on file changes and stops everything", function()
    local dir = e2e.copy_app("spec/e2e/apps/basic")
    local log = dir .. "/dev.log"
    local pid, port, broker_pid, up = e2e.dev(e2e.bin .. " dev --app " .. dir, log, { E2E_OUT = dir,
      E2E_SHARED_WORKERS = 1, MQTT_CLIENT_ID = "dev" .. dir:match("([^.]+)$"), ROUTEMQ_RUN_DIR = dir .. "/run" })
    assert.truthy(up, e2e.read(log))
    assert.matches("mosquitto_pub %-p " .. port, e2e.read(log))
    -- Without it mosquitto leaves Nagle on: request/reply p50 88 ms instead of 0.14 ms.
    assert.matches("\nset_tcp_nodelay true\n", e2e.read(dir .. "/run/mosquitto.conf"))
    -- A client with 100 QoS 2 publishes unfinished is served (with
    -- max_queued_messages 0, mosquitto 2.0.11 drops it after 20).
    assert.matches("rc=0", e2e.sh(string.format("%s/build/bench_pub -p %d -n 500 -q 2 -T 1 -w 100 -t 20 2>&1; "
      .. "echo rc=$?", e2e.root, port)))

    -- A new route appears in the router file: dev reloads by itself.
    local f = assert(io.open(dir .. "/app/routers/e2e.lua", "a"))
    f:write('\nrouter.on("added/{n}", C.count, { qos = 1 })\n')
    f:close()
    assert.truthy(e2e.wait_for(function() return e2e.read(log):find("reload: generation 2 done") end, 15),
      e2e.read(log))
    assert.matches("application files changed; reloading", e2e.read(log))
    e2e.publish_lines(tonumber(port), "added/1", { "after-reload" }, 1)
    assert.truthy(e2e.wait_for(function()
      local _, by = e2e.records(dir)
      return by["after-reload"] == 1
    end, 10))

    e2e.kill(pid, "TERM")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(pid) end, 10))
    assert.truthy(e2e.wait_for(function() return not e2e.alive(broker_pid) end, 5), "the private broker outlived dev")
  end)

  it("stops the private broker a dev master killed with -9 left behind, at its next start", function()
    local dir = e2e.copy_app("spec/e2e/apps/basic")
    local env = { E2E_OUT = dir, E2E_SHARED_WORKERS = 1, MQTT_CLIENT_ID = "dev" .. dir:match("([^.]+)$"),
      ROUTEMQ_RUN_DIR = dir .. "/run" }
    local brokers = {}
    local function start(log)
      local pid = e2e.spawn(e2e.bin .. " dev --app " .. dir, log, env)
      local _, broker, up = e2e.dev_broker(log)
      brokers[#brokers + 1] = broker
      assert.truthy(up, e2e.read(log))
      return pid, broker
    end
    e2e.defer(function()
      for _, b in ipairs(brokers) do if e2e.alive(b) then e2e.kill(b, "KILL") end end
    end)
    local first, old_broker = start(dir .. "/dev1.log")
    e2e.defer(function() if e2e.alive(first) then e2e.kill(first, "KILL") end end)
    -- mosquitto gives up root for its own user, which clears the parent-death
    -- signal: killed with -9, the master leaves its broker running.
    e2e.kill(first, "KILL")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(first) end, 5))
    local second = start(dir .. "/dev2.log")
    e2e.defer(function() if e2e.alive(second) then e2e.kill(second, "KILL") end end)
    assert.matches("stopped the private mosquitto %(pid " .. old_broker .. "%) a previous routemq dev left running",
      e2e.read(dir .. "/dev2.log"))
    assert.truthy(e2e.wait_for(function() return not e2e.alive(old_broker) end, 5), "the old broker still runs")
    e2e.kill(second, "TERM")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(second) end, 10))
  end)
end)
