-- Section 1b of bench/run.lua: more consumers on one shared subscription
-- through the broker. routemq with 1, 2 and 4 workers on its shared route
-- against 1, 2 and 4 Node.js consumers (and bare libmosquitto subscribers,
-- bench_sub) sharing `$share/<group>/sensors/+/data`, interleaved in one run,
-- with the CPU time of every process taken from /proc/<pid>/stat (utime +
-- stime): the broker, each routemq worker and the master; the peers report
-- their own (process.cpuUsage(), getrusage: SUBACK → last message). What is
-- asked: why several consumers on a 2-core machine move fewer messages than
-- one, and whether routemq pays more for it than the others.
local P = require("proc")

local M = {}

-- Idle seconds after which a shared subscriber that has not reached N exits
-- (each gets only part of the N messages): more than the time between the
-- first one's SUBACK and the first message when several start in turn.
local IDLE_S = 3

local function cpu(pid)
  return (P.proc_cpu_us(pid))
end

-- Times the process went to sleep waiting (voluntary context switches): a
-- consumer blocked in epoll_wait/poll wakes once per switch, so this over
-- the messages handled is wake-ups per message, taken without tracing.
local function wakeups(pid)
  local s = P.read("/proc/" .. pid .. "/status") or ""
  return tonumber(s:match("voluntary_ctxt_switches:%s+(%d+)")) or 0
end

-- routemq, `workers` workers on the shared route.
local function routemq_run(ctx, qos, workers)
  local n = ctx.n
  local b = ctx.broker_start()
  local r = ctx.routemq_start(b.port, workers, qos)
  ctx.routemq_wait_connected(r, workers)
  P.sleep(0.1)
  local pids = P.worker_pids(r.pid)
  local w0, b0, m0, s0, bs0 = {}, cpu(b.pid), cpu(r.pid), {}, wakeups(b.pid)
  for slot, pid in pairs(pids) do
    w0[slot], s0[slot] = cpu(pid), wakeups(pid)
  end
  local pub = ctx.pub_finish(ctx.pub_spawn(b.port, n, qos))
  local handled, last = ctx.wait_handled(r.out, n, 5, 0.002)
  local per, total, woke = {}, 0, 0
  for slot, pid in pairs(pids) do
    local used = (cpu(pid) or w0[slot]) - w0[slot]
    per[#per + 1] = used / math.max(1, handled)
    total = total + used
    woke = woke + wakeups(pid) - s0[slot]
  end
  local broker, broker_woke = cpu(b.pid) - b0, wakeups(b.pid) - bs0
  local master = (cpu(r.pid) or m0) - m0
  ctx.routemq_stop(r)
  ctx.broker_stop(b)
  if handled < n then
    error(string.format("routemq handled %d of %d messages", handled, n))
  end
  table.sort(per)
  return { rate = ctx.rate_of(handled, pub.first_us, last), handled = handled,
           cpu_us_per_msg = total / handled, per_process_us_per_msg = per,
           broker_us_per_msg = broker / handled, master_us_per_msg = master / handled,
           wakeups_per_msg = woke / handled, broker_wakeups_per_msg = broker_woke / handled }
end

-- k counting subscribers (a peer or bench_sub) sharing one subscription.
local function counters_run(ctx, client, qos, k)
  local n = ctx.n
  local b = ctx.broker_start()
  local group = "bench" .. tostring(P.free_port())
  local subs = {}
  for i = 1, k do
    local out = ctx.work .. "/shared-" .. client.id .. "-" .. i .. ".out"
    local err = ctx.work .. "/shared-" .. client.id .. "-" .. i .. ".err"
    local argv = {}
    for _, a in ipairs(client.argv) do argv[#argv + 1] = a end
    for _, a in ipairs({ "-p", b.port, "-n", n, "-q", qos, "-t", 120, "-I", IDLE_S,
                         "-f", "$share/" .. group .. "/sensors/+/data" }) do
      argv[#argv + 1] = a
    end
    if client.id == "yardstick" then
      argv[#argv + 1] = "-i"
      argv[#argv + 1] = group .. "-" .. i
    end
    local pid = P.spawn(argv, { stdout = out, stderr = err })
    subs[#subs + 1] = { pid = pid, out = out }
    if not P.wait_for(function() return (P.read(out) or ""):find("subscribed_ns") end, 15) then
      for _, s in ipairs(subs) do P.stop(s.pid, P.SIGKILL) end
      ctx.broker_stop(b)
      error(client.name .. " did not subscribe: " .. (P.read(err) or ""))
    end
  end
  local b0, bs0 = cpu(b.pid), wakeups(b.pid)
  local pub = ctx.pub_finish(ctx.pub_spawn(b.port, n, qos))
  local handled, last, total, per = 0, 0, 0, {}
  for _, s in ipairs(subs) do
    local res = P.reap(s.pid, 130)
    if not res then
      P.stop(s.pid, P.SIGKILL)
    end
    local kv = P.kv(P.read(s.out))
    local count = tonumber(kv.count) or 0
    handled = handled + count
    if kv.last_ns and count > 0 then
      last = math.max(last, P.ns_to_us(kv.last_ns))
    end
    local used = tonumber(kv.cpu_us) or 0
    total = total + used
    per[#per + 1] = used
  end
  -- Read once every subscriber exited: includes up to IDLE_S s of the
  -- broker idle, a few ms at most.
  local broker, broker_woke = cpu(b.pid) - b0, wakeups(b.pid) - bs0
  ctx.broker_stop(b)
  if handled < n then
    error(string.format("%d × %s handled %d of %d messages", k, client.name, handled, n))
  end
  for i = 1, #per do
    per[i] = per[i] / handled
  end
  table.sort(per)
  return { rate = ctx.rate_of(handled, pub.first_us, last), handled = handled,
           cpu_us_per_msg = total / handled, per_process_us_per_msg = per, broker_us_per_msg = broker / handled,
           broker_wakeups_per_msg = broker_woke / handled }
end

local function fmt_per(runs)
  local t = {}
  for _, r in ipairs(runs) do
    local p = {}
    for _, v in ipairs(r.per_process_us_per_msg or {}) do
      p[#p + 1] = string.format("%.2f", v)
    end
    t[#t + 1] = "[" .. table.concat(p, " ") .. "]"
  end
  return table.concat(t, ", ")
end

-- ctx: say, n, runs, work, peers, yardstick, interleaved, add_row, column, rate_of,
-- broker_start/stop, routemq_start/wait_connected/stop, pub_spawn/finish, wait_handled.
function M.run(ctx)
  local counts = {}
  for c in (os.getenv("BENCH_SCALING_COUNTS") or "1,2,4"):gmatch("%d+") do
    counts[#counts + 1] = tonumber(c)
  end
  local qoss = {}
  for q in (os.getenv("BENCH_SCALING_QOS") or "0"):gmatch("[01]") do
    qoss[#qoss + 1] = tonumber(q)
  end
  ctx.say("shared subscription, %s consumers: %d messages, QoS %s, %d run(s) each", table.concat(counts, "/"),
    ctx.n, table.concat(qoss, ","), ctx.runs)
  local clients = { ctx.yardstick }
  for _, p in ipairs(ctx.peers) do
    if p.id == "node" then
      clients[#clients + 1] = p
    end
  end
  local subjects = {}
  for _, k in ipairs(counts) do
    subjects[#subjects + 1] = { id = "routemq_" .. k, label = string.format("routemq, %d worker(s)", k),
      note = "utime+stime from /proc/<pid>/stat", fn = function(q) return routemq_run(ctx, q, k) end }
    for _, c in ipairs(clients) do
      local cid = c.id == "yardstick" and "yardstick" or ("peer_" .. c.id)
      subjects[#subjects + 1] = { id = cid .. "_" .. k, note = c.cpu_note,
        label = string.format("%s, %d process(es)", c.id == "yardstick" and "bench_sub" or ("peer: " .. c.label), k),
        fn = function(q) return counters_run(ctx, c, q, k) end }
    end
  end
  for _, qos in ipairs(qoss) do
    local results = ctx.interleaved("scaling", subjects, qos)
    for _, s in ipairs(subjects) do
      local res = results[s.id]
      local pre = string.format("QoS %d: %s", qos, s.label)
      local base = "scaling_" .. s.id .. "_qos" .. qos
      ctx.add_row({ section = "scaling", id = base, subject = s.id, qos = qos, label = pre .. ", rate",
        unit = "msg/s", values = ctx.column(res, "rate"), runs = res })
      ctx.add_row({ section = "scaling", id = base .. "_cpu", subject = s.id, qos = qos,
        label = pre .. ", CPU per message, sum of the consumer processes", unit = "µs/msg",
        values = ctx.column(res, "cpu_us_per_msg"),
        note = s.note .. "; per process, per run: " .. fmt_per(res) })
      ctx.add_row({ section = "scaling", id = base .. "_broker_cpu", subject = s.id, qos = qos,
        label = pre .. ", CPU per message, broker", unit = "µs/msg", values = ctx.column(res, "broker_us_per_msg"),
        note = "utime+stime of mosquitto from /proc/<pid>/stat" })
      local woke = ctx.column(res, "wakeups_per_msg")
      if #woke > 0 then
        ctx.add_row({ section = "scaling", id = base .. "_wakeups", subject = s.id, qos = qos,
          label = pre .. ", wake-ups per message, sum of the workers", unit = "per msg", values = woke,
          note = "voluntary_ctxt_switches from /proc/<pid>/status" })
      end
      ctx.add_row({ section = "scaling", id = base .. "_broker_wakeups", subject = s.id, qos = qos,
        label = pre .. ", wake-ups per message, broker", unit = "per msg",
        values = ctx.column(res, "broker_wakeups_per_msg"), note = "voluntary_ctxt_switches from /proc/<pid>/status" })
    end
  end
end

return M
