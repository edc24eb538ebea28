--- A real PostgreSQL 15 (Debian `postgresql`) for the specs: initdb into a
-- temporary directory as the unprivileged `postgres` user (the server refuses
-- root), trust authentication, a free 127.0.0.1 port and a private socket
-- directory; stopped by its pid, its directory removed.
local e2e = require("spec.helpers.e2e")

local M = {}

local function bindir()
  local dirs = e2e.sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1"):gsub("%s+$", "")
  assert(dirs ~= "", "PostgreSQL server not installed (Debian package postgresql; scripts/deps.sh)")
  return dirs
end

local function as_postgres(cmd)
  if e2e.sh("id -u"):match("^0") then
    return "runuser -u postgres -- " .. cmd
  end
  return cmd
end

local function run(cmd)
  local out = e2e.sh(cmd .. " 2>&1; echo \"rc=$?\"")
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc == 0, out
end

--- start() -> server { port, url, dir, log, pid, psql(sql) -> text, stop(), restart() }
function M.start()
  local bin = bindir()
  local dir = e2e.tmpdir()
  assert(run("chmod 0755 " .. dir .. " && mkdir -p " .. dir .. "/data " .. dir .. "/sock && chown postgres "
    .. dir .. "/data " .. dir .. "/sock"))
  local ok, out = run(as_postgres(bin .. "/initdb -D " .. dir .. "/data -A trust -U postgres -E UTF8 "
    .. "--no-sync --no-instructions > " .. dir .. "/initdb.log"))
  assert(ok, "initdb failed: " .. out .. e2e.read(dir .. "/initdb.log"))
  local s = { dir = dir, port = e2e.free_port(), log = dir .. "/sock/server.log" }
  s.url = ("postgres://postgres@127.0.0.1:%d/postgres"):format(s.port)

  function s.start()
    local started, sout = run(as_postgres(bin .. "/pg_ctl -D " .. dir .. "/data -l " .. s.log .. " -w -t 60 "
      .. "-o " .. e2e.quote("-p " .. s.port .. " -k " .. dir .. "/sock -c listen_addresses=127.0.0.1 "
        .. "-c fsync=off -c max_connections=200") .. " start"))
    assert(started, "pg_ctl start failed: " .. sout .. e2e.read(s.log))
    s.pid = tonumber(e2e.read(dir .. "/data/postmaster.pid"):match("^(%d+)"))
    assert(s.pid, "no postmaster.pid")
  end

  --- Stops the server by its pid (fast shutdown) and waits until it is gone.
  function s.stop_server()
    if s.pid and e2e.alive(s.pid) then
      e2e.kill(s.pid, "INT")
      if not e2e.wait_for(function() return not e2e.alive(s.pid) end, 30) then
        e2e.kill(s.pid, "KILL")
        e2e.wait_for(function() return not e2e.alive(s.pid) end, 5)
      end
    end
    s.pid = nil
  end

  function s.restart()
    s.stop_server()
    s.start()
  end

  function s.stop()
    s.stop_server()
    e2e.sh("rm -rf " .. dir)
  end

  --- psql(sql) -> the output (unaligned, tuples only), asserting success.
  function s.psql(sql)
    local pok, pout = run("psql -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p " .. s.port
      .. " -U postgres -d postgres -c " .. e2e.quote(sql))
    assert(pok, "psql failed: " .. pout)
    return (pout:gsub("rc=%d+%s*$", ""):gsub("%s+$", ""))
  end

  s.start()
  return s
end

return M
