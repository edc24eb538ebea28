-- The per-message `ctx` handed to handlers and middleware.
--
-- The runtime builds one ctx per message, so a ctx is a single flat table
-- sharing one metatable; methods live in that metatable and no closure is
-- created per message. Route views, the log table and the empty tables are
-- shared between messages.
local cjson = require("cjson")
local core = require("routemq.core")
local util = require("routemq.util")

local raise, describe = util.raise, util.describe
local setmetatable, type, pairs = setmetatable, type, pairs

local M = {}

-- A private cjson instance: the app may reconfigure the global cjson module.
local json_encode = cjson.new().encode
-- Strict RFC 8259 decoding into what lua-cjson gives (null is cjson.null), in
-- C with tables made at their final size: about half lua-cjson's cost.
local json_decode = core.json_decode

local function read_only(what)
  return setmetatable({}, {
    __newindex = function()
      error(what .. " is read-only", 2)
    end,
  })
end

-- Most messages carry no properties or params: one frozen empty table serves
-- both, here and in the runtime (which takes it from here, M.EMPTY).
local EMPTY = read_only("ctx.props and ctx.params of a message without any are empty and")
local NO_PROPS, NO_PARAMS = EMPTY, EMPTY

local Context = {}
local context_mt = { __index = Context }

-- new(view, topic, params, payload, qos, retain, dup, props, redelivered,
--     worker, log, io, token, route_index, attempt, replayed) -> ctx;
-- positional to keep the per-message cost low. token identifies the message
-- to the runtime (its publishes are tied to it: the message is finished when
-- the broker has them). attempt: 1 on the first run (the default).
function M.new(view, topic, params, payload, qos, retain, dup, props, redelivered,
               worker, log, io, token, route_index, attempt, replayed)
  return setmetatable({
    topic = topic,
    params = params or NO_PARAMS,
    payload = payload or "",
    qos = qos or 0,
    retain = retain or false,
    dup = dup or false,
    redelivered = redelivered or false,
    attempt = attempt or 1,
    replayed = replayed or false,
    props = props or NO_PROPS,
    route = view,
    worker = worker,
    log = log,
    _io = io,
    _token = token,
    _route_index = route_index,
  }, context_mt)
end

local view_mt = {
  __tostring = function(view)
    return view.pattern
  end,
}

-- route_view(route) -> the public { pattern, name, filter, qos } of a route,
-- built once per route and shared by all its messages.
function M.route_view(route)
  return setmetatable({
    pattern = route.pattern,
    name = route.name,
    filter = route.filter,
    qos = route.qos,
  }, view_mt)
end

-- ctx:json() -> decoded payload (cached) | nil, err; never raises.
function Context:json()
  local value = self._json
  if value ~= nil then
    return value
  end
  if self._json_err then
    return nil, self._json_err
  end
  local err
  value, err = json_decode(self.payload)
  if value == nil then
    self._json_err = err or "invalid JSON"
    return nil, self._json_err
  end
  self._json = value
  return value
end

local PUBLISH_OPTIONS = { qos = true, retain = true, props = true }

local PROPS = {
  content_type = "string",
  response_topic = "topic",
  correlation_data = "string",
  message_expiry = "seconds",
  user = "pairs",
}
-- Checked in a fixed order so that the reported problem is stable.
local PROP_ORDER = { "content_type", "response_topic", "correlation_data", "message_expiry",
  "user" }

local function check_props(fname, props)
  if type(props) ~= "table" then
    raise(fname .. ": option 'props' must be a table, got " .. describe(props))
  end
  local bad = util.unknown_key(props, PROPS)
  if bad ~= nil then
    raise(fname .. ": unknown property " .. util.key_text(bad))
  end
  for _, key in ipairs(PROP_ORDER) do
    local kind, v = PROPS[key], props[key]
    if v ~= nil then
      local what = "props." .. key
      if kind == "string" or kind == "topic" then
        if type(v) ~= "string" then
          raise(fname .. ": " .. what .. " must be a string, got " .. describe(v))
        end
        -- MQTT encodes these with a 16-bit length; longer would be cut short.
        if #v > 65535 then
          raise(fname .. ": " .. what .. " is longer than 65535 bytes")
        end
        if kind == "topic" then
          local ok, reason = core.validate_topic(v)
          if not ok then
            raise(fname .. ": " .. what .. " '" .. util.show_topic(v) .. "' is not a valid topic: "
              .. tostring(reason))
          end
        end
      elseif kind == "seconds" then
        if not util.is_integer(v) or v < 0 or v > 4294967295 then
          raise(fname .. ": " .. what .. " must be a whole number of seconds, got "
            .. describe(v))
        end
      else
        if type(v) ~= "table" then
          raise(fname .. ": " .. what .. " must be a table of strings, got " .. describe(v))
        end
        for k, s in pairs(v) do
          if type(k) ~= "string" or type(s) ~= "string" then
            raise(fname .. ": " .. what .. " must map strings to strings, got "
              .. util.key_text(k) .. " = " .. describe(s))
          end
        end
      end
    end
  end
end

-- Validates and sends; `correlation` (for replies) fills a missing
-- props.correlation_data.
local function send(self, fname, topic, payload, opts, correlation)
  if type(topic) ~= "string" then
    raise(fname .. ": topic must be a string, got " .. describe(topic))
  end
  local ok, reason = core.validate_topic(topic)
  if not ok then
    raise(fname .. ": invalid topic '" .. util.show_topic(topic) .. "': " .. tostring(reason))
  end
  local kind = type(payload)
  if kind == "table" then
    local encoded_ok, encoded = pcall(json_encode, payload)
    if not encoded_ok then
      raise(fname .. ": cannot encode the payload as JSON: " .. tostring(encoded))
    end
    payload = encoded
  elseif payload == nil then
    payload = ""
  elseif kind ~= "string" then
    raise(fname .. ": payload must be a string or a table, got " .. describe(payload))
  end
  local qos, retain, props = 0, false, nil
  if opts ~= nil then
    if type(opts) ~= "table" then
      raise(fname .. ": options must be a table, got " .. describe(opts))
    end
    local bad = util.unknown_key(opts, PUBLISH_OPTIONS)
    if bad ~= nil then
      raise(fname .. ": unknown option " .. util.key_text(bad))
    end
    if opts.qos ~= nil then
      qos = opts.qos
      if qos ~= 0 and qos ~= 1 and qos ~= 2 then
        raise(fname .. ": option 'qos' must be 0, 1 or 2, got " .. describe(qos))
      end
    end
    if opts.retain ~= nil then
      retain = opts.retain
      if type(retain) ~= "boolean" then
        raise(fname .. ": option 'retain' must be a boolean, got " .. describe(retain))
      end
    end
    props = opts.props
    if props ~= nil then
      check_props(fname, props)
    end
  end
  if correlation ~= nil and (props == nil or props.correlation_data == nil) then
    local merged = { correlation_data = correlation }
    for k, v in pairs(props or NO_PROPS) do
      merged[k] = v
    end
    props = merged
  end
  local io, token = self._io, self._token
  local sent, err = io.publish(topic, payload, qos, retain, props, token)
  -- false: the worker's outgoing publishes are over their bound. Wait until
  -- they are below it where this code can (io.wait_outgoing yields to the
  -- worker's other work), else publish anyway (nowait).
  while sent == false do
    local wait = io.wait_outgoing
    sent, err = io.publish(topic, payload, qos, retain, props, token, not (wait and wait()))
  end
  if sent == nil and err ~= nil then
    raise(fname .. ": cannot publish to '" .. util.show_topic(topic) .. "': " .. tostring(err))
  end
  return sent
end

-- ctx:publish(topic, payload, opts) -> true; payload is a string or a table
-- (sent as JSON); raises on bad input and when the runtime cannot publish.
-- Waits (without blocking the worker) while the worker's outgoing publishes
-- are over WORKER_MAX_OUTGOING / WORKER_MAX_OUTGOING_MB.
function Context:publish(topic, payload, opts)
  return send(self, "ctx:publish", topic, payload, opts, nil)
end

-- ctx:reply(payload, opts): publish to the request's response_topic, carrying
-- its correlation_data; raises when the request has no response_topic.
function Context:reply(payload, opts)
  local request = self.props
  local topic = request.response_topic
  if topic == nil then
    raise("ctx:reply: the message has no response_topic")
  end
  return send(self, "ctx:reply", topic, payload, opts, request.correlation_data)
end

-- publisher(fname) -> a publish(self, topic, payload, opts) method for other
-- objects carrying _io and _token (job:publish), naming fname in errors.
function M.publisher(fname)
  return function(self, topic, payload, opts)
    return send(self, fname, topic, payload, opts, nil)
  end
end

-- ctx:retry and ctx:fail end the handler by raising one of these private
-- objects, with what they ask for left in ctx._signal: the dispatcher tells
-- them from errors (and still honours ctx._signal when middleware swallowed
-- the raise with its own pcall).
local RETRY = setmetatable({}, { __tostring = function() return "ctx:retry" end })
local FAIL = setmetatable({}, { __tostring = function() return "ctx:fail" end })
M.RETRY, M.FAIL = RETRY, FAIL

-- ctx:retry([seconds]): end the handler now and run the message again after
-- `seconds` (default: the route's backoff delay). It uses up an attempt; at
-- the last attempt the message goes to the dead-letter store.
function Context:retry(seconds)
  if seconds ~= nil and (type(seconds) ~= "number" or seconds ~= seconds or seconds < 0
      or seconds == math.huge) then
    raise("ctx:retry: seconds must be a number >= 0 (or nil for the route's backoff), got "
      .. describe(seconds))
  end
  if self._hook then
    raise("ctx:retry: not available in an on_error hook")
  end
  self._signal = RETRY
  self._signal_arg = seconds
  error(RETRY, 0)
end

-- ctx:fail(reason): end the handler now and send the message to the
-- dead-letter store with `reason`, whatever attempts are left.
function Context:fail(reason)
  if type(reason) ~= "string" or reason == "" then
    raise("ctx:fail: reason must be a non-empty string, got " .. describe(reason))
  end
  if self._hook then
    raise("ctx:fail: not available in an on_error hook")
  end
  self._signal = FAIL
  self._signal_arg = reason
  error(FAIL, 0)
end

M.EMPTY = EMPTY
M.NO_PROPS = NO_PROPS
M.NO_PARAMS = NO_PARAMS

return M
