--- The soak's operations (spec/soak/soak.lua): the schedule drawn from the
-- seed, and how each operation is applied to the running instance `s`.
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson")

local M = {}

M.names = { "reload", "deploy", "kill_worker", "kill_master", "scale", "broker_restart", "slow", "fan_burst" }

-- Park–Miller: the schedule must not depend on anything but the seed.
local function prng(seed)
  local x = seed % 2147483646 + 1
  return function()
    x = x * 48271 % 2147483647
    return x / 2147483647
  end
end

--- The list of { gap = seconds, name =, arg = 0..1e6 } for `seconds` of
-- soak: each operation comes `gap` seconds after the previous one finished
-- (more than enough entries; the soak stops applying them at its end).
function M.schedule(seed, seconds, names, kinds_on)
  local usable = {}
  for _, n in ipairs(names) do
    -- A burst needs the fan-out route.
    if n ~= "fan_burst" or kinds_on.fan then usable[#usable + 1] = n end
  end
  local rnd, list = prng(seed), {}
  if #usable == 0 then return list end
  for _ = 1, math.ceil(seconds / 2) do
    list[#list + 1] = { gap = 2 + rnd() * 6, name = usable[1 + math.floor(rnd() * #usable)],
      arg = math.floor(rnd() * 1e6) }
  end
  return list
end

local function ctl_cmd(s, cmd)
  local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s %s %s --app %s 2>&1; echo rc=$?", s.run, e2e.bin, cmd, s.app))
  return out:match("rc=0%s*$") ~= nil, out
end

--- The instance's `routemq status --json`, or nil.
function M.status(s)
  local out = e2e.sh(string.format("ROUTEMQ_RUN_DIR=%s %s status --json --app %s 2>/dev/null", s.run, e2e.bin, s.app))
  local ok, st = pcall(cjson.decode, out)
  return ok and type(st) == "table" and st or nil
end

--- Remembers a process the soak started: checked at the end, and listed in
-- $E2E_TMP/pids for scripts/soak.sh to stop if the soak is interrupted.
local seen_pid = {}
local function track(s, pid)
  if pid and pid > 0 and not seen_pid[pid] then
    seen_pid[pid] = true
    s.pids[#s.pids + 1] = pid
    local f = os.getenv("E2E_TMP") and io.open(os.getenv("E2E_TMP") .. "/pids", "a")
    if f then
      f:write(pid, "\n")
      f:close()
    end
  end
end
M.track = track

--- Samples the instance: worker pids (to check at the end that none is left),
-- peak worker RSS, the master's totals.
function M.sample(s)
  local st = M.status(s)
  if not st then return nil end
  for _, slot in ipairs(st.slots or {}) do
    track(s, slot.pid)
    local kb = tonumber(slot.rss_kb) or 0
    if kb > s.peak_rss_kb then s.peak_rss_kb, s.peak_rss_at = kb, e2e.now() - (s.t0 or e2e.now()) end
  end
  if st.pid and st.totals then s.totals[st.pid] = st.totals end
  return st
end

function M.slow_off(s)
  os.remove(s.out .. "/slow")
  s.slow_until = nil
end

--- One second of waiting between operations: ends a slow phase when due, samples.
function M.idle(s)
  local t = e2e.now()
  if s.slow_until and t >= s.slow_until then M.slow_off(s) end
  M.sample(s)
  local left = 1 - (e2e.now() - t)
  if left > 0 then e2e.sleep(left) end
end

local function violation(s, what)
  s.violations[#s.violations + 1] = what
end

--- Waits until the instance runs (no reload in progress) with `want`
-- workers (default: any), each connected to the broker and subscribed
-- (generous: 90 s, the machine is shared). False, with a violation, if not.
-- Not /ready: a slot replaying a backlog is not ready, and the schedule goes
-- on meanwhile on purpose.
local function wait_ready(s, after, want)
  local st
  local ok = e2e.wait_for(function()
    st = M.sample(s)
    if not (st and st.state == "running" and (not want or st.workers == want)) then return false end
    for _, slot in ipairs(st.slots or {}) do
      if not (slot.pid and slot.pid > 0 and slot.connected) then return false end
    end
    return true
  end, 90, 0.2)
  if not ok then
    violation(s, string.format("not up within 90 s after %s: %s", after, st and st.ready_reason or "no status"))
  end
  return ok
end

--- Starts a master with `args` on the same app, run directory and client ids.
function M.start(s, args)
  local r = e2e.routemq(s.broker, s.app, args, s.env)
  s.r = r
  s.masters[#s.masters + 1] = r
  track(s, r.pid)
  wait_ready(s, "start")
  return r
end

local ops = {}

-- A reload applies the worker counts of the code (or of --workers), not
-- those of an earlier `routemq scale` (master_plan_workers).
function ops.reload(s)
  local ok, out = ctl_cmd(s, "reload")
  if not ok then violation(s, "routemq reload failed: " .. out) end
  s.workers = s.base_workers
  return wait_ready(s, "reload", s.workers) and ok
end

-- Adds a router file (sorting before or after soak.lua) or removes the one added, then reloads.
function ops.deploy(s, op)
  local what
  if s.deployed then
    os.remove(s.deployed)
    what = "removed " .. s.deployed:match("[^/]+$")
    s.deployed = nil
  else
    local name = op.arg % 2 == 0 and "a_deploy.lua" or "z_deploy.lua"
    s.deployed = s.app .. "/app/routers/" .. name
    e2e.write(s.deployed, 'local router = require("routemq.router")\n'
      .. 'router.on("soak/deploy/{n}", function() end, { qos = 1 })\n')
    what = "added " .. name
  end
  local ok = ops.reload(s)
  return ok, what
end

function ops.kill_worker(s, op)
  local slots, list = s.r.slots(), {}
  for slot in pairs(slots) do list[#list + 1] = slot end
  if #list == 0 then return true, "no worker running" end
  table.sort(list)
  local slot = list[1 + op.arg % #list]
  track(s, slots[slot].pid)
  e2e.kill(slots[slot].pid, "KILL")
  return true, "slot " .. slot .. " pid " .. slots[slot].pid
end

function ops.kill_master(s)
  local old = s.r
  local workers = old.workers()
  for _, pid in ipairs(workers) do track(s, pid) end
  e2e.kill(old.pid, "KILL")
  local gone = e2e.wait_for(function()
    if e2e.alive(old.pid) then return false end
    for _, pid in ipairs(workers) do if e2e.alive(pid) then return false end end
    return true
  end, 10)
  if not gone then violation(s, "workers of master " .. old.pid .. " still running 10 s after its kill -9") end
  -- The same worker count as before: the docs ask for it (sessions of missing slots keep their share).
  s.base_workers = s.workers
  M.start(s, "run --workers " .. s.workers)
  return gone, string.format("pid %d, restarted as %d with --workers %d", old.pid, s.r.pid, s.workers)
end

function ops.scale(s, op)
  local n = 1 + op.arg % 4
  local ok, out = ctl_cmd(s, "scale " .. n)
  if not ok then violation(s, "routemq scale " .. n .. " failed: " .. out) end
  s.workers = n
  return wait_ready(s, "scale " .. n, n) and ok, string.format("to %d", n)
end

-- Pauses the load (the publisher cannot publish while the broker is down, and
-- the docs admit that shared subscriptions are gone until workers subscribe
-- again), restarts mosquitto with its persistence, resumes once every worker
-- and the fan-out subscriber are subscribed again.
function ops.broker_restart(s)
  e2e.write(s.ctl .. "/pause", "")
  local paused = e2e.wait_for(function()
    local f = io.open(s.ctl .. "/paused")
    if f then f:close() end
    return f ~= nil
  end, 60)
  if not paused then violation(s, "the load did not pause for the broker restart within 60 s") end
  local _, before = e2e.read(s.r.log):gsub("connected to [^\n]* subscription", "")
  local t = e2e.now()
  s.broker.stop()
  local up = e2e.now()
  s.broker.start()
  track(s, s.broker.pid)
  local want = s.workers
  -- docs/delivery.md: a worker notices the restart at once and retries
  -- within 100 ms; 10 s is generous on a busy machine.
  local back = e2e.wait_for(function()
    local _, c = e2e.read(s.r.log):gsub("connected to [^\n]* subscription", "")
    return c >= before + want
  end, 60)
  local reconnect = e2e.now() - up
  s.max_reconnect = math.max(s.max_reconnect or 0, reconnect)
  if not back or reconnect > 10 then
    violation(s, string.format("%d workers not all subscribed again %.1f s after the broker restart", want, reconnect))
  end
  local ok = wait_ready(s, "broker restart", want)
  local probe = "probe-" .. math.floor(t)
  local sub_ok = e2e.wait_for(function()
    e2e.publish(s.broker.port, "soak/out/probe", probe, "-q 1")
    return e2e.read(s.sub_file):find(probe, 1, true) ~= nil
  end, 30, 0.5)
  if not sub_ok then violation(s, "the fan-out subscriber did not come back after the broker restart") end
  os.remove(s.ctl .. "/pause")
  return ok and paused and sub_ok and reconnect <= 10,
    string.format("workers subscribed again %.1f s after the broker, load paused for %.1f s", reconnect, e2e.now() - t)
end

function ops.slow(s, op)
  local secs = 4 + op.arg % 9
  e2e.write(s.out .. "/slow", "")
  s.slow_until = e2e.now() + secs
  return true, string.format("handlers wait %s ms each for %d s", os.getenv("SOAK_SLOW_MS") or "100", secs)
end

function ops.fan_burst(s, op)
  local n = 100 + op.arg % 201
  s.bursts = (s.bursts or 0) + 1
  local list = {}
  for i = 1, n do list[i] = "burst" .. s.bursts .. "-" .. i end
  local out = e2e.publish_lines(s.broker.port, "soak/fan/burst", list, 1)
  local f = assert(io.open(s.ctl .. "/" .. (out:match("rc=0%s*$") and "published" or "unconfirmed") .. "-burst", "a"))
  for _, id in ipairs(list) do f:write("fan\t", id, "\n") end
  f:close()
  return true, string.format("%d messages x %d", n, s.cfg.fan)
end

--- Applies one scheduled operation; returns ok and a description.
function M.apply(s, op)
  return ops[op.name](s, op)
end

--- Stops the instance gracefully (its exit code is an invariant), the
-- subscriber and the broker.
function M.finish(s)
  M.sample(s)
  s.stop_rc = s.r.stop()
  if e2e.alive(s.sub_pid) then e2e.kill(s.sub_pid, "TERM") end
  s.broker.stop()
end

return M
