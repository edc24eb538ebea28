-- One PostgreSQL connection on libpq's asynchronous API (LuaJIT FFI), waiting
-- on its socket through cqueues so the worker's other messages keep running:
-- connect (PQconnectStartParams/PQconnectPoll), query (PQsendQueryParams, or a
-- statement prepared on the connection; PQconsumeInput, PQisBusy, PQgetResult),
-- notifications (PQnotifies) and a cancel that never blocks (libpq 15's
-- PQcancel does: it connects and waits synchronously), sent as our own
-- CancelRequest packet on a cqueues socket.
--
-- FFI rather than a C module, by measurement (bench/pg_binding.lua, CPU of
-- query + conversion to Lua rows, FFI / C): 0.98 for 20,000 one-row results,
-- 1.07 for 30 results of 10,000 rows x 5 columns. Within noise, FFI needs no
-- build dependency (libpq-dev) and loads libpq only in apps that use it.
local cqueues = require("cqueues")
local csocket = require("cqueues.socket")
local ffi = require("ffi")
local dbconn = require("routemq.dbconn")
local pq = require("routemq.pglib")
local pgvalue = require("routemq.pgvalue")

local M = {}

M.lib = pq
M.null, M.Bytea, M.bytea = pgvalue.null, pgvalue.Bytea, pgvalue.bytea
M._rows = pgvalue.rows -- for bench/pg_binding.lua
local rows_of, params = pgvalue.rows, pgvalue.params

local C = ffi.C

-- log(level, msg): the worker's log line when running in a worker, else stderr.
M.log = dbconn.log

-- Notices and messages the server sends outside a query (a FATAL before it
-- closes) go to the worker's log, not raw to stderr. A C function that calls
-- back into Lua must not be called from JIT-compiled code: the functions
-- below that can reach it are kept interpreted (jit.off).
local notice_cb = ffi.cast("PQnoticeProcessor", function(_, msg)
  M.log("info", "postgresql: " .. ffi.string(msg):gsub("%s+$", ""))
end)

-- ConnStatusType, PostgresPollingStatusType, ExecStatusType, PGTransactionStatusType
local CONNECTION_BAD = 1
local POLLING_FAILED, POLLING_READING, POLLING_WRITING, POLLING_OK = 0, 1, 2, 3
local PGRES_COMMAND_OK, PGRES_TUPLES_OK = 1, 2
local PGRES_COPY_OUT, PGRES_COPY_IN, PGRES_COPY_BOTH = 3, 4, 8
M.TRANS_IDLE, M.TRANS_ACTIVE, M.TRANS_INTRANS, M.TRANS_INERROR = 0, 1, 2, 3

local PG_DIAG_SEVERITY, PG_DIAG_SQLSTATE, PG_DIAG_MESSAGE_PRIMARY = 83, 67, 77
local PG_DIAG_MESSAGE_DETAIL, PG_DIAG_MESSAGE_HINT = 68, 72

-- Errors -------------------------------------------------------------------

local Error = {}
Error.__index = Error
Error.__tostring = function(e)
  local s = (e.severity or "ERROR") .. (e.sqlstate and (" " .. e.sqlstate) or "") .. ": " .. tostring(e.message)
  if e.detail then
    s = s .. " (" .. e.detail .. ")"
  end
  return (s:gsub("%s*\n%s*", " "))
end

-- new_error(fields) -> err: a table with sqlstate, message, detail, hint; tostring gives one line.
function M.error(fields)
  return setmetatable(fields, Error)
end

local function field(res, code)
  local p = pq.PQresultErrorField(res, code)
  return p ~= nil and ffi.string(p) or nil
end

local function conn_error(self, sqlstate, prefix)
  local msg = self.pg ~= nil and ffi.string(pq.PQerrorMessage(self.pg)) or ""
  msg = msg:gsub("%s+$", "")
  if msg == "" then
    msg = "connection lost"
  end
  return M.error({ sqlstate = sqlstate, message = (prefix or "") .. msg })
end

-- Connection ---------------------------------------------------------------

local Conn = {}
Conn.__index = Conn

local function strings(list)
  local arr = ffi.new("const char *[?]", #list + 1)
  for i, s in ipairs(list) do
    arr[i - 1] = s
  end
  return arr
end

-- parse(url) -> { keyword = value } | nil, err: a postgres:// URL or "key=value" string.
function M.parse(url)
  local errmsg = ffi.new("char *[1]")
  local opts = pq.PQconninfoParse(url, errmsg)
  if opts == nil then
    local e = errmsg[0] ~= nil and ffi.string(errmsg[0]) or "out of memory"
    if errmsg[0] ~= nil then
      pq.PQfreemem(errmsg[0])
    end
    return nil, (e:gsub("%s+$", ""))
  end
  local out, i = {}, 0
  while opts[i].keyword ~= nil do
    if opts[i].val ~= nil then
      out[ffi.string(opts[i].keyword)] = ffi.string(opts[i].val)
    end
    i = i + 1
  end
  pq.PQconninfoFree(opts)
  return out
end

-- cqueues polls a duplicate of libpq's socket, never libpq's own: libpq
-- closes its descriptor by itself when the server goes away, and cqueues
-- must be told (cqueues.cancel) before a descriptor it polls is closed, or
-- it keeps a stale registration that swallows a new socket with that number.
local function wait(self, events, deadline)
  local left = deadline and (deadline - cqueues.monotime()) or nil
  if left and left <= 0 then
    return false
  end
  local p = events == "w" and self.pollw or self.pollr
  p.events = events
  local fd, temp = self.fd, nil
  if self.pg == nil then
    return false
  elseif fd == nil then
    -- Connecting: libpq may replace its socket between polls.
    temp = C.dup(pq.PQsocket(self.pg))
    if temp < 0 then
      return false
    end
    fd = temp
  end
  p.pollfd = fd
  local ready = cqueues.poll(p, left) == p
  if temp then
    cqueues.cancel(temp)
    C.close(temp)
  end
  return ready
end

-- connect(params, timeout[, statement_cache]) -> conn | nil, err without
-- blocking: params as from parse(); the host name is resolved here and given
-- to libpq as hostaddr. statement_cache: how many statements with parameters
-- the connection keeps prepared (default 0: none).
function M.connect(conninfo, timeout, statement_cache)
  local deadline = cqueues.monotime() + timeout
  local keys, vals = {}, {}
  local host = conninfo.host
  for k, v in pairs(conninfo) do
    if k ~= "hostaddr" and k ~= "connect_timeout" then
      keys[#keys + 1], vals[#vals + 1] = k, v
    end
  end
  if conninfo.hostaddr then
    keys[#keys + 1], vals[#vals + 1] = "hostaddr", conninfo.hostaddr
  elseif host and host ~= "" and host:sub(1, 1) ~= "/" and not host:find(",", 1, true) then
    local addr, err = dbconn.resolve(host, timeout)
    if not addr then
      return nil, M.error({ sqlstate = "08001", message = err })
    end
    keys[#keys + 1], vals[#vals + 1] = "hostaddr", addr
  end
  if not conninfo.gssencmode then
    -- GSSAPI negotiation may consult Kerberos synchronously; opt in by URL.
    keys[#keys + 1], vals[#vals + 1] = "gssencmode", "disable"
  end
  local pg = pq.PQconnectStartParams(strings(keys), strings(vals), 0)
  if pg == nil then
    return nil, M.error({ sqlstate = "08001", message = "out of memory" })
  end
  pq.PQsetNoticeProcessor(pg, notice_cb, nil)
  local self = setmetatable({ pg = pg, pid = C.getpid(), pollr = { events = "r" }, pollw = { events = "w" },
    busy = false, stmt_max = statement_cache or 0, stmts = {}, nstmts = 0, stmt_order = { first = 1, last = 0 },
    stmt_seq = 0, seen = {}, nseen = 0, garbage = {} }, Conn)
  if pq.PQstatus(pg) == CONNECTION_BAD then
    local err = conn_error(self, "08001")
    self:close()
    return nil, err
  end
  local st = POLLING_WRITING
  while true do
    if st == POLLING_OK then
      break
    elseif st == POLLING_FAILED then
      local err = conn_error(self, "08001")
      self:close()
      return nil, err
    end
    if not wait(self, st == POLLING_READING and "r" or "w", deadline) then
      self:close()
      return nil, M.error({ sqlstate = "08001", message = ("connect timeout after %g s"):format(timeout) })
    end
    st = pq.PQconnectPoll(pg)
  end
  pq.PQsetnonblocking(pg, 1)
  local fd = C.dup(pq.PQsocket(pg))
  if fd < 0 then
    self:close()
    return nil, M.error({ sqlstate = "08001", message = "dup: out of descriptors" })
  end
  self.fd = fd
  return self
end

-- conn:close(): closes the connection (no-op in a forked child: the
-- parent's connection is not ours to end).
function Conn:close()
  local pg = self.pg
  if pg == nil then
    return
  end
  self.pg = nil
  if self.fd then
    cqueues.cancel(self.fd)
    C.close(self.fd)
    self.fd = nil
  end
  if self.pid == C.getpid() then
    pq.PQfinish(pg)
  end
end

-- conn:ok() -> whether the connection is usable.
function Conn:ok()
  return self.pg ~= nil and pq.PQstatus(self.pg) ~= CONNECTION_BAD
end

local probe = ffi.new("struct pollfd[1]")
-- readable(fd) -> whether fd has data or EOF now: poll(2) with no wait, not
-- cqueues.poll (which would yield to the controller for a step).
function M.readable(fd)
  probe[0].fd, probe[0].events, probe[0].revents = fd, 1, 0 -- POLLIN
  return C.poll(probe, 1, 0) > 0
end

-- conn:idle_alive() -> false if the server closed an idle connection (it
-- is readable then: a termination notice or EOF).
function Conn:idle_alive()
  if not self:ok() then
    return false
  end
  if M.readable(self.fd) then
    if pq.PQconsumeInput(self.pg) == 0 or pq.PQstatus(self.pg) == CONNECTION_BAD then
      return false
    end
    local n = pq.PQnotifies(self.pg)
    while n ~= nil do
      pq.PQfreemem(n)
      n = pq.PQnotifies(self.pg)
    end
  end
  return true
end

function Conn:transaction_status()
  return self.pg ~= nil and pq.PQtransactionStatus(self.pg) or M.TRANS_IDLE
end

-- Sends what libpq has buffered; false when the connection fails.
local function flush(self)
  while true do
    local r = pq.PQflush(self.pg)
    if r == 0 then
      return true
    elseif r < 0 then
      return false
    end
    -- Both ways: the server may be waiting for us to read before it reads more.
    self.pollw.pollfd = self.fd
    self.pollw.events = "rw"
    cqueues.poll(self.pollw)
    if pq.PQconsumeInput(self.pg) == 0 then
      return false
    end
  end
end

-- conn:finish([deadline]) -> rows | nil, err: waits for the results of the
-- query sent; the last result's rows, or the first error.
function Conn:finish(deadline)
  local rows, err
  while true do
    while pq.PQisBusy(self.pg) == 1 do
      if not wait(self, "r", deadline) and deadline and cqueues.monotime() >= deadline then
        return nil, M.error({ message = "query still running at its deadline" })
      end
      if pq.PQconsumeInput(self.pg) == 0 then
        self.busy = false
        return nil, conn_error(self, "08006")
      end
    end
    local res = pq.PQgetResult(self.pg)
    if res == nil then
      break
    end
    local st = pq.PQresultStatus(res)
    if st == PGRES_TUPLES_OK or st == PGRES_COMMAND_OK then
      if not err then
        local ok, r = pcall(rows_of, res)
        if ok then
          rows = r
        else
          err = M.error({ message = tostring(r) })
        end
      end
    elseif st == PGRES_COPY_IN or st == PGRES_COPY_OUT or st == PGRES_COPY_BOTH then
      pq.PQclear(res)
      self.busy = false
      local e = M.error({ message = "COPY is not supported through db:query" })
      self:close()
      return nil, e
    elseif not err then
      err = M.error({
        severity = field(res, PG_DIAG_SEVERITY),
        sqlstate = field(res, PG_DIAG_SQLSTATE) or (pq.PQstatus(self.pg) == CONNECTION_BAD and "08006" or nil),
        message = field(res, PG_DIAG_MESSAGE_PRIMARY) or
          ffi.string(pq.PQerrorMessage(self.pg)):gsub("%s+$", ""),
        detail = field(res, PG_DIAG_MESSAGE_DETAIL),
        hint = field(res, PG_DIAG_MESSAGE_HINT),
      })
    end
    pq.PQclear(res)
  end
  self.busy = false
  if err then
    return nil, err
  end
  return rows
end

-- Statement cache ----------------------------------------------------------
-- A statement with parameters that a connection sends a second time is
-- prepared there under a name of its own, and from then on only bound and
-- executed: PostgreSQL no longer parses and plans it for every message
-- (docs/guide.md, "Databases"). Statements seen once are not prepared, so
-- SQL built on the fly does not push the hot ones out.

local STALE_PLAN = "cached plan must not change result type"

-- Drops sql's prepared statement from the cache; its name is deallocated
-- on the server before the next prepare (it may exist there still).
local function forget(self, sql)
  local name = self.stmts[sql]
  if name then
    self.stmts[sql] = nil
    self.nstmts = self.nstmts - 1
    self.garbage[#self.garbage + 1] = name
  end
end

-- started(sent) -> true | nil, err: after a PQsend* call (sent its result),
-- marks the connection busy and flushes what libpq holds.
local function started(self, sent)
  if sent ~= 1 then
    return nil, conn_error(self, pq.PQstatus(self.pg) == CONNECTION_BAD and "08006" or nil)
  end
  self.busy = true
  if not flush(self) then
    self.busy = false
    return nil, conn_error(self, "08006")
  end
  return true
end

-- Sends one round trip and waits for it: true | nil, err.
local function round_trip(self, sent)
  local ok, err = started(self, sent)
  if not ok then
    return nil, err
  end
  ok, err = self:finish()
  if not ok then
    return nil, err
  end
  return true
end

-- statement(sql, n) -> name | false (send it unnamed) | nil, err: the name
-- sql is prepared under on this connection, preparing it on its second use.
local function statement(self, sql, n)
  local name = self.stmts[sql]
  if name then
    return name
  end
  if pq.PQtransactionStatus(self.pg) == M.TRANS_INERROR then
    return false -- anything but ROLLBACK fails now; let it fail as itself
  end
  if not self.seen[sql] then
    if self.nseen >= 4 * self.stmt_max then
      self.seen, self.nseen = {}, 0
    end
    self.seen[sql], self.nseen = true, self.nseen + 1
    return false
  end
  local order = self.stmt_order
  while self.nstmts >= self.stmt_max do -- the oldest prepared makes room
    local old = order[order.first]
    order[order.first] = nil
    order.first = order.first + 1
    if self.stmts[old.sql] == old.name then
      forget(self, old.sql)
    end
  end
  if #self.garbage > 0 then
    local drops = {}
    for i, g in ipairs(self.garbage) do
      drops[i] = "DEALLOCATE " .. g
    end
    self.garbage = {}
    -- Not transactional; an error here (the name already gone) is no loss.
    round_trip(self, pq.PQsendQuery(self.pg, table.concat(drops, "; ")))
  end
  self.stmt_seq = self.stmt_seq + 1
  name = "routemq_" .. self.stmt_seq -- never reused: one orphaned by a cancel cannot clash
  local ok, err = round_trip(self, pq.PQsendPrepare(self.pg, name, sql, n, nil))
  if not ok then
    return nil, err
  end
  self.stmts[sql], self.nstmts = name, self.nstmts + 1
  order.last = order.last + 1
  order[order.last] = { sql = sql, name = name }
  return name
end

-- conn:send(sql, n, args, level) -> true | nil, err: starts a query; with no
-- parameters sql may hold several statements. Misuse raises at `level`.
function Conn:send(sql, n, args, level)
  local sent
  if n == 0 then
    sent = pq.PQsendQuery(self.pg, sql)
  else
    local name = false
    if self.stmt_max > 0 then
      local err
      name, err = statement(self, sql, n)
      if name == nil then
        return nil, err
      end
    end
    local values, lengths, formats, keep = params(n, args, level + 1)
    if name then
      sent = pq.PQsendQueryPrepared(self.pg, name, n, values, lengths, formats, 0)
    else
      sent = pq.PQsendQueryParams(self.pg, sql, n, nil, values, lengths, formats, 0)
    end
    assert(keep) -- the converted strings live until libpq has copied them
  end
  return started(self, sent)
end

-- Whether err says the server no longer has, or can no longer use, a
-- prepared statement: gone (DISCARD ALL, DEALLOCATE) or its result's shape
-- changed by DDL.
local function stale(err)
  return err.sqlstate == "26000" or (err.sqlstate == "0A000" and tostring(err.message):find(STALE_PLAN, 1, true))
end

-- conn:query(sql, n, args, level) -> rows | nil, err. A prepared statement
-- the server can no longer use is prepared again and, outside a
-- transaction (where the failed statement changed nothing), sent again.
function Conn:query(sql, n, args, level)
  local ok, err = self:send(sql, n, args, level + 1)
  if not ok then
    return nil, err
  end
  local rows, qerr = self:finish()
  if qerr and n > 0 and self.stmts[sql] and stale(qerr) then
    forget(self, sql)
    if self:ok() and self:transaction_status() == M.TRANS_IDLE then
      ok, err = self:send(sql, n, args, level + 1)
      if not ok then
        return nil, err
      end
      return self:finish()
    end
  end
  return rows, qerr
end

-- conn:cancel_target() -> { pid, key, host, port | path } | nil: where and what
-- to send a CancelRequest, read once from libpq's PGcancel (checked against
-- PQbackendPID, so a layout change is noticed rather than misused).
function Conn:cancel_target()
  local pgc = pq.PQgetCancel(self.pg)
  if pgc == nil then
    return nil
  end
  local c = ffi.cast("struct routemq_pg_cancel *", pgc)
  local target
  if c.be_pid == pq.PQbackendPID(self.pg) and c.be_pid ~= 0 then
    local sa = ffi.cast("uint8_t *", c.raddr.addr)
    local family = sa[0] + sa[1] * 256
    local port = sa[2] * 256 + sa[3]
    if family == 2 then
      target = { host = ("%d.%d.%d.%d"):format(sa[4], sa[5], sa[6], sa[7]), port = port }
    elseif family == 10 then
      local parts = {}
      for i = 0, 7 do
        parts[#parts + 1] = ("%x"):format(sa[8 + 2 * i] * 256 + sa[9 + 2 * i])
      end
      target = { host = table.concat(parts, ":"), port = port }
    elseif family == 1 then
      target = { path = ffi.string(sa + 2) }
    end
    if target then
      target.pid, target.key = c.be_pid, c.be_key
    end
  end
  pq.PQfreeCancel(pgc)
  return target
end

-- conn:cancel(timeout) -> true | nil, err: asks the server to cancel the
-- running query with a CancelRequest on a new cqueues socket (never blocks).
function Conn:cancel(timeout)
  if self.cancel_to == nil then
    self.cancel_to = self:cancel_target() or false
  end
  local t = self.cancel_to
  if not t then
    return nil, "cannot read this libpq's cancel key"
  end
  local ok, so = pcall(csocket.connect, t.path and { path = t.path } or { host = t.host, port = t.port })
  if not ok or not so then
    return nil, tostring(so)
  end
  so:onerror(function(_, _, why) return why end)
  so:setmode("b", "b")
  -- CancelRequest: length 16, code 80877102, backend pid, secret key.
  local function be32(n)
    n = n % 2 ^ 32
    return string.char(math.floor(n / 2 ^ 24) % 256, math.floor(n / 2 ^ 16) % 256, math.floor(n / 2 ^ 8) % 256,
      n % 256)
  end
  local done, why = so:xwrite(be32(16) .. be32(80877102) .. be32(t.pid) .. be32(t.key), "bn", timeout)
  if done then
    -- The server closes it once it has read the request.
    so:xread("*a", "b", timeout)
  end
  so:close()
  if not done then
    return nil, tostring(why)
  end
  return true
end

-- conn:notifies() -> iterator of (channel, payload, pid) received so far.
function Conn:notifies()
  local next_one = function()
    local n = pq.PQnotifies(self.pg)
    if n == nil then
      return nil
    end
    local channel, payload, pid = ffi.string(n.relname), ffi.string(n.extra), n.be_pid
    pq.PQfreemem(n)
    return channel, payload, pid
  end
  jit.off(next_one)
  return next_one
end

-- conn:wait_input(timeout) -> true | nil, err: waits for data, consumes it.
function Conn:wait_input(timeout)
  if self.pg == nil then
    return nil, M.error({ sqlstate = "08003", message = "connection closed" })
  end
  wait(self, "r", timeout and (cqueues.monotime() + timeout))
  if self.pg == nil then
    return nil, M.error({ sqlstate = "08003", message = "connection closed" })
  end
  if pq.PQconsumeInput(self.pg) == 0 or pq.PQstatus(self.pg) == CONNECTION_BAD then
    return nil, conn_error(self, "08006")
  end
  return true
end

-- What may reach the notice processor (libpq parses input in these).
for _, fn in ipairs({ M.connect, Conn.close, Conn.idle_alive, Conn.finish, Conn.send, Conn.query, Conn.wait_input,
  flush, wait, started, round_trip, statement }) do
  jit.off(fn)
end

-- conn:quote_ident(name) -> "name" quoted as an SQL identifier.
function Conn:quote_ident(name)
  local p = pq.PQescapeIdentifier(self.pg, name, #name)
  if p == nil then
    return nil, conn_error(self)
  end
  local s = ffi.string(p)
  pq.PQfreemem(p)
  return s
end

return M
