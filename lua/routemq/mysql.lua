-- MySQL and MariaDB from handlers without blocking the worker (docs/guide.md, "Databases"),
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
local dbpool = require("routemq.dbpool")
local conn_mod = require("routemq.mysqlconn")

local M = {}

M.null = conn_mod.null
M.error = conn_mod.error

local monotime = cqueues.monotime
local pack = function(...) return { n = select("#", ...), ... } end

local Pool, P = dbpool.class({
  name = "routemq.mysql",
  connect = conn_mod.connect,
  error = conn_mod.error,
  log = conn_mod.log,
  clean = function(conn) return not conn.in_tx end,
  -- A job dropped at its deadline: KILL QUERY from a second connection if a
  -- statement runs (and close its own), else ROLLBACK an open transaction.
  reap = function(self, conn)
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
  end,
  drop = function(conn) conn:close(true) end,
})
local check_self, acquire, give = P.check_self, P.acquire, P.give

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
  local pool = P.new(opts, params) -- not a tail call: option errors count this frame
  return pool
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

return M
