-- PostgreSQL from handlers without blocking the worker (docs/guide.md, "Databases"):
--
--   local pg = require("routemq.pg")
--   local db = pg.pool{ url = os.getenv("DATABASE_URL"), size = 16 }
--   local rows, err = db:query("select id from t where name = $1", name)
--
-- A pool per worker (connections open on first use, so a pool made when the
-- router file loads is made in each worker), queries waiting through cqueues
-- (routemq.pgconn), transactions, LISTEN/NOTIFY. A handler dropped at its
-- route's timeout has its query cancelled on the server and its connection
-- drained (or closed) before anyone else gets it.
local cqueues = require("cqueues")
local ffi = require("ffi")
local dbpool = require("routemq.dbpool")
local pgconn = require("routemq.pgconn")
local util = require("routemq.util")

local M = {}

M.null = pgconn.null
M.bytea = pgconn.bytea
M.error = pgconn.error

local monotime = cqueues.monotime
local pack = function(...) return { n = select("#", ...), ... } end
local IDLE, INERROR = pgconn.TRANS_IDLE, pgconn.TRANS_INERROR
local CANCEL_WAIT = 10 -- seconds a cancelled query may take to end before its connection is closed

local Pool, P = dbpool.class({
  name = "routemq.pg",
  connect = function(params, timeout, pool) return pgconn.connect(params, timeout, pool.statement_cache) end,
  error = pgconn.error,
  log = pgconn.log,
  clean = function(conn) return conn:transaction_status() == IDLE end,
  -- A job dropped at its deadline: cancel its query on the server, wait for
  -- it to end (else close), roll back an open transaction.
  reap = function(self, conn)
    if conn.busy then
      local ok, err = conn:cancel(2)
      if not ok then
        self.log("could not cancel a query of a handler that timed out: " .. tostring(err))
      end
      conn:finish(monotime() + CANCEL_WAIT)
      if conn.busy then
        conn:close()
      end
    end
    if conn:ok() and conn:transaction_status() ~= IDLE then
      conn:query("ROLLBACK", 0, nil, 1)
    end
  end,
  drop = function(conn) conn:close() end,
})
local check_self, acquire, give = P.check_self, P.acquire, P.give

-- pool{ url, size = 10, idle_timeout = 60, connect_timeout = 5, acquire_timeout = 30,
-- statement_cache = 100, log } -> pool. url: "postgres://user:pass@host:port/db?sslmode=..."
-- or libpq's "key=value ..." (nil: libpq's PG* environment variables). Opens nothing.
function M.pool(opts)
  if type(opts) ~= "table" then
    error("routemq.pg: pg.pool expects a table of options, got " .. type(opts), 2)
  end
  if opts.url ~= nil and type(opts.url) ~= "string" then
    error("routemq.pg: pool option url must be a string, got " .. type(opts.url), 2)
  end
  local params, err = pgconn.parse(opts.url or "")
  if not params then
    error("routemq.pg: bad url: " .. err, 2)
  end
  local cache = opts.statement_cache
  if cache == nil then
    cache = 100
  elseif not util.is_integer(cache) or cache < 0 then
    error("routemq.pg: pool option statement_cache must be a whole number >= 0 (0: prepare nothing), got "
      .. tostring(cache), 2)
  end
  local pool = P.new(opts, params) -- not a tail call: option errors count this frame
  pool.statement_cache = cache
  return pool
end

-- Raises for a parameter pgconn could not send, before a connection is taken.
local function check_args(n, args, level)
  for i = 1, n do
    local v = args[i]
    local t = type(v)
    if t ~= "nil" and t ~= "string" and t ~= "number" and t ~= "boolean" and v ~= M.null
        and not (t == "table" and getmetatable(v) == pgconn.Bytea)
        and not (t == "cdata" and (ffi.istype("int64_t", v) or ffi.istype("uint64_t", v))) then
      error(("routemq.pg: parameter $%d is a %s (pass strings, numbers, booleans, pg.null or pg.bytea(s);"
        .. " encode tables yourself, e.g. cjson.encode)"):format(i, t), level + 1)
    end
  end
end

-- db:query(sql, ...) -> rows | nil, err. Parameters $1..$n; rows keyed by
-- column with rows.affected; err has sqlstate, message, detail.
function Pool:query(sql, ...)
  check_self(self, "query")
  if type(sql) ~= "string" then
    error("routemq.pg: db:query expects the SQL text as a string, got " .. type(sql), 2)
  end
  local n = select("#", ...)
  local args = { ... }
  check_args(n, args, 2)
  local conn, err = acquire(self)
  if not conn then
    return nil, err
  end
  local rows, qerr = conn:query(sql, n, args, 2)
  give(self, conn)
  return rows, qerr
end

local Tx = {}
Tx.__index = Tx

-- tx:query(sql, ...) -> as db:query, on the transaction's connection.
function Tx:query(sql, ...)
  if getmetatable(self) ~= Tx then
    error("routemq.pg: call it as tx:query(...), not tx.query(...)", 2)
  end
  if self.conn == nil then
    error("routemq.pg: tx:query after its transaction ended", 2)
  end
  if type(sql) ~= "string" then
    error("routemq.pg: tx:query expects the SQL text as a string, got " .. type(sql), 2)
  end
  local n = select("#", ...)
  local args = { ... }
  check_args(n, args, 2)
  local rows, err = self.conn:query(sql, n, args, 2)
  if not rows and not self.failed then
    self.failed = err
  end
  return rows, err
end

-- db:transaction(fn) -> fn's results | nil, err. fn(tx) runs between BEGIN
-- and COMMIT; an error raised in fn rolls back and is raised again; a
-- statement that failed in it (the transaction aborted) rolls back and
-- returns nil, that error.
function Pool:transaction(fn)
  check_self(self, "transaction")
  if type(fn) ~= "function" then
    error("routemq.pg: db:transaction expects a function, got " .. type(fn), 2)
  end
  local conn, err = acquire(self)
  if not conn then
    return nil, err
  end
  local _, berr = conn:query("BEGIN", 0, nil, 2)
  if berr then
    give(self, conn)
    return nil, berr
  end
  local tx = setmetatable({ conn = conn }, Tx)
  local res = pack(pcall(fn, tx))
  tx.conn = nil
  if not res[1] then
    if conn:ok() and not conn.busy then
      conn:query("ROLLBACK", 0, nil, 2)
    end
    give(self, conn)
    error(res[2], 0)
  end
  if conn:transaction_status() == INERROR then
    conn:query("ROLLBACK", 0, nil, 2)
    give(self, conn)
    return nil, tx.failed or M.error({ sqlstate = "25P02", message = "transaction aborted" })
  end
  local _, cerr = conn:query("COMMIT", 0, nil, 2)
  give(self, conn)
  if cerr then
    return nil, cerr
  end
  return unpack(res, 2, res.n)
end

local Listener = {}
Listener.__index = Listener

-- listener:close(): stops listening.
function Listener:close()
  self.closed = true
  if self.conn then
    self.conn:close()
  end
end

-- db:listen(channel, fn) -> listener. fn(payload, channel, pid) runs in a
-- coroutine of its own for each NOTIFY on channel, on a connection of its
-- own (outside the pool's size) that is reopened, and LISTEN sent again,
-- after a loss. Call it where the worker's controller runs (router.init).
function Pool:listen(channel, fn)
  check_self(self, "listen")
  if type(channel) ~= "string" or channel == "" then
    error("routemq.pg: db:listen expects a channel name, got " .. tostring(channel), 2)
  end
  if type(fn) ~= "function" then
    error("routemq.pg: db:listen expects a function, got " .. type(fn), 2)
  end
  local cq = cqueues.running()
  local l = setmetatable({ closed = false, listening = false, conn = nil, connects = 0 }, Listener)
  local log = self.log
  local function deliver(payload, ch, pid)
    local ok, err = xpcall(fn, debug.traceback, payload, ch, pid)
    if not ok then
      log("listen " .. channel .. ": " .. tostring(err))
    end
  end
  local function session()
    local conn, err = pgconn.connect(self.params, self.connect_timeout)
    if not conn then
      return nil, err
    end
    l.conn = conn
    local _, lerr = conn:query("LISTEN " .. conn:quote_ident(channel), 0, nil, 1)
    if lerr then
      return nil, lerr
    end
    l.listening, l.connects = true, l.connects + 1
    while not l.closed do
      for ch, payload, pid in conn:notifies() do
        cq:wrap(deliver, payload, ch, pid)
      end
      local ok, werr = conn:wait_input()
      if not ok then
        return nil, werr
      end
    end
    return true
  end
  cq:wrap(function()
    local backoff = 0.1
    while not l.closed do
      local ok, done, err = pcall(session)
      l.listening = false
      if l.conn then
        l.conn:close()
        l.conn = nil
      end
      if l.closed then
        break
      end
      if ok and done then
        backoff = 0.1
      else
        log(("listen %s: %s; reconnecting in %g s"):format(channel, tostring(ok and err or done), backoff))
      end
      cqueues.sleep(backoff)
      backoff = math.min(backoff * 2, 5)
    end
  end)
  return l
end

return M
