-- Opt-in: require("routemq.ngx") installs a global `ngx` with the part of
-- OpenResty's API that cosocket clients (lua-resty-redis, -mysql, -http)
-- use, on cqueues sockets, so they run unchanged and wait without blocking
-- the worker: ngx.socket.tcp, ngx.null, ngx.sleep, ngx.now, ngx.time,
-- ngx.update_time, ngx.log and its level constants.
--
-- An adapter only: no protocol code. Require it before the client library
-- (clients copy ngx.socket.tcp when they load). Timeouts are milliseconds
-- as in OpenResty; errors are OpenResty's texts ("timeout", "closed", ...).
local cqueues = require("cqueues")
local csocket = require("cqueues.socket")
local cerrno = require("cqueues.errno")
local cjson = require("cjson")
local ffi = require("ffi")

local M = {}

if package.loaded["routemq.ngx"] == nil and rawget(_G, "ngx") ~= nil then
  error("routemq.ngx: a global 'ngx' exists already (running inside OpenResty?)", 2)
end

local ETIMEDOUT, EPIPE, ECONNRESET = cerrno.ETIMEDOUT, cerrno.EPIPE, cerrno.ECONNRESET
local DEFAULT_TIMEOUT = 60 -- seconds, OpenResty's lua_socket_*_timeout default
local POOL_SIZE = 30       -- lua_socket_pool_size default
local KEEPALIVE = 60       -- lua_socket_keepalive_timeout default, seconds

ffi.cdef [[
  struct routemq_timeval { long tv_sec; long tv_usec; };
  int gettimeofday(struct routemq_timeval *tv, void *tz);
  int getpid(void);
]]
local tv = ffi.new("struct routemq_timeval")

local function now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + math.floor(tonumber(tv.tv_usec) / 1000) / 1000
end

local function errtext(why)
  if why == nil then
    return "closed"
  elseif why == ETIMEDOUT then
    return "timeout"
  elseif why == EPIPE or why == ECONNRESET then
    return "closed"
  elseif type(why) == "number" then
    return cerrno.strerror(why)
  end
  return tostring(why)
end

-- Errors come back as values, never raised (OpenResty's calling convention).
local function return_error(_, _, why)
  return why
end

-- Idle connections kept by setkeepalive: key -> list of { so =, since = }.
local pools = {}

local Tcp = {}
Tcp.__index = Tcp

local function tcp()
  return setmetatable({
    so = nil,
    key = nil,
    reused = 0,
    connect_timeout = DEFAULT_TIMEOUT,
    send_timeout = DEFAULT_TIMEOUT,
    read_timeout = DEFAULT_TIMEOUT,
  }, Tcp)
end

local function from_pool(key)
  local pool = pools[key]
  while pool and #pool > 0 do
    local item = table.remove(pool)
    if cqueues.monotime() - item.since <= item.timeout then
      -- A peer that closed the idle connection has made it readable: drop it.
      local probe = { pollfd = item.so:pollfd(), events = "r" }
      if cqueues.poll(probe, 0) ~= probe then
        return item
      end
    end
    item.so:close()
  end
end

-- sock:connect(host, port[, opts]) | sock:connect("unix:/path"[, opts])
-- -> 1 | nil, err; reuses an idle pooled connection to the same place.
function Tcp:connect(host, port, opts)
  if self.so then
    self:close()
  end
  if type(port) == "table" then
    opts, port = port, nil
  end
  local key = opts and opts.pool
  local spec
  if type(host) == "string" and host:sub(1, 5) == "unix:" then
    key = key or host
    spec = { path = host:sub(6) }
  else
    if type(host) ~= "string" or tonumber(port) == nil then
      return nil, "bad host or port"
    end
    key = key or (host .. ":" .. tostring(port))
    spec = { host = host, port = tonumber(port), nodelay = true }
  end
  self.key = key
  local idle = from_pool(key)
  if idle then
    self.so = idle.so
    self.reused = idle.reused + 1
    return 1
  end
  local ok, so, why = pcall(csocket.connect, spec)
  if not ok or not so then
    return nil, tostring(ok and why or so)
  end
  so:onerror(return_error)
  so:setmode("b", "b")
  local done, err = so:connect(self.connect_timeout)
  if not done then
    so:close()
    return nil, (err == ETIMEDOUT) and "timeout" or ("connect failed: " .. errtext(err))
  end
  self.so, self.reused = so, 0
  return 1
end

-- sock:sslhandshake(reused_session, server_name, ssl_verify) -> true | nil, err
function Tcp:sslhandshake(_, server_name, ssl_verify)
  local so = self.so
  if not so then
    return nil, "closed"
  end
  local context = require("openssl.ssl.context")
  local ctx = context.new("TLS", false)
  if ssl_verify then
    local store = require("openssl.x509.store").new()
    store:addDefaults()
    ctx:setStore(store)
    ctx:setVerify(context.VERIFY_PEER)
  else
    ctx:setVerify(context.VERIFY_NONE)
  end
  local ssl = require("openssl.ssl").new(ctx)
  if server_name then
    ssl:setHostName(server_name)
  end
  local ok, why = so:starttls(ssl, self.connect_timeout)
  if not ok then
    return nil, "handshake failed: " .. errtext(why)
  end
  if ssl_verify and server_name then
    local ok_verify = ssl:getVerifyResult() == 0
    if not ok_verify then
      return nil, "certificate verify failed"
    end
  end
  return true
end

-- Flattens OpenResty's nested send tables (strings, numbers, booleans).
local function flatten(data, out)
  for i = 1, #data do
    local v = data[i]
    local t = type(v)
    if t == "table" then
      flatten(v, out)
    elseif t == "string" or t == "number" then
      out[#out + 1] = tostring(v)
    elseif t == "boolean" then
      out[#out + 1] = v and "true" or "false"
    else
      error("bad data type " .. t .. " found in the send table", 3)
    end
  end
  return out
end

-- sock:send(data) -> bytes | nil, err; data a string or a nested table.
function Tcp:send(data)
  local so = self.so
  if not so then
    return nil, "closed"
  end
  if type(data) == "table" then
    data = table.concat(flatten(data, {}))
  else
    data = tostring(data)
  end
  local ok, why = so:xwrite(data, "bn", self.send_timeout)
  if not ok then
    so:clearerr()
    local err = errtext(why)
    if err == "closed" then
      self:close()
    end
    return nil, err
  end
  return #data
end

-- One read in the shape OpenResty returns: data | nil, err, partial.
local function read(self, what)
  local so = self.so
  if not so then
    return nil, "closed", ""
  end
  local data, why = so:xread(what, "b", self.read_timeout)
  if data then
    return data
  end
  so:clearerr()
  local err = errtext(why)
  local partial = ""
  if err == "closed" then
    -- What came before the peer closed is the partial answer.
    partial = so:xread("*a", "b", 0) or ""
    self:close()
  end
  return nil, err, partial
end

-- sock:receive([pattern]) with pattern "*l" (default; CRLF or LF stripped),
-- "*a" (until close) or a byte count -> data | nil, err, partial.
function Tcp:receive(pattern)
  pattern = pattern or "*l"
  if pattern == "*l" or pattern == "l" then
    local line, err, partial = read(self, "*L")
    if not line then
      return nil, err, partial
    end
    if line:sub(-1) ~= "\n" then
      return nil, "closed", line
    end
    return (line:gsub("\r?\n$", ""))
  elseif pattern == "*a" or pattern == "a" then
    local so = self.so
    if not so then
      return nil, "closed"
    end
    local data, why = so:xread("*a", "b", self.read_timeout)
    if data == nil and why then
      so:clearerr()
      return nil, errtext(why), ""
    end
    return data or ""
  end
  local n = tonumber(pattern)
  if not n or n < 0 then
    error("bad pattern argument: " .. tostring(pattern), 2)
  end
  if n == 0 then
    return ""
  end
  local data, err, partial = read(self, n)
  if data and #data < n then
    return nil, "closed", data
  end
  return data, err, partial
end

-- sock:receiveuntil(pattern[, opts]) -> iterator([size]) returning the data
-- before the next `pattern` (in chunks of at most size bytes when given).
function Tcp:receiveuntil(pattern, opts)
  if type(pattern) ~= "string" or pattern == "" then
    error("bad pattern argument", 2)
  end
  local inclusive = opts and opts.inclusive
  local finished = false
  local buf, got = {}, "" -- bytes read and not returned; the last #pattern of them
  return function(size)
    if finished then
      finished = false
      return nil, nil, nil
    end
    while true do
      local c, err = read(self, 1)
      if not c then
        local partial = table.concat(buf)
        buf, got = {}, ""
        return nil, err, partial
      end
      buf[#buf + 1] = c
      got = (got .. c):sub(-#pattern)
      if got == pattern then
        local data = table.concat(buf)
        buf, got = {}, ""
        if not inclusive then
          data = data:sub(1, -#pattern - 1)
        end
        if size then
          finished = true
        end
        return data
      end
      if size and #buf >= size + #pattern then
        -- Keep the tail that may still be the start of the pattern.
        local data = table.concat(buf)
        buf = { data:sub(size + 1) }
        return data:sub(1, size)
      end
    end
  end
end

-- sock:settimeout(ms): connect, send and receive timeouts at once.
function Tcp:settimeout(ms)
  local s = ms and ms > 0 and ms / 1000 or DEFAULT_TIMEOUT
  self.connect_timeout, self.send_timeout, self.read_timeout = s, s, s
end

-- sock:settimeouts(connect_ms, send_ms, read_ms)
function Tcp:settimeouts(c, s, r)
  self.connect_timeout = c and c > 0 and c / 1000 or DEFAULT_TIMEOUT
  self.send_timeout = s and s > 0 and s / 1000 or DEFAULT_TIMEOUT
  self.read_timeout = r and r > 0 and r / 1000 or DEFAULT_TIMEOUT
end

-- sock:setkeepalive([idle_ms[, pool_size]]) -> 1 | nil, err: hands the
-- connection to this worker's pool for the next connect to the same place.
function Tcp:setkeepalive(idle_ms, size)
  local so = self.so
  if not so then
    return nil, "closed"
  end
  self.so = nil
  local pool = pools[self.key]
  if not pool then
    pool = {}
    pools[self.key] = pool
  end
  if #pool >= (size or POOL_SIZE) then
    local oldest = table.remove(pool, 1)
    oldest.so:close()
  end
  local idle = idle_ms and idle_ms > 0 and idle_ms / 1000 or KEEPALIVE
  pool[#pool + 1] = { so = so, since = cqueues.monotime(), timeout = idle, reused = self.reused }
  return 1
end

-- sock:getreusedtimes() -> how many times this connection came from the pool.
function Tcp:getreusedtimes()
  if not self.so then
    return nil, "closed"
  end
  return self.reused
end

-- sock:close() -> 1 | nil, "closed"
function Tcp:close()
  local so = self.so
  if not so then
    return nil, "closed"
  end
  self.so = nil
  so:close()
  return 1
end

-- Log levels, numbered as nginx does.
local LEVELS = { "STDERR", "EMERG", "ALERT", "CRIT", "ERR", "WARN", "NOTICE", "INFO", "DEBUG" }
local SINK_LEVEL = {
  [0] = "error", [1] = "error", [2] = "error", [3] = "error", [4] = "error",
  [5] = "warn", [6] = "info", [7] = "info", [8] = "debug",
}

-- Where ngx.log lines go: function(level_name, msg). The dispatcher points
-- it at its ctx-tagged log; until then lines go to stderr.
M.sink = function(level, msg)
  io.stderr:write("[", level, "] ", msg, "\n")
end

local ngx = {
  null = cjson.null,
  socket = { tcp = tcp },
  sleep = function(seconds)
    cqueues.sleep(seconds)
  end,
  now = now,
  time = os.time,
  update_time = function() end,
  log = function(level, ...)
    local parts = {}
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      parts[i] = v == cjson.null and "null" or tostring(v)
    end
    M.sink(SINK_LEVEL[level] or "info", table.concat(parts))
  end,
  config = { ngx_lua_version = 10000, subsystem = "routemq" },
  worker = {
    pid = function()
      return ffi.C.getpid()
    end,
  },
}
for i, name in ipairs(LEVELS) do
  ngx[name] = i - 1
end
M.ngx = ngx
M.tcp = tcp

-- M.pool_size(key) -> idle connections kept for host:port (for tests).
function M.pool_size(key)
  return pools[key] and #pools[key] or 0
end

rawset(_G, "ngx", ngx)

return M
