-- End to end: publishing waits at the outgoing bound (WORKER_MAX_OUTGOING)
-- without blocking the worker, from handlers and from timers; no publish is
-- settled before its PUBACK however many a handler makes, so a kill -9 in the
-- middle of a handler's 70,000 publishes loses none of them.
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson")

local APP = e2e.root .. "/spec/e2e/apps/bound"

-- A QoS 1 subscriber to bound/out with a session of its own, one line per
-- message: the first word of its payload.
local function subscriber(b)
  local dir = e2e.tmpdir()
  local s = { file = dir .. "/received" }
  s.pid = e2e.spawn(string.format("sh -c 'mosquitto_sub -p %d -t bound/out -q 1 -i sub%s -c "
    .. "| stdbuf -oL cut -d\" \" -f1-2'", b.port, dir:match("([^.]+)$")), s.file)
  assert(e2e.wait_for(function()
    e2e.publish(b.port, "bound/out", "probe", "-q 1")
    return e2e.read(s.file):find("probe") ~= nil
  end, 10), "the subscriber did not subscribe")
  -- Distinct lines and duplicates, of those starting with prefix.
  function s.count(prefix)
    local seen, distinct, dups = {}, 0, 0
    for line in e2e.read(s.file):gmatch("[^\n]+") do
      if line:sub(1, #prefix) == prefix then
        if seen[line] then dups = dups + 1 else seen[line], distinct = true, distinct + 1 end
      end
    end
    return distinct, dups
  end
  function s.stop()
    -- The shell's children (mosquitto_sub, cut) go with its process group.
    e2e.sh("pkill -TERM -P " .. s.pid .. " 2>/dev/null")
    if e2e.alive(s.pid) then e2e.kill(s.pid, "TERM") end
  end
  return s
end

-- routemq status --json of r's instance, decoded (nil when it fails).
local function status(r)
  local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s %s status --json --app %s 2>/dev/null", r.dir .. "/run",
    e2e.bin, APP))
  local ok, v = pcall(cjson.decode, out)
  return ok and v or nil
end

local function slot0(r)
  local st = status(r)
  return st and st.slots and st.slots[1]
end

-- kB of a process's peak resident memory (VmHWM).
local function peak_kb(pid)
  return tonumber(e2e.read("/proc/" .. pid .. "/status"):match("VmHWM:%s*(%d+)"))
end

local function records(r, tag)
  local out = {}
  for _, rec in ipairs((e2e.records(r.dir))) do
    if rec.route == tag then out[#out + 1] = rec end
  end
  return out
end

describe("publishing at the outgoing bound", function()
  local function start(env)
    local b = e2e.broker()
    local sub = subscriber(b)
    local r = e2e.routemq(b, APP, "run", env)
    e2e.defer(function() r.stop(); sub.stop(); b.stop() end)
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    return b, sub, r
  end

  it("loses none of a handler's 70,000 QoS 1 publishes when its worker is killed -9 in the middle", function()
    local N, GATE = 70000, 40000
    local b, sub, r = start({ BOUND_N = N, BOUND_GATE = GATE, BOUND_PAD = 1000 })
    local first = r.workers()[1]
    e2e.publish(b.port, "bound/many", "m1", "-q 1")
    -- In the middle for certain: 20,000 arrived, and the first run cannot
    -- finish (it stops at 40,000 until killed).
    assert.truthy(e2e.wait_for(function() return sub.count("") >= 20000 end, 120), e2e.read(r.log))
    local peak_first = peak_kb(first)
    assert.is_true(e2e.kill(first, "KILL"))
    local t_kill = e2e.now()
    assert.truthy(e2e.wait_for(function() return #records(r, "done") == 1 end, 300), e2e.read(r.log))
    local replay_s = e2e.now() - t_kill
    local second = r.workers()[1]
    local peak_second = peak_kb(second)
    -- Every publish acknowledged is delivered; wait for the stragglers.
    e2e.wait_for(function() return sub.count("") - 1 >= N end, 30)
    local got, dups = sub.count("")
    got = got - 1 -- the probe
    local starts = records(r, "start")
    print(string.format("\n  70,000 QoS 1 publishes from one handler, kill -9 after 20,000 received: %d of %d "
      .. "received, %d duplicated; peak RSS %.1f MB (killed worker), %.1f MB (its replacement, all 70,000 "
      .. "in %.1f s after the kill)", got, N, dups, peak_first / 1024, peak_second / 1024, replay_s))
    assert.equal(N, got)
    assert.equal(2, #starts)
    assert.is_true(records(r, "done")[1].redelivered)
    -- Bounded: 70,000 publishes of 1 KB queued at once would take over 70 MB.
    assert.is_true(peak_second < 40 * 1024, "peak RSS " .. peak_second .. " kB")
    assert.is_true(peak_first < 40 * 1024, "peak RSS " .. peak_first .. " kB")
    assert.is_nil(e2e.read(r.log):find("packet id", 1, true), e2e.read(r.log))
  end)

  it("makes a timer's publishes wait at the bound, not fail, while the broker does not acknowledge", function()
    local b, sub, r = start({ BOUND_N = 5000, BOUND_TIMER = 0.5, WORKER_MAX_OUTGOING = 100 })
    local pid = r.workers()[1]
    assert.is_true(e2e.kill(b.pid, 19)) -- SIGSTOP: nothing is acknowledged from now on
    local stopped = true
    e2e.defer(function() if stopped then e2e.kill(b.pid, 18) end end)
    local w
    assert.truthy(e2e.wait_for(function()
      w = slot0(r)
      return #records(r, "tick-start") == 1 and w and w.outgoing >= 100
    end, 30), e2e.read(r.log))
    -- Still exactly at the bound once the worker has waited in its event
    -- loop twice more (each wait is a voluntary context switch): a timer
    -- that went on publishing, or failed, would have done so before.
    local function waits()
      return tonumber(e2e.read("/proc/" .. pid .. "/status"):match("\nvoluntary_ctxt_switches:%s*(%d+)"))
    end
    local before = waits()
    assert.truthy(e2e.wait_for(function() return waits() >= before + 2 end, 10, 0.01))
    w = slot0(r)
    assert.equal(100, w.outgoing)
    assert.equal(0, #records(r, "tick-done"))
    assert.same({ pid }, r.workers())
    assert.is_true(e2e.kill(b.pid, 18)) -- SIGCONT
    stopped = false
    assert.truthy(e2e.wait_for(function() return #records(r, "tick-done") >= 1 end, 60), e2e.read(r.log))
    assert.truthy(e2e.wait_for(function() return sub.count("tick") >= 5000 end, 30))
    assert.equal(5000, (sub.count("tick")))
    assert.is_nil(e2e.read(r.log):find("failed", 1, true), e2e.read(r.log))
    assert.same({ pid }, r.workers())
  end)

  it("cancels a handler waiting at the bound at its timeout, in the worker, and goes on", function()
    local b, _, r = start({ WORKER_MAX_OUTGOING = 100 })
    local pid = r.workers()[1]
    e2e.publish(b.port, "bound/stuck", "s1", "-q 1")
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("timeout after 1 s", 1, true) end, 15),
      e2e.read(r.log))
    e2e.publish(b.port, "bound/quick", "q1", "-q 1")
    assert.truthy(e2e.wait_for(function() return #records(r, "quick") == 1 end, 10), e2e.read(r.log))
    assert.same({ pid }, r.workers())
    assert.equal(pid, records(r, "quick")[1].pid)
    assert.equal(1, #records(r, "stuck"))
    assert.equal(0, #records(r, "stuck-done"))
    -- What it published before is acknowledged, and its message finished.
    assert.truthy(e2e.wait_for(function()
      local w = slot0(r)
      return w and w.outgoing == 0 and w.kept == 0
    end, 10))
    assert.is_nil(e2e.read(r.log):find("killed", 1, true), e2e.read(r.log))
  end)

  it("stops code that cannot wait at 60,000 outstanding publishes, with an error, before packet ids run out", function()
    local b, sub, r = start({ BOUND_N = 70000 })
    local pid = r.workers()[1]
    e2e.publish(b.port, "bound/gsub", "g1", "-q 1")
    assert.truthy(e2e.wait_for(function()
      return e2e.read(r.log):find("60000 publishes await the broker's acknowledgement", 1, true)
    end, 60), e2e.read(r.log))
    assert.matches("ctx:publish: cannot publish to 'bound/out': 60000 publishes await the broker's acknowledgement "
      .. "and this code cannot wait for them", e2e.read(r.log), 1, true)
    assert.truthy(e2e.wait_for(function() return sub.count("gsub") >= 60000 end, 120))
    assert.equal(60000, (sub.count("gsub")))
    assert.equal(0, #records(r, "gsub-done"))
    assert.same({ pid }, r.workers())
    assert.is_nil(e2e.read(r.log):find("packet id", 1, true), e2e.read(r.log))
  end)
end)
