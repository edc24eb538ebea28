-- End to end: the JSON endpoints behind the console (issue 21) - /stats
-- (one-second samples per route and worker), /errors (the latest handler
-- errors, kept by the master beyond the worker), the actions POST /reload and
-- POST /scale with their results, and each slot's last restart in /status.
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson")

local TOKEN = "console-api-token-0123456789"

local function http(port, path, method, body)
  local out = os.tmpname()
  local cmd = string.format("curl -s --max-time 5 -o %s -w '%%{http_code}' -H %s", out,
    e2e.quote("Authorization: Bearer " .. TOKEN))
  if method then
    cmd = cmd .. " -X " .. method .. " -H 'Content-Type: application/json' --data-binary " .. e2e.quote(body or "{}")
  end
  local code = tonumber(e2e.sh(cmd .. " " .. e2e.quote("http://127.0.0.1:" .. port .. path)):match("(%d+)%s*$")) or 0
  local text = e2e.read(out)
  os.remove(out)
  return code, text
end

local function json(port, path)
  local code, body = http(port, path)
  assert.equal(200, code, path .. ": " .. body)
  return cjson.decode(body)
end

local function sum(list)
  local s = 0
  for _, v in ipairs(list) do s = s + v end
  return s
end

local function route(stats, pattern)
  for _, r in ipairs(stats.routes) do if r.route == pattern then return r end end
end

describe("console API", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  local function start(app, env)
    local port = e2e.free_port()
    local e = { E2E_SHARED_WORKERS = 2, ROUTEMQ_HTTP = "127.0.0.1:" .. port, ROUTEMQ_HTTP_TOKEN = TOKEN }
    for k, v in pairs(env or {}) do e[k] = v end
    local r = e2e.routemq(broker, app or "spec/e2e/apps/basic", "run", e)
    assert(e2e.wait_for(function() return r.ready(2) end, 15), e2e.read(r.log))
    r.port = port
    return r
  end

  it("/stats counts every message of a route in its seconds, with latency quantiles", function()
    local r = start()
    e2e.publish_lines(broker.port, "single/7", e2e.seq(1, 50), 1)
    e2e.publish_lines(broker.port, "shared/7", e2e.seq(1, 30), 1)
    local stats
    assert(e2e.wait_for(function()
      stats = json(r.port, "/stats?window=300")
      local a, b = route(stats, "single/{n}"), route(stats, "shared/{n}")
      return a and b and a.messages == 50 and b.messages == 30
    end, 20), cjson.encode(stats))
    local single = route(stats, "single/{n}")
    assert.equal(0, single.errors)
    assert.equal(50, sum(single.series.messages))
    assert.equal(stats.seconds, #single.series.messages)
    assert.is_true(single.p50_ms > 0 and single.p99_ms >= single.p50_ms)
    assert.equal(80, sum(stats.total.messages))
    local by_workers = 0
    for _, w in ipairs(stats.workers) do by_workers = by_workers + sum(w.messages) end
    assert.equal(80, by_workers)
    -- routes=0: summaries without series; window bounds the seconds.
    local short = json(r.port, "/stats?window=2&routes=0")
    assert.is_true(short.seconds <= 2)
    for _, x in ipairs(short.routes) do assert.is_nil(x.series) end
    local code, body = http(r.port, "/stats?window=301")
    assert.equal(400, code)
    assert.equal('{"error":"window: a whole number of seconds from 1 to 300"}\n', body)
  end)

  it("/errors keeps the latest handler errors, newest first, after their worker died", function()
    local r = start()
    local xss = "fail/<img src=x onerror=alert(1)>"
    for i = 1, 11 do e2e.publish(broker.port, "fail/" .. i, "x", "-q 1") end
    e2e.publish(broker.port, xss, "x", "-q 1")
    local errs
    assert(e2e.wait_for(function()
      errs = json(r.port, "/errors")
      return errs.total + errs.missed == 12
    end, 20), cjson.encode(errs))
    local last = errs.errors[1]
    assert.equal("fail/{n}", last.route)
    assert.equal(xss, last.topic)
    assert.equal("app/controllers/record.lua:60: boom on " .. xss, last.message)
    assert.matches("^stack traceback:\n", last.traceback)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", last.time)
    assert.equal(errs.total, #errs.errors)
    -- The worker that had them dies: the master still has them.
    e2e.kill(last.pid, "KILL")
    assert(e2e.wait_for(function()
      local s = json(r.port, "/status")
      for _, w in ipairs(s.slots) do
        if w.slot == last.slot and w.pid ~= last.pid and w.pid > 0 and w.last_restart then return true end
      end
    end, 20))
    local after = json(r.port, "/errors")
    assert.equal(errs.total, after.total)
    assert.equal(xss, after.errors[1].topic)
    local s = json(r.port, "/status")
    local slot = s.slots[last.slot + 1]
    assert.equal("signal", slot.last_restart.reason)
    assert.equal("signal 9 (SIGKILL)", slot.last_restart.text)
  end)

  it("POST /scale answers with the new worker count; bad bodies get 400", function()
    local r = start()
    local code, body = http(r.port, "/scale", "POST", '{"workers": 3}')
    assert.equal(200, code)
    assert.same({ ok = true, workers = 3, was = 2, message = "3 workers (was 2)" }, cjson.decode(body))
    assert(e2e.wait_for(function() return r.count_workers() == 3 end, 15))
    code, body = http(r.port, "/scale", "POST", '{"step": "down"}')
    assert.equal(200, code)
    assert.same({ ok = true, workers = 2, was = 3, message = "2 workers (was 3)" }, cjson.decode(body))
    assert.equal(2, json(r.port, "/status").workers)
    local bad = {
      { '{"workers": 0}', '{"ok":false,"error":"workers: a whole number from 1 to 1024"}\n' },
      { '{"workers": "3"}',
        '{"ok":false,"error":"expected {\\"workers\\": N} or {\\"step\\": \\"up\\" | \\"down\\"}"}\n' },
      { '[3]', '{"ok":false,"error":"the body is not a JSON object"}\n' },
    }
    for _, case in ipairs(bad) do
      code, body = http(r.port, "/scale", "POST", case[1])
      assert.equal(400, code, case[1])
      assert.equal(case[2], body)
    end
    code, body = http(r.port, "/nothing", "POST", "{}")
    assert.equal(404, code)
    assert.equal('{"ok":false,"error":"no such action; POST /reload or /scale"}\n', body)
  end)

  it("POST /reload answers 422 with the file and line when the application does not load", function()
    local dir = e2e.copy_app("spec/e2e/apps/basic")
    local r = start(dir)
    local code, body = http(r.port, "/reload", "POST", "{}")
    assert.equal(200, code)
    assert.equal(2, cjson.decode(body).generation)
    assert(e2e.wait_for(function() return json(r.port, "/status").state == "running" end, 30))
    e2e.write(dir .. "/app/routers/bad.lua", 'error("broken on purpose")\n')
    code, body = http(r.port, "/reload", "POST", "{}")
    assert.equal(422, code)
    local err = cjson.decode(body)
    assert.is_false(err.ok)
    assert.matches("^reload failed: .*app/routers/bad%.lua:1: broken on purpose", err.error)
    assert.matches("; the workers keep running the previous application$", err.error)
    assert.equal(2, json(r.port, "/status").generation)
  end)
end)
