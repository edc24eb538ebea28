-- End to end: the group trusts only itself (docs/deployment.md, "Security"; issue 24). Whoever may
-- publish under routemq/presence/ must not be able to make routemq take over
-- and end another client's session: records are signed with the cluster key
-- (or, without one, only the group's own client ids are adopted), an adopter
-- that meets a stranger's message leaves the session, and the run directory
-- is private.
local e2e = require("spec.helpers.e2e")
local netns = require("spec.helpers.netns")

local APP = "spec/e2e/apps/basic"
local NEW, OLD, OTHER = "key-new-0123456789abcdef", "key-old-0123456789abcdef", "key-unknown-0123456789ab"

local describe_netns = netns.available() and describe or pending

local function count(text, pattern)
  local _, n = text:gsub(pattern, "")
  return n
end

local function esc(s) return (s:gsub("%p", "%%%0")) end

local function hmac(key, file)
  return e2e.sh("openssl dgst -sha256 -hmac " .. e2e.quote(key) .. " -r < " .. file):match("^(%x+)")
end

--- body: a record without a MAC (ending with "}"), signed as docs/deployment.md
-- says, independently of routemq: HMAC-SHA256 of every byte before ,"mac":
-- one "<key id>:<hex>" per key, the key id the first 8 hex digits of the
-- HMAC of "routemq presence key id".
local function sign(body, ...)
  local prefix = body:sub(1, -2)
  local data, label = os.tmpname(), os.tmpname()
  e2e.write(data, prefix)
  e2e.write(label, "routemq presence key id")
  local macs = {}
  for _, key in ipairs({ ... }) do macs[#macs + 1] = hmac(key, label):sub(1, 8) .. ":" .. hmac(key, data) end
  os.remove(data)
  os.remove(label)
  return prefix .. ',"mac":"' .. table.concat(macs, ",") .. '"}'
end

--- Publishes payload retained at QoS 1 on topic, as any client could.
local function retain(b, topic, payload)
  local f = os.tmpname()
  e2e.write(f, payload)
  local out = e2e.sh(string.format("mosquitto_pub -h %s -p %d -q 1 -r -t %s -f %s 2>&1", b.host or "127.0.0.1",
    b.port, e2e.quote(topic), f))
  os.remove(f)
  return out
end

--- The retained record on topic, as published.
local function retained(b, topic)
  return e2e.sh(string.format("mosquitto_sub -h %s -p %d -t %s -C 1 -W 5 -N 2>/dev/null", b.host or "127.0.0.1",
    b.port, e2e.quote(topic)))
end

--- A record of a lost instance, as the issue's attacker writes it.
local function forged(instance, clients, extra)
  return string.format('{"instance":"%s","host":"nowhere","pid":1,"clients":[%s],%s"state":"lost",'
    .. '"sessions":"kept","since":%d}', instance, clients, extra or "", os.time() - 60)
end

--- A device with an MQTT 5 persistent session subscribed to <topic>/#, offline,
-- with 3 QoS 1 messages queued for it.
local function victim_session(b, id, topic)
  e2e.sh(string.format("mosquitto_sub -p %d -V mqttv5 -i %s -c -x 600 -q 1 -t %s -E", b.port, id,
    e2e.quote(topic .. "/#")))
  e2e.publish_lines(b.port, topic .. "/1", { "m1", "m2", "m3" }, 1)
end

--- The device comes back: what its session delivers (3 lines expected).
local function victim_reconnect(b, id, topic)
  return e2e.sh(string.format("mosquitto_sub -p %d -V mqttv5 -i %s -c -x 600 -q 1 -t %s -C 3 -W 10", b.port, id,
    e2e.quote(topic .. "/#")))
end

--- Makes "no adoption starts" certain instead of timed: retains, after the
-- records under test, the record of a lost instance that must be adopted
-- (signed with `key` when given), and waits until r's master starts adopting
-- it. The master checks every orphan once a second against the time it saw
-- its record: anything seen before the sentinel that it would adopt, it has
-- adopted by then.
local function sentinel(b, r, instance, client, key, group)
  local record = forged(instance, '"' .. client .. '"')
  retain(b, "routemq/presence/" .. (group or "gtrust") .. "/" .. instance, key and sign(record, key) or record)
  assert.truthy(e2e.wait_for(function()
    return e2e.read(r.log):find("adopting the sessions of instance " .. esc(instance))
  end, 20), e2e.read(r.log))
end

--- The log's lines about adoptions (started, or a session adopted) that are
-- not about instance `except` (the sentinel).
local function adoptions(log, except)
  local lines = {}
  for line in log:gmatch("[^\n]+") do
    if (line:find("%] adopting") or line:find("adopted the session")) and not line:find(except, 1, true) then
      lines[#lines + 1] = line
    end
  end
  return table.concat(lines, "\n")
end

local function base_env(extra)
  local env = { MQTT_CLIENT_ID = "trust", MQTT_GROUP_NAME = "gtrust", ROUTEMQ_ADOPT_AFTER = 2, E2E_SHARED_WORKERS = 1,
    ROUTEMQ_INSTANCE = "a" }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

local function started(b, env, app)
  local r = e2e.routemq(b, app or APP, "run", env)
  assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
  return r
end

describe("a forged presence record (any client publishes under routemq/presence/)", function()
  it("without a key: not adopted, the victim keeps its 3 messages", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    victim_session(b, "victim-device", "victim")
    local r = started(b, base_env())
    retain(b, "routemq/presence/gtrust/evil", forged("evil", '"victim-device"'))
    -- Named like the group's, but for a route this application does not serve.
    retain(b, "routemq/presence/gtrust/trust-x", forged("trust-x", '"trust-x-0"',
      '"shared_routes":["$share/gtrust/elsewhere/+"],'))
    assert.truthy(e2e.wait_for(function() return count(e2e.read(r.log), "not adopting") >= 2 end, 15), e2e.read(r.log))
    assert.equal("m1\nm2\nm3\n", victim_reconnect(b, "victim-device", "victim"))
    local log = e2e.read(r.log)
    assert.matches("presence: no ROUTEMQ_CLUSTER_KEY, so adoption trusts the broker's ACLs on "
      .. "routemq/presence/gtrust/%+", log)
    assert.matches("not adopting the sessions of instance evil %(client id victim%-device is not one of the group's: "
      .. "trust%-<instance>%-<slot>%)", log)
    assert.matches("not adopting the sessions of instance trust%-x %(route %$share/gtrust/elsewhere/%+ is not one "
      .. "this application serves%)", log)
    assert.is_nil(log:find("%] adopting"), log)
    assert.is_nil(log:find("adopted the session"), log)
    assert.equal(1, count(log, "not adopting the sessions of instance evil"))
  end)

  it("with a key: ignored as unsigned, the victim keeps its 3 messages", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    victim_session(b, "victim-device", "victim")
    local r = started(b, base_env({ ROUTEMQ_CLUSTER_KEY = NEW }))
    retain(b, "routemq/presence/gtrust/evil", forged("evil", '"victim-device"'))
    assert.truthy(e2e.wait_for(function()
      return e2e.read(r.log):find("ignoring the record on routemq/presence/gtrust/evil: it is not signed")
    end, 15), e2e.read(r.log))
    sentinel(b, r, "trust-sentinel", "trust-sentinel-0", NEW)
    assert.equal("m1\nm2\nm3\n", victim_reconnect(b, "victim-device", "victim"))
    local log = e2e.read(r.log)
    assert.matches("presence: records are signed with key id %x+", log)
    assert.equal("", adoptions(log, "trust-sentinel"))
  end)

  it("with a key: a wrong key, a record altered after signing, a replayed record of a live instance: "
    .. "ignored, logged once", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    -- Instance b stops keeping its sessions: its signed "stopped" record is the one to replay.
    local env_b = base_env({ ROUTEMQ_CLUSTER_KEY = NEW, ROUTEMQ_INSTANCE = "b", ROUTEMQ_STOP_SESSIONS = "keep" })
    local b1 = started(b, env_b)
    assert.equal(0, b1.stop())
    local topic_b = "routemq/presence/gtrust/trust-b"
    local old = retained(b, topic_b)
    assert.matches('"state":"stopped","sessions":"kept"', old)
    local b2 = started(b, env_b)
    assert.truthy(e2e.wait_for(function() return retained(b, topic_b):find('"state":"running"') end, 10))
    local a = started(b, base_env({ ROUTEMQ_CLUSTER_KEY = NEW }))
    local wrong = sign(forged("trust-w", '"trust-w-0"'), OTHER)
    local altered = sign(forged("trust-x", '"trust-x-0"'), NEW):gsub('"pid":1', '"pid":2')
    for _ = 1, 2 do
      retain(b, "routemq/presence/gtrust/trust-w", wrong)
      retain(b, "routemq/presence/gtrust/trust-x", altered)
      retain(b, topic_b, old)
    end
    local lines = {
      "ignoring the record on routemq/presence/gtrust/trust%-w: unknown key id %(key id %x+; ours: %x+%)",
      "ignoring the record on routemq/presence/gtrust/trust%-x: wrong MAC",
      "ignoring the record on routemq/presence/gtrust/trust%-b: a replay: seq %d+ is older than %d+, seen already",
    }
    assert.truthy(e2e.wait_for(function()
      local log = e2e.read(a.log)
      for _, l in ipairs(lines) do if not log:find(l) then return false end end
      return true
    end, 15), e2e.read(a.log))
    sentinel(b, a, "trust-sentinel", "trust-sentinel-0", NEW)
    local log = e2e.read(a.log)
    for _, l in ipairs(lines) do assert.equal(1, count(log, l), l .. "\n" .. log) end
    assert.equal("", adoptions(log, "trust-sentinel"))
    -- The live instance put its own record back.
    assert.matches('"state":"running"', retained(b, topic_b))
    assert.truthy(e2e.alive(b2.pid))
    local cluster = e2e.sh("ROUTEMQ_RUN_DIR=" .. a.dir .. "/run " .. e2e.bin .. " status --cluster --app " .. APP)
    assert.matches("trust%-b +[^\n]* running", cluster)
    assert.is_nil(cluster:find("trust%-w"), cluster)
  end)
end)

describe("an adoption worker that meets a stranger's message", function()
  it("leaves the session untouched, reports the record and never tries it again", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    -- A client named like the group's slots, with a subscription of its own.
    victim_session(b, "trust-evil-0", "victim")
    local port = e2e.free_port()
    local r = started(b, base_env({ ROUTEMQ_HTTP = "127.0.0.1:" .. port }))
    local own = retained(b, "routemq/presence/gtrust/trust-a")
    local shared = assert(own:match('"shared_routes":%[(.-)%]'))
    retain(b, "routemq/presence/gtrust/trust-evil", forged("trust-evil", '"trust-evil-0"',
      '"shared_routes":[' .. shared .. '],'))
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("suspicious presence record") end, 20),
      e2e.read(r.log))
    assert.equal("m1\nm2\nm3\n", victim_reconnect(b, "trust-evil-0", "victim"))
    -- A second attempt at trust-evil would have started by the sentinel's.
    sentinel(b, r, "trust-sentinel", "trust-sentinel-0")
    local log = e2e.read(r.log)
    assert.matches("leaving the session of trust%-evil%-0 untouched: it holds a message on victim/1, which none of "
      .. "the %d+ routes its presence record declares matches", log)
    assert.matches("suspicious presence record of instance trust%-evil: the session of trust%-evil%-0 holds messages "
      .. "outside the routes the record declares; it is left untouched and the record is not tried again", log)
    assert.equal(1, count(log, "adopting the sessions of instance trust%-evil"))
    assert.is_nil(adoptions(log, "trust-sentinel"):find("adopted the session"), log)
    local metrics = e2e.sh("curl -s --max-time 5 http://127.0.0.1:" .. port .. "/metrics")
    assert.matches('routemq_adoptions_refused_total{reason="unexpected_message"} 1\n', metrics)
    assert.matches('routemq_adoptions_refused_total{reason="client_id"} 0\n', metrics)
  end)
end)

describe("an adoption after a reload that added a route", function()
  it("handles that route's messages: the will declares the routes of the last reload", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local dir = e2e.copy_app(APP)
    local a = started(b, base_env(), dir)
    local bb = started(b, base_env({ ROUTEMQ_INSTANCE = "b" }), dir)
    local topic_b = "routemq/presence/gtrust/trust-b"
    local seq0 = tonumber(retained(b, topic_b):match('"seq":(%d+)'))
    e2e.write(dir .. "/app/routers/extra.lua", 'local router = require("routemq.router")\n'
      .. 'local C = require("app.controllers.record")\n'
      .. 'router.on("extra/{n}", C.count, { shared = true, worker_count = 1, qos = 1 })\n')
    for _, r in ipairs({ a, bb }) do
      assert.matches("rc=0", e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s/run %s reload --app %s 2>&1; echo rc=$?", r.dir,
        e2e.bin, dir)))
    end
    -- b's record lists the new route, from a new presence connection: its will does too.
    assert.truthy(e2e.wait_for(function()
      local rec = retained(b, topic_b)
      local seq = tonumber(rec:match('"seq":(%d+)') or "0")
      return rec:find("extra/+", 1, true) and math.floor(seq / 1000) > math.floor(seq0 / 1000)
    end, 15), retained(b, topic_b))
    local kids = e2e.sh("pgrep -P " .. bb.pid)
    e2e.kill(bb.pid, "KILL")
    for pid in kids:gmatch("%d+") do e2e.kill(tonumber(pid), "KILL") end
    local n = 200
    e2e.publish_lines(b.port, "extra/1", e2e.seq(1, n), 1)
    assert.truthy(e2e.wait_for(function()
      return e2e.read(a.log):find("the sessions of instance trust%-b are adopted and ended")
    end, 20), e2e.read(a.log))
    e2e.settle({ a.dir, bb.dir }, n, 3)
    local lost, dups = e2e.tally({ a.dir, bb.dir }, n)
    local log = e2e.read(a.log)
    assert.matches("adopted the session of trust%-b%-0: %d+ messages? handled, session ended", log)
    assert.is_nil(log:find("suspicious"), log)
    assert.equal(0, lost)
    assert.equal(0, dups)
  end)
end)

describe("the cluster key", function()
  it("never shows in the log, status, the process list or /proc/<pid>/environ; bad keys are refused", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local keyfile = e2e.tmpdir() .. "/key"
    e2e.write(keyfile, OLD .. "\n")
    local r = started(b, base_env({ ROUTEMQ_CLUSTER_KEY = NEW, ROUTEMQ_CLUSTER_KEY_PREVIOUS = OLD }))
    local seen = e2e.read(r.log) .. e2e.sh("ROUTEMQ_RUN_DIR=" .. r.dir .. "/run " .. e2e.bin .. " status --json --app "
      .. APP) .. e2e.sh("ps e -ww -o args= -p " .. r.pid .. " --ppid " .. r.pid)
    for pid in e2e.sh("pgrep -P " .. r.pid):gmatch("%d+") do seen = seen .. e2e.read("/proc/" .. pid .. "/environ") end
    seen = seen .. e2e.read("/proc/" .. r.pid .. "/environ")
    assert.matches("signed with key id %x+, key id %x+", seen)
    assert.is_nil(seen:find(NEW, 1, true))
    assert.is_nil(seen:find(OLD, 1, true))
    -- From a file: the same key id as from the variable.
    local r2 = started(b, base_env({ ROUTEMQ_CLUSTER_KEY_FILE = keyfile, ROUTEMQ_INSTANCE = "f" }))
    local kid = e2e.read(r.log):match("key id %x+, key id (%x+)")
    assert.matches("signed with key id " .. kid .. ";", e2e.read(r2.log))
    local check = function(env)
      return e2e.sh(string.format("env %s %s check --app %s 2>&1; echo rc=$?", env, e2e.bin, APP))
    end
    assert.matches("ROUTEMQ_CLUSTER_KEY: the key is shorter than 16 bytes; make one with `openssl rand %-hex 32`\nrc=1",
      check("ROUTEMQ_CLUSTER_KEY=short"))
    assert.matches("ROUTEMQ_CLUSTER_KEY_PREVIOUS: set without ROUTEMQ_CLUSTER_KEY",
      check("ROUTEMQ_CLUSTER_KEY_PREVIOUS=" .. OLD))
    assert.matches("ROUTEMQ_CLUSTER_KEY: set either ROUTEMQ_CLUSTER_KEY or ROUTEMQ_CLUSTER_KEY_FILE, not both",
      check("ROUTEMQ_CLUSTER_KEY=" .. NEW .. " ROUTEMQ_CLUSTER_KEY_FILE=" .. keyfile))
    assert.matches("ROUTEMQ_INSTANCE: 'bad[^']*' cannot be a presence record's instance: it reads back as",
      check("ROUTEMQ_INSTANCE=\"$(printf 'bad\\377')\""))
  end)
end)

describe("the run directory", function()
  it("is refused at start when others may enter it, with its path and mode; its files are 0600", function()
    local dir = e2e.tmpdir() .. "/run"
    e2e.sh("mkdir -m 0755 " .. dir)
    local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s MQTT_BROKER=127.0.0.1 MQTT_PORT=1 timeout 10 %s run --app %s "
      .. "2>&1; echo rc=$?", dir, e2e.bin, APP))
    assert.matches("routemq: the run directory " .. esc(dir) .. " has mode 0755: it holds the control socket and files "
      .. "about messages, so it must be 0700 %(other users may not enter it%); fix it with `chmod 0700 "
      .. esc(dir) .. "`\nrc=1", out)
    assert.equal("", e2e.sh("ls -A " .. dir))
    -- A directory it makes itself, and every file in it.
    local b = e2e.broker()
    e2e.defer(b.stop)
    local r = started(b, base_env())
    local modes = e2e.sh("stat -c '%a %n' " .. r.dir .. "/run " .. r.dir .. "/run/*")
    assert.matches("^700 ", modes)
    assert.matches("600 [^\n]*/control%.sock", modes)
    assert.matches("600 [^\n]*/routemq%.pid", modes)
    assert.is_nil(modes:find("\n[0-57]%d%d "), modes)
    assert.is_nil(modes:find("\n6[1-7]%d "), modes)
  end)
end)

describe_netns("key rotation over hosts", function()
  it("hosts with keys (new, old) and (old) adopt each other; a host with an unknown key is ignored", function()
    local net = netns.new()
    local b = net.broker()
    local env = { E2E_SHARED_WORKERS = 1, MQTT_CLIENT_ID = "t" .. net.prefix, MQTT_GROUP_NAME = "g" .. net.prefix,
      ROUTEMQ_ADOPT_AFTER = 2, MQTT_KEEPALIVE = 5 }
    local function with(keys)
      local e = {}
      for k, v in pairs(env) do e[k] = v end
      e.ROUTEMQ_CLUSTER_KEY, e.ROUTEMQ_CLUSTER_KEY_PREVIOUS = keys[1], keys[2] or false
      return e
    end
    local id = "t" .. net.prefix
    local ha, hb, hx = net.host("A"), net.host("B"), net.host("X")
    local a = net.routemq(ha, b, APP, "run", with({ NEW, OLD }))
    local bb = net.routemq(hb, b, APP, "run", with({ OLD }))
    local x = net.routemq(hx, b, APP, "run", with({ OTHER }))
    assert.truthy(e2e.wait_for(function() return a.ready(1) and bb.ready(1) and x.ready(1) end, 15))
    -- (old) dies: (new, old) verifies its will with the previous key and adopts.
    bb.kill()
    assert.truthy(e2e.wait_for(function()
      return e2e.read(a.log):find("the sessions of instance " .. esc(id) .. "%-hostB are adopted and ended")
    end, 20), e2e.read(a.log))
    assert.matches("adopted the session of " .. esc(id) .. "%-hostB%-0: %d+ messages? handled, session ended",
      e2e.read(a.log))
    -- (old) back; then (new, old) dies: (old) reads its MAC by the old key and adopts.
    local bb2 = net.routemq(hb, b, APP, "run", with({ OLD }))
    assert.truthy(e2e.wait_for(function() return bb2.ready(1) end, 15))
    a.kill()
    assert.truthy(e2e.wait_for(function()
      return e2e.read(bb2.log):find("the sessions of instance " .. esc(id) .. "%-hostA are adopted and ended")
    end, 20), e2e.read(bb2.log))
    -- The host with an unknown key: its records, its will too, are ignored.
    x.kill()
    -- X's will is out (the broker keeps it retained once it has sent it to
    -- the subscribers); the sentinel comes after it.
    local topic_x = "routemq/presence/g" .. net.prefix .. "/" .. id .. "-hostX"
    assert.truthy(e2e.wait_for(function() return retained(b, topic_x):find('"state":"lost"', 1, true) end, 20))
    sentinel(b, bb2, id .. "-hostS", id .. "-hostS-0", OLD, "g" .. net.prefix)
    local log = e2e.read(bb2.log)
    assert.matches("ignoring the record on routemq/presence/g" .. esc(net.prefix) .. "/" .. esc(id)
      .. "%-hostX: unknown key id", log)
    assert.is_nil(log:find("adopting the sessions of instance " .. esc(id) .. "%-hostX"), log)
    assert.is_nil(e2e.read(x.log):find("%] adopting"), e2e.read(x.log))
    print(string.format("\n  key rotation: (new, old) adopted (old) and (old) adopted (new, old); unknown key ignored"))
  end)
end)
