-- The benchmark driver (run by bench/run.sh with LuaJIT).
--   luajit bench/run.lua <repo root> <build dir>
-- Environment: BENCH_QUICK=1 (one run, 20,000 messages: the CI smoke test),
-- BENCH_RUNS, BENCH_MESSAGES, BENCH_KILLS, BENCH_ONLY=throughput,scaling,replay,
-- memory,wait,db,rr,restart,reload,matcher (comma list), BENCH_WAIT_CONCURRENCY
-- (the WORKER_CONCURRENCY values of the waiting-handler rows, default 256,1024),
-- BENCH_PG_POOLS (the pool sizes of the PostgreSQL rows, default 4,16),
-- BENCH_PG_CONCURRENCY (routemq's WORKER_CONCURRENCY there; default twice the pool),
-- BENCH_SCALING_COUNTS (1,2,4), BENCH_SCALING_QOS (0), BENCH_PEERS=node,python
-- (the peer consumers of bench/peers/ to run; "none" for none), BENCH_KEEP=1
-- (keep the work directory). Every child is started by this process, stopped by its pid,
-- and every wait is bounded.
local ROOT, BUILD = arg[1], arg[2]
assert(ROOT and BUILD, "usage: luajit bench/run.lua <repo root> <build dir>")
package.path = ROOT .. "/bench/lib/?.lua;" .. package.path

local P = require("proc")
local stats = require("stats")
local cjson = require("cjson")
local report = require("report")

local QUICK = os.getenv("BENCH_QUICK") == "1"
local N = tonumber(os.getenv("BENCH_MESSAGES") or "") or (QUICK and 20000 or 200000)
-- Five runs: with three, a median moved by one run's luck on this shared
-- machine, and rows within a few per cent changed sides from run to run.
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "") or (QUICK and 1 or 5)
local KILLS = tonumber(os.getenv("BENCH_KILLS") or "") or (QUICK and 20 or 100)
local RELOAD_N = QUICK and 20000 or 50000
local TOPICS = 100
local BUDGET_S = QUICK and 300 or 3000
-- Waiting handler (10 ms per message, QoS 1): messages per run for the
-- subscribers that wait concurrently, and for paho, which handles one at a
-- time (~100 msg/s).
local WAIT_MS = 10
local WAIT_N = QUICK and 5000 or 20000
local WAIT_N_SERIAL = QUICK and 100 or 300
-- Request/reply: round trips timed per run (after 50 untimed), and the
-- longest a run may take.
local RR_N = QUICK and 500 or 2000
local RR_SECONDS = QUICK and 5 or 10
local ONLY = os.getenv("BENCH_ONLY")

local BIN = BUILD .. "/"
local ROUTEMQ = BUILD .. "/routemq"
local APP = ROOT .. "/bench/app"
local PEERS_DIR = ROOT .. "/bench/peers"
-- Debian's interpreter: it finds python3-paho-mqtt; a python3 first on PATH
-- (pyenv's, a virtualenv's) may not.
local PYTHON = "/usr/bin/python3"
local WORK = BUILD .. "/bench-work"
local RESULTS = BUILD .. "/bench-results"

local t_start = P.mono()
local function elapsed()
  return P.mono() - t_start
end

local function say(fmt, ...)
  io.stderr:write(string.format("[bench %5.1fs] " .. fmt .. "\n", elapsed(), ...))
  io.stderr:flush()
end

-- Whether `name` is in `list` (names separated by commas or spaces); an
-- unset or empty list holds every name.
local function listed(list, name)
  if not list or list == "" then
    return true
  end
  for w in list:gmatch("[^,%s]+") do
    if w == name then
      return true
    end
  end
  return false
end

local function enabled(name)
  return listed(ONLY, name)
end

local function count_of(s, pat)
  local c = 0
  for _ in (s or ""):gmatch(pat) do
    c = c + 1
  end
  return c
end

---------------------------------------------------------------------------
-- Broker, publisher, routemq

-- opts.nagle = true leaves mosquitto's default (Nagle on for its clients);
-- otherwise `set_tcp_nodelay true`, as a broker for request/reply should be.
local function broker_start(opts)
  local port = P.free_port()
  local conf = WORK .. "/mosquitto.conf"
  P.write(conf, string.format(
    "listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\n%s", port,
    (opts and opts.nagle) and "" or "set_tcp_nodelay true\n"))
  local pid = P.spawn({ "mosquitto", "-c", conf }, { stdout = WORK .. "/mosquitto.log", append = true })
  if not P.wait_for(function() return P.can_connect(port) end, 5, 0.005) then
    P.stop(pid, P.SIGKILL, 2)
    error("mosquitto did not listen on 127.0.0.1:" .. port .. " (see " .. WORK .. "/mosquitto.log)")
  end
  return { pid = pid, port = port }
end

local function broker_stop(b)
  if b then
    P.stop(b.pid, P.SIGTERM, 5)
  end
end

-- Starts bench_pub; returns its pid and output path.
local function pub_spawn(port, n, qos, first_seq)
  local out = WORK .. "/pub.out"
  local pid = P.spawn({ BIN .. "bench_pub", "-p", port, "-n", n, "-q", qos, "-T", TOPICS, "-w", 100,
    "-s", first_seq or 0, "-t", 120 }, { stdout = out, stderr = WORK .. "/pub.err" })
  return { pid = pid, out = out }
end

local function pub_finish(p)
  local r = P.reap(p.pid, 130)
  if not r then
    P.stop(p.pid, P.SIGKILL)
    error("bench_pub did not finish")
  end
  local kv = P.kv(P.read(p.out))
  if r.code ~= 0 or not kv.first_publish_ns then
    error("bench_pub failed: " .. (P.read(WORK .. "/pub.err") or "?"))
  end
  return {
    first_us = P.ns_to_us(kv.first_publish_ns),
    done_us = P.ns_to_us(kv.done_ns),
    published = tonumber(kv.published),
  }
end

local rmq_seq = 0

local function routemq_start(port, workers, qos, env_extra)
  rmq_seq = rmq_seq + 1
  local dir = WORK .. "/rmq-" .. rmq_seq
  P.sh("rm -rf '" .. dir .. "' && mkdir -p '" .. dir .. "/out'")
  local env = {
    MQTT_BROKER = "127.0.0.1", MQTT_PORT = port, MQTT_PROTOCOL = "5",
    MQTT_CLIENT_ID = "bench" .. rmq_seq, MQTT_GROUP_NAME = "bench" .. rmq_seq,
    BENCH_OUT = dir .. "/out", BENCH_QOS = qos, BENCH_WORKERS = workers, BENCH_SEQMAP = 0,
    ROUTEMQ_RUN_DIR = dir .. "/run", LOG_LEVEL = "info", LOG_FORMAT = "text",
    WORKER_COUNT = false, ROUTEMQ_HTTP = false, WORKER_MAX_MESSAGES = false,
    WORKER_MAX_MEMORY_MB = false, WORKER_AUTO_SCALE = false, MQTT_USERNAME = false,
    MQTT_PASSWORD = false, MQTT_TLS_ENABLED = false, WORKER_CONCURRENCY = false,
    BENCH_HANDLER = false, BENCH_RR = false,
  }
  for k, v in pairs(env_extra or {}) do
    env[k] = v
  end
  local log = dir .. "/routemq.log"
  local pid = P.spawn({ ROUTEMQ, "run", "--app", APP, "--workers", workers },
    { env = env, stdout = log, append = true })
  return { pid = pid, dir = dir, out = dir .. "/out", log = log, workers = workers }
end

local function routemq_log(r)
  return P.read(r.log) or ""
end

local function routemq_wait_connected(r, n, timeout)
  local ok = P.wait_for(function()
    if not P.alive(r.pid) then
      error("routemq exited at start:\n" .. routemq_log(r):sub(1, 2000))
    end
    return count_of(routemq_log(r), "connected to") >= n
  end, timeout or 15, 0.005)
  if not ok then
    error("routemq: " .. n .. " workers not connected in time:\n" .. routemq_log(r):sub(-2000))
  end
end

local function routemq_stop(r)
  if r then
    P.stop(r.pid, P.SIGTERM, 12)
  end
end

-- The handlers' records (bench/app/app/controllers/bench.lua), one per
-- worker process: { count, first_us, last_us, pid, map (string) }.
local function read_records(dir)
  local ffi = require("ffi")
  local recs = {}
  for name in P.sh("ls '" .. dir .. "' 2>/dev/null"):gmatch("w%-%d+%.bin") do
    local s = P.read(dir .. "/" .. name)
    if s and #s >= 64 then
      local d = ffi.cast("const double *", ffi.cast("const char *", s))
      recs[#recs + 1] = {
        count = d[0], first_us = d[1], last_us = d[2], pid = d[3],
        map = s:sub(65, 64 + d[4]), could_not_wait = d[6] == 1,
      }
    end
  end
  local total, first, last = 0, math.huge, 0
  for _, rec in ipairs(recs) do
    total = total + rec.count
    if rec.count > 0 then
      first = math.min(first, rec.first_us)
      last = math.max(last, rec.last_us)
    end
  end
  return recs, total, first, last
end

-- Waits until the handlers counted `want` messages, or nothing moved for
-- `idle` seconds. Returns total, last_us.
local function wait_handled(dir, want, idle, interval)
  local deadline = P.mono() + 300
  local seen, since = -1, P.mono()
  repeat
    local _, total, _, last = read_records(dir)
    if total >= want then
      return total, last
    end
    if total ~= seen then
      seen, since = total, P.mono()
    elseif P.mono() - since > idle then
      return total, last
    end
    P.sleep(interval or 0.005)
  until P.mono() > deadline
  local _, total, _, last = read_records(dir)
  return total, last
end

---------------------------------------------------------------------------
-- Counting subscribers: the yardstick (bench_sub) and the peer consumers of
-- bench/peers/, what a user would write instead of a routemq application
-- (Node.js with mqtt.js, Python with paho-mqtt). All take bench_sub's
-- options and print its lines (subscribed_ns=..., then count=... first_ns=
-- last_ns= cpu_us=...).

local function trim(s)
  return ((s or ""):gsub("^%s+", ""):gsub("%s+$", ""))
end

local YARDSTICK = { id = "yardstick", name = "bench_sub", label = "bench_sub (yardstick)",
                    argv = { BIN .. "bench_sub" }, cpu_note = "getrusage" }
local PEERS = {}          -- the peers that can run here, in report order
local PEERS_SKIPPED = {}  -- "node (mqtt.js): node is not installed", ...
local VERSIONS = {}       -- node, mqttjs, python, paho

local function peer_wanted(id)
  return listed(os.getenv("BENCH_PEERS"), id)
end

-- Finds which peers can run; a missing runtime skips its peer with a line
-- saying why (bench/run.sh has installed what it could).
local function detect_peers()
  local function skip(label, why)
    PEERS_SKIPPED[#PEERS_SKIPPED + 1] = label .. ": " .. why
    say("peer %s skipped: %s", label, why)
  end
  if peer_wanted("node") then
    local label = "node (mqtt.js)"
    local node = trim(P.sh("node -v 2>/dev/null"))
    local pkg = P.read(PEERS_DIR .. "/node/node_modules/mqtt/package.json")
    local okp, meta = pcall(cjson.decode, pkg or "")
    if node == "" then
      skip(label, "node is not installed")
    elseif not okp or type(meta) ~= "table" then
      skip(label, "mqtt.js is not installed (bench/run.sh runs npm ci in bench/peers/node)")
    else
      VERSIONS.node, VERSIONS.mqttjs = node, tostring(meta.version)
      local okpg, pgmeta = pcall(cjson.decode, P.read(PEERS_DIR .. "/node/node_modules/pg/package.json") or "")
      PEERS[#PEERS + 1] = { id = "node", name = "consumer.js", label = label,
        argv = { "node", PEERS_DIR .. "/node/consumer.js" }, cpu_note = "process.cpuUsage()",
        pg = okpg and type(pgmeta) == "table" and tostring(pgmeta.version) or nil }  -- node-postgres, for db
    end
  end
  if peer_wanted("python") then
    local label = "python (paho-mqtt)"
    local out = trim(P.sh(PYTHON .. " -c 'import sys, paho.mqtt; print(sys.version.split()[0], "
      .. "paho.mqtt.__version__)' 2>/dev/null"))
    local py, paho = out:match("^(%S+) (%S+)$")
    if trim(P.sh("test -x " .. PYTHON .. " && echo yes")) ~= "yes" then
      skip(label, PYTHON .. " is not installed")
    elseif not py then
      skip(label, "paho-mqtt is not importable by " .. PYTHON .. " (Debian python3-paho-mqtt)")
    else
      VERSIONS.python, VERSIONS.paho = py, paho
      PEERS[#PEERS + 1] = { id = "python", name = "consumer.py", label = label, serial = true,
        argv = { PYTHON, PEERS_DIR .. "/python/consumer.py" }, cpu_note = "time.process_time()" }
    end
  end
end

-- Starts a counting subscriber and waits for its SUBACK.
local function counter_spawn(client, port, n, qos, extra)
  local out = WORK .. "/" .. client.id .. ".out"
  local err = WORK .. "/" .. client.id .. ".err"
  local argv = {}
  for _, a in ipairs(client.argv) do argv[#argv + 1] = a end
  for _, a in ipairs({ "-p", port, "-n", n, "-q", qos, "-t", 120, "-I", 10 }) do argv[#argv + 1] = a end
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local pid = P.spawn(argv, { stdout = out, stderr = err })
  if not P.wait_for(function() return (P.read(out) or ""):find("subscribed_ns") end, 15) then
    P.stop(pid, P.SIGKILL)
    error(client.name .. " did not subscribe: " .. (P.read(err) or ""))
  end
  return { pid = pid, out = out, client = client }
end

-- Waits for a counting subscriber to exit; returns its figures.
local function counter_finish(c, timeout)
  local r = P.reap(c.pid, timeout or 130)
  if not r then
    P.stop(c.pid, P.SIGKILL)
  end
  local kv = P.kv(P.read(c.out))
  return { count = tonumber(kv.count) or 0, last_us = kv.last_ns and P.ns_to_us(kv.last_ns) or 0,
           cpu_us = tonumber(kv.cpu_us) or 0, rss_kb = tonumber(kv.rss_kb) }
end

---------------------------------------------------------------------------
-- Results

local rows = {}   -- { section, id, label, unit, values, summary, target, note }
local errors = {}

local function add_row(row)
  row.summary = stats.summary(row.values)
  rows[#rows + 1] = row
  local s = row.summary
  if s.n > 0 then
    say("  %-52s min %s  median %s  max %s %s", row.label, report.fmt(s.min, row.unit),
      report.fmt(s.median, row.unit), report.fmt(s.max, row.unit), row.unit)
  end
  return row
end

-- Runs fn(i) RUNS times; collects per-run result tables. A failed run is
-- logged and recorded, children still running are stopped.
local function repeat_runs(name, fn, runs)
  local out = {}
  for i = 1, runs or RUNS do
    if elapsed() > BUDGET_S then
      errors[#errors + 1] = name .. ": skipped, time budget spent"
      say("%s: skipped, time budget spent", name)
      break
    end
    local ok, res = xpcall(fn, debug.traceback, i)
    if ok then
      out[#out + 1] = res
    else
      errors[#errors + 1] = name .. " run " .. i .. ": " .. tostring(res)
      say("%s run %d FAILED: %s", name, i, tostring(res))
      P.stop_all()
    end
  end
  return out
end

-- Runs every subject RUNS times at this QoS, interleaved (run 1 of every
-- subject, then run 2, ...) so that the machine's slow drifts spread over all
-- subjects alike. Returns results[subject id] = list of the runs that worked.
local function interleaved(section, subjects, qos)
  local results = {}
  for i = 1, RUNS do
    for _, s in ipairs(subjects) do
      results[s.id] = results[s.id] or {}
      local one = repeat_runs(string.format("%s %s qos%d run %d", section, s.id, qos, i),
        function() return s.fn(qos) end, 1)
      if one[1] then
        table.insert(results[s.id], one[1])
      end
    end
  end
  return results
end

local function column(list, key)
  local v = {}
  for _, r in ipairs(list) do
    v[#v + 1] = r[key]
  end
  return v
end

---------------------------------------------------------------------------
-- 1. Throughput through the broker

local function rate_of(handled, first_us, last_us)
  if not handled or handled <= 0 or last_us <= first_us then
    return nil
  end
  return handled / ((last_us - first_us) / 1e6)
end

-- The yardstick or a peer through the broker.
-- n (default N) messages; extra: more arguments for the counter.
local function thr_counter(client, qos, broker_opts, n, extra)
  n = n or N
  local b = broker_start(broker_opts)
  local c = counter_spawn(client, b.port, n, qos, extra)
  local pub = pub_finish(pub_spawn(b.port, n, qos))
  local res = counter_finish(c)
  broker_stop(b)
  return { rate = rate_of(res.count, pub.first_us, res.last_us), handled = res.count, published = pub.published,
           cpu_us_per_msg = res.cpu_us / math.max(1, res.count), rss_mb = res.rss_kb and res.rss_kb / 1024 }
end

local function thr_mosquitto_sub(qos)
  local b = broker_start()
  local sub = P.spawn({ "mosquitto_sub", "-h", "127.0.0.1", "-p", b.port, "-t", "sensors/+/data",
    "-q", qos, "-C", N, "-V", "mqttv5" }, { stdout = "/dev/null", stderr = WORK .. "/mosquitto_sub.err" })
  P.sleep(0.5)  -- mosquitto_sub says nothing when subscribed
  local pub = pub_finish(pub_spawn(b.port, N, qos))
  local r = P.reap(sub, 120)
  broker_stop(b)
  if not r or r.code ~= 0 then
    if not r then P.stop(sub, P.SIGKILL) end
    error("mosquitto_sub did not receive " .. N .. " messages")
  end
  return { rate = rate_of(N, pub.first_us, r.at_us), handled = N, published = pub.published }
end

local function thr_routemq(qos, workers, env_extra, n)
  n = n or N
  local b = broker_start()
  local r = routemq_start(b.port, workers, qos, env_extra)
  routemq_wait_connected(r, workers)
  P.sleep(0.1)  -- "connected to" comes once the SUBACKs are in; a margin for older runtimes
  local cpu0 = {}
  local pids = P.worker_pids(r.pid)
  for slot, pid in pairs(pids) do
    cpu0[slot] = P.proc_cpu_us(pid)
  end
  local pub = pub_finish(pub_spawn(b.port, n, qos))
  local handled, last = wait_handled(r.out, n, 5, 0.002)
  local cpu = 0
  for slot, pid in pairs(pids) do
    cpu = cpu + ((P.proc_cpu_us(pid) or cpu0[slot]) - cpu0[slot])
  end
  local rss = {}
  for _, pid in pairs(P.worker_pids(r.pid)) do
    rss[#rss + 1] = (P.mem_kb(pid) or 0) / 1024
  end
  routemq_stop(r)
  broker_stop(b)
  if handled < n then
    error(string.format("routemq handled %d of %d messages", handled, n))
  end
  return { rate = rate_of(handled, pub.first_us, last), handled = handled, published = pub.published,
           worker_rss_mb = rss, cpu_us_per_msg = cpu / math.max(1, handled) }
end

local function bench_throughput()
  say("throughput through mosquitto: %d messages on %d topics, %d run(s) each", N, TOPICS, RUNS)
  local subjects = {
    { id = "yardstick", label = "bench_sub (bare libmosquitto, counts)",
      fn = function(q) return thr_counter(YARDSTICK, q) end },
    -- What set_tcp_nodelay (on for every other run, for request/reply)
    -- costs a subscriber that takes a stream of small messages.
    { id = "yardstick_nagle", label = "bench_sub, broker WITHOUT set_tcp_nodelay",
      fn = function(q) return thr_counter(YARDSTICK, q, { nagle = true }) end },
    { id = "mosquitto_sub", label = "mosquitto_sub -C N", fn = thr_mosquitto_sub },
    { id = "routemq_1", label = "routemq, 1 worker", fn = function(q) return thr_routemq(q, 1) end },
    { id = "routemq_1_publish", label = "routemq, 1 worker, handler publishes one QoS 1 message",
      fn = function(q) return thr_routemq(q, 1, { BENCH_HANDLER = "publish" }) end },
    { id = "routemq_2", label = "routemq, 2 workers (shared)", fn = function(q) return thr_routemq(q, 2) end },
    { id = "routemq_4", label = "routemq, 4 workers (shared)", fn = function(q) return thr_routemq(q, 4) end },
  }
  local cpu_subjects = { { id = "yardstick", label = "bench_sub", note = "getrusage" },
                         { id = "yardstick_nagle", label = "bench_sub, broker WITHOUT set_tcp_nodelay",
                           note = "getrusage" } }
  for i, p in ipairs(PEERS) do
    table.insert(subjects, 3 + i, { id = "peer_" .. p.id, label = "peer: " .. p.label,
      fn = function(q) return thr_counter(p, q) end })
    cpu_subjects[#cpu_subjects + 1] = { id = "peer_" .. p.id, label = "peer: " .. p.label, note = p.cpu_note }
  end
  for _, w in ipairs({ 1, 2, 4 }) do
    cpu_subjects[#cpu_subjects + 1] = { id = "routemq_" .. w,
      label = "routemq, sum over " .. w .. " worker(s)", note = "utime+stime from /proc/<pid>/stat" }
  end
  local by = {}
  for _, qos in ipairs({ 0, 1 }) do
    local results = interleaved("throughput", subjects, qos)
    for _, s in ipairs(subjects) do
      local res = results[s.id]
      by[s.id .. qos] = add_row({
        section = "throughput", id = "throughput_" .. s.id .. "_qos" .. qos, qos = qos, subject = s.id,
        label = string.format("QoS %d: %s", qos, s.label), unit = "msg/s", values = column(res, "rate"),
        runs = res,
      })
    end
  end
  -- CPU per message of the subscriber process(es) in these runs: through
  -- the broker a subscriber reads fewer messages per wake-up than from the
  -- replay server, so this is higher than in section 2.
  for _, qos in ipairs({ 0, 1 }) do
    for _, cs in ipairs(cpu_subjects) do
      local row = by[cs.id .. qos]
      if row and row.runs and #row.runs > 0 then
        add_row({ section = "throughput", id = "throughput_cpu_" .. cs.id .. "_qos" .. qos, qos = qos,
          subject = cs.id, label = string.format("QoS %d: CPU per message, %s", qos, cs.label),
          unit = "µs/msg", values = column(row.runs, "cpu_us_per_msg"), note = cs.note })
      end
    end
  end
  -- Worker RSS once it has handled N messages (1 worker, QoS 0): LuaJIT's
  -- heap and machine code grown, for comparison with the idle figures.
  local loaded = {}
  for _, run in ipairs(by["routemq_10"].runs or {}) do
    for _, v in ipairs(run.worker_rss_mb or {}) do
      loaded[#loaded + 1] = v
    end
  end
  if #loaded > 0 then
    add_row({ section = "memory", id = "memory_worker_rss_loaded", unit = "MB", values = loaded,
      label = "worker RSS after handling the throughput run (1 worker, QoS 0)" })
  end
  for _, p in ipairs(PEERS) do
    local row = by["peer_" .. p.id .. "0"]
    if row and row.runs and #row.runs > 0 then
      add_row({ section = "memory", id = "memory_peer_" .. p.id .. "_rss_loaded", unit = "MB", subject = p.id,
        values = column(row.runs, "rss_mb"), note = "VmRSS read by the process at its end",
        label = "peer " .. p.label .. ": RSS after handling the throughput run (QoS 0)" })
    end
  end
  for _, qos in ipairs({ 0, 1 }) do
    local y, r = by["yardstick" .. qos].summary.median, by["routemq_1" .. qos].summary.median
    if y and r then
      local row = by["routemq_1" .. qos]
      row.target = { text = string.format("≥ 0.9 × yardstick (%s)", report.fmt(0.9 * y, "msg/s")),
                     ok = r >= 0.9 * y, ratio = r / y }
    end
  end
end

---------------------------------------------------------------------------
-- 2. Worker cost without the broker (replay server)

local function replay_start(qos)
  local out = WORK .. "/replay.out"
  local pid = P.spawn({ BIN .. "bench_replay", "-n", N, "-q", qos, "-T", TOPICS, "-g", "-t", 120 },
    { stdout = out, stderr = WORK .. "/replay.err" })
  local port = P.wait_for(function() return tonumber((P.read(out) or ""):match("listening port=(%d+)")) end, 5)
  if not port then
    error("bench_replay did not start")
  end
  return { pid = pid, port = port, out = out }
end

local function replay_finish(rp)
  local r = P.reap(rp.pid, 15)
  if not r then
    P.stop(rp.pid, P.SIGKILL)
  end
  local kv = P.kv(P.read(rp.out))
  return P.ns_to_us(kv.stream_start_ns), tonumber(kv.sent) or 0, tonumber(kv.acked) or 0
end

-- The yardstick or a peer against the replay server.
local function replay_counter(client, qos)
  local rp = replay_start(qos)
  local c = counter_spawn(client, rp.port, N, qos)
  P.signal(rp.pid, P.SIGUSR1)
  local res = counter_finish(c, 120)
  local start_us, sent = replay_finish(rp)
  if res.count < N then
    error(string.format("%s handled %d of %d (replay sent %d)", client.name, res.count, N, sent))
  end
  return { rate = rate_of(res.count, start_us, res.last_us), cpu = res.cpu_us / res.count }
end

local function replay_routemq(qos)
  local rp = replay_start(qos)
  -- The replay server accepts one connection: the worker's, so no presence connection.
  local r = routemq_start(rp.port, 1, qos, { ROUTEMQ_PRESENCE = "false" })
  local ok = P.wait_for(function() return (P.read(rp.out) or ""):find("subscribed_ns") end, 15)
  if not ok then
    error("the routemq worker did not subscribe to the replay server:\n" .. routemq_log(r):sub(-2000))
  end
  local wpid = P.wait_for(function() return P.worker_pids(r.pid)[0] end, 5)
  P.sleep(0.05)  -- the worker has read its SUBACK and is idle
  local cpu0, sched0 = P.proc_cpu_us(wpid)
  P.signal(rp.pid, P.SIGUSR1)
  local handled, last = wait_handled(r.out, N, 5, 0.002)
  local cpu1, sched1 = P.proc_cpu_us(wpid)
  local start_us = replay_finish(rp)
  routemq_stop(r)
  if handled < N then
    error(string.format("routemq handled %d of %d messages from the replay server", handled, N))
  end
  return { rate = rate_of(handled, start_us, last), cpu = (cpu1 - cpu0) / handled,
           cpu_sched = sched0 and (sched1 - sched0) / handled, worker_pid = wpid }
end

local function bench_replay()
  say("worker cost without the broker: replay of %d messages, %d run(s) each", N, RUNS)
  local cpu = {}
  local subjects = { { id = "yardstick", label = "bench_sub (yardstick)",
                      fn = function(q) return replay_counter(YARDSTICK, q) end, note = "getrusage" } }
  for _, p in ipairs(PEERS) do
    subjects[#subjects + 1] = { id = "peer_" .. p.id, label = "peer: " .. p.label, note = p.cpu_note,
                                fn = function(q) return replay_counter(p, q) end }
  end
  subjects[#subjects + 1] = { id = "routemq_1", label = "routemq worker", fn = replay_routemq,
    note = "utime+stime of the worker from /proc/<pid>/stat, stream start → last handled (idle included)" }
  for _, qos in ipairs({ 0, 1 }) do
    local results = interleaved("replay", subjects, qos)
    for _, s in ipairs(subjects) do
      local res = results[s.id]
      add_row({ section = "replay", id = "replay_" .. s.id .. "_qos" .. qos .. "_rate", qos = qos,
        subject = s.id, label = string.format("QoS %d: %s, rate", qos, s.label), unit = "msg/s",
        values = column(res, "rate"), runs = res })
      cpu[s.id .. qos] = add_row({ section = "replay", id = "replay_" .. s.id .. "_qos" .. qos .. "_cpu",
        qos = qos, subject = s.id, label = string.format("QoS %d: %s, CPU per message", qos, s.label),
        unit = "µs/msg", values = column(res, "cpu"), runs = res,
        note = s.id == "routemq_1" and s.note or (s.note .. " in-process, SUBACK → last message") })
    end
    local y, r = cpu["yardstick" .. qos].summary.median, cpu["routemq_1" .. qos].summary.median
    if y and r then
      cpu["routemq_1" .. qos].target = { text = string.format("≤ 1.3 × yardstick (%.2f)", 1.3 * y),
                                         ok = r <= 1.3 * y, ratio = r / y }
    end
  end
end

---------------------------------------------------------------------------
-- 3. Memory

local function memory_run(workers)
  local b = broker_start()
  local r = routemq_start(b.port, workers, 0)
  routemq_wait_connected(r, workers)
  P.sleep(1.0)  -- settle: every worker connected, subscribed and idle
  local res = { worker_rss = {}, worker_pss = {} }
  res.master_rss, res.master_pss = P.mem_kb(r.pid)
  local pids = P.worker_pids(r.pid)
  -- Where the memory is: the largest mappings of the master and of worker 0.
  res.master_maps = { unpack(P.mem_by_mapping(r.pid), 1, 12) }
  res.worker_maps = pids[0] and { unpack(P.mem_by_mapping(pids[0]), 1, 12) } or {}
  for slot = 0, workers - 1 do
    if pids[slot] then
      local rss, pss = P.mem_kb(pids[slot])
      res.worker_rss[#res.worker_rss + 1] = rss
      res.worker_pss[#res.worker_pss + 1] = pss
    end
  end
  routemq_stop(r)
  broker_stop(b)
  if #res.worker_rss ~= workers then
    error("found " .. #res.worker_rss .. " of " .. workers .. " workers")
  end
  return res
end

local function bench_memory()
  say("memory of the master and idle workers, %d run(s) each", RUNS)
  for _, w in ipairs({ 1, 8 }) do
    local res = repeat_runs("memory " .. w .. " workers", function() return memory_run(w) end)
    local function flat(key)
      local v = {}
      for _, r in ipairs(res) do
        for _, x in ipairs(r[key]) do
          v[#v + 1] = x / 1024
        end
      end
      return v
    end
    local function per(key)
      local v = {}
      for _, r in ipairs(res) do
        v[#v + 1] = r[key] and r[key] / 1024
      end
      return v
    end
    local tag = string.format("%d worker%s", w, w == 1 and "" or "s")
    local function largest(key)
      local maps = res[1] and res[1][key] or {}
      local t = {}
      for i = 1, math.min(4, #maps) do
        t[#t + 1] = string.format("%s %.2f", maps[i].name, maps[i].rss_kb / 1024)
      end
      return #t > 0 and ("largest mappings (RSS MB): " .. table.concat(t, ", ")) or nil
    end
    local mr = add_row({ section = "memory", id = "memory_master_rss_" .. w, label = "master RSS, " .. tag,
      unit = "MB", values = per("master_rss"), runs = res, note = largest("master_maps") })
    add_row({ section = "memory", id = "memory_master_pss_" .. w, label = "master PSS, " .. tag,
      unit = "MB", values = per("master_pss") })
    local wr = add_row({ section = "memory", id = "memory_worker_rss_" .. w, label = "idle worker RSS, " .. tag,
      unit = "MB", values = flat("worker_rss"),
      note = "over every worker of every run; " .. (largest("worker_maps") or "") })
    local wp = add_row({ section = "memory", id = "memory_worker_pss_" .. w, label = "idle worker PSS, " .. tag,
      unit = "MB", values = flat("worker_pss"), note = "over every worker of every run" })
    if mr.summary.max then mr.target = { text = "≤ 8 MB", ok = mr.summary.max <= 8 } end
    if wr.summary.max then wr.target = { text = "≤ 5 MB", ok = wr.summary.max <= 5 } end
    if wp.summary.max then wp.target = { text = "≤ 2.5 MB", ok = wp.summary.max <= 2.5 } end
  end
end

-- The yardstick and the peers, idle: connected and subscribed for 1 s.
local function memory_counter(client)
  local b = broker_start()
  local c = counter_spawn(client, b.port, 1000000000, 0)
  P.sleep(1.0)
  local rss, pss = P.mem_kb(c.pid)
  P.stop(c.pid, P.SIGTERM, 5)
  broker_stop(b)
  if not rss then
    error("no /proc/" .. c.pid .. "/smaps_rollup for " .. client.name)
  end
  return { rss = rss / 1024, pss = pss and pss / 1024 }
end

local function bench_memory_counters()
  local clients = { YARDSTICK }
  for _, p in ipairs(PEERS) do
    clients[#clients + 1] = p
  end
  for _, c in ipairs(clients) do
    local label = c == YARDSTICK and "bench_sub (yardstick)" or ("peer " .. c.label)
    local res = repeat_runs("memory " .. c.id, function() return memory_counter(c) end)
    add_row({ section = "memory", id = "memory_" .. c.id .. "_rss", subject = c.id, unit = "MB",
      label = "idle RSS, " .. label, values = column(res, "rss"), note = "one process, after its SUBACK" })
    add_row({ section = "memory", id = "memory_" .. c.id .. "_pss", subject = c.id, unit = "MB",
      label = "idle PSS, " .. label, values = column(res, "pss") })
  end
end

---------------------------------------------------------------------------
-- 3b. A handler that waits 10 ms (QoS 1): each subscriber with its natural
-- concurrency. routemq: one worker at each WORKER_CONCURRENCY of
-- BENCH_WAIT_CONCURRENCY (default 256 and 1024), the handler calls
-- cqueues.sleep (needs handlers that wait; otherwise "not available"). CPU
-- per message of the subscriber and of the broker, utime+stime from
-- /proc/<pid>/stat (the peers report their own, SUBACK → last message).

local NOT_AVAILABLE = "not available in this build: cqueues.sleep in a handler does not yield "
  .. "(needs handlers that wait, WORKER_CONCURRENCY)"

local function wait_concurrencies()
  local list = {}
  for c in (os.getenv("BENCH_WAIT_CONCURRENCY") or "256,1024"):gmatch("%d+") do
    list[#list + 1] = tonumber(c)
  end
  return list
end

local function wait_routemq(qos, concurrency)
  local b = broker_start()
  local r = routemq_start(b.port, 1, qos, { WORKER_CONCURRENCY = concurrency, BENCH_HANDLER = "wait",
                                            BENCH_WAIT_MS = WAIT_MS,
                                            WORKER_MAX_KEPT = math.max(10000, concurrency) })
  routemq_wait_connected(r, 1)
  P.sleep(0.1)
  local wpid = P.worker_pids(r.pid)[0]
  local w0, b0 = wpid and P.proc_cpu_us(wpid), P.proc_cpu_us(b.pid)
  local pub = pub_finish(pub_spawn(b.port, WAIT_N, qos))
  local handled, last = wait_handled(r.out, WAIT_N, 5, 0.005)
  local w1, b1 = wpid and P.proc_cpu_us(wpid), P.proc_cpu_us(b.pid)
  -- The worker's peak RSS: what the messages in progress cost in memory.
  local hwm = wpid and tonumber((P.read("/proc/" .. wpid .. "/status") or ""):match("VmHWM:%s+(%d+)"))
  local recs = read_records(r.out)
  routemq_stop(r)
  broker_stop(b)
  for _, rec in ipairs(recs) do
    if rec.could_not_wait then
      return { unavailable = true }
    end
  end
  if handled < WAIT_N then
    error(string.format("routemq handled %d of %d messages", handled, WAIT_N))
  end
  return { rate = rate_of(handled, pub.first_us, last), handled = handled,
           cpu_us_per_msg = w0 and w1 and (w1 - w0) / handled, broker_us_per_msg = (b1 - b0) / handled,
           peak_rss_mb = hwm and hwm / 1024 }
end

local function wait_counter(client, qos)
  local n = client.serial and WAIT_N_SERIAL or WAIT_N
  local b = broker_start()
  local c = counter_spawn(client, b.port, n, qos, { "-w", WAIT_MS })
  local b0 = P.proc_cpu_us(b.pid)
  local pub = pub_finish(pub_spawn(b.port, n, qos))
  local res = counter_finish(c, 130)
  local b1 = P.proc_cpu_us(b.pid)
  broker_stop(b)
  if res.count < n then
    error(string.format("%s handled %d of %d messages", client.name, res.count, n))
  end
  return { rate = rate_of(res.count, pub.first_us, res.last_us), handled = res.count,
           cpu_us_per_msg = res.cpu_us / res.count, broker_us_per_msg = (b1 - b0) / res.count }
end

local function bench_wait()
  say("handler that waits %d ms, QoS 1: %d messages (%d for one-at-a-time subscribers), %d run(s) each",
    WAIT_MS, WAIT_N, WAIT_N_SERIAL, RUNS)
  local subjects = {}
  for _, conc in ipairs(wait_concurrencies()) do
    subjects[#subjects + 1] = { id = "routemq_c" .. conc, cpu_note = "utime+stime from /proc/<pid>/stat",
      label = string.format("routemq, 1 worker, WORKER_CONCURRENCY=%d (cqueues.sleep)", conc),
      fn = function(q) return wait_routemq(q, conc) end }
  end
  for _, p in ipairs(PEERS) do
    subjects[#subjects + 1] = { id = "peer_" .. p.id, fn = function(q) return wait_counter(p, q) end,
      cpu_note = p.cpu_note,
      label = "peer: " .. p.label .. (p.serial and ", time.sleep on paho's network thread (one at a time)"
        or ", await setTimeout in the message callback (no limit on messages in progress)") }
  end
  local results = interleaved("wait", subjects, 1)
  for _, s in ipairs(subjects) do
    local res, ok, unavailable = results[s.id], {}, false
    for _, r in ipairs(res) do
      if r.unavailable then
        unavailable = true
      else
        ok[#ok + 1] = r
      end
    end
    local label = string.format("QoS 1, %d ms per message: %s", WAIT_MS, s.label)
    local row = add_row({ section = "wait", id = "wait_" .. s.id, subject = s.id, qos = 1,
      label = label, unit = "msg/s",
      values = column(ok, "rate"), runs = res, note = unavailable and NOT_AVAILABLE or nil })
    if unavailable then
      row.unavailable = true
      say("  %-52s %s", row.label, NOT_AVAILABLE)
    else
      add_row({ section = "wait", id = "wait_" .. s.id .. "_cpu", subject = s.id, qos = 1,
        label = label .. ", CPU per message", unit = "µs/msg", values = column(ok, "cpu_us_per_msg"),
        note = s.cpu_note })
      add_row({ section = "wait", id = "wait_" .. s.id .. "_broker_cpu", subject = s.id, qos = 1,
        label = label .. ", CPU per message, broker", unit = "µs/msg", values = column(ok, "broker_us_per_msg"),
        note = "utime+stime of mosquitto from /proc/<pid>/stat" })
      local peak = column(ok, "peak_rss_mb")
      if #peak > 0 then
        add_row({ section = "wait", id = "wait_" .. s.id .. "_peak_rss", subject = s.id, qos = 1,
          label = label .. ", peak RSS of the worker", unit = "MB", values = peak,
          note = "VmHWM from /proc/<pid>/status" })
      end
    end
  end
end

---------------------------------------------------------------------------
-- 3c. Request/reply latency: bench_rr sends one request at a time (MQTT 5
-- response topic + correlation data) and times request → response.

local function rr_measure(port, qos, seconds, warmup)
  local out, err = WORK .. "/rr.out", WORK .. "/rr.err"
  local pid = P.spawn({ BIN .. "bench_rr", "-p", port, "-q", qos, "-n", RR_N, "-W", warmup or 50,
    "-d", seconds }, { stdout = out, stderr = err })
  local r = P.reap(pid, seconds + 30)
  if not r then
    P.stop(pid, P.SIGKILL)
    error("bench_rr did not finish")
  end
  local kv = P.kv(P.read(out))
  local n = tonumber(kv.n) or 0
  if n == 0 then
    error("bench_rr timed no round trip: " .. (P.read(err) or ""))
  end
  return { n = n, lost = tonumber(kv.lost), p50 = tonumber(kv.p50_us), p90 = tonumber(kv.p90_us),
           p99 = tonumber(kv.p99_us), max = tonumber(kv.max_us), mean = tonumber(kv.mean_us) }
end

-- nagle: the broker keeps its default (no set_tcp_nodelay), for comparison.
local function rr_routemq(qos, nagle)
  local b = broker_start({ nagle = nagle })
  local r = routemq_start(b.port, 1, qos, { BENCH_RR = 1 })
  routemq_wait_connected(r, 1)
  P.sleep(0.1)
  local ok, res = pcall(rr_measure, b.port, qos, nagle and 3 or RR_SECONDS, nagle and 3 or 50)
  routemq_stop(r)
  broker_stop(b)
  if not ok then
    error(res, 0)
  end
  return res
end

-- client = nil: bench_rr -R, a bare libmosquitto responder in C.
local function rr_counter(client, qos)
  local b = broker_start()
  local c
  if client then
    c = counter_spawn(client, b.port, 1000000000, qos, { "-R", "-f", "bench/rr/req" })
  else
    local out = WORK .. "/rr-responder.out"
    c = { pid = P.spawn({ BIN .. "bench_rr", "-R", "-p", b.port, "-q", qos, "-d", RR_SECONDS + 60 },
      { stdout = out, stderr = WORK .. "/rr-responder.err" }) }
    if not P.wait_for(function() return (P.read(out) or ""):find("subscribed_ns") end, 15) then
      P.stop(c.pid, P.SIGKILL)
      broker_stop(b)
      error("bench_rr -R did not subscribe: " .. (P.read(WORK .. "/rr-responder.err") or ""))
    end
  end
  local ok, res = pcall(rr_measure, b.port, qos, RR_SECONDS)
  P.stop(c.pid, P.SIGTERM, 5)
  broker_stop(b)
  if not ok then
    error(res, 0)
  end
  return res
end

local function bench_rr()
  say("request/reply latency: up to %d round trips (or %d s) per run, %d run(s) each", RR_N, RR_SECONDS, RUNS)
  local subjects = { { id = "routemq_1", label = "routemq, 1 worker, ctx:reply",
                       fn = function(q) return rr_routemq(q, false) end },
                     { id = "bare", label = "bench_rr -R (bare libmosquitto responder in C)",
                       fn = function(q) return rr_counter(nil, q) end } }
  for _, p in ipairs(PEERS) do
    subjects[#subjects + 1] = { id = "peer_" .. p.id, label = "peer: " .. p.label .. ", publish to the response topic",
      fn = function(q) return rr_counter(p, q) end }
  end
  subjects[#subjects + 1] = { id = "routemq_1_nagle", nagle = true,
    label = "routemq, 1 worker, ctx:reply, broker WITHOUT set_tcp_nodelay",
    fn = function(q) return rr_routemq(q, true) end }
  for _, qos in ipairs({ 0, 1 }) do
    local results = interleaved("rr", subjects, qos)
    for _, s in ipairs(subjects) do
      local res = results[s.id]
      local ns, lost = {}, 0
      for _, r in ipairs(res) do
        ns[#ns + 1] = r.n
        lost = lost + (r.lost or 0)
      end
      local note = string.format("round trips per run: %s; lost %d%s", report.list(ns, "msgs"), lost,
        s.nagle and "; runs of 3 s" or "")
      add_row({ section = "rr", id = "rr_" .. s.id .. "_qos" .. qos .. "_p50", subject = s.id, qos = qos,
        label = string.format("QoS %d: %s — p50", qos, s.label), unit = "µs", values = column(res, "p50"),
        runs = res, note = note })
      add_row({ section = "rr", id = "rr_" .. s.id .. "_qos" .. qos .. "_p99", subject = s.id, qos = qos,
        label = string.format("QoS %d: %s — p99", qos, s.label), unit = "µs", values = column(res, "p99") })
    end
  end
end

---------------------------------------------------------------------------
-- 4. Restart after kill -9, and reload under load

-- "2026-11-23T03:46:27.925Z" -> ms since the epoch.
local function iso_ms(s)
  local y, mo, d, h, mi, sec, ms = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.(%d+)Z$")
  if not y then
    return nil
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- days from civil (proleptic Gregorian)
  if mo <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (mo + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(sec) * 1000 + tonumber(ms)
end

-- JSON log -> per slot lists of ms timestamps of "connected to" and "subscribed".
local function log_events(text)
  local conn, subd, master = {}, {}, {}
  for line in text:gmatch("[^\n]+") do
    local ok, o = pcall(cjson.decode, line)
    if ok and type(o) == "table" and o.ts then
      local t = iso_ms(o.ts)
      local msg = tostring(o.msg or "")
      if o.worker ~= nil and t then
        local slot = tonumber(o.worker)
        if msg:find("^connected to") then
          conn[slot] = conn[slot] or {}
          table.insert(conn[slot], t)
        elseif msg == "subscribed" then
          subd[slot] = subd[slot] or {}
          table.insert(subd[slot], t)
        end
      elseif o.process == "master" then
        master[#master + 1] = { t = t, msg = msg }
      end
    end
  end
  return conn, subd, master
end

local function first_at_or_after(list, t_ms)
  for _, t in ipairs(list or {}) do
    if t >= t_ms then
      return t
    end
  end
  return nil
end

local function restart_run()
  local b = broker_start()
  local r = routemq_start(b.port, 4, 1, { LOG_FORMAT = "json", LOG_LEVEL = "debug" })
  routemq_wait_connected(r, 4)
  P.sleep(1.2)
  -- Kills rotate over the slots every 0.3 s, and a slot is killed again only
  -- 1.2 s after its previous kill: the master backs off a slot whose worker
  -- dies within 1 s of starting, which is not what is measured here.
  local kills, last_kill, last_pid = {}, {}, {}
  local t_prev = P.mono() - 1
  for k = 1, KILLS do
    local slot = (k - 1) % 4
    local due = math.max(t_prev + 0.3, (last_kill[slot] or 0) + 1.2)
    local wait = due - P.mono()
    if wait > 0 then
      P.sleep(wait)
    end
    local pid = P.wait_for(function()
      local p = P.worker_pids(r.pid)[slot]
      return p ~= last_pid[slot] and p or nil
    end, 5, 0.005)
    if pid then
      local t = P.now_us()
      if P.signal(pid, P.SIGKILL) then
        kills[#kills + 1] = { slot = slot, t_us = t, pid = pid }
      end
      last_kill[slot], last_pid[slot] = P.mono(), pid
    end
    t_prev = P.mono()
  end
  P.sleep(1.5)
  local conn, subd, master = log_events(routemq_log(r))
  local backoffs = 0
  for _, m in ipairs(master) do
    if m.msg:find("times in a row; restarting in") then
      backoffs = backoffs + 1
    end
  end
  routemq_stop(r)
  broker_stop(b)
  local to_conn, to_sub, missing = {}, {}, 0
  for _, k in ipairs(kills) do
    local kms = k.t_us / 1000
    local c = first_at_or_after(conn[k.slot], math.floor(kms))
    local s = first_at_or_after(subd[k.slot], math.floor(kms))
    if c then
      to_conn[#to_conn + 1] = math.max(0, c - kms)
    else
      missing = missing + 1
    end
    if s then
      to_sub[#to_sub + 1] = math.max(0, s - kms)
    end
  end
  return { kills = #kills, to_conn = to_conn, to_sub = to_sub, missing = missing, backoffs = backoffs }
end

local function reload_run()
  local b = broker_start()
  local r = routemq_start(b.port, 4, 1, { LOG_FORMAT = "json", LOG_LEVEL = "debug", BENCH_SEQMAP = RELOAD_N })
  routemq_wait_connected(r, 4)
  P.sleep(0.3)
  local pub = pub_spawn(b.port, RELOAD_N, 1)
  -- SIGHUP once a fifth of the messages have been handled: under load.
  local _, _ = wait_handled(r.out, math.floor(RELOAD_N / 5), 10, 0.002)
  local t_hup = P.now_us()
  P.signal(r.pid, P.SIGHUP)
  local pubres = pub_finish(pub)
  local done = P.wait_for(function() return routemq_log(r):find("generation 2 done") end, 15, 0.01)
  local recs, distinct, handled
  -- Wait until every sequence number was seen, or nothing moves for 5 s.
  local since, last_distinct = P.mono(), -1
  local deadline = P.mono() + 60
  repeat
    local rs = read_records(r.out)
    recs = rs
    local seen = {}
    handled, distinct = 0, 0
    for _, rec in ipairs(rs) do
      handled = handled + rec.count
      local m = rec.map
      for i = 1, #m do
        if seen[i] == nil and m:byte(i) == 1 then
          seen[i] = true
          distinct = distinct + 1
        end
      end
    end
    if distinct ~= last_distinct then
      last_distinct, since = distinct, P.mono()
    end
    if distinct >= RELOAD_N then
      break
    end
    P.sleep(0.1)
  until P.mono() - since > 5 or P.mono() > deadline
  local conn, subd, master = log_events(routemq_log(r))
  routemq_stop(r)
  broker_stop(b)
  if not done then
    error("the reload did not finish (no 'generation 2 done' line)")
  end
  local hms = t_hup / 1000
  local last_conn, last_sub = 0, 0
  for slot = 0, 3 do
    local c = first_at_or_after(conn[slot], math.floor(hms))
    local s = first_at_or_after(subd[slot], math.floor(hms))
    if not c then
      error("worker " .. slot .. " was not reconnected after the SIGHUP")
    end
    last_conn = math.max(last_conn, c)
    last_sub = math.max(last_sub, s or c)
  end
  local master_ms
  for _, m in ipairs(master) do
    master_ms = master_ms or tonumber(m.msg:match("generation 2 done in (%d+) ms"))
  end
  return {
    reload_ms = last_conn - hms, reload_sub_ms = last_sub - hms, master_ms = master_ms,
    published = pubres.published, handled = handled, distinct = distinct,
    lost = pubres.published - distinct, duplicates = handled - distinct, processes = #recs,
  }
end

local function bench_restart()
  say("restart after kill -9: %d kills over 4 workers, %d run(s)", KILLS, RUNS)
  local res = repeat_runs("restart", restart_run)
  local all_conn, all_sub, medians, kills, missing, backoffs = {}, {}, {}, 0, 0, 0
  for _, r in ipairs(res) do
    for _, v in ipairs(r.to_conn) do all_conn[#all_conn + 1] = v end
    for _, v in ipairs(r.to_sub) do all_sub[#all_sub + 1] = v end
    medians[#medians + 1] = stats.summary(r.to_conn).median
    kills = kills + r.kills
    missing = missing + r.missing
    backoffs = backoffs + r.backoffs
  end
  local row = add_row({ section = "restart", id = "restart_kill_to_connected",
    label = "kill -9 → replacement connected and subscribed", unit = "ms", values = all_conn,
    note = string.format("%d kills; p90 %s ms; per-run medians %s", kills,
      report.fmt(stats.summary(all_conn).p90, "ms"), report.list(medians, "ms")), runs = res })
  row.p90 = stats.summary(all_conn).p90
  if row.summary.median then
    row.target = { text = "median ≤ 50 ms", ok = row.summary.median <= 50 and missing == 0 }
  end
  -- Older runtimes logged "connected to" on CONNACK and "subscribed" (debug)
  -- on the SUBACK; now "connected to" itself waits for every SUBACK.
  if #all_sub > 0 then
    local srow = add_row({ section = "restart", id = "restart_kill_to_subscribed",
      label = "kill -9 → replacement subscribed (log 'subscribed')", unit = "ms", values = all_sub,
      note = string.format("p90 %s ms", report.fmt(stats.summary(all_sub).p90, "ms")) })
    srow.p90 = stats.summary(all_sub).p90
  end
  if missing > 0 or backoffs > 0 then
    row.note = row.note .. string.format("; %d kill(s) without a replacement in the log, %d crash-loop backoff(s)",
      missing, backoffs)
  end

end

local function bench_reload()
  say("reload (SIGHUP) of 4 workers under QoS 1 load: %d messages, %d run(s)", RELOAD_N, RUNS)
  local rl = repeat_runs("reload", reload_run)
  local rrow = add_row({ section = "reload", id = "reload_ms",
    label = "SIGHUP → last new worker connected and subscribed", unit = "ms",
    values = column(rl, "reload_ms"), runs = rl,
    note = "master's own figure (SIGHUP read → last slot ready): " .. report.list(column(rl, "master_ms"), "ms") })
  if rrow.summary.max then
    rrow.target = { text = "≤ 1000 ms", ok = rrow.summary.max <= 1000 }
  end
  local lrow = add_row({ section = "reload", id = "reload_lost", label = "messages lost during the reload (QoS 1)",
    unit = "msgs", values = column(rl, "lost"),
    note = string.format("of %d published per run; duplicates %s", RELOAD_N,
      report.list(column(rl, "duplicates"), "msgs")) })
  if lrow.summary.max then
    lrow.target = { text = "0", ok = lrow.summary.max == 0 }
  end
end

---------------------------------------------------------------------------
-- 5. Matcher

local function bench_matcher()
  local secs = QUICK and "0.3" or "1.0"
  say("matcher: %d run(s)", RUNS)
  local res = repeat_runs("matcher", function()
    local out = WORK .. "/matcher.out"
    local pid = P.spawn({ BIN .. "bench_matcher", secs }, { stdout = out })
    local r = P.reap(pid, 60)
    if not r or r.code ~= 0 then
      if not r then P.stop(pid, P.SIGKILL) end
      error("bench_matcher failed")
    end
    local t = {}
    for routes, rate in (P.read(out) or ""):gmatch("matcher routes=(%d+) matches_per_sec=([%d%.e+]+)") do
      t[tonumber(routes)] = tonumber(rate)
    end
    return t
  end)
  local sizes = {}
  for _, r in ipairs(res) do
    for k in pairs(r) do sizes[k] = true end
  end
  local list = {}
  for k in pairs(sizes) do list[#list + 1] = k end
  table.sort(list)
  for _, routes in ipairs(list) do
    local v = {}
    for _, r in ipairs(res) do v[#v + 1] = r[routes] end
    add_row({ section = "matcher", id = "matcher_" .. routes, label = string.format("%d routes", routes),
      unit = "matches/s", values = v })
  end
end

---------------------------------------------------------------------------

local function machine()
  return {
    nproc = trim(P.sh("nproc")),
    cpu = trim(P.sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1")),
    kernel = trim(P.sh("uname -sr")),
    os = trim(P.sh(". /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\"")),
    mosquitto = trim(P.sh("mosquitto -h 2>&1 | head -1")),
    libmosquitto = trim(P.sh("pkg-config --modversion libmosquitto 2>/dev/null")),
    luajit = trim(P.sh("luajit -v 2>&1 | head -1")):match("^(LuaJIT %S+)") or "?",
    memory = trim(P.sh("free -m | awk '/^Mem:/ {print $2 \" MB\"}'")),
    date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    commit = trim(P.sh("git -C '" .. ROOT .. "' rev-parse --short HEAD 2>/dev/null")),
    node = VERSIONS.node, mqttjs = VERSIONS.mqttjs, python = VERSIONS.python, paho = VERSIONS.paho,
  }
end

local function main()
  P.sh("rm -rf '" .. WORK .. "' && mkdir -p '" .. WORK .. "' '" .. RESULTS .. "'")
  for _, tool in ipairs({ "bench_pub", "bench_sub", "bench_replay", "bench_matcher", "bench_rr", "routemq" }) do
    if not io.open(BIN .. tool, "rb") then
      error(BIN .. tool .. " is missing: build first (make build)")
    end
  end
  say("%s run: %d messages, %d run(s) per scenario", QUICK and "quick" or "full", N, RUNS)
  detect_peers()
  if enabled("throughput") then bench_throughput() end
  if enabled("replay") then bench_replay() end
  if enabled("memory") then
    bench_memory()
    bench_memory_counters()
  end
  if enabled("wait") then bench_wait() end
  if enabled("db") then
    local pg_pools = {}
    for c in (os.getenv("BENCH_PG_POOLS") or "4,16"):gmatch("%d+") do
      pg_pools[#pg_pools + 1] = tonumber(c)
    end
    require("db_bench").run({ say = say, n = QUICK and 5000 or 20000, runs = RUNS, work = WORK, errors = errors,
      peers = PEERS, thr_routemq = thr_routemq, thr_counter = thr_counter, interleaved = interleaved,
      add_row = add_row, column = column, pools = pg_pools,
      concurrency = tonumber(os.getenv("BENCH_PG_CONCURRENCY") or "") })
  end
  if enabled("scaling") then
    require("scaling_bench").run({ say = say, n = N, runs = RUNS, work = WORK, peers = PEERS, yardstick = YARDSTICK,
      interleaved = interleaved, add_row = add_row, column = column, rate_of = rate_of,
      broker_start = broker_start, broker_stop = broker_stop, routemq_start = routemq_start,
      routemq_wait_connected = routemq_wait_connected, routemq_stop = routemq_stop,
      pub_spawn = pub_spawn, pub_finish = pub_finish, wait_handled = wait_handled })
  end
  if enabled("rr") then bench_rr() end
  if enabled("restart") then bench_restart() end
  if enabled("reload") then bench_reload() end
  if enabled("matcher") then bench_matcher() end

  local result = {
    command = QUICK and "BENCH_QUICK=1 make bench" or "make bench",
    quick = QUICK, messages = N, runs = RUNS, kills = KILLS, reload_messages = RELOAD_N, topics = TOPICS,
    seconds = math.floor(elapsed() + 0.5), machine = machine(), rows = rows, errors = errors,
    peers_skipped = PEERS_SKIPPED,
  }
  report.write_all(result, RESULTS, (not QUICK and not ONLY) and (ROOT .. "/docs") or nil)
  say("done in %.0f s; results in %s%s", elapsed(), RESULTS,
    (not QUICK and not ONLY) and " and docs/benchmarks.{md,json,png}" or "")
  if #errors > 0 then
    say("%d error(s):", #errors)
    for _, e in ipairs(errors) do
      io.stderr:write("  " .. e:gsub("\n", "\n    ") .. "\n")
    end
    return 1
  end
  return 0
end

local ok, rc = xpcall(main, debug.traceback)
P.stop_all()
if not ok then
  io.stderr:write("bench: " .. tostring(rc) .. "\n")
  rc = 1
end
if os.getenv("BENCH_KEEP") ~= "1" and rc == 0 then
  P.sh("rm -rf '" .. WORK .. "'")
end
os.exit(rc)
