-- Section 3d of bench/run.lua: a handler inserting one row per message (QoS
-- 1) into a private PostgreSQL (initdb in the work directory as the
-- unprivileged postgres user, a free 127.0.0.1 port, stopped by its pid):
-- routemq with routemq.pg (1 worker, WORKER_CONCURRENCY twice the pool's
-- size, what docs/configuration.md advises when a handler's wait is mostly
-- its database, or ctx.concurrency when set: BENCH_PG_CONCURRENCY) and the
-- Node.js peer with node-postgres (no limit on messages in progress), each
-- at every pool size of ctx.pools (BENCH_PG_POOLS), and routemq with the
-- blocking lua-sql-postgres (one connection), interleaved in one run.
-- Each run checks that the table holds exactly one row per message. The
-- server runs with synchronous_commit=off: the clients are measured, not the
-- disk flush of every commit.
local P = require("proc")

local M = {}

local function pg_bindir()
  return (P.sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1"):gsub("%s+$", ""))
end

local function as_postgres(cmd)
  if P.sh("id -u"):match("^0") then
    return "runuser -u postgres -- " .. cmd
  end
  return cmd
end

-- Starts PostgreSQL in work/pg; returns { port, url, psql(sql), stop() } or nil, why.
local function pg_start(work)
  local bin = pg_bindir()
  if bin == "" then
    return nil, "PostgreSQL is not installed (Debian postgresql)"
  end
  local dir = work .. "/pg"
  P.sh("rm -rf '" .. dir .. "' && mkdir -p '" .. dir .. "/data' && chown postgres '" .. dir .. "/data' && chmod 0755 '"
    .. dir .. "' '" .. work .. "'")
  local out = P.sh(as_postgres(bin .. "/initdb -D " .. dir .. "/data -A trust -U postgres --no-sync "
    .. "--no-instructions") .. " > '" .. dir .. "/initdb.log' 2>&1; echo rc=$?")
  if not out:match("rc=0") then
    return nil, "initdb failed: " .. (P.read(dir .. "/initdb.log") or "")
  end
  local port = P.free_port()
  out = P.sh(as_postgres(bin .. "/pg_ctl -D " .. dir .. "/data -l " .. dir .. "/data/server.log -w -t 60 -o '-p "
    .. port .. " -k " .. dir .. "/data -c listen_addresses=127.0.0.1 -c max_connections=100 "
    .. "-c synchronous_commit=off' start")
    .. " > /dev/null 2>&1; echo rc=$?")
  if not out:match("rc=0") then
    return nil, "pg_ctl start failed: " .. (P.read(dir .. "/data/server.log") or "")
  end
  local pid = tonumber((P.read(dir .. "/data/postmaster.pid") or ""):match("^(%d+)"))
  local s = { port = port, pid = pid, url = ("postgres://postgres@127.0.0.1:%d/postgres"):format(port) }
  function s.psql(sql)
    return (P.sh("psql -X -A -t -q -h 127.0.0.1 -p " .. port .. " -U postgres -d postgres -c \"" .. sql
      .. "\" 2>&1"):gsub("%s+$", ""))
  end
  function s.stop()
    if pid then
      P.signal(pid, 2) -- fast shutdown
      P.wait_for(function() return not P.alive(pid) end, 30, 0.05)
      if P.alive(pid) then P.signal(pid, P.SIGKILL) end
    end
    P.sh("rm -rf '" .. dir .. "'")
  end
  return s
end

-- CPU of the whole server in µs: the postmaster's own and that of its
-- children, ended (cutime, cstime) and running; and how many are running.
local function server_cpu_us(pid)
  local f = P.proc_stat(pid)
  local us = f and (f[14] + f[15] + f[16] + f[17]) * 1e6 / P.CLK_TCK or 0
  local n = 0
  for child in P.sh("pgrep -P " .. pid .. " 2>/dev/null"):gmatch("%d+") do
    us = us + (P.proc_cpu_us(tonumber(child)) or 0)
    n = n + 1
  end
  return us, n
end

-- run(ctx): ctx holds run.lua's helpers and settings (see the call there).
function M.run(ctx)
  local say, n = ctx.say, ctx.n
  local server, why = pg_start(ctx.work)
  if not server then
    ctx.errors[#ctx.errors + 1] = "db: " .. why
    say("db: %s", why)
    return
  end
  local ok, err = pcall(function()
    server.psql("create table bench_rows(id bigserial primary key, seq bigint not null)")
    -- Runs fn(qos) and adds to its result the server's CPU per handled
    -- message, read once the run's backends have ended.
    local _, base = server_cpu_us(server.pid)
    local function measured(fn)
      return function(qos)
        local c0 = server_cpu_us(server.pid)
        local res = fn(qos)
        P.wait_for(function() return select(2, server_cpu_us(server.pid)) <= base end, 10, 0.05)
        res.server_us_per_msg = (server_cpu_us(server.pid) - c0) / math.max(1, res.handled)
        return res
      end
    end
    local function check(count)
      local rows = tonumber(server.psql("select count(*) from bench_rows"))
      server.psql("truncate bench_rows")
      if rows ~= count then
        error(string.format("%d rows for %d handled messages", rows or -1, count))
      end
    end
    local function routemq_run(handler, pool, concurrency)
      return function(qos)
        local res = ctx.thr_routemq(qos, 1, { WORKER_CONCURRENCY = concurrency, BENCH_HANDLER = handler,
          BENCH_DATABASE_URL = server.url, BENCH_PG_POOL = pool }, n)
        check(res.handled)
        return res
      end
    end
    local subjects = {}
    for _, pool in ipairs(ctx.pools) do
      local concurrency = ctx.concurrency or 2 * pool
      subjects[#subjects + 1] = { id = "routemq_pg_" .. pool, fn = measured(routemq_run("pg", pool, concurrency)),
        label = ("routemq + routemq.pg, 1 worker, WORKER_CONCURRENCY=%d, pool %d"):format(concurrency, pool) }
      for _, p in ipairs(ctx.peers) do
        if p.id == "node" and p.pg then
          subjects[#subjects + 1] = { id = "peer_node_pg_" .. pool, label = "peer: node + node-postgres " .. p.pg
            .. ", pool " .. pool .. ", no limit on messages in progress", fn = measured(function(qos)
              local res = ctx.thr_counter(p, qos, nil, n, { "-D", server.url, "-P", pool })
              check(res.handled)
              return res
            end) }
        end
      end
    end
    if P.sh("luajit -e 'require(\"luasql.postgres\")' 2>&1; echo rc=$?"):match("rc=0") then
      subjects[#subjects + 1] = { id = "routemq_luasql", fn = measured(routemq_run("luasql", 1, 64)),
        label = "routemq + lua-sql-postgres (blocking), 1 worker, 1 connection" }
    else
      ctx.errors[#ctx.errors + 1] = "db: lua-sql-postgres is not installed: its row is missing"
    end
    say("handler inserting one row per message, QoS 1: %d messages, %d run(s) each", n, ctx.runs)
    local results = ctx.interleaved("db", subjects, 1)
    for _, s in ipairs(subjects) do
      local res = results[s.id]
      ctx.add_row({ section = "db", id = "db_" .. s.id .. "_rate", subject = s.id, qos = 1, unit = "msg/s",
        label = "QoS 1, insert one row per message: " .. s.label, values = ctx.column(res, "rate"), runs = res,
        note = "rows checked against handled messages after each run" })
      ctx.add_row({ section = "db", id = "db_" .. s.id .. "_cpu", subject = s.id, qos = 1, unit = "µs/msg",
        label = "QoS 1, insert one row per message: " .. s.label .. " — CPU per message",
        values = ctx.column(res, "cpu_us_per_msg"), note = "subscriber process only (not PostgreSQL)" })
      ctx.add_row({ section = "db", id = "db_" .. s.id .. "_server_cpu", subject = s.id, qos = 1, unit = "µs/msg",
        label = "QoS 1, insert one row per message: " .. s.label .. " — CPU per message, PostgreSQL",
        values = ctx.column(res, "server_us_per_msg"),
        note = "the server and all its processes, from /proc/<pid>/stat (cutime, cstime for ended backends)" })
    end
  end)
  server.stop()
  if not ok then
    error(err, 0)
  end
end

return M
