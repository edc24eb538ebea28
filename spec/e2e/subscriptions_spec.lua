-- End to end against a real mosquitto (issue 18): a route keeps its identity
-- across deploys (its MQTT 5 subscription identifier comes from its
-- subscription, not its position), retained messages are handled once per
-- subscription (route option `retained`), and a subscription the broker
-- refuses makes the slot not ready, with the route and the reason in /ready,
-- `routemq status` and the log.
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson")

local HEAD = 'local router = require("routemq.router")\nlocal C = require("app.controllers.record")\n'

--- An application directory with the test record controller and the given
-- router files ({ ["m.lua"] = "router.on(...)" }, HEAD prepended).
local function app_dir(routers)
  local dir = e2e.tmpdir()
  e2e.sh(string.format("mkdir -p %s/app/routers %s/app/controllers && "
    .. "cp %s/spec/e2e/apps/basic/app/controllers/record.lua %s/app/controllers/", dir, dir, e2e.root, dir))
  for name, text in pairs(routers) do e2e.write(dir .. "/app/routers/" .. name, HEAD .. text .. "\n") end
  return dir
end

--- The environment of one instance (client ids, share group, run directory,
-- records) kept over several starts, and the directory its records go to.
local function identity(extra)
  local dir = e2e.tmpdir()
  local id = dir:match("([^.]+)$")
  local env = { MQTT_CLIENT_ID = "s" .. id, MQTT_GROUP_NAME = "g" .. id, ROUTEMQ_RUN_DIR = dir .. "/run",
    E2E_OUT = dir }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env, dir
end

--- `routemq <args>` on the run directory of env; exit code and output.
local function ctl(env, args, app)
  local out = e2e.sh(string.format("cd %s && ROUTEMQ_RUN_DIR=%s %s %s --app %s 2>&1; echo rc=$?", e2e.root,
    env.ROUTEMQ_RUN_DIR, e2e.bin, args, app))
  return tonumber(out:match("rc=(%d+)%s*$")), out
end

--- Records under dir: how many per route pattern.
local function by_route(dir)
  local n = {}
  for _, rec in ipairs((e2e.records(dir))) do n[rec.route] = (n[rec.route] or 0) + 1 end
  return n
end

local function count(dir, route) return by_route(dir)[route] or 0 end

--- Lines of the log that match pattern.
local function log_count(r, pattern)
  local _, n = e2e.read(r.log):gsub(pattern, "")
  return n
end

describe("a route keeps its identity across deploys", function()
  local N = 5000

  for _, protocol in ipairs({ "5", "3.1.1" }) do
    it("handles every message queued while it was stopped after a router file that sorts first was added (MQTT "
      .. protocol .. ")", function()
      local b = e2e.broker()
      local app = app_dir({ ["m.lua"] = 'router.on("in/{n}", C.count, { qos = 1 })' })
      local env, out = identity({ MQTT_PROTOCOL = protocol })
      local r1 = e2e.routemq(b, app, "run", env)
      local r2
      e2e.defer(function() if r2 then r2.stop() end; r1.stop(); b.stop() end)
      assert.truthy(e2e.wait_for(function() return r1.ready(1) end, 15), e2e.read(r1.log))
      assert.equal(0, r1.stop())
      assert.matches("rc=0", e2e.publish_lines(b.port, "in/1", e2e.seq(1, N), 1))
      -- The deploy: a router file that sorts before m.lua, so in/{n} is no
      -- longer the first route.
      e2e.write(app .. "/app/routers/a.lua", HEAD .. 'router.on("aaa/{n}", C.count, { qos = 1 })\n')
      r2 = e2e.routemq(b, app, "run", env)
      assert.truthy(e2e.wait_for(function() return r2.ready(1) end, 15), e2e.read(r2.log))
      e2e.settle(out, N, 10)
      local lost, dups = e2e.tally(out, N)
      print(string.format("\n  deploy with %d QoS 1 messages queued (MQTT %s): %d handled, %d lost, %d twice", N,
        protocol, #(e2e.records(out)), lost, dups))
      assert.equal(0, lost, e2e.read(r2.log))
      assert.equal(0, dups)
      assert.equal(N, count(out, "in/{n}"))
      assert.equal(0, r2.stop())
    end)
  end

  it("loses nothing when the deploy is a reload under a steady QoS 1 load", function()
    local b = e2e.broker()
    local app = app_dir({ ["m.lua"] = 'router.on("in/{n}", C.count, { qos = 1 })' })
    local env, out = identity()
    local r = e2e.routemq(b, app, "run", env)
    local stop, sent = out .. "/stop", out .. "/sent"
    local pub
    e2e.defer(function()
      e2e.write(stop, "")
      if pub then e2e.wait_for(function() return not e2e.alive(pub) end, 10) end
      r.stop()
      b.stop()
    end)
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    -- About 1,000 messages a second (100 every 0.1 s, payloads 1, 2, 3 ...)
    -- until the file stop exists; sent holds how many were published.
    pub = e2e.spawn("sh -c " .. e2e.quote(string.format(
      "i=0; while [ ! -e %s ]; do seq $((i+1)) $((i+100)) | mosquitto_pub -p %d -t in/1 -q 1 -l || exit 1; "
      .. "i=$((i+100)); echo $i > %s.tmp && mv %s.tmp %s; sleep 0.1; done", stop, b.port, sent, sent, sent)),
      out .. "/pub.log")
    assert.truthy(e2e.wait_for(function() return count(out, "in/{n}") >= 1000 end, 30), e2e.read(r.log))
    -- The new generation's worker waits in init (before it connects) until
    -- the file go exists: the broker queues in/1 messages for the slot's
    -- session meanwhile, for the subscription the old generation made.
    e2e.write(app .. "/app/routers/a.lua", HEAD .. 'router.on("aaa/{n}", C.count, { qos = 1 })\n'
      .. 'router.init(function()\n'
      .. '  while not io.open(os.getenv("E2E_OUT") .. "/go") do require("cqueues").sleep(0.02) end\n'
      .. 'end)\n')
    local reload = e2e.spawn(string.format("env ROUTEMQ_RUN_DIR=%s %s reload --app %s", env.ROUTEMQ_RUN_DIR,
      e2e.bin, app), out .. "/reload.log")
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("worker 0 gen 2 started") end, 30),
      e2e.read(r.log))
    local before = tonumber(e2e.read(sent):match("%d+"))
    assert.truthy(e2e.wait_for(function() return tonumber(e2e.read(sent):match("%d+")) >= before + 300 end, 30))
    local offline = tonumber(e2e.read(sent):match("%d+")) - before
    e2e.write(out .. "/go", "")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(reload) end, 30))
    assert.matches("reloaded: generation 2", e2e.read(out .. "/reload.log"))
    -- The load goes on through the reload and after it.
    local at = count(out, "in/{n}")
    assert.truthy(e2e.wait_for(function() return count(out, "in/{n}") >= at + 1000 end, 30), e2e.read(r.log))
    assert.truthy(e2e.alive(pub), "the publisher stopped early: " .. e2e.read(out .. "/pub.log"))
    e2e.write(stop, "")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(pub) end, 10))
    local n = tonumber(e2e.read(sent):match("%d+"))
    e2e.settle(out, n, 10)
    local lost, dups = e2e.tally(out, n)
    print(string.format("\n  reload adding a router file under ~1,000 msg/s, %d published while no worker was "
      .. "connected: %d published, %d lost, %d twice", offline, n, lost, dups))
    if lost > 0 then
      local _, seen = e2e.records(out)
      local missing = {}
      for i = 1, n do if not seen[tostring(i)] then missing[#missing + 1] = i end end
      print("  missing: " .. table.concat(missing, " ", 1, math.min(#missing, 20)))
    end
    assert.equal(0, lost, e2e.read(r.log))
  end)
end)

describe("overlapping routes across a deploy", function()
  local N = 1000

  --- Starts app with env, publishes payloads from..to to topic while it is
  -- stopped, applies change() to the app, starts it again; returns the records
  -- directory and the running instance.
  local function deploy(b, app, env, topic, from, to, change)
    local r1 = e2e.routemq(b, app, "run", env)
    assert.truthy(e2e.wait_for(function() return r1.ready(1) end, 15), e2e.read(r1.log))
    assert.equal(0, r1.stop())
    assert.matches("rc=0", e2e.publish_lines(b.port, topic, e2e.seq(from, to), 1))
    change()
    local r2 = e2e.routemq(b, app, "run", env)
    assert.truthy(e2e.wait_for(function() return r2.ready(1) end, 15), e2e.read(r2.log))
    return r2
  end

  it("a more specific route added while messages were queued handles each of them once, and what follows", function()
    local b = e2e.broker()
    e2e.defer(function() b.stop() end)
    local app = app_dir({ ["m.lua"] = 'router.on("sensors/#", C.count, { qos = 1 })' })
    local env, out = identity()
    local r = deploy(b, app, env, "sensors/1/data", 1, N, function()
      e2e.write(app .. "/app/routers/a.lua", HEAD .. 'router.on("sensors/{id}/data", C.count, { qos = 1 })\n')
    end)
    assert.matches("rc=0", e2e.publish_lines(b.port, "sensors/1/data", e2e.seq(N + 1, 2 * N), 1))
    e2e.settle(out, 2 * N, 10)
    local lost, dups = e2e.tally(out, 2 * N)
    print(string.format("\n  more specific route added, %d queued then %d live: %d lost, %d twice", N, N, lost, dups))
    assert.equal(0, lost, e2e.read(r.log))
    -- The first live message's copy for sensors/# may come before the new
    -- route's own first copy: that one message may be handled twice.
    assert.is_true(dups <= 1, dups .. " twice")
    assert.equal(0, count(out, "sensors/#"))
  end)

  it("a more specific route removed while messages were queued: each handled once by the route that is left", function()
    local b = e2e.broker()
    e2e.defer(function() b.stop() end)
    local app = app_dir({ ["m.lua"] = 'router.on("sensors/#", C.count, { qos = 1 })',
      ["a.lua"] = 'router.on("sensors/{id}/data", C.count, { qos = 1 })' })
    local env, out = identity()
    local r = deploy(b, app, env, "sensors/1/data", 1, N, function() os.remove(app .. "/app/routers/a.lua") end)
    e2e.settle(out, N, 10)
    local lost, dups = e2e.tally(out, N)
    print(string.format("\n  more specific route removed, %d queued: %d lost, %d twice", N, lost, dups))
    assert.equal(0, lost, e2e.read(r.log))
    assert.equal(0, dups)
    assert.equal(N, count(out, "sensors/#"))
  end)
end)

describe("retained messages", function()
  -- "none" first: its subscription (and so its retained messages, had the
  -- broker sent any) comes before the others'.
  local ROUTES = 'router.on("none/{id}", C.count, { retained = "none" })\n'
    .. 'router.on("always/{id}", C.count, { retained = "always" })\n'
    .. 'router.on("state/{id}", C.count)\n'
    .. 'router.on("mark/{id}", C.count)'

  --- Waits until a message published now to mark/<tag> was handled: what the
  -- broker sent on the last subscribe came before it.
  local function marker(b, out, tag)
    e2e.publish(b.port, "mark/" .. tag, tag)
    assert.truthy(e2e.wait_for(function()
      for _, rec in ipairs((e2e.records(out))) do if rec.payload == tag then return true end end
    end, 15), "marker " .. tag .. " not handled")
  end

  it("are handled once with the default retained = \"new\", at every subscribe with \"always\", never with \"none\"",
    function()
      local b = e2e.broker()
      for i = 1, 50 do
        for _, t in ipairs({ "state", "always", "none" }) do
          assert.equal("", e2e.publish(b.port, t .. "/" .. i, "s" .. i, "-r -q 1"))
        end
      end
      local app = app_dir({ ["r.lua"] = ROUTES })
      local env, out = identity()
      local r = e2e.routemq(b, app, "run", env)
      e2e.defer(function() r.stop(); b.stop() end)
      assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
      assert.truthy(e2e.wait_for(function()
        return count(out, "state/{id}") >= 50 and count(out, "always/{id}") >= 50
      end, 15), e2e.read(r.log))
      marker(b, out, "m0")
      local start = by_route(out)
      for k = 1, 2 do
        local rc, said = ctl(env, "reload", app)
        assert.equal(0, rc, said)
        assert.truthy(e2e.wait_for(function()
          return e2e.read(r.log):find("reload: generation " .. (k + 1) .. " done")
        end, 30), e2e.read(r.log))
        assert.truthy(e2e.wait_for(function() return r.ready(k + 1) end, 15), e2e.read(r.log))
        marker(b, out, "m" .. k)
      end
      local pid = r.workers()[1]
      e2e.kill(pid, "KILL")
      assert.truthy(e2e.wait_for(function() return r.ready(4) end, 15), e2e.read(r.log))
      marker(b, out, "m3")
      local n = by_route(out)
      print(string.format("\n  50 retained messages per route; at start: new %d, always %d, none %d; after 2 reloads "
        .. "and a kill -9: new %d, always %d, none %d", start["state/{id}"] or 0, start["always/{id}"] or 0,
        start["none/{id}"] or 0, n["state/{id}"] or 0, n["always/{id}"] or 0, n["none/{id}"] or 0))
      assert.equal(50, start["state/{id}"])
      assert.equal(50, n["state/{id}"])
      assert.equal(200, n["always/{id}"])
      assert.is_nil(n["none/{id}"])
    end)

  it("on overlapping routes are handled once, by the most specific route, whichever subscribes first", function()
    local b = e2e.broker()
    for i = 1, 20 do assert.equal("", e2e.publish(b.port, "ov/" .. i .. "/x", "o" .. i, "-r -q 1")) end
    -- The less specific route subscribes first: its retained copies come
    -- before the more specific route's own.
    local app = app_dir({ ["r.lua"] = 'router.on("ov/#", C.count)\nrouter.on("ov/{id}/x", C.count)\n'
      .. 'router.on("mark/{id}", C.count)' })
    local env, out = identity()
    local r = e2e.routemq(b, app, "run", env)
    e2e.defer(function() r.stop(); b.stop() end)
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    marker(b, out, "m0")
    local rc, said = ctl(env, "reload", app)
    assert.equal(0, rc, said)
    marker(b, out, "m1")
    local n = by_route(out)
    print(string.format("\n  20 retained messages on two overlapping routes, start and reload: %d by ov/{id}/x, "
      .. "%d by ov/#", n["ov/{id}/x"] or 0, n["ov/#"] or 0))
    assert.equal(20, n["ov/{id}/x"])
    assert.is_nil(n["ov/#"])
  end)

  it("with MQTT 3.1.1, the routes that cannot have retained = \"new\" or \"none\" are named once at start", function()
    local b = e2e.broker()
    local app = app_dir({ ["r.lua"] = ROUTES })
    local env = identity({ MQTT_PROTOCOL = "3.1.1" })
    local r = e2e.routemq(b, app, "run", env)
    e2e.defer(function() r.stop(); b.stop() end)
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    assert.equal(1, log_count(r, "MQTT 3%.1%.1 has no retain handling: routes 'none/{id}' %(\"none\"%), "
      .. "'state/{id}' %(\"new\"%), 'mark/{id}' %(\"new\"%) get the broker's retained messages at every subscribe %("
      .. "each worker start, reload and reconnect%), not as their retained option says; use MQTT_PROTOCOL=5, or "
      .. "retained = \"always\"\n"), e2e.read(r.log))
  end)

  it("rejects an unknown value naming the route, file and line", function()
    local app = app_dir({ ["r.lua"] = 'router.on("state/{id}", C.count, { retained = "once" })' })
    local out = e2e.sh(string.format("cd %s && %s check --app %s 2>&1; echo rc=$?", e2e.root, e2e.bin, app))
    assert.equal("app/routers/r.lua:3: option 'retained' of route 'state/{id}' must be 'new', 'always' "
      .. "or 'none', got 'once'\nrc=1\n", out)
  end)
end)

describe("a refused subscription", function()
  --- A mosquitto whose dynamic security plugin refuses subscriptions to
  -- forbidden/# (and allows the rest) to anonymous clients.
  local function refusing_broker()
    local dir = e2e.tmpdir()
    e2e.sh("chmod 0777 " .. dir)
    local port = e2e.free_port()
    -- Written as text: cjson makes {} of the empty lists the plugin wants as [].
    e2e.write(dir .. "/dynsec.json", [[
{ "clients": [], "groups": [{ "groupname": "anonymous", "roles": [{ "rolename": "app" }], "clients": [] }],
  "anonymousGroup": "anonymous",
  "roles": [{ "rolename": "app", "acls": [
    { "acltype": "subscribePattern", "topic": "forbidden/#", "priority": 10, "allow": false },
    { "acltype": "subscribePattern", "topic": "#", "allow": true } ] }],
  "defaultACLAccess": { "publishClientSend": true, "publishClientReceive": true, "subscribe": true,
    "unsubscribe": true } }
]])
    e2e.sh("chmod 0666 " .. dir .. "/dynsec.json")
    e2e.write(dir .. "/mosquitto.conf", string.format("listener %d 127.0.0.1\nallow_anonymous true\n"
      .. "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file %s/dynsec.json\n"
      .. "persistence false\nlog_type error\nlog_type warning\n", port, dir))
    local pid = e2e.spawn("/usr/sbin/mosquitto -c " .. dir .. "/mosquitto.conf", dir .. "/broker.log")
    local b = { port = port, pid = pid }
    function b.stop()
      if e2e.alive(pid) then e2e.kill(pid, "TERM"); e2e.wait_for(function() return not e2e.alive(pid) end, 5) end
    end
    assert.truthy(e2e.wait_for(function()
      return e2e.sh("mosquitto_pub -p " .. port .. " -t probe -n 2>&1; echo $?"):match("^0%s*$")
    end, 10), e2e.read(dir .. "/broker.log"))
    return b
  end

  local function http(port, path)
    local body = os.tmpname()
    local code = e2e.sh(string.format("curl -s -o %s -w '%%{http_code}' --max-time 5 http://127.0.0.1:%d%s", body, port,
      path))
    local text = e2e.read(body)
    os.remove(body)
    return tonumber(code), text
  end

  for _, case in ipairs({ { protocol = "5", reason = "Not authorized (0x87)" },
    { protocol = "3.1.1", reason = "Failure (0x80)" } }) do
    it("makes /ready, status and the log name the route and the reason (MQTT " .. case.protocol .. ")", function()
      local b = refusing_broker()
      local app = app_dir({ ["r.lua"] = 'router.on("ok/{n}", C.count, { qos = 1 })\n'
        .. 'router.on("forbidden/{n}", C.count, { qos = 1 })' })
      local port = e2e.free_port()
      local env, out = identity({ ROUTEMQ_HTTP = "127.0.0.1:" .. port, MQTT_PROTOCOL = case.protocol })
      local r = e2e.routemq(b, app, "run", env)
      e2e.defer(function() r.stop(); b.stop() end)
      local line = "the broker 127.0.0.1:" .. b.port .. " refused the subscription of route 'forbidden/{n}' "
        .. "(forbidden/+): " .. case.reason .. "; the slot is not ready"
      assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find(line, 1, true) end, 15), e2e.read(r.log))
      local why = "worker 0: the broker refused the subscription of route 'forbidden/{n}' (forbidden/+): "
        .. case.reason
      local code, body
      assert.truthy(e2e.wait_for(function()
        code, body = http(port, "/ready")
        return code == 503 and body == "not ready: " .. why .. "\n"
      end, 10), tostring(code) .. " " .. tostring(body))
      local rc, text = ctl(env, "status", app)
      assert.equal(0, rc, text)
      assert.truthy(text:find(why, 1, true), text)
      assert.truthy(text:find("\n%s*0%s+%d+%s+1%s+refused "), text)
      assert.truthy(text:find("\nslot 0: the broker refused the subscription of route 'forbidden/{n}' (forbidden/+): "
        .. case.reason .. "\n", 1, true), text)
      local rcj, json = ctl(env, "status --json", app)
      assert.equal(0, rcj, json)
      local s = cjson.decode((json:gsub("rc=%d+%s*$", "")))
      assert.is_false(s.ready)
      assert.equal(why, s.ready_reason)
      assert.equal("refused", s.slots[1].state)
      assert.same({ count = 1, route = "forbidden/{n}", subscription = "forbidden/+", reason = case.reason },
        s.slots[1].refused)
      -- The routes the broker granted are served.
      e2e.publish(b.port, "ok/1", "fine", "-q 1")
      assert.truthy(e2e.wait_for(function() return count(out, "ok/{n}") == 1 end, 10), e2e.read(r.log))
    end)
  end
end)
