-- MySQL and MariaDB from handlers without blocking the worker (SPEC §11),
-- the same shape as routemq.pg with `?` parameters:
--
--   local mysql = require("routemq.mysql")
--   local db = mysql.pool{ url = "mysql://user:pass@host:3306/db", size = 16 }
--   local rows, err = db:query("select id from t where name = ?", name)
--
-- A job dropped at its route's timeout has its statement stopped with KILL
-- QUERY from a short-lived second connection; its own connection is closed
-- (the library's state mid-statement is not worth resuming).
local cqueues = require("cqueues")
local condition = require("cqueues.condition")
local ffi = require("ffi")
local conn_mod = require("routemq.mysqlconn")
local runner = require("routemq.runner")

local M = {}

M.null = conn_mod.null
M.error = conn_mod.error

local monotime = cqueues.monotime
local pack = function(...) return { n = select("#", ...), ... } end

local function default_log(msg)
  conn_mod.log("warn", "routemq.mysql: " .. msg)
end

local Pool = {}
Pool.__index = Pool

local function check_number(opts, name, default)
  local v = opts[name]
  if v == nil then
    return default
  end
  if type(v) ~= "number" or v <= 0 then
    error(("routemq.mysql: pool option %s must be a positive number, got %s"):format(name, tostring(v)), 3)
  end
  return v
end

-- pool{ url, size = 10, idle_timeout = 60, connect_timeout = 5, acquire_timeout = 30, log } -> pool.
-- url: mysql://user:password@host:port/database (?socket=/path for a Unix socket). Opens nothing.
function M.pool(opts)
  if type(opts) ~= "table" then
    error("routemq.mysql: mysql.pool expects a table of options, got " .. type(opts), 2)
  end
  if type(opts.url) ~= "string" then
    error("routemq.mysql: pool option url must be a string (mysql://user:password@host:port/database), got "
      .. type(opts.url), 2)
  end
  local params, err = conn_mod.parse(opts.url)
  if not params then
    error("routemq.mysql: bad url: " .. err, 2)
  end
  return setmetatable({
    params = params,
    size = check_number(opts, "size", 10),
    idle_timeout = check_number(opts, "idle_timeout", 60),
    connect_timeout = check_number(opts, "connect_timeout", 5),
    acquire_timeout = check_number(opts, "acquire_timeout", 30),
    log = opts.log or default_log,
    idle = {},
    total = 0,
    waiting = 0,
    freed = condition.new(),
    pid = ffi.C.getpid(),
  }, Pool)
end

local function check_self(self, method)
  if getmetatable(self) ~= Pool then
    error(("routemq.mysql: call it as db:%s(...), not db.%s(...)"):format(method, method), 3)
  end
  if not cqueues.running() then
    error(("routemq.mysql: db:%s must run in a handler, middleware, router.init, router.every or "
      .. "router.health function (on the worker's cqueues controller)"):format(method), 3)
  end
end

local function release(self, conn)
  if conn:ok() and not conn.busy and not conn.in_tx and self.pid == ffi.C.getpid() then
    conn.since = monotime()
    self.idle[#self.idle + 1] = conn
  else
    conn:close()
    self.total = self.total - 1
  end
  self.freed:signal()
end

local function checkout(self)
  if self.pid ~= ffi.C.getpid() then
    self.idle, self.total, self.waiting, self.pid = {}, 0, 0, ffi.C.getpid()
  end
  local deadline = monotime() + self.acquire_timeout
  while true do
    local idle = self.idle
    while #idle > 0 do
      local conn = table.remove(idle)
      if monotime() - conn.since <= self.idle_timeout and conn:idle_alive() then
        return conn
      end
      conn:close()
      self.total = self.total - 1
    end
    if self.total < self.size then
      self.total = self.total + 1
      local conn, err = conn_mod.connect(self.params, self.connect_timeout)
      if not conn then
        self.total = self.total - 1
        self.freed:signal()
        return nil, err
      end
      return conn
    end
    local left = deadline - monotime()
    if left <= 0 then
      return nil, M.error({ message = ("no connection free in the pool (size %d) after %g s")
        :format(self.size, self.acquire_timeout) })
    end
    self.waiting = self.waiting + 1
    self.freed:wait(left)
    self.waiting = self.waiting - 1
  end
end

-- For a job dropped at its deadline: KILL QUERY from a second connection if
-- a statement runs, ROLLBACK an open transaction, then give the connection
-- back (or close it), on a thread of its own.
local function reap(self, conn)
  local cq = cqueues.running()
  if not cq then
    conn:close(true)
    return release(self, conn)
  end
  cq:wrap(function()
    local ok, err = pcall(function()
      if conn.busy then
        local killer, kerr = conn_mod.connect(self.params, 2)
        if killer then
          local _, qerr = killer:query("KILL QUERY " .. conn.thread_id, monotime() + 2)
          killer:close()
          if qerr then
            self.log("KILL QUERY for a handler that timed out: " .. tostring(qerr))
          end
        else
          self.log("could not connect to KILL QUERY for a handler that timed out: " .. tostring(kerr))
        end
        conn:close(true)
      elseif conn.in_tx and conn:ok() then
        local _, rerr = conn:query("ROLLBACK", monotime() + 5)
        conn.in_tx = rerr ~= nil
      end
    end)
    if not ok then
      self.log("cleaning up after a timed-out handler: " .. tostring(err))
      conn:close(true)
    end
    release(self, conn)
  end)
end

local function acquire(self)
  local conn, err = checkout(self)
  if conn then
    local co = coroutine.running()
    conn.owner = co
    runner.on_cancel(co, conn, function() reap(self, conn) end)
  end
  return conn, err
end

local function give(self, conn)
  runner.on_cancel(conn.owner, conn, nil)
  conn.owner = nil
  release(self, conn)
end

-- prepare(conn, who, sql, ...) -> the SQL with literals | nil, misuse message
local function prepare(conn, who, sql, ...)
  if type(sql) ~= "string" then
    return nil, ("routemq.mysql: %s expects the SQL text as a string, got %s"):format(who, type(sql))
  end
  local text, why = conn:interpolate(sql, select("#", ...), { ... })
  if not text then
    return nil, "routemq.mysql: " .. who .. ": " .. why
  end
  return text
end

-- db:query(sql, ...) -> rows | nil, err. Parameters `?`; rows keyed by
-- column, rows.affected, rows.insert_id; err has errno, sqlstate, message.
function Pool:query(sql, ...)
  check_self(self, "query")
  if type(sql) ~= "string" then
    error("routemq.mysql: db:query expects the SQL text as a string, got " .. type(sql), 2)
  end
  local conn, err = acquire(self)
  if not conn then
    return nil, err
  end
  local text, why = prepare(conn, "db:query", sql, ...)
  if not text then
    give(self, conn)
    error(why, 2)
  end
  local rows, qerr = conn:query(text)
  give(self, conn)
  return rows, qerr
end

local Tx = {}
Tx.__index = Tx

-- tx:query(sql, ...) -> as db:query, on the transaction's connection.
function Tx:query(sql, ...)
  if getmetatable(self) ~= Tx then
    error("routemq.mysql: call it as tx:query(...), not tx.query(...)", 2)
  end
  if self.conn == nil then
    error("routemq.mysql: tx:query after its transaction ended", 2)
  end
  local text, why = prepare(self.conn, "tx:query", sql, ...)
  if not text then
    error(why, 2)
  end
  local rows, err = self.conn:query(text)
  if not rows and not self.failed then
    self.failed = err
  end
  return rows, err
end

-- db:transaction(fn) -> fn's results | nil, err: as routemq.pg's (a raised
-- error rolls back and is raised again; a failed statement rolls back and
-- is returned).
function Pool:transaction(fn)
  check_self(self, "transaction")
  if type(fn) ~= "function" then
    error("routemq.mysql: db:transaction expects a function, got " .. type(fn), 2)
  end
  local conn, err = acquire(self)
  if not conn then
    return nil, err
  end
  local _, berr = conn:query("START TRANSACTION")
  if berr then
    give(self, conn)
    return nil, berr
  end
  conn.in_tx = true
  local tx = setmetatable({ conn = conn }, Tx)
  local res = pack(pcall(fn, tx))
  tx.conn = nil
  if not res[1] or tx.failed then
    if conn:ok() and not conn.busy then
      local _, rerr = conn:query("ROLLBACK")
      conn.in_tx = rerr ~= nil
    end
    give(self, conn)
    if not res[1] then
      error(res[2], 0)
    end
    return nil, tx.failed
  end
  local _, cerr = conn:query("COMMIT")
  conn.in_tx = cerr ~= nil
  give(self, conn)
  if cerr then
    return nil, cerr
  end
  return unpack(res, 2, res.n)
end

-- db:stats() -> { open, idle, waiting }
function Pool:stats()
  return { open = self.total, idle = #self.idle, waiting = self.waiting }
end

return M
