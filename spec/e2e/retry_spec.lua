-- End to end: a failed attempt is tried again after its delay, kept all the
-- while (docs/delivery.md, "Retries"): retried messages are handled once
-- each, exhausted ones land in the dead-letter store, waiting ones survive a
-- kill -9 of their worker and of the whole instance without counting as a
-- crash, and a dead letter asked for replay is handled as a new message.
local e2e = require("spec.helpers.e2e")
local prom = require("spec.helpers.prom")
local cjson = require("cjson")

local APP = e2e.root .. "/spec/e2e/apps/retry"

-- Environment for runs that share one identity and run directory.
local function identity(extra)
  local dir = e2e.tmpdir()
  local id = dir:match("([^.]+)$")
  local env = { MQTT_CLIENT_ID = "r" .. id, MQTT_GROUP_NAME = "g" .. id, ROUTEMQ_RUN_DIR = dir .. "/run",
    E2E_OUT = dir }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env, dir
end

local function start(b, env)
  local r = e2e.routemq(b, APP, "run", env)
  e2e.defer(function() r.stop() end)
  assert(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
  return r
end

-- The successes the app recorded under dir (only those of `route` when
-- given): list of { route, payload, pid, redelivered, attempt, replayed } and
-- counts by payload.
local function records(dir, route_only)
  local list, by = {}, {}
  for f in e2e.sh("ls " .. dir .. "/*.rec 2>/dev/null"):gmatch("[^\n]+") do
    for line in e2e.read(f):gmatch("[^\n]+") do
      local route, payload, pid, red, attempt, replayed = line:match("^(.-)\t(.-)\t(%d+)\t(%a+)\t(%d+)\t(%a+)$")
      if route and (not route_only or route == route_only) then
        list[#list + 1] = { route = route, payload = payload, pid = tonumber(pid), redelivered = red == "true",
          attempt = tonumber(attempt), replayed = replayed == "true" }
        by[payload] = (by[payload] or 0) + 1
      end
    end
  end
  return list, by
end

local function count_files(dir, prefix)
  return tonumber(e2e.sh("ls " .. dir .. " | grep -c '^" .. prefix .. "'"):match("%d+")) or 0
end

local function status(env)
  local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s %s status --json --app %s 2>/dev/null", env.ROUTEMQ_RUN_DIR,
    e2e.bin, APP))
  local ok, v = pcall(cjson.decode, out)
  return ok and v or nil
end

-- Records in REC_RETRY over the instance's workers (status --json).
local function retry_waiting(env)
  local s = status(env)
  if not s or type(s.slots) ~= "table" then return -1 end
  local n = 0
  for _, w in ipairs(s.slots) do n = n + (w.retry_waiting or 0) end
  return n
end

-- The dead-letter store's records (`routemq dlq list --json`), oldest first.
local function store_rows(run_dir)
  local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s %s dlq list --json --limit 1000000 --app %s 2>&1", run_dir,
    e2e.bin, APP))
  local ok, rows = pcall(cjson.decode, out)
  assert(ok and type(rows) == "table", "routemq dlq list --json: " .. out)
  table.sort(rows, function(a, b) return a.id < b.id end)
  return rows
end

local function http_metrics(port)
  local out = e2e.sh(string.format("curl -s --max-time 5 http://127.0.0.1:%d/metrics", port))
  return assert(prom.parse(out))
end

-- Makes "nothing more is handled" certain instead of timed: a sentinel
-- published now reaches the worker after anything the broker still had for
-- it (one session, in order), and once it is handled and no slot has a
-- message in progress or waiting for a retry, no duplicate can come.
local function settled(b, env, dir)
  assert.truthy(e2e.publish(b.port, "retry/ordered/sentinel", "sentinel", "-q 1"))
  assert.truthy(e2e.wait_for(function()
    local _, by = records(dir, "ordered")
    return by.sentinel
  end, 30), "the sentinel was not handled")
  assert.truthy(e2e.wait_for(function()
    local s = status(env)
    if not s or type(s.slots) ~= "table" then return false end
    for _, w in ipairs(s.slots) do
      if (w.retry_waiting or 0) ~= 0 or (w.in_progress or 0) ~= 0 then return false end
    end
    return true
  end, 30), "a slot still has messages in progress or waiting")
end

-- Each of 1..n was handled once on `route` once all is settled; the records.
local function handled_once(b, env, dir, route, n)
  settled(b, env, dir)
  local list, by = records(dir, route)
  assert.equal(n, #list)
  for i = 1, n do assert.equal(1, by[tostring(i)]) end
  return list
end

-- A run whose n messages on retry/wait/1 each failed once and wait for their
-- next attempt, `delay` seconds away (E2E_DELAY).
local function waiting_run(b, delay, n)
  local env, dir = identity({ E2E_DELAY = delay })
  local r = start(b, env)
  assert.truthy(e2e.publish_lines(b.port, "retry/wait/1", e2e.seq(1, n), 1):match("rc=0"))
  assert.truthy(e2e.wait_for(function() return retry_waiting(env) == n end, 30), e2e.read(r.log))
  return r, env, dir
end

local function crashes(log)
  local _, n = e2e.read(log):gsub("died handling a message", "")
  return n
end

describe("retries", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("handle a message that fails twice on its third attempt, once, and count the retries", function()
    local port = e2e.free_port()
    local env, dir = identity({ ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    local r = start(broker, env)
    local n = 200
    assert.truthy(e2e.publish_lines(broker.port, "retry/flaky/1", e2e.seq(1, n), 1):match("rc=0"))
    assert.truthy(e2e.wait_for(function() return #records(dir) >= n end, 60), e2e.read(r.log))
    local list = handled_once(broker, env, dir, "flaky", n)
    for _, rec in ipairs(list) do
      assert.equal(3, rec.attempt)
      assert.is_false(rec.redelivered)
      assert.is_false(rec.replayed)
    end
    -- No attempt ran before it was due: 0.2 s, then 0.4 s (backoff 2), each
    -- less the 10 % jitter at most.
    local at = {}
    for f in e2e.sh("ls " .. dir .. "/*.att"):gmatch("[^\n]+") do
      for line in e2e.read(f):gmatch("[^\n]+") do
        local payload, attempt, t = line:match("^(.-)\t(%d+)\t([%d.]+)$")
        at[payload] = at[payload] or {}
        at[payload][tonumber(attempt)] = tonumber(t)
      end
    end
    for i = 1, n do
      local a = at[tostring(i)]
      assert.truthy(a and a[1] and a[2] and a[3], "attempts of " .. i)
      assert.truthy(a[2] - a[1] >= 0.18 - 0.002, string.format("%d: second attempt after %.3f s", i, a[2] - a[1]))
      assert.truthy(a[3] - a[2] >= 0.36 - 0.002, string.format("%d: third attempt after %.3f s", i, a[3] - a[2]))
    end
    local m = http_metrics(port)
    assert.equal(2 * n, m:value("routemq_retries_total", { route = "retry/flaky/{n}" }))
    assert.equal(n, m:value("routemq_messages_total", { route = "retry/flaky/{n}", result = "ok" }))
    assert.equal(2 * n, m:value("routemq_messages_total", { route = "retry/flaky/{n}", result = "error" }))
    assert.equal(0, m:value("routemq_retry_waiting", { slot = "0" }))
    assert.same({}, store_rows(env.ROUTEMQ_RUN_DIR))
    assert.equal(0, crashes(r.log))
  end)

  it("store a message whose attempts are exhausted, with reason error and its last error", function()
    local env, dir = identity()
    local r = start(broker, env)
    local n = 20
    assert.truthy(e2e.publish_lines(broker.port, "retry/always/x", e2e.seq(1, n), 1):match("rc=0"))
    assert.truthy(e2e.wait_for(function() return #store_rows(env.ROUTEMQ_RUN_DIR) >= n end, 30), e2e.read(r.log))
    settled(broker, env, dir)
    local rows = store_rows(env.ROUTEMQ_RUN_DIR)
    assert.equal(n, #rows)
    local seen = {}
    for _, row in ipairs(rows) do
      assert.equal("retry/always/x", row.topic)
      assert.equal("retry/always/{n}", row.route)
      assert.equal("error", row.reason)
      assert.equal(2, row.attempts)
      local payload = row.error:match("always fails: (%d+) attempt 2$")
      assert.truthy(payload, row.error)
      seen[payload] = true
    end
    for i = 1, n do assert.truthy(seen[tostring(i)], "message " .. i .. " not in the store") end
    assert.equal(0, retry_waiting(env))
  end)

  it("follow ROUTEMQ_RETRY_* on a route without its own retry option", function()
    local env = identity({ ROUTEMQ_RETRY_ATTEMPTS = 3, ROUTEMQ_RETRY_DELAY = 0.1 })
    local r = start(broker, env)
    assert.truthy(e2e.publish(broker.port, "retry/replay/1", "x", "-q 1"))
    assert.truthy(e2e.wait_for(function() return #store_rows(env.ROUTEMQ_RUN_DIR) == 1 end, 20), e2e.read(r.log))
    local row = store_rows(env.ROUTEMQ_RUN_DIR)[1]
    assert.equal(3, row.attempts)
    assert.equal("error", row.reason)
  end)

  it("wait kept through a kill -9 of their worker: all handled after it, none lost, no crash counted", function()
    local n = 100
    local r, env, dir = waiting_run(broker, 5, n)
    assert.equal(n, count_files(dir, "failed-"))
    assert.equal(0, #records(dir))
    local pids = r.workers()
    assert.equal(1, #pids)
    e2e.kill(pids[1], "KILL")
    assert.truthy(e2e.wait_for(function() return #records(dir) >= n end, 60), e2e.read(r.log))
    local list = handled_once(broker, env, dir, "wait", n)
    for _, rec in ipairs(list) do
      assert.equal(2, rec.attempt)
      assert.is_false(rec.redelivered)
      assert.are_not.equal(pids[1], rec.pid)
    end
    assert.equal(0, crashes(r.log))
    assert.truthy(e2e.read(r.log):find(n .. " messages kept by a previous worker wait for their next attempt", 1, true),
      e2e.read(r.log))
    assert.same({}, store_rows(env.ROUTEMQ_RUN_DIR))
  end)

  it("wait kept through a kill -9 of the whole instance: the next run handles them", function()
    local n = 100
    local r, env, dir = waiting_run(broker, 5, n)
    e2e.kill_all(r)
    assert.equal(0, #records(dir))
    local r2 = start(broker, env)
    assert.truthy(e2e.wait_for(function() return #records(dir) >= n end, 60), e2e.read(r2.log))
    local list = handled_once(broker, env, dir, "wait", n)
    for _, rec in ipairs(list) do assert.equal(2, rec.attempt) end
    assert.equal(0, crashes(r2.log))
    assert.same({}, store_rows(env.ROUTEMQ_RUN_DIR))
  end)

  it("stay kept through a graceful stop, which does not wait for them: the next run handles them", function()
    local n = 20
    local r, env, dir = waiting_run(broker, 15, n)
    local t0 = e2e.now()
    assert.equal(0, r.stop())
    assert.truthy(e2e.now() - t0 < 20, "the stop waited for the retries")
    assert.truthy(e2e.read(r.log):find("worker 0 stopped with " .. n .. " unfinished messages", 1, true),
      e2e.read(r.log))
    assert.equal(0, #records(dir))
    -- Due 13.5 s or more after their failure: the next run waits for that
    -- (they are not run at once), then handles them.
    local r2 = start(broker, env)
    local note = n .. " messages kept by a previous worker wait for their next attempt"
    assert.truthy(e2e.read(r2.log):find(note, 1, true),
      e2e.read(r2.log))
    assert.equal(0, #records(dir))
    assert.truthy(e2e.wait_for(function() return #records(dir) >= n end, 60), e2e.read(r2.log))
    local list = records(dir)
    assert.equal(n, #list)
    for _, rec in ipairs(list) do assert.equal(2, rec.attempt) end
  end)
end)

describe("retries on an ordered route", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("keep the topic's later messages behind the waiting one, at WORKER_CONCURRENCY=1", function()
    local env, dir = identity({ WORKER_CONCURRENCY = 1 })
    local r = start(broker, env)
    assert.truthy(e2e.publish_lines(broker.port, "retry/ordered/1", { "first", "second", "third" }, 1):match("rc=0"))
    assert.truthy(e2e.wait_for(function() return #records(dir) >= 3 end, 20), e2e.read(r.log))
    local list = records(dir)
    assert.equal(3, #list)
    assert.same({ "first", "second", "third" }, { list[1].payload, list[2].payload, list[3].payload })
    assert.same({ 2, 1, 1 }, { list[1].attempt, list[2].attempt, list[3].attempt })
  end)

  it("keep them behind it through a kill -9 of the worker", function()
    local env, dir = identity({ WORKER_CONCURRENCY = 4, E2E_ORDERED_DELAY = 5 })
    local r = start(broker, env)
    assert.truthy(e2e.publish_lines(broker.port, "retry/ordered/2", { "first", "second", "third" }, 1):match("rc=0"))
    -- The first waits for its retry, the two others wait behind it in the worker.
    assert.truthy(e2e.wait_for(function()
      local s = status(env)
      local w = s and s.slots and s.slots[1]
      return w and w.retry_waiting == 1 and w.in_progress == 2
    end, 20), e2e.read(r.log))
    local pids = r.workers()
    e2e.kill(pids[1], "KILL")
    assert.truthy(e2e.wait_for(function() return #records(dir) >= 3 end, 30), e2e.read(r.log))
    local list = records(dir)
    assert.same({ "first", "second", "third" }, { list[1].payload, list[2].payload, list[3].payload })
    assert.equal(2, list[1].attempt)
    assert.truthy(e2e.read(r.log):find("2 kept messages of ordered routes wait behind", 1, true), e2e.read(r.log))
  end)
end)

describe("waiting retries and the keep's bound", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("slow intake down: never more kept than WORKER_MAX_KEPT, and every message is handled", function()
    local env, dir = identity({ E2E_DELAY = 1, WORKER_MAX_KEPT = 10 })
    local r = start(broker, env)
    local n = 40
    assert.truthy(e2e.publish_lines(broker.port, "retry/wait/1", e2e.seq(1, n), 1):match("rc=0"))
    -- The keep fills with messages waiting for their retry; the rest waits at the broker.
    assert.truthy(e2e.wait_for(function() return retry_waiting(env) == 10 end, 20), e2e.read(r.log))
    -- Sampled every 0.1 s until all are handled.
    local most = 0
    local all = e2e.wait_for(function()
      local s = status(env)
      for _, w in ipairs(s and s.slots or {}) do most = math.max(most, w.kept or 0) end
      return #records(dir) >= n
    end, 120, 0.1)
    assert.truthy(all, "not all handled: " .. #records(dir) .. "\n" .. e2e.read(r.log))
    assert.truthy(most <= 10, "kept " .. most)
    local _, by = records(dir)
    for i = 1, n do assert.equal(1, by[tostring(i)]) end
  end)
end)

describe("a replay from the dead-letter store", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  local function ask_replay(env, id)
    local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s %s dlq replay %d --app %s 2>&1; echo rc=$?",
      env.ROUTEMQ_RUN_DIR, e2e.bin, id, APP))
    assert(out:match("rc=0"), out)
  end

  it("is handled by a running instance with ctx.replayed, and leaves the store; a failed one comes back",
    function()
      local env, dir = identity()
      local r = start(broker, env)
      assert.truthy(e2e.publish(broker.port, "retry/replay/1", "one", "-q 1"))
      assert.truthy(e2e.publish(broker.port, "retry/replay/2", "two", "-q 1"))
      assert.truthy(e2e.wait_for(function() return #store_rows(env.ROUTEMQ_RUN_DIR) == 2 end, 20), e2e.read(r.log))
      local rows = store_rows(env.ROUTEMQ_RUN_DIR)
      assert.equal("broken (replayed: false)", rows[1].error:match("broken %(replayed: %a+%)"))
      -- Still broken: the replay fails and the record comes back with its new error.
      ask_replay(env, rows[2].id)
      assert.truthy(e2e.wait_for(function()
        local now = store_rows(env.ROUTEMQ_RUN_DIR)
        return #now == 2 and now[2].replays == 1 and now[2].state == "stored"
      end, 20), e2e.read(r.log))
      rows = store_rows(env.ROUTEMQ_RUN_DIR)
      assert.equal("broken (replayed: true)", rows[2].error:match("broken %(replayed: %a+%)"))
      assert.equal(0, #records(dir))
      -- Fixed: the replay is handled, as replayed, attempt 1, and the record is gone.
      e2e.write(dir .. "/fixed", "")
      ask_replay(env, rows[1].id)
      assert.truthy(e2e.wait_for(function() return #records(dir) == 1 end, 20), e2e.read(r.log))
      assert.truthy(e2e.wait_for(function() return #store_rows(env.ROUTEMQ_RUN_DIR) == 1 end, 10), e2e.read(r.log))
      local list = records(dir)
      assert.equal("one", list[1].payload)
      assert.is_true(list[1].replayed)
      assert.equal(1, list[1].attempt)
      assert.equal(rows[2].id, store_rows(env.ROUTEMQ_RUN_DIR)[1].id)
    end)

  it("whose topic no route matches any more stays in the store, saying so", function()
    local env = identity()
    local r = start(broker, env)
    assert.truthy(e2e.publish(broker.port, "retry/gone/1", "old", "-q 1"))
    assert.truthy(e2e.wait_for(function() return #store_rows(env.ROUTEMQ_RUN_DIR) == 1 end, 20), e2e.read(r.log))
    assert.equal(0, r.stop())
    env.E2E_GONE = "1"
    local r2 = start(broker, env)
    local id = store_rows(env.ROUTEMQ_RUN_DIR)[1].id
    ask_replay(env, id)
    assert.truthy(e2e.wait_for(function()
      local row = store_rows(env.ROUTEMQ_RUN_DIR)[1]
      return row and row.replays == 1 and row.state == "stored"
    end, 20), e2e.read(r2.log))
    local row = store_rows(env.ROUTEMQ_RUN_DIR)[1]
    assert.equal(id, row.id)
    assert.equal("no route matches retry/gone/1 any more", row.error)
    assert.equal("error", row.reason)
    assert.equal(1, row.attempts)
  end)
end)
