-- One MySQL/MariaDB connection on MariaDB Connector/C's non-blocking API
-- (libmariadb3, LuaJIT FFI as routemq.pgconn): every *_start/*_cont pair
-- waits on the connection's socket through cqueues, never blocking the worker.
-- `?` parameters are substituted client-side as escaped literals
-- (mysql_real_escape_string knows the connection's character set and
-- NO_BACKSLASH_ESCAPES), as lua-resty-mysql and node's mysql do.
local cqueues = require("cqueues")
local cjson = require("cjson")
local ffi = require("ffi")
local dbconn = require("routemq.dbconn")
local bit = require("bit")

local M = {}

ffi.cdef [[
  typedef struct st_mysql MYSQL;
  typedef struct st_mysql_res MYSQL_RES;
  typedef char **MYSQL_ROW;
  /* Connector/C 3.x MYSQL_FIELD: name first, type at offset 112, 128 bytes. */
  typedef struct { char *name; uint8_t pad[100]; unsigned int charsetnr; int type; void *extension; }
    routemq_mysql_field;
  MYSQL *mysql_init(MYSQL *mysql);
  int mysql_options(MYSQL *mysql, int option, const void *arg);
  int mysql_real_connect_start(MYSQL **ret, MYSQL *mysql, const char *host, const char *user, const char *passwd,
                               const char *db, unsigned int port, const char *unix_socket, unsigned long flags);
  int mysql_real_connect_cont(MYSQL **ret, MYSQL *mysql, int status);
  int mysql_real_query_start(int *ret, MYSQL *mysql, const char *q, unsigned long length);
  int mysql_real_query_cont(int *ret, MYSQL *mysql, int status);
  int mysql_store_result_start(MYSQL_RES **ret, MYSQL *mysql);
  int mysql_store_result_cont(MYSQL_RES **ret, MYSQL *mysql, int status);
  int mysql_next_result_start(int *ret, MYSQL *mysql);
  int mysql_next_result_cont(int *ret, MYSQL *mysql, int status);
  int mysql_get_socket(MYSQL *mysql);
  unsigned int mysql_get_timeout_value_ms(const MYSQL *mysql);
  void mysql_close(MYSQL *sock);
  unsigned int mysql_errno(MYSQL *mysql);
  const char *mysql_error(MYSQL *mysql);
  const char *mysql_sqlstate(MYSQL *mysql);
  unsigned int mysql_field_count(MYSQL *mysql);
  char mysql_more_results(MYSQL *mysql);
  unsigned long long mysql_affected_rows(MYSQL *mysql);
  unsigned long long mysql_insert_id(MYSQL *mysql);
  unsigned long mysql_thread_id(MYSQL *mysql);
  unsigned int mysql_num_fields(MYSQL_RES *res);
  routemq_mysql_field *mysql_fetch_fields(MYSQL_RES *res);
  MYSQL_ROW mysql_fetch_row(MYSQL_RES *result);
  unsigned long *mysql_fetch_lengths(MYSQL_RES *result);
  void mysql_free_result(MYSQL_RES *result);
  unsigned long mysql_real_escape_string(MYSQL *mysql, char *to, const char *from, unsigned long length);
]]
for _, decl in ipairs({ "int dup(int fd);", "int close(int fd);", "int shutdown(int fd, int how);",
  "double strtod(const char *s, char **end);", "int getpid(void);",
  "struct pollfd { int fd; short events; short revents; };",
  "int poll(struct pollfd *fds, unsigned long n, int ms);" }) do
  pcall(ffi.cdef, decl)
end

local ok_load, my = pcall(ffi.load, "libmariadb.so.3")
if not ok_load then
  error("routemq.mysql: cannot load libmariadb (install the Debian package libmariadb3): " .. tostring(my), 0)
end

local C = ffi.C
local null = cjson.null
M.null = null

-- log(level, msg): the worker's log line when running in a worker, else stderr.
M.log = dbconn.log

local WAIT_READ, WAIT_WRITE, WAIT_TIMEOUT = 1, 2, 8
local OPT_NONBLOCK, OPT_CHARSET = 6000, 7
local CLIENT_MULTI_STATEMENTS = 65536
local TWO53 = 2 ^ 53

local Error = {}
Error.__index = Error
Error.__tostring = function(e)
  return ("ERROR %s%s: %s"):format(e.errno and tostring(e.errno) or "",
    e.sqlstate and (" (" .. e.sqlstate .. ")") or "", tostring(e.message))
end

-- error(fields) -> err: errno, sqlstate, message; tostring gives one line.
function M.error(fields)
  return setmetatable(fields, Error)
end

local function my_error(m, default_state)
  local errno = m ~= nil and my.mysql_errno(m) or 0
  return M.error({
    errno = errno ~= 0 and errno or nil,
    sqlstate = m ~= nil and ffi.string(my.mysql_sqlstate(m)) or default_state,
    message = m ~= nil and ffi.string(my.mysql_error(m)) or "connection closed",
  })
end

-- parse(url) -> { host, port, user, password, database, socket } | nil, err
-- for mysql://user:pass@host:port/db (percent-escapes decoded).
function M.parse(url)
  local function unescape(s)
    return s and (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end
  local rest = url:match("^mysql://(.*)$") or url:match("^mariadb://(.*)$")
  if not rest then
    return nil, "expected mysql://user:password@host:port/database, got " .. url
  end
  local auth, hostport, path = rest:match("^([^@/]*)@([^/]*)/?(.*)$")
  if not auth then
    hostport, path = rest:match("^([^/]*)/?(.*)$")
  end
  local user, password = (auth or ""):match("^([^:]*):?(.*)$")
  local host, port = hostport:match("^%[(.-)%]:?(%d*)$")
  if not host then
    host, port = hostport:match("^([^:]*):?(%d*)$")
  end
  if not host then
    return nil, "bad host and port in " .. url
  end
  local db = path:match("^([^?]*)")
  return {
    host = host ~= "" and unescape(host) or "127.0.0.1",
    port = tonumber(port) or 3306,
    user = user ~= "" and unescape(user) or nil,
    password = password ~= "" and unescape(password) or nil,
    database = db ~= "" and unescape(db) or nil,
    socket = unescape(path:match("[?&]socket=([^&]*)")),
  }
end

local Conn = {}
Conn.__index = Conn

-- Waits for what `status` asks (read/write/a timeout of the library's) on a
-- duplicate of the socket (see routemq.pgconn) and returns the status to
-- continue with, or nil past the deadline.
local function wait(self, status, deadline)
  local events = (bit.band(status, WAIT_READ) ~= 0 and "r" or "") .. (bit.band(status, WAIT_WRITE) ~= 0 and "w" or "")
  local left = deadline and (deadline - cqueues.monotime()) or nil
  if left and left <= 0 then
    return nil
  end
  local lib_timeout = bit.band(status, WAIT_TIMEOUT) ~= 0 and my.mysql_get_timeout_value_ms(self.m) / 1000 or nil
  local t = left
  if lib_timeout and (t == nil or lib_timeout < t) then
    t = lib_timeout
  end
  local fd, temp = self.fd, nil
  if fd == nil then
    temp = C.dup(my.mysql_get_socket(self.m))
    fd = temp
  end
  local ready = false
  if events ~= "" and fd >= 0 then
    local p = self.poll
    p.pollfd, p.events = fd, events
    ready = cqueues.poll(p, t) == p
  elseif t then
    cqueues.sleep(t)
  end
  if temp and temp >= 0 then
    cqueues.cancel(temp)
    C.close(temp)
  end
  if ready then
    return bit.band(status, WAIT_READ + WAIT_WRITE)
  elseif lib_timeout and (left == nil or lib_timeout <= left) then
    return WAIT_TIMEOUT
  elseif deadline and cqueues.monotime() >= deadline then
    return nil
  end
  return bit.band(status, WAIT_READ + WAIT_WRITE)
end

-- Runs a *_start/*_cont pair to its end; false past the deadline.
local function drive(self, status, cont, ret, deadline)
  self.busy = true
  while status ~= 0 do
    local st = wait(self, status, deadline)
    if st == nil then
      return false
    end
    status = cont(ret, self.m, st)
  end
  self.busy = false
  return true
end

-- connect(params, timeout) -> conn | nil, err without blocking.
function M.connect(params, timeout)
  local deadline = cqueues.monotime() + timeout
  local host = params.host
  if not params.socket then
    local addr, err = dbconn.resolve(host, timeout)
    if not addr then
      return nil, M.error({ sqlstate = "08001", message = err })
    end
    host = addr
  end
  local m = my.mysql_init(nil)
  if m == nil then
    return nil, M.error({ sqlstate = "08001", message = "out of memory" })
  end
  my.mysql_options(m, OPT_NONBLOCK, nil)
  my.mysql_options(m, OPT_CHARSET, "utf8mb4")
  local self = setmetatable({ m = m, pid = C.getpid(), poll = {}, busy = false }, Conn)
  local ret = ffi.new("MYSQL *[1]")
  local status = my.mysql_real_connect_start(ret, m, not params.socket and host or nil, params.user, params.password,
    params.database, params.port or 3306, params.socket, CLIENT_MULTI_STATEMENTS)
  if not drive(self, status, my.mysql_real_connect_cont, ret, deadline) then
    self:close(true)
    return nil, M.error({ sqlstate = "08001", message = ("connect timeout after %g s"):format(timeout) })
  end
  if ret[0] == nil then
    local err = my_error(m, "08001")
    self:close()
    return nil, err
  end
  self.fd = C.dup(my.mysql_get_socket(m))
  self.thread_id = tonumber(my.mysql_thread_id(m))
  return self
end

-- conn:close([abort]): closes; abort (mid-operation) shuts the socket first so
-- the library's goodbye cannot wait.
function Conn:close(abort)
  local m = self.m
  if m == nil then
    return
  end
  self.m = nil
  if self.fd and self.fd >= 0 then
    cqueues.cancel(self.fd)
    if abort or self.busy then
      C.shutdown(self.fd, 2)
    end
    C.close(self.fd)
  elseif abort or self.busy then
    local fd = my.mysql_get_socket(m)
    if fd >= 0 then
      C.shutdown(fd, 2)
    end
  end
  self.fd = nil
  if self.pid == C.getpid() then
    my.mysql_close(m)
  end
end

function Conn:ok()
  return self.m ~= nil and not self.broken
end

-- conn:idle_alive() -> false if the server closed this idle connection.
function Conn:idle_alive()
  if not self:ok() then
    return false
  end
  -- An idle connection has nothing to read unless the server went away
  -- (poll(2) with no wait: cqueues.poll would yield for a controller step).
  local probe = ffi.new("struct pollfd[1]")
  probe[0].fd, probe[0].events = self.fd, 1 -- POLLIN
  return C.poll(probe, 1, 0) == 0
end

local function number_text(v)
  if v ~= v or v == math.huge or v == -math.huge then
    return nil
  elseif v == math.floor(v) and v > -2 ^ 63 and v < 2 ^ 63 then
    return ("%.0f"):format(v)
  end
  return ("%.17g"):format(v)
end

-- Lua value -> SQL literal; nil, reason for what has none.
function Conn:literal(v)
  local t = type(v)
  if v == nil or v == null then
    return "NULL"
  elseif t == "boolean" then
    return v and "TRUE" or "FALSE"
  elseif t == "number" then
    return number_text(v) or nil, "NaN and infinities have no MySQL literal"
  elseif t == "string" then
    local buf = ffi.new("char[?]", #v * 2 + 1)
    local n = my.mysql_real_escape_string(self.m, buf, v, #v)
    return "'" .. ffi.string(buf, n) .. "'"
  elseif t == "cdata" and (ffi.istype("int64_t", v) or ffi.istype("uint64_t", v)) then
    return (tostring(v):gsub("U?LL$", ""))
  end
  return nil, "a " .. t .. " (pass strings, numbers, booleans or mysql.null; encode tables yourself)"
end

-- Replaces each ? outside quotes and comments by args[i]'s literal.
-- -> sql | nil, reason (misuse: counts that differ, unsupported values)
function Conn:interpolate(sql, n, args)
  local out, i, pos, len = {}, 0, 1, #sql
  local start = 1
  while pos <= len do
    local c = sql:sub(pos, pos)
    if c == "'" or c == '"' or c == "`" then
      local j = pos + 1
      while j <= len do
        local d = sql:sub(j, j)
        if d == "\\" and c ~= "`" then
          j = j + 2
        elseif d == c then
          if sql:sub(j + 1, j + 1) == c then j = j + 2 else break end
        else
          j = j + 1
        end
      end
      pos = j + 1
    elseif c == "-" and sql:sub(pos, pos + 2):match("^%-%-[%s]") or c == "#" then
      pos = (sql:find("\n", pos, true) or len) + 1
    elseif c == "/" and sql:sub(pos + 1, pos + 1) == "*" then
      local e = sql:find("*/", pos + 2, true)
      pos = e and e + 2 or len + 1
    elseif c == "?" then
      i = i + 1
      if i > n then
        return nil, ("the SQL has more ? than the %d parameter(s) given"):format(n)
      end
      local lit, why = self:literal(args[i])
      if not lit then
        return nil, ("parameter %d is %s"):format(i, why)
      end
      out[#out + 1] = sql:sub(start, pos - 1)
      out[#out + 1] = lit
      pos = pos + 1
      start = pos
    else
      pos = pos + 1
    end
  end
  if i ~= n then
    return nil, ("%d parameter(s) given for %d ?"):format(n, i)
  end
  out[#out + 1] = sql:sub(start)
  return table.concat(out)
end

local TINY, SHORT, LONG, FLOAT, DOUBLE, LONGLONG, INT24, YEAR = 1, 2, 3, 4, 5, 8, 9, 13

local function rows_of(res)
  local rows = {}
  local nf = my.mysql_num_fields(res)
  local fields = my.mysql_fetch_fields(res)
  local names, types = {}, {}
  for c = 0, nf - 1 do
    names[c] = ffi.string(fields[c].name)
    types[c] = fields[c].type
  end
  while true do
    local row = my.mysql_fetch_row(res)
    if row == nil then
      break
    end
    local lengths = my.mysql_fetch_lengths(res)
    local r = {}
    for c = 0, nf - 1 do
      local p, t = row[c], types[c]
      local v
      if p == nil then
        v = null
      elseif t == LONG or t == TINY or t == SHORT or t == INT24 or t == YEAR or t == FLOAT or t == DOUBLE then
        v = C.strtod(p, nil)
      elseif t == LONGLONG then
        v = C.strtod(p, nil)
        if not (v > -TWO53 and v < TWO53) then
          v = ffi.string(p, lengths[c])
        end
      else
        -- DECIMAL (exact text), strings, blobs (bytes), JSON, dates, BIT (bytes)
        v = ffi.string(p, lengths[c])
      end
      r[names[c]] = v
    end
    rows[#rows + 1] = r
  end
  return rows
end

-- conn:query(sql, deadline) -> rows | nil, err: sql already interpolated; the
-- last result's rows with rows.affected and rows.insert_id.
function Conn:query(sql, deadline)
  local iret = ffi.new("int[1]")
  local status = my.mysql_real_query_start(iret, self.m, sql, #sql)
  if not drive(self, status, my.mysql_real_query_cont, iret, deadline) then
    return nil, M.error({ message = "query still running at its deadline" })
  end
  if iret[0] ~= 0 then
    local err = my_error(self.m)
    if (err.errno or 0) >= 2000 then
      self.broken = true -- a client error (CR_*): the connection is gone
    end
    return nil, err
  end
  local last, first_err
  local rret = ffi.new("MYSQL_RES *[1]")
  while true do
    status = my.mysql_store_result_start(rret, self.m)
    if not drive(self, status, my.mysql_store_result_cont, rret, deadline) then
      return nil, M.error({ message = "query still running at its deadline" })
    end
    local res = rret[0]
    if res ~= nil then
      last = rows_of(res)
      my.mysql_free_result(res)
    elseif my.mysql_field_count(self.m) == 0 then
      last = {}
    else
      first_err = first_err or my_error(self.m)
    end
    last.affected = tonumber(my.mysql_affected_rows(self.m))
    if last.affected == 2 ^ 64 - 1 then
      last.affected = 0
    end
    last.insert_id = tonumber(my.mysql_insert_id(self.m))
    if my.mysql_more_results(self.m) == 0 then
      break
    end
    status = my.mysql_next_result_start(iret, self.m)
    if not drive(self, status, my.mysql_next_result_cont, iret, deadline) then
      return nil, M.error({ message = "query still running at its deadline" })
    end
    if iret[0] > 0 then
      first_err = first_err or my_error(self.m)
      break
    end
  end
  if first_err then
    return nil, first_err
  end
  return last
end

return M
