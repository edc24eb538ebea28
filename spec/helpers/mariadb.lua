--- A real MariaDB server (Debian `mariadb-server`) for the specs: a data
-- directory made with mariadb-install-db in a temporary directory, mariadbd
-- run as the `mysql` user on a free 127.0.0.1 port with a private socket,
-- stopped by its pid, its directory removed. A user `routemq` (password
-- `secret`) owns database `test`.
local e2e = require("spec.helpers.e2e")

local M = {}

local function run(cmd)
  local out = e2e.sh(cmd .. " 2>&1; echo \"rc=$?\"")
  return tonumber(out:match("rc=(%d+)%s*$")) == 0, out
end

--- start() -> server { port, url, dir, log, pid, sql(text) -> output, stop() }
function M.start()
  assert(io.open("/usr/sbin/mariadbd"), "MariaDB server not installed (Debian package mariadb-server)")
  local dir = e2e.tmpdir()
  assert(run("chmod 0755 " .. dir .. " && mkdir -p " .. dir .. "/data && chown mysql " .. dir .. "/data " .. dir))
  local ok, out = run("mariadb-install-db --no-defaults --user=mysql --datadir=" .. dir .. "/data "
    .. "--auth-root-authentication-method=socket --skip-test-db > " .. dir .. "/install.log")
  assert(ok, "mariadb-install-db failed: " .. out .. e2e.read(dir .. "/install.log"))
  local s = { dir = dir, port = e2e.free_port(), log = dir .. "/data/server.err", sock = dir .. "/data/mysqld.sock" }
  s.pid = e2e.spawn("/usr/sbin/mariadbd --no-defaults --user=mysql --datadir=" .. dir .. "/data --socket=" .. s.sock
    .. " --port=" .. s.port .. " --bind-address=127.0.0.1 --pid-file=" .. dir .. "/data/mysqld.pid --skip-log-bin "
    .. "--innodb-buffer-pool-size=32M --innodb-log-file-size=16M --log-error=" .. s.log, dir .. "/mariadbd.out")

  --- sql(text) -> output (tab-separated, no headers) as root over the socket, asserting success.
  function s.sql(text)
    local sok, sout = run("mariadb --no-defaults -uroot -S " .. s.sock .. " -N -B -e " .. e2e.quote(text))
    assert(sok, "mariadb failed: " .. sout)
    return (sout:gsub("rc=%d+%s*$", ""):gsub("%s+$", ""))
  end

  function s.stop()
    if s.pid and e2e.alive(s.pid) then
      e2e.kill(s.pid, "TERM")
      if not e2e.wait_for(function() return not e2e.alive(s.pid) end, 30) then
        e2e.kill(s.pid, "KILL")
        e2e.wait_for(function() return not e2e.alive(s.pid) end, 5)
      end
    end
    e2e.sh("rm -rf " .. dir)
  end

  local up = e2e.wait_for(function()
    return run("mariadb --no-defaults -uroot -S " .. s.sock .. " -e 'select 1' > /dev/null")
  end, 60, 0.2)
  if not up then
    local log = e2e.read(s.log) .. e2e.read(dir .. "/mariadbd.out")
    s.stop()
    error("mariadbd did not start: " .. log)
  end
  s.sql("create database test; create user routemq@'%' identified by 'secret'; "
    .. "grant all on *.* to routemq@'%'")
  s.url = ("mysql://routemq:secret@127.0.0.1:%d/test"):format(s.port)
  return s
end

return M
