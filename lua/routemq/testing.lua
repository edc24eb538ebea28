-- Test harness for applications: loads an app the way the runtime does and
-- dispatches messages to it without a broker, recording what the handlers
-- publish and log.
--
--   local app = require("routemq.testing").app(".")
--   local res = app:dispatch("sensors/42/data", { json = { temp = 99 } })
local app_loader = require("routemq.app")
local dispatch = require("routemq.dispatch")
local jobs_mod = require("routemq.jobs")
local runner_mod = require("routemq.runner")
local core = require("routemq.core")
local cjson = require("cjson")
local cjson_safe = require("cjson.safe")
local util = require("routemq.util")

local M = {}

local json_encode = cjson.new().encode
local json_decode = cjson_safe.new().decode

-- Runs fn(...) with os.getenv answering from `env` first, so an app can be
-- tested under settings it reads at load or dispatch time.
local function with_env(env, fn, ...)
  if env == nil then
    return fn(...)
  end
  local real = os.getenv
  os.getenv = function(name) -- luacheck: ignore 122
    local v = env[name]
    if v ~= nil then
      return tostring(v)
    end
    return real(name)
  end
  local results = { pcall(fn, ...) }
  os.getenv = real -- luacheck: ignore 122
  if not results[1] then
    error(results[2], 0)
  end
  return unpack(results, 2, table.maxn(results))
end

local Harness = {}
Harness.__index = Harness

-- app(dir, { env = { NAME = value }, init = true }) -> harness; raises the
-- load error, and with init = true the first error of the app's init
-- functions (router.init), which run once here.
function M.app(dir, opts)
  opts = opts or {}
  local bad = util.unknown_key(opts, { env = true, init = true })
  if bad ~= nil then
    error("testing.app: unknown option " .. util.key_text(bad), 2)
  end
  local env = opts.env
  local harness = setmetatable({ env = env }, Harness)
  local handler_timeout
  local loaded, err = with_env(env, function()
    handler_timeout = tonumber(os.getenv("WORKER_HANDLER_TIMEOUT") or "") or 30
    return app_loader.load(dir or ".", {
      group_name = os.getenv("MQTT_GROUP_NAME") or "routemq",
      handler_timeout = handler_timeout,
    })
  end)
  if not loaded then
    error(err, 0)
  end
  harness.app = loaded
  harness.routes = loaded.routes
  harness.runner = runner_mod.new()
  local io = {
    publish = function(topic, payload, qos, retain, props)
      local res = harness._result
      if res then
        res.published[#res.published + 1] = {
          topic = topic, payload = payload, qos = qos, retain = retain, props = props,
          json = (json_decode(payload)),
        }
      end
      return true
    end,
    log = function(level, msg)
      local res = harness._result
      if res then
        res.logs[#res.logs + 1] = { level = level, msg = msg }
      end
    end,
    done = function(res, ok, msg, tb)
      res.finished = true
      if not ok then
        res.error = msg .. (tb and tb ~= "" and ("\n" .. tb) or "")
      end
    end,
  }
  harness._io = io
  harness._d = dispatch.new(loaded, io, 0, harness.runner)
  harness._jobs = jobs_mod.new(loaded, harness.runner, io, 0)
  if opts.init then
    local init_ok, init_err = with_env(env, function()
      return harness._jobs:run_init(handler_timeout)
    end)
    if not init_ok then
      error(init_err, 0)
    end
  end
  return harness
end

-- harness:tick(name) -> { published, logs, error }: runs the timer
-- registered with router.every under that name once, until it finishes.
function Harness:tick(name)
  local res = { published = {}, logs = {} }
  if not self._jobs.timers[name] then
    error("app:tick: no timer named " .. util.describe(name), 2)
  end
  self._result = res
  with_env(self.env, function()
    self._jobs:tick(name, function(ok, err, tb)
      res.finished = true
      if not ok then
        res.error = err .. (tb and tb ~= "" and ("\n" .. tb) or "")
      end
    end)
    self.runner:run_until(function()
      return res.finished
    end, self._jobs.timers[name].def.timeout + 1)
  end)
  self._result = nil
  return res
end

-- harness:route(pattern) -> the route record registered with that pattern.
function Harness:route(pattern)
  for _, route in ipairs(self.routes) do
    if route.pattern == pattern then
      return route
    end
  end
end

local MESSAGE_FIELDS = {
  payload = true, json = true, qos = true, retain = true, dup = true, props = true,
  redelivered = true,
}

local function traceback(e)
  return debug.traceback(tostring(e), 2)
end

-- harness:dispatch(topic, { payload =, json =, qos =, retain =, dup =, props =,
-- redelivered = }) -> { matched, route, params, published, logs, error, ctx }.
-- The handler runs on a cqueues controller until it finishes, so it may wait
-- (cqueues, lua-http, routemq.ngx); one still waiting at its route's timeout
-- ends with error "timeout after N s".
function Harness:dispatch(topic, msg)
  msg = msg or {}
  local bad = util.unknown_key(msg, MESSAGE_FIELDS)
  if bad ~= nil then
    error("app:dispatch: unknown message field " .. util.key_text(bad), 2)
  end
  local ok, reason = core.validate_topic(topic)
  if not ok then
    error("app:dispatch: invalid topic " .. util.describe(topic) .. ": " .. tostring(reason), 2)
  end
  local payload = msg.payload
  if msg.json ~= nil then
    if payload ~= nil then
      error("app:dispatch: give either payload or json, not both", 2)
    end
    payload = json_encode(msg.json)
  end
  if payload ~= nil and type(payload) ~= "string" then
    error("app:dispatch: payload must be a string, got " .. util.describe(payload), 2)
  end

  local res = { matched = false, published = {}, logs = {} }
  local d = self._d
  local index, params = d.match(topic)
  if not index then
    return res
  end
  res.matched = true
  res.route = self.routes[index].pattern
  res.params = params
  self._result = res
  local timeout = self.routes[index].timeout or 30
  local call_ok, err = with_env(self.env, xpcall, function()
    local fin, hok, herr, tb = d.call(index, topic, payload or "", msg.qos or 0, msg.retain or false,
      msg.dup or false, msg.props, msg.redelivered or false, params, res)
    if fin then
      self._io.done(res, hok, herr, tb)
    end
    res.ctx = d.current()
    self.runner:run_until(function()
      return res.finished
    end, timeout + 1)
  end, traceback)
  self._result = nil
  if not call_ok then
    res.error = err
  end
  res.finished = nil
  return res
end

return M
