--- End-to-end test support: a real mosquitto on a free 127.0.0.1 port, the
-- routemq executable run against it, and the records the test application's
-- handlers leave behind. Every process started here is stopped by its pid.
-- Clocks, sleeping, signals, ports and bounded waits: shared with the
-- benchmark driver (bench/lib/proc.lua).
local sys = require("spec.helpers.sys")

local M = {}

M.root = os.getenv("ROUTEMQ_ROOT") or "."
M.bin = os.getenv("ROUTEMQ_BIN") or (M.root .. "/build/routemq")

local sh = sys.sh
M.sh = sh

--- Wall-clock seconds (with fractions) since the epoch.
M.now = sys.now
--- Monotonic seconds (with fractions), for deadlines.
M.mono = sys.mono

--- Seconds since the epoch of a log line's ISO timestamp (UTC, ms).
function M.log_time(line)
  local Y, m, d, H, M_, S, ms = line:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.(%d+)Z")
  if not Y then return nil end
  local days = os.time({ year = tonumber(Y), month = tonumber(m), day = tonumber(d), hour = 12 })
    - os.time({ year = 1970, month = 1, day = 1, hour = 12 })
  return days + tonumber(H) * 3600 + tonumber(M_) * 60 + tonumber(S) + tonumber(ms) / 1000
end

--- Runs fn when the current test ends, pass or fail, after the functions
-- deferred later (last first). busted's own `finally` keeps only the last
-- function given to it in a test, so a test stopping a routemq instance and
-- a subscriber must go through here or leak one of them. Outside a test
-- (setup, lazy_setup) there is no `finally`: with `optional` it returns false
-- and the caller's teardown stops what it started; without, it is an error.
local deferred
function M.defer(fn, optional)
  if not deferred then
    -- The test's environment has busted's `finally`; helpers calling this
    -- (M.routemq, spec/helpers/netns.lua, a spec's own start function) are
    -- a few levels further up.
    local finally
    for level = 3, 8 do
      local ok, env = pcall(getfenv, level)
      finally = ok and type(env) == "table" and env.finally
      if finally then break end
    end
    finally = finally or _G.finally
    if not finally then
      if optional then return false end
      error("e2e.defer: called outside a test (no busted finally)", 2)
    end
    local list = {}
    deferred = list
    finally(function()
      deferred = nil
      for i = #list, 1, -1 do
        local ok, err = pcall(list[i])
        if not ok then io.stderr:write("e2e cleanup: ", tostring(err), "\n") end
      end
    end)
  end
  deferred[#deferred + 1] = fn
  return true
end

--- Sleeps for s seconds.
M.sleep = sys.sleep

--- A TCP port on 127.0.0.1 that nothing listens on right now.
M.free_port = sys.free_port

--- True while process pid exists (and is not a zombie of ours).
function M.alive(pid)
  if not sys.signal(pid, 0) then return false end
  local st = sh("cat /proc/" .. pid .. "/stat 2>/dev/null")
  return st ~= "" and not st:match("^%d+ %b() Z")
end

--- Sends a signal (by number or name: "TERM", the default, "KILL"...) to pid.
M.kill = sys.signal

--- Waits until fn() is truthy or timeout seconds (default 10) pass on the
-- monotonic clock; returns fn()'s value.
M.wait_for = sys.wait_for

--- A fresh temporary directory. When the test ends (after everything it
-- started has stopped), the worker keeps below it are removed: each one is
-- reserved whole (WORKER_MAX_KEPT_MB, 32 MB by default), and a full run
-- makes some 400 directories. The logs stay for reading after a failure.
function M.tmpdir()
  local base = os.getenv("E2E_TMP") or "/tmp"
  local dir = sh("mkdir -p " .. base .. " && mktemp -d " .. base .. "/routemq-e2e.XXXXXX"):gsub("%s+$", "")
  M.defer(function() sh("find " .. M.quote(dir) .. " -type f -name 'keep-*' -delete 2>/dev/null") end, true)
  return dir
end

--- Starts cmd in the background with its output in logfile; returns its pid
-- and the file its exit code will be written to when it ends.
function M.spawn(cmd, logfile, env)
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. "export " .. k .. "='" .. tostring(v) .. "'; " end
  local rcfile = logfile .. ".rc"
  os.remove(rcfile)
  -- A restart (broker.start again) reuses the log: without this, the pid of
  -- the previous process could be read before the shell writes the new one.
  os.remove(logfile .. ".pid")
  local script = string.format("cd %s; %s %s > %s 2>&1 < /dev/null & echo $! > %s.pid; wait $!; echo $? > %s",
    M.root, prefix, cmd, logfile, logfile, rcfile)
  sh("sh -c " .. M.quote(script) .. " > /dev/null 2>&1 &")
  local pid = M.wait_for(function() return tonumber(M.read(logfile .. ".pid"):match("%d+")) end, 5, 0.01)
  return pid, rcfile
end

--- Quotes s for sh.
function M.quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Reads a whole file, "" when missing.
function M.read(path) return sys.read(path) or "" end

--- Writes text to path, replacing it.
M.write = sys.write

--- Copies the app/ of application src (relative to the repository root, or
-- absolute) into dir (default: a fresh temporary directory); returns dir.
function M.copy_app(src, dir)
  dir = dir or M.tmpdir()
  if src:sub(1, 1) ~= "/" then src = M.root .. "/" .. src end
  sh(string.format("cp -r %s/app %s/", M.quote(src), M.quote(dir)))
  return dir
end

--- Starts a mosquitto on a free port. Returns { port =, pid =, dir =, stop = fn }.
-- opts: port, persistence, password_file (with user, pass), log_types (more
-- mosquitto log_type values for its log, dir .. "/broker.log").
function M.broker(opts)
  opts = opts or {}
  local dir = M.tmpdir()
  -- mosquitto started as root drops to the mosquitto user: let it read and write here.
  sh("chmod 0777 " .. dir)
  local port = opts.port or M.free_port()
  local conf = dir .. "/mosquitto.conf"
  local f = assert(io.open(conf, "w"))
  f:write("listener ", port, " 127.0.0.1\n", "allow_anonymous ", opts.password_file and "false" or "true", "\n",
    "max_queued_messages 1000000\n", "log_type error\nlog_type warning\n")
  for _, t in ipairs(opts.log_types or {}) do f:write("log_type ", t, "\n") end
  if opts.persistence then
    f:write("persistence true\npersistence_location ", dir, "/\nautosave_interval 1\n")
  else
    f:write("persistence false\n")
  end
  if opts.password_file then f:write("password_file ", opts.password_file, "\n") end
  f:close()
  local exe = io.open("/usr/sbin/mosquitto") and "/usr/sbin/mosquitto" or "mosquitto"
  local b = { port = port, dir = dir, conf = conf }
  function b.start()
    b.pid = M.spawn(exe .. " -c " .. conf, dir .. "/broker.log")
    assert(M.wait_for(function()
      local auth = opts.user and (" -u " .. opts.user .. " -P " .. opts.pass) or ""
      local out = sh("mosquitto_pub -p " .. port .. auth .. " -t routemq/probe -n 2>&1; echo $?")
      return out:match("^0%s*$") or out:find("not authori")
    end, 10), "mosquitto did not start: " .. M.read(dir .. "/broker.log"))
  end
  function b.stop()
    if b.pid and M.alive(b.pid) then
      M.kill(b.pid, "TERM")
      M.wait_for(function() return not M.alive(b.pid) end, 5)
      if M.alive(b.pid) then M.kill(b.pid, "KILL") end
    end
  end
  b.start()
  return b
end

--- Waits until `routemq dev`, logging to `log`, has started its private broker
-- and a worker is connected to it. Returns the broker's port and pid (either
-- may be nil) and whether that happened within 15 s: the caller keeps the
-- pid to stop the broker even when it did not.
function M.dev_broker(log)
  local port, pid
  local up = M.wait_for(function()
    port, pid = M.read(log):match("private mosquitto on 127%.0%.0%.1:(%d+) %(pid (%d+)")
    return port and M.read(log):find("connected to 127.0.0.1:" .. port)
  end, 15)
  return tonumber(port), tonumber(pid), up
end

--- Starts `cmd` (a routemq dev command line) logging to `log`, stops it and
-- its private broker (by pid, with SIGKILL) when the test ends, and waits for
-- the broker and a connected worker. Returns dev's pid, the broker's port and
-- pid, and whether it came up (see dev_broker).
function M.dev(cmd, log, env)
  local pid = M.spawn(cmd, log, env)
  local port, broker_pid, up
  M.defer(function()
    if M.alive(pid) then M.kill(pid, "KILL") end
    if broker_pid and M.alive(broker_pid) then M.kill(broker_pid, "KILL") end
  end)
  port, broker_pid, up = M.dev_broker(log)
  return pid, port, broker_pid, up
end

--- Publishes each line of `lines` (a table of strings) with mosquitto_pub -l.
function M.publish_lines(port, topic, lines, qos, extra)
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  local out = sh(string.format("mosquitto_pub -p %d -t '%s' -q %d %s -l < %s 2>&1; echo rc=$?", port, topic,
    qos or 1, extra or "", file))
  os.remove(file)
  return out
end

--- Publishes one message; extra is passed to mosquitto_pub as is.
function M.publish(port, topic, payload, extra)
  return sh(string.format("mosquitto_pub -p %d -t '%s' -m '%s' %s 2>&1", port, topic, payload, extra or ""))
end

--- Waits until the mosquitto_sub writing to `file` receives a probe
-- ("e2e-probe") published to `topic`, one of its subscriptions: from then on
-- it gets what is published. Lines with the probe are the caller's to skip.
function M.wait_subscribed(port, topic, file)
  return M.wait_for(function()
    M.publish(port, topic, "e2e-probe")
    return M.read(file):find("e2e-probe", 1, true) ~= nil
  end, 30, 0.2)
end

--- Runs routemq `args` against broker b for the app in app_dir; returns a handle
-- with pid, log, stop(), workers().
function M.routemq(b, app_dir, args, env)
  local dir = M.tmpdir()
  -- Each instance gets its own client ids and share group: persistent sessions
  -- of earlier instances on the same broker stay members of their group and
  -- would take a share of the messages.
  local id = dir:match("([^.]+)$")
  local e = { MQTT_BROKER = "127.0.0.1", MQTT_PORT = b.port, ROUTEMQ_RUN_DIR = dir .. "/run",
    MQTT_CLIENT_ID = "t" .. id, MQTT_GROUP_NAME = "g" .. id,
    E2E_OUT = dir, WORKER_STOP_TIMEOUT = 5, MQTT_RETRY_MIN_DELAY = 0.1, MQTT_RETRY_MAX_DELAY = 1 }
  for k, v in pairs(env or {}) do e[k] = v end
  local r = { dir = dir, log = dir .. "/routemq.log" }
  r.pid, r.rcfile = M.spawn(M.bin .. " " .. (args or "run") .. " --app " .. app_dir, r.log, e)
  function r.workers()
    local pids = {}
    for pid in sh("pgrep -P " .. r.pid .. " 2>/dev/null"):gmatch("%d+") do
      local title = M.read("/proc/" .. pid .. "/cmdline") or ""  -- it may have exited since pgrep
      if title:match("worker") then pids[#pids + 1] = tonumber(pid) end
    end
    return pids
  end
  function r.slots()
    local slots = {}
    for pid in sh("pgrep -P " .. r.pid .. " 2>/dev/null"):gmatch("%d+") do
      local slot, gen = (M.read("/proc/" .. pid .. "/cmdline") or ""):match("routemq: worker (%d+) gen (%d+)")
      if slot then slots[tonumber(slot)] = { pid = tonumber(pid), gen = tonumber(gen) } end
    end
    return slots
  end
  function r.count_workers()
    local n = 0
    for _ in pairs(r.slots()) do n = n + 1 end
    return n
  end
  function r.ready(n)
    -- A worker logs "connected to ..." once subscribed: count those lines.
    local _, c = M.read(r.log):gsub("connected to [^\n]* subscription", "")
    return c >= n
  end
  --- Stops the instance (TERM, then KILL after WORKER_STOP_TIMEOUT + 15 s) and returns its exit
  -- code; idempotent, so a test may stop it before the end and the stop
  -- registered below runs again harmlessly.
  function r.stop()
    if M.alive(r.pid) then
      M.kill(r.pid, "TERM")
      -- The master ends its workers after WORKER_STOP_TIMEOUT itself: give
      -- it that, and time to exit, before stepping in (a loaded machine
      -- running ASan builds takes many seconds to flush a backlog).
      M.wait_for(function() return not M.alive(r.pid) end, (tonumber(e.WORKER_STOP_TIMEOUT) or 10) + 15)
      if M.alive(r.pid) then M.kill(r.pid, "KILL") end
    end
    return r.exit_code()
  end
  function r.exit_code()
    M.wait_for(function() return M.read(r.rcfile) ~= "" end, 5)
    return tonumber(M.read(r.rcfile):match("%d+"))
  end
  -- Stopped when the test ends, as M.dev does; started in a setup, the
  -- caller's teardown stops it.
  M.defer(r.stop, true)
  return r
end

--- True when no worker of instance r (app_dir: its --app) has a message in
-- progress or kept: nothing it took can be handled any more.
function M.idle(r, app_dir)
  local st = M.status(r, app_dir)
  if not st or type(st.slots) ~= "table" then return false end
  for _, s in ipairs(st.slots) do
    if (s.in_progress or 0) ~= 0 or (s.kept or 0) ~= 0 then return false end
  end
  return true
end

--- `routemq status --json` of instance r (app_dir: its --app), decoded; nil
-- when it fails.
function M.status(r, app_dir)
  local out = sh(string.format("cd %s; ROUTEMQ_RUN_DIR=%s %s status --json --app %s 2>/dev/null", M.root,
    r.dir .. "/run", M.bin, app_dir))
  local ok, v = pcall(require("cjson").decode, out)
  return ok and v or nil
end

--- The strings "from" .. "to" as a list (message payloads).
function M.seq(from, to)
  local t = {}
  for i = from, to do t[#t + 1] = tostring(i) end
  return t
end

--- Publishes payloads 1..n to topic at QoS 1 in the background (while the
-- test does something else); its output goes to logfile.
function M.publish_background(port, topic, n, logfile)
  return M.spawn(string.format("sh -c 'seq 1 %d | mosquitto_pub -p %d -t %s -q 1 -l'", n, port, topic), logfile)
end

--- Lost and duplicated among the records of payloads 1..n under dir, or
-- under a list of dirs (several instances) together.
function M.tally(dirs, n)
  local by = {}
  for _, dir in ipairs(type(dirs) == "table" and dirs or { dirs }) do
    local _, b = M.records(dir)
    for k, c in pairs(b) do by[k] = (by[k] or 0) + c end
  end
  local lost, dups = 0, 0
  for i = 1, n do
    local c = by[tostring(i)] or 0
    if c == 0 then lost = lost + 1 elseif c > 1 then dups = dups + c - 1 end
  end
  return lost, dups
end

--- Waits until payloads 1..n were all handled under dir (or a list of dirs),
-- or no missing one arrived for `quiet` seconds. At least 30: on a loaded
-- machine a restarting worker can take seconds, and only a failing run waits
-- that long.
function M.settle(dirs, n, quiet)
  local last, since = -1, M.now()
  quiet = math.max(quiet or 5, 30)
  M.wait_for(function()
    local lost = M.tally(dirs, n)
    if lost == 0 then return true end
    if lost ~= last then last, since = lost, M.now() end
    return M.now() - since >= quiet
  end, math.huge, 0.2)
end

--- Kills the master of routemq handle r and its workers with -9 and waits
-- until all are gone; the master is stopped first (SIGSTOP) so that it
-- cannot replace a worker in between.
function M.kill_all(r)
  local workers = r.workers()
  M.kill(r.pid, 19)  -- SIGSTOP
  for _, pid in ipairs(workers) do M.kill(pid, "KILL") end
  M.kill(r.pid, "KILL")
  assert(M.wait_for(function()
    for _, pid in ipairs(workers) do if M.alive(pid) then return false end end
    return not M.alive(r.pid)
  end, 10))
end

-- Kills one random worker of routemq handle r with -9, after `every`
-- seconds (default 0.5: the pace of the kills the chaos tests ask for, not a
-- wait for anything); true when there was one to kill.
local function kill_one(r, every)
  M.sleep(every or 0.5)
  local pids = r.workers()
  if #pids == 0 then return false end
  M.kill(pids[math.random(#pids)], "KILL")
  return true
end

--- Kills a random worker of routemq handle r with -9 every `every` seconds
-- (default 0.5) for `seconds`; returns how many were killed.
function M.kill_workers(r, seconds, every)
  local kills, t0 = 0, M.now()
  while M.now() - t0 < seconds do
    if kill_one(r, every) then kills = kills + 1 end
  end
  return kills
end

--- Kills a random worker of routemq handle r with -9, `n` times, `every`
-- seconds apart (default 0.5), whatever the time that takes.
function M.kill_workers_n(r, n, every)
  local kills = 0
  while kills < n do
    if kill_one(r, every) then kills = kills + 1 end
  end
  return kills
end

--- How many records the test app's handlers wrote under dir, those of
-- M.sentinels included (cheaper than M.records for polling while tens of
-- thousands of messages flow).
function M.handled(dir)
  return tonumber(sh("cat " .. dir .. "/*.rec 2>/dev/null | wc -l"):match("%d+")) or 0
end

--- Makes "nothing more is handled" certain instead of timed. A broker sends
-- each client its messages in order: sentinels ("e2e-sentinel-<k>") are
-- published to topic (at qos, default 1), one after the other, until every
-- live worker that recorded something under dirs (a dir or a list) has
-- recorded one. What the broker had sent those workers before has then been
-- taken, and handled where a worker handles one message at a time (else see
-- M.idle). For a shared route the broker picks the member: it takes as many
-- sentinels as that needs. Returns how many were published (M.records leaves
-- them out), or nil after timeout s (default 60).
function M.sentinels(port, topic, dirs, qos, timeout)
  dirs = type(dirs) == "table" and dirs or { dirs }
  -- The pids whose record file has a line containing text.
  local function pids(text)
    local set = {}
    for _, dir in ipairs(dirs) do
      for pid in sh(string.format("grep -lF %s %s/*.rec 2>/dev/null", M.quote(text), dir)):gmatch("(%d+)%.rec") do
        set[pid] = true
      end
    end
    return set
  end
  local want = {}  -- a worker that has exited handles nothing more
  for pid in pairs(pids("\t")) do if M.alive(tonumber(pid)) then want[pid] = true end end
  local k = 0
  return M.wait_for(function()
    k = k + 1
    M.publish(port, topic, "e2e-sentinel-" .. k, "-q " .. (qos or 1))
    M.wait_for(function() return next(pids("\te2e-sentinel-" .. k .. "\t")) ~= nil end, 10, 0.02)
    local got = pids("\te2e-sentinel-")
    for pid in pairs(want) do if not got[pid] then return false end end
    return k
  end, timeout or 60, 0)
end

--- Reads every record the test app's handlers wrote under dir: a list of
-- { route =, payload =, pid =, redelivered = } and counts by payload. The
-- records of M.sentinels' messages are left out.
function M.records(dir)
  local list, by_payload = {}, {}
  for file in sh("ls " .. dir .. "/*.rec 2>/dev/null"):gmatch("[^\n]+") do
    for line in M.read(file):gmatch("[^\n]+") do
      local route, payload, pid, red = line:match("^(.-)\t(.-)\t(%d+)\t(%a+)$")
      if route and not payload:match("^e2e%-sentinel%-%d+$") then
        local r = { route = route, payload = payload, pid = tonumber(pid), redelivered = red == "true" }
        list[#list + 1] = r
        by_payload[payload] = (by_payload[payload] or 0) + 1
      end
    end
  end
  return list, by_payload
end

return M
