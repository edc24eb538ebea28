-- End to end: the scale-out settings and commands (docs/deployment.md) on one host.
local e2e = require("spec.helpers.e2e")

local APP = "spec/e2e/apps/basic"

local function run_with(env)
  local prefix = ""
  for k, v in pairs(env) do prefix = prefix .. k .. "=" .. e2e.quote(v) .. " " end
  return e2e.sh(prefix .. e2e.bin .. " run --app " .. APP .. " 2>&1; echo rc=$?")
end

describe("scale-out settings", function()
  it("reject bad values with an error naming the variable", function()
    local out = run_with({ MQTT_CONNECT_TIMEOUT = "soon" })
    assert.matches("MQTT_CONNECT_TIMEOUT: 'soon' is not a number of seconds >= 0.1", out)
    assert.matches("rc=1", out)
    out = run_with({ ROUTEMQ_STOP_SESSIONS = "sometimes" })
    assert.matches("ROUTEMQ_STOP_SESSIONS: 'sometimes' is not auto, keep or end", out)
    assert.matches("rc=1", out)
    out = run_with({ ROUTEMQ_ADOPT_AFTER = "400" })
    assert.matches("ROUTEMQ_ADOPT_AFTER: 400 s must be below MQTT_SESSION_EXPIRY %(300 s%)", out)
    assert.matches("rc=1", out)
    out = run_with({ ROUTEMQ_PRESENCE = "maybe" })
    assert.matches("ROUTEMQ_PRESENCE: 'maybe' is not a boolean %(true or false%)", out)
    assert.matches("rc=1", out)
  end)

  it("ROUTEMQ_PRESENCE=false: no presence connection, and the workers start all the same", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local r = e2e.routemq(b, APP, "run", { E2E_SHARED_WORKERS = 1, ROUTEMQ_PRESENCE = "false" })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s/run %s status --cluster --app %s 2>&1", r.dir, e2e.bin, APP))
    assert.matches("%(presence not connected%)", out)
    -- Nothing retained under the group's presence topic.
    local records = e2e.sh(string.format("mosquitto_sub -p %d -t 'routemq/presence/#' -v -W 1 2>/dev/null", b.port))
    assert.equal("", records)
  end)
end)

describe("routemq stop --keep-sessions | --end-sessions", function()
  it("overrides ROUTEMQ_STOP_SESSIONS for one stop; status --cluster shows the group", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local port = e2e.free_port()
    local shared = { MQTT_CLIENT_ID = "cli", MQTT_GROUP_NAME = "cli" .. b.port, E2E_SHARED_WORKERS = 1 }
    local function env(instance, extra)
      local e = { ROUTEMQ_INSTANCE = instance }
      for k, v in pairs(shared) do e[k] = v end
      for k, v in pairs(extra or {}) do e[k] = v end
      return e
    end
    local a = e2e.routemq(b, APP, "run", env("one"))
    local c = e2e.routemq(b, APP, "run", env("two", { ROUTEMQ_HTTP = "127.0.0.1:" .. port }))
    assert.truthy(e2e.wait_for(function() return a.ready(1) and c.ready(1) end, 15))
    local ctl = function(r, args)
      return e2e.sh("ROUTEMQ_RUN_DIR=" .. r.dir .. "/run " .. e2e.bin .. " " .. args .. " --app " .. APP .. " 2>&1")
    end
    -- Both presence records are in once the cluster status lists both.
    local cluster
    e2e.wait_for(function()
      cluster = ctl(c, "status --cluster")
      return cluster:find("cli%-one%s+%S+%s+%d+%s+running") and cluster:find("cli%-two%s+%S+%s+%d+%s+running")
    end, 10)
    assert.matches("cli%-one%s+%S+%s+" .. a.pid .. "%s+running", cluster)
    assert.matches("cli%-two%s+%S+%s+" .. c.pid .. "%s+running", cluster)
    -- Another instance serves the routes, yet this stop keeps the sessions.
    ctl(a, "stop --keep-sessions")
    assert.matches("stop: keeping the sessions %(routemq stop %-%-keep%-sessions%)", e2e.read(a.log))
    assert.truthy(e2e.wait_for(function() return ctl(c, "status --cluster"):find("cli%-one%s+%S+%s+%d+%s+stopped") end,
      5), ctl(c, "status --cluster --json"))
    local json = e2e.sh("curl -s http://127.0.0.1:" .. port .. "/status?cluster=1")
    assert.matches('"instance":"cli%-one"[^}]*"state":"stopped","sessions":"kept"', json)
    -- The last instance, yet this stop hands its sessions over.
    ctl(c, "stop --end-sessions")
    assert.matches("stop: ending the sessions %(routemq stop %-%-end%-sessions%)", e2e.read(c.log))
    local records = e2e.sh("mosquitto_sub -p " .. b.port .. " -t 'routemq/presence/#' -W 1 -v 2>/dev/null")
    assert.matches("cli%-one", records)
    assert.is_nil(records:find("cli%-two"), records)
  end)
end)

describe("a lost connection that worked", function()
  it("is retried within 100 ms, then with a backoff from 100 ms", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local r = e2e.routemq(b, APP, "run", { E2E_SHARED_WORKERS = 1, MQTT_RETRY_MIN_DELAY = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15))
    -- A connection that worked (lived 5 s, SHORT_CONNECTION_NS) gets the fast
    -- retry: its age counts from its "connected to" line, written after the
    -- worker took the time of the connection.
    local since = e2e.log_time(e2e.read(r.log):match("[^\n]*connected to [^\n]*"))
    assert.truthy(e2e.wait_for(function() return e2e.now() - since > 5.05 end, 10, 0.01))
    b.stop()
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("cannot connect") end, 5))
    local log = e2e.read(r.log)
    local d = tonumber(log:match("lost the connection to 127%.0%.0%.1:" .. b.port
      .. ": The connection was lost; reconnecting in ([%d.]+) s"))
    assert.truthy(d and d <= 0.1, log)
    assert.matches("cannot connect to 127%.0%.0%.1:" .. b.port .. ": Connection refused; retrying in 0%.1 s", log)
  end)
end)
