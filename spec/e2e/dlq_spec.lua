-- End to end: the dead-letter store against a real broker. A message whose
-- handler kills its worker ROUTEMQ_POISON_ATTEMPTS times lands in the store
-- byte for byte; `routemq dlq` and /dlq read and change the store, with or
-- without an instance running.
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson")
local base64 = require("routemq.dlq").base64

local APP = "spec/e2e/apps/dlq"

--- Runs `routemq dlq <args> --app APP` on r's run directory; exit code, stdout, stderr.
local function dlq(r, args, env)
  local out, err = os.tmpname(), os.tmpname()
  local cmd = string.format("cd %s; env ROUTEMQ_RUN_DIR=%s %s %s dlq %s --app %s < /dev/null > %s 2> %s; echo $?",
    e2e.root, r.dir .. "/run", env or "", e2e.bin, args, APP, out, err)
  local code = tonumber(e2e.sh(cmd):match("(%d+)%s*$"))
  local o, e = e2e.read(out), e2e.read(err)
  os.remove(out)
  os.remove(err)
  return code, o, e
end

local function records(r, args)
  local code, out, err = dlq(r, "list --json " .. (args or ""))
  assert(code == 0, "dlq list --json: " .. tostring(code) .. " " .. err)
  return cjson.decode(out)
end

--- GET or POST http://127.0.0.1:port/path with the token: status code and body.
local function http(port, path, token, body)
  local out = os.tmpname()
  local post = body and string.format("-X POST -H 'Content-Type: application/json' --data '%s' ", body) or ""
  local auth = token and string.format("-H 'Authorization: Bearer %s' ", token) or ""
  local code = e2e.sh(string.format("curl -s -o %s -w '%%{http_code}' --max-time 5 %s%shttp://127.0.0.1:%d%s", out,
    auth, post, port, path))
  local res = e2e.read(out)
  os.remove(out)
  return tonumber(code) or 0, res
end

--- A binary payload: every byte value, NULs included.
local function binary()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char((i * 7) % 256) end
  return "\0\0" .. table.concat(t) .. "\0"
end

local function publish_file(port, topic, payload, extra)
  local file = os.tmpname()
  e2e.write(file, payload)
  local out = e2e.sh(string.format("mosquitto_pub -p %d -q 1 -t '%s' -f %s %s 2>&1; echo rc=$?", port, topic, file,
    extra or ""))
  os.remove(file)
  assert(out:find("rc=0", 1, true), out)
end

local function start(broker, env)
  local e = { ROUTEMQ_POISON_ATTEMPTS = 2 }
  for k, v in pairs(env or {}) do e[k] = v end
  local r = e2e.routemq(broker, APP, "run --workers 1", e)
  e2e.defer(function() r.stop() end)
  assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
  return r
end

local function wait_records(r, n)
  assert.truthy(e2e.wait_for(function() return #records(r) >= n end, 60), e2e.read(r.log))
end

describe("the dead-letter store", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("keeps a poison message byte for byte, with its MQTT 5 properties, and still publishes it", function()
    local r = start(broker)
    local sub_log = r.dir .. "/dlq.log"
    local sub = e2e.spawn(string.format("mosquitto_sub -p %d -q 1 -t 'routemq/dlq/#' -F '%%t|%%p'", broker.port),
      sub_log)
    e2e.defer(function() e2e.kill(sub, "TERM") end)
    assert.truthy(e2e.wait_subscribed(broker.port, "routemq/dlq/e2e", sub_log))
    local payload = binary()
    publish_file(broker.port, "die/7", payload, "-V mqttv5 -D publish user-property tenant acme "
      .. "-D publish content-type application/octet-stream -D publish correlation-data corr-1")
    wait_records(r, 1)
    local list = records(r)
    assert.equal(1, #list)
    local id = list[1].id
    local code, out, err = dlq(r, "show " .. id .. " --json")
    local _
    assert.equal(0, code, err)
    local rec = cjson.decode(out)
    assert.equal("die/7", rec.topic)
    assert.equal("die/{n}", rec.route)
    assert.equal("crash", rec.reason)
    assert.equal(1, rec.qos)
    assert.equal(2, rec.attempts)
    assert.matches("signal 11 %(SIGSEGV%)", rec.error)
    assert.equal("base64", rec.payload_encoding)
    assert.equal(base64(payload), rec.payload)
    assert.equal(#payload, rec.payload_size)
    assert.same({ { "tenant", "acme" } }, rec.properties.user_properties)
    assert.equal("application/octet-stream", rec.properties.content_type)
    assert.equal("corr-1", rec.properties.correlation_data)
    -- The text form: a hex dump and base64, never the raw bytes.
    code, out = dlq(r, "show " .. id)
    assert.equal(0, code)
    assert.matches("payload %(" .. #payload .. " bytes%): %(binary%)", out)
    assert.matches("00000000  00 00 00 07 0e 15", out, 1, true)
    assert.matches("user property:    tenant = acme", out, 1, true)
    assert.is_nil(out:find("\0", 1, true))
    -- Published after it was stored, as before the store existed.
    assert.truthy(e2e.wait_for(function() return e2e.read(sub_log):find("routemq/dlq/die/7|", 1, true) end, 10))
    -- Readable with no instance running.
    r.stop()
    code, out = dlq(r, "list")
    assert.equal(0, code)
    assert.matches("\n" .. id .. "%s+%S+ %S+%s+die/{n}%s+die/7%s+crash%s+2%s+worker killed by signal 11", out)
    code, _, err = dlq(r, "show 999")
    assert.equal(1, code)
    assert.equal("routemq dlq show: no dead letter 999 in " .. r.dir .. "/run/dead-letters.db\n", err)
    code, out = dlq(r, "replay " .. id)
    assert.equal(0, code)
    assert.matches("1 dead letter asked for replay; no instance is running for .*: they are replayed at its next "
      .. "start", out)
    assert.equal("replay_asked", records(r)[1].state)
  end)

  it("with ROUTEMQ_DLQ_TOPIC=off stores the message and publishes nothing", function()
    local r = start(broker, { ROUTEMQ_DLQ_TOPIC = "off" })
    local sub_log = r.dir .. "/dlq.log"
    local sub = e2e.spawn(string.format("mosquitto_sub -p %d -q 1 -t 'routemq/dlq/#' -F '%%t|%%p'", broker.port),
      sub_log)
    e2e.defer(function() e2e.kill(sub, "TERM") end)
    assert.truthy(e2e.wait_subscribed(broker.port, "routemq/dlq/e2e", sub_log))
    e2e.publish(broker.port, "die/8", "text payload", "-q 1")
    wait_records(r, 1)
    local rec = records(r)[1]
    assert.equal("text payload", rec.payload)
    assert.equal("utf8", rec.payload_encoding)
    -- Counted as dead-lettered once finished; a publish made before that
    -- would reach the subscriber before this marker does.
    assert.truthy(e2e.wait_for(function()
      local s = e2e.status(r, APP)
      return s and s.totals.dead_lettered == 1
    end, 10))
    e2e.publish(broker.port, "routemq/dlq/marker", "marker", "-q 1")
    assert.truthy(e2e.wait_for(function() return e2e.read(sub_log):find("marker", 1, true) end, 10))
    assert.is_nil(e2e.read(sub_log):find("die/8", 1, true))
  end)

  it("deletes by id, and --all only with --yes off a terminal", function()
    local r = start(broker, { ROUTEMQ_DLQ_TOPIC = "off" })
    for i = 1, 3 do e2e.publish(broker.port, "die/" .. i, "m" .. i, "-q 1") end
    wait_records(r, 3)
    local list = records(r)
    local code, out, err = dlq(r, "delete " .. list[1].id)
    local _
    assert.equal(0, code, err)
    assert.equal("1 dead letter deleted\n", out)
    assert.equal(2, #records(r))
    code, _, err = dlq(r, "delete " .. list[1].id)
    assert.equal(1, code)
    assert.matches("routemq dlq delete: no dead letter " .. list[1].id .. " in ", err)
    code, _, err = dlq(r, "delete --all")
    assert.equal(1, code)
    assert.equal("routemq dlq delete --all: add --yes to confirm (stdin is not a terminal)\n", err)
    assert.equal(2, #records(r))
    code, out = dlq(r, "delete --all --yes")
    assert.equal(0, code)
    assert.equal("2 dead letters deleted\n", out)
    assert.equal(0, #records(r))
  end)

  it("serves /dlq and POST /dlq/delete with the token, and the routemq_dead_letters gauge", function()
    local port, token = e2e.free_port(), "e2e-token-0123456789abcdef"
    local r = start(broker, { ROUTEMQ_DLQ_TOPIC = "off", ROUTEMQ_HTTP = "127.0.0.1:" .. port,
      ROUTEMQ_HTTP_TOKEN = token })
    e2e.publish(broker.port, "die/1", "one", "-q 1")
    e2e.publish(broker.port, "die/2", "two", "-q 1")
    wait_records(r, 2)
    assert.equal(401, (http(port, "/dlq")))
    local code, body = http(port, "/dlq?limit=1", token)
    assert.equal(200, code, body)
    local page = cjson.decode(body)
    assert.equal(1, page.count)
    assert.equal(2, page.total)
    assert.equal("two", page.records[1].payload)
    local _
    _, body = http(port, "/dlq?before=" .. page.next_before, token)
    local rest = cjson.decode(body)
    assert.equal("one", rest.records[1].payload)
    local id = rest.records[1].id
    code, body = http(port, "/dlq/" .. id, token)
    assert.equal(200, code)
    assert.equal("die/1", cjson.decode(body).topic)
    _, body = http(port, "/metrics", token)
    assert.matches('routemq_dead_letters{route="die/{n}"} 2\n', body, 1, true)
    assert.equal(401, (http(port, "/dlq/delete", nil, '{"ids":[' .. id .. ']}')))
    code, body = http(port, "/dlq/delete", token, '{"ids":[' .. id .. ']}')
    assert.equal(200, code, body)
    assert.same({ ok = true, done = 1, message = "1 dead letter deleted" }, cjson.decode(body))
    assert.equal(404, (http(port, "/dlq/" .. id, token)))
    code, body = http(port, "/dlq/replay", token, '{"idz":[1]}')
    assert.equal(400, code)
    assert.matches('unknown member \\"idz\\"', body, 1, true)
  end)

  it("keeps the newest ROUTEMQ_DLQ_MAX records and counts the others", function()
    local port = e2e.free_port()
    local r = start(broker, { ROUTEMQ_DLQ_TOPIC = "off", ROUTEMQ_DLQ_MAX = 3, ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    for i = 1, 5 do e2e.publish(broker.port, "die/" .. i, "m" .. i, "-q 1") end
    assert.truthy(e2e.wait_for(function()
      local s = e2e.status(r, APP)
      return s and s.totals.dead_lettered == 5
    end, 60), e2e.read(r.log))
    local list = records(r)
    assert.equal(3, #list)
    assert.same({ "m5", "m4", "m3" }, { list[1].payload, list[2].payload, list[3].payload })
    assert.matches("ROUTEMQ_DLQ_MAX=3%): the 1 oldest record was deleted", e2e.read(r.log))
    local _, metrics = http(port, "/metrics")
    assert.matches("\nroutemq_dead_letters_trimmed_total 2\n", metrics, 1, true)
    assert.matches('\nroutemq_dead_letters{route="die/{n}"} 3\n', metrics, 1, true)
    -- status: the store's count and its oldest record's age.
    local s = e2e.status(r, APP)
    assert.equal(3, s.dead_letters.count)
    assert.is_true(s.dead_letters.oldest_seconds >= 0)
    local out = e2e.sh(string.format("cd %s; ROUTEMQ_RUN_DIR=%s %s status --app %s", e2e.root, r.dir .. "/run",
      e2e.bin, APP))
    assert.matches("\ndead letters  3 in the store, the oldest %d+s old %(routemq dlq list%)\n", out)
  end)

  it("keeps a dead letter while the store cannot be written, and stores it once it can", function()
    local dir = e2e.tmpdir()
    local store = dir .. "/later/dead-letters.db"
    local r = start(broker, { ROUTEMQ_DLQ_TOPIC = "off", ROUTEMQ_DLQ_STORE = store })
    e2e.publish(broker.port, "die/1", "wait for me", "-q 1")
    assert.truthy(e2e.wait_for(function()
      return e2e.read(r.log):find("cannot create the dead-letter store " .. store, 1, true)
    end, 30), e2e.read(r.log))
    assert.matches("dead letters stay kept and are stored once it can be written", e2e.read(r.log))
    local s = e2e.status(r, APP)
    assert.equal(1, s.slots[1].kept)
    assert.equal(0, s.totals.dead_lettered)
    e2e.sh("mkdir " .. dir .. "/later")
    assert.truthy(e2e.wait_for(function()
      local st = e2e.status(r, APP)
      return st and st.totals.dead_lettered == 1
    end, 40), e2e.read(r.log))  -- tries back off from 1 s to at most 30 s
    assert.equal(0, e2e.status(r, APP).slots[1].kept)
    assert.matches("1 dead letter stored after waiting for the store", e2e.read(r.log))
    local code, out = dlq(r, "list --json", "ROUTEMQ_DLQ_STORE=" .. store)
    assert.equal(0, code)
    assert.equal("wait for me", cjson.decode(out)[1].payload)
  end)

  it("names what is wrong: a missing id, an unknown command, a store not made yet", function()
    local r = { dir = e2e.tmpdir() }
    local code, out, err = dlq(r, "list")
    local _
    assert.equal(0, code, err)
    assert.equal("no dead letters (store " .. r.dir .. "/run/dead-letters.db does not exist yet)\n", out)
    code, _, err = dlq(r, "show 999")
    assert.equal(1, code)
    assert.equal("routemq dlq show: no dead letter 999 (store " .. r.dir
      .. "/run/dead-letters.db does not exist yet)\n", err)
    code, _, err = dlq(r, "frobnicate")
    assert.equal(1, code)
    assert.matches("^routemq dlq: unknown command 'frobnicate' %(list, show, replay or delete%)\nusage: routemq dlq",
      err)
    code, _, err = dlq(r, "show abc")
    assert.equal(1, code)
    assert.equal("routemq dlq show: 'abc' is not a dead-letter id (a whole number from 1)\n", err)
    code, _, err = dlq(r, "list --since 5y")
    assert.equal(1, code)
    assert.equal("routemq dlq list: --since '5y' is not a duration (like 90s, 10m, 2h, 7d)\n", err)
  end)
end)
