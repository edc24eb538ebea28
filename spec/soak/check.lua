--- The soak's end (spec/soak/soak.lua): waiting until everything published
-- was handled, and the invariants with the summary table.
local e2e = require("spec.helpers.e2e")
local ops = require("spec.soak.ops")

local M = {}

local KINDS = { "plain", "shared", "ordered", "wait", "fan", "state" }

-- "kind<TAB>id" lines of the loader's and the bursts' ledgers.
local function ledger(s, name)
  local ids, n = {}, 0
  for _, file in ipairs({ name, name .. "-burst" }) do
    for kind, id in e2e.read(s.ctl .. "/" .. file):gmatch("([^\t\n]+)\t([^\n]+)") do
      if not ids[id] then n = n + 1 end
      ids[id] = kind
    end
  end
  return ids, n
end

-- Per id: { n = records, red = redelivered, live = not redelivered and not a
-- retained copy, ret = retained copies sent on a subscribe }.
local function handled(s)
  local by = {}
  for _, rec in ipairs((e2e.records(s.out))) do
    local h = by[rec.payload]
    if not h then
      h = { n = 0, red = 0, live = 0, ret = 0 }
      by[rec.payload] = h
    end
    h.n = h.n + 1
    if rec.redelivered then h.red = h.red + 1
    elseif rec.route == "retained" then h.ret = h.ret + 1
    else h.live = h.live + 1 end
  end
  return by
end

-- Fan-out outputs received: count per "id:j".
local function outputs(s)
  local got = {}
  for line in e2e.read(s.sub_file):gmatch("[^\n]+") do got[line] = (got[line] or 0) + 1 end
  return got
end

-- Messages not handled yet plus fan-out outputs not received yet.
local function missing(s, pub)
  local by, got, n = handled(s), outputs(s), 0
  for id, kind in pairs(pub) do
    if not by[id] then n = n + 1 end
    if kind == "fan" then
      for j = 1, s.cfg.fan do
        if not got[id .. ":" .. j] then n = n + 1 end
      end
    end
  end
  return n
end

--- Waits until every confirmed message was handled and every fan-out output
-- received; gives up when nothing progressed for SOAK_SETTLE_SECONDS (or
-- after 15 minutes). True when settled.
function M.settle(s)
  local pub = ledger(s, "published")
  local last, since, start = -1, e2e.now(), e2e.now()
  while e2e.now() - start < 900 do
    local t = e2e.now()
    ops.sample(s)
    local n = missing(s, pub)
    if n == 0 then return true end
    if n ~= last then last, since = n, e2e.now() end
    if e2e.now() - since > s.cfg.settle then return false end
    local left = 1 - (e2e.now() - t)
    if left > 0 then e2e.sleep(left) end
  end
  return false
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- What the run left: processes, /dev/shm files of its masters, the run directory.
local function leftovers(s)
  local found = {}
  e2e.wait_for(function()
    for _, pid in ipairs(s.pids) do if e2e.alive(pid) then return false end end
    return true
  end, 15)
  for _, pid in ipairs(s.pids) do
    if e2e.alive(pid) then
      found[#found + 1] = string.format("process %d (%s)", pid, e2e.read("/proc/" .. pid .. "/cmdline"):gsub("%z", " "))
      e2e.kill(pid, "KILL")
    end
  end
  -- Every process the e2e helper starts has its directory in its command line.
  local dirs = { s.work .. "/", s.broker.dir .. "/" }
  for _, r in ipairs(s.masters) do dirs[#dirs + 1] = r.dir .. "/" end
  for pid in e2e.sh("ls /proc"):gmatch("%d+") do
    local cmd = e2e.read("/proc/" .. pid .. "/cmdline"):gsub("%z", " ")
    for _, dir in ipairs(dirs) do
      if cmd:find(dir, 1, true) and e2e.alive(tonumber(pid)) then
        found[#found + 1] = "process " .. pid .. " (" .. cmd .. ")"
        e2e.kill(tonumber(pid), "KILL")
        break
      end
    end
  end
  for _, r in ipairs(s.masters) do
    for f in e2e.sh("ls /dev/shm/routemq." .. r.pid .. ".* 2>/dev/null"):gmatch("[^\n]+") do
      found[#found + 1] = "file " .. f
      os.remove(f)
    end
  end
  for _, name in ipairs({ "routemq.pid", "control.sock" }) do
    if exists(s.run .. "/" .. name) then found[#found + 1] = "file " .. s.run .. "/" .. name end
  end
  return found
end

local function mb(kb) return string.format("%.1f MB", kb / 1024) end

--- The summary table and the invariants; { text =, failed = { names } }.
function M.report(s)
  local pub = ledger(s, "published")
  local unconf = ledger(s, "unconfirmed")
  local by, got = handled(s), outputs(s)
  local rows, tot = {}, { pub = 0, handled = 0, lost = 0, admitted = 0, unadmitted = 0, retained = 0 }
  for _, k in ipairs(KINDS) do
    rows[k] = { pub = 0, handled = 0, lost = 0, admitted = 0, unadmitted = 0, retained = 0 }
  end
  local fan_want, fan_lost, fan_dups, lost_examples = 0, 0, 0, {}
  for id, kind in pairs(pub) do
    local row, h = rows[kind], by[id]
    row.pub = row.pub + 1
    if not h then
      row.lost = row.lost + 1
      if #lost_examples < 5 then lost_examples[#lost_examples + 1] = id end
    else
      row.handled = row.handled + 1
      -- One live handling is the message; a second live one is a duplicate no
      -- document admits; retained copies on a subscribe are the retained
      -- invariant's; replays after a death (ctx.redelivered) are admitted.
      local unadmitted = math.max(0, h.live - 1)
      local retained = h.live + h.red > 0 and h.ret or math.max(0, h.ret - 1)
      row.unadmitted = row.unadmitted + unadmitted
      row.retained = row.retained + retained
      row.admitted = row.admitted + (h.n - 1 - unadmitted - retained)
    end
    if kind == "fan" then
      for j = 1, s.cfg.fan do
        local c = got[id .. ":" .. j]
        fan_want = fan_want + 1
        if not c then fan_lost = fan_lost + 1 elseif c > 1 then fan_dups = fan_dups + c - 1 end
      end
    end
  end
  local extra = 0
  for id in pairs(by) do if not pub[id] and not unconf[id] then extra = extra + 1 end end

  local lines = {}
  local function say(...) lines[#lines + 1] = string.format(...) end
  say("")
  say("soak summary: seed %d, %d s, %d msg/s, %d fan-out per message", s.cfg.seed, s.cfg.seconds, s.cfg.rate,
    s.cfg.fan)
  say("")
  say("  %-16s %8s", "operation", "applied")
  local nops = 0
  for _, name in ipairs(ops.names) do
    if s.applied[name] then
      say("  %-16s %8d", name, s.applied[name])
      nops = nops + s.applied[name]
    end
  end
  say("  %-16s %8d", "total", nops)
  say("")
  say("  %-10s %10s %10s %8s %12s %14s %14s", "route", "published", "handled", "lost", "dup (replay)",
    "dup (unadmit.)", "retained again")
  for _, k in ipairs(KINDS) do
    local r = rows[k]
    if r.pub > 0 then
      say("  %-10s %10d %10d %8d %12d %14d %14d", k, r.pub, r.handled, r.lost, r.admitted, r.unadmitted, r.retained)
      for f, v in pairs(r) do tot[f] = tot[f] + v end
    end
  end
  say("  %-10s %10d %10d %8d %12d %14d %14d", "total", tot.pub, tot.handled, tot.lost, tot.admitted, tot.unadmitted,
    tot.retained)
  say("")
  say("  fan-out outputs: %d expected, %d received, %d lost, %d duplicated", fan_want, fan_want - fan_lost, fan_lost,
    fan_dups)
  local nunconf = 0
  for _ in pairs(unconf) do nunconf = nunconf + 1 end
  say("  not confirmed by the broker to the publisher (not counted): %d; handled ids never published: %d", nunconf,
    extra)
  local t = { duplicates = 0, publishes_dropped = 0, errors = 0, restarts = 0 }
  for _, tt in pairs(s.totals) do for k in pairs(t) do t[k] = t[k] + (tonumber(tt[k]) or 0) end end
  say("  routemq (all masters): %d broker resends skipped, %d publishes dropped, %d handler errors, %d restarts",
    t.duplicates, t.publishes_dropped, t.errors, t.restarts)
  say("  peak worker RSS: %s at %.0f s (bound %d MB); masters started: %d", mb(s.peak_rss_kb), s.peak_rss_at or 0,
    s.cfg.max_rss_mb, #s.masters)
  if s.max_reconnect then
    say("  slowest re-subscription of all workers after a broker restart: %.1f s", s.max_reconnect)
  end
  if #lost_examples > 0 then say("  lost, for example: %s", table.concat(lost_examples, " ")) end

  local left = leftovers(s)
  local inv = {
    { "every published message handled at least once", tot.lost == 0, tot.lost .. " lost" },
    { "duplicates only as docs/delivery.md admits (replays after a death)", tot.unadmitted == 0,
      tot.unadmitted .. " handled twice without ctx.redelivered" },
    { "fan-out outputs all received", fan_lost == 0, fan_lost .. " of " .. fan_want .. " not received" },
    { "retained handled once per publication", tot.retained == 0, tot.retained .. " handled again on a subscribe" },
    { "every operation completed (ready again after it)", #s.violations == 0, table.concat(s.violations, "; ") },
    { "no handler error", t.errors == 0, t.errors .. " handler errors (see the routemq logs)" },
    { "memory bounded", s.peak_rss_kb <= s.cfg.max_rss_mb * 1024,
      "peak worker RSS " .. mb(s.peak_rss_kb) .. " > " .. s.cfg.max_rss_mb .. " MB" },
    { "the final graceful stop exits 0", s.stop_rc == 0, "exit code " .. tostring(s.stop_rc) },
    { "no process or file left behind", #left == 0, table.concat(left, "; ") },
  }
  local failed = {}
  say("")
  say("  invariants:")
  for _, i in ipairs(inv) do
    say("    %s  %s%s", i[2] and "ok  " or "FAIL", i[1], i[2] and "" or ": " .. i[3])
    if not i[2] then failed[#failed + 1] = i[1] end
  end
  say("")
  say("soak: seed %d: %s", s.cfg.seed, #failed == 0 and "all invariants hold"
    or (#failed .. " invariant" .. (#failed == 1 and "" or "s") .. " violated: " .. table.concat(failed, "; ")))
  return { text = table.concat(lines, "\n"), failed = failed }
end

return M
