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

-- The worker's retry defaults (ROUTEMQ_RETRY_*), read as the runtime
-- reads them; raises on a bad value like the runtime refuses to start.
local RETRY_VARS = {
  { "ROUTEMQ_RETRY_ATTEMPTS", "attempts", function(v)
    return util.is_integer(v) and v >= 1 and v <= 1000, "an integer from 1 to 1000"
  end },
  { "ROUTEMQ_RETRY_DELAY", "delay", function(v)
    return v >= 0 and v < math.huge, "a number of seconds >= 0"
  end },
  { "ROUTEMQ_RETRY_BACKOFF", "backoff", function(v)
    return v >= 1 and v <= 1000, "a factor from 1 to 1000"
  end },
  { "ROUTEMQ_RETRY_MAX_DELAY", "max_delay", function(v)
    return v >= 0 and v < math.huge, "a number of seconds >= 0"
  end },
}
local function retry_from_env()
  local retry = {}
  for _, var in ipairs(RETRY_VARS) do
    local text = os.getenv(var[1])
    if text ~= nil and text ~= "" then
      local v = tonumber(text)
      local ok, expected = var[3](v or 0)
      if not v or not ok then
        error(var[1] .. ": '" .. text .. "' is not " .. expected, 0)
      end
      retry[var[2]] = v
    end
  end
  return retry
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
  local handler_timeout, retry
  local loaded, err = with_env(env, function()
    handler_timeout = tonumber(os.getenv("WORKER_HANDLER_TIMEOUT") or "") or 30
    retry = retry_from_env()
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
    -- token: the attempt's state (Harness:dispatch)
    done = function(st, ok, msg, tb, reason, delay)
      st.finished = true
      st.ok = ok
      if not ok then
        st.error = tostring(msg) .. (tb and tb ~= "" and ("\n" .. tb) or "")
        st.message, st.traceback, st.reason, st.delay = msg, tb, reason, delay
      end
    end,
    retry = retry,
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
  redelivered = true, attempt = true, replayed = true, retries = true,
}
local RETRIES = { now = true, sleep = true, none = true }

local function traceback(e)
  return debug.traceback(tostring(e), 2)
end

-- harness:dispatch(topic, { payload =, json =, qos =, retain =, dup =, props =,
-- redelivered =, attempt =, replayed =, retries = }) -> { matched, route,
-- params, published, logs, error, ctx, ok, attempts, retries, errors,
-- dead_letter }.
-- The handler runs on a cqueues controller until it finishes, so it may wait
-- (cqueues, lua-http, routemq.ngx); one still waiting at its route's timeout
-- ends with error "timeout after N s". A failed attempt is run again as the
-- route's `retry` option says: at once (retries = "now", the default),
-- after its real delay ("sleep"), or not ("none": the result says which
-- delay the next attempt would have had). attempt: the first attempt's
-- number (default 1), to test a handler's last attempt directly.
-- Result: ok (the message ended in success), attempts (how many ran),
-- retries (the delay before each further attempt), errors (each failed
-- attempt's error with its traceback), error (the last attempt's, if it
-- failed), dead_letter = { reason, error, traceback, attempts } when the
-- message would go to the dead-letter store; published and logs of every
-- attempt; ctx of the last.
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
  local attempt = msg.attempt or 1
  if not util.is_integer(attempt) or attempt < 1 then
    error("app:dispatch: attempt must be a positive integer, got " .. util.describe(attempt), 2)
  end
  local mode = msg.retries or "now"
  if not RETRIES[mode] then
    error("app:dispatch: retries must be 'now', 'sleep' or 'none', got " .. util.describe(mode), 2)
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
  res.ok, res.attempts, res.retries, res.errors = false, 0, {}, {}
  self._result = res
  local timeout = self.routes[index].timeout or 30
  local runner = self.runner
  local call_ok, err = with_env(self.env, xpcall, function()
    while true do
      local st = {}
      res.attempts = res.attempts + 1
      local fin, hok, herr, tb, why, delay = d.call(index, topic, payload or "", msg.qos or 0,
        msg.retain or false, msg.dup or false, msg.props, msg.redelivered or false, params, st,
        attempt, msg.replayed or false)
      if fin then
        self._io.done(st, hok, herr, tb, why, delay)
      end
      res.ctx = d.current()
      -- A timeout may be followed by the on_error hooks' own timeout.
      runner:run_until(function()
        return st.finished
      end, 2 * timeout + 1)
      if not st.finished then
        res.error = "app:dispatch: the message did not finish"
        return
      end
      res.error = st.error
      if st.ok then
        res.ok = true
        return
      end
      res.errors[#res.errors + 1] = st.error
      if st.delay == nil then
        res.dead_letter = { reason = st.reason, error = st.message, traceback = st.traceback,
          attempts = attempt }
        return
      end
      res.retries[#res.retries + 1] = st.delay
      if mode == "none" then
        d.release(index, topic)
        return
      end
      if mode == "sleep" then
        local due = runner_mod.monotime() + st.delay
        runner:run_until(function()
          return runner_mod.monotime() >= due
        end, st.delay + 1)
      end
      attempt = attempt + 1
    end
  end, traceback)
  self._result = nil
  if not call_ok then
    res.error = err
  end
  return res
end

return M
