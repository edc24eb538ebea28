-- The route registry that application router files fill in.
--
-- One registry per Lua state: routemq.app resets it before loading an
-- application's routers and reads it back afterwards. Every error raised here
-- names the user's call site ("app/routers/x.lua:12: ..."), not this file.
--
-- Middleware scopes: global (router.use), then each enclosing group (its
-- `middleware` option and r.use), then the route's own `middleware` option.
-- A `use` call applies to every route of its scope, including routes
-- registered before it, the same way router.use does for global middleware.
local core = require("routemq.core")
local util = require("routemq.util")

local raise, describe, callable = util.raise, util.describe, util.callable

local M = {}

local routes     -- registered route records, in registration order
local by_filter  -- filter -> route record, to reject duplicates
local root       -- the global scope: its middleware is the global middleware
local timers     -- router.every records, in registration order
local by_name    -- timer name -> record, to reject duplicates
local inits      -- router.init records
local health     -- the router.health record, or nil
local on_error   -- router.on_error records, in registration order

local function new_scope(parent, prefix, middleware)
  return { parent = parent, prefix = prefix, middleware = middleware }
end

-- _reset(): forget every route and middleware (the loader calls it first).
function M._reset()
  routes, by_filter = {}, {}
  root = new_scope(nil, nil, {})
  timers, by_name, inits, health = {}, {}, {}, nil
  on_error = {}
end

M._reset()

local function copy(list)
  local out = {}
  for i = 1, #list do
    out[i] = list[i]
  end
  return out
end

-- Returns an error reason when `list` is not a list of callables.
local function check_middleware_list(what, list)
  if type(list) ~= "table" or callable(list) then
    return what .. " must be a list of functions, got " .. describe(list)
  end
  local max = 0
  for k in pairs(list) do
    if not util.is_integer(k) or k < 1 then
      return what .. " must be a list of functions, got a table with key "
        .. util.key_text(k)
    end
    if k > max then
      max = k
    end
  end
  for i = 1, max do
    if not callable(list[i]) then
      return what .. " item " .. i .. " must be a function, got " .. describe(list[i])
    end
  end
end

-- Each check returns true when the value is valid, plus what is expected.
local ROUTE_OPTIONS = {
  qos = function(v)
    return v == 0 or v == 1 or v == 2, "0, 1 or 2"
  end,
  shared = function(v)
    return type(v) == "boolean", "a boolean"
  end,
  worker_count = function(v)
    return util.is_integer(v) and v >= 1, "a positive integer"
  end,
  group = function(v)
    -- MQTT forbids '/', '+' and '#' in a share name.
    return type(v) == "string" and v ~= "" and not v:find("[/+#]"),
      "a non-empty string without '/', '+' or '#'"
  end,
  timeout = function(v)
    return type(v) == "number" and v > 0 and v < math.huge, "a positive number of seconds"
  end,
  name = function(v)
    return type(v) == "string" and v ~= "", "a non-empty string"
  end,
  ordered = function(v)
    return type(v) == "boolean", "a boolean"
  end,
  -- Which retained messages the broker sends on subscribe (MQTT 5 retain
  -- handling 1, 0, 2); checked in add_route, whose error names the route.
  retained = true,
  retry = true, -- checked in add_route (check_retry), whose error names the route
  middleware = true, -- checked by check_middleware_list
}

-- The fields of the route option `retry`; each check returns true when the
-- value is valid, plus what is expected.
local RETRY_FIELDS = {
  attempts = function(v)
    return util.is_integer(v) and v >= 1 and v <= 1000, "an integer from 1 to 1000"
  end,
  delay = function(v)
    return type(v) == "number" and v >= 0 and v < math.huge, "a number of seconds >= 0"
  end,
  backoff = function(v)
    return type(v) == "number" and v >= 1 and v < math.huge, "a number >= 1"
  end,
  max_delay = function(v)
    return type(v) == "number" and v >= 0 and v < math.huge, "a number of seconds >= 0"
  end,
  jitter = function(v)
    return type(v) == "number" and v >= 0 and v <= 1, "a number from 0 to 1"
  end,
}
local RETRY_ORDER = { "attempts", "delay", "backoff", "max_delay", "jitter" }

-- check_retry(retry, pattern) -> a copy of the route option `retry`, or nil.
local function check_retry(retry, pattern)
  if retry == nil then
    return nil
  end
  local what = "option 'retry' of route '" .. pattern .. "'"
  if type(retry) ~= "table" then
    raise(what .. " must be a table, got " .. describe(retry))
  end
  local bad = util.unknown_key(retry, RETRY_FIELDS)
  if bad ~= nil then
    raise(what .. ": unknown field " .. util.key_text(bad)
      .. " (fields: attempts, delay, backoff, max_delay, jitter)")
  end
  local out = {}
  for _, key in ipairs(RETRY_ORDER) do
    local v = retry[key]
    if v ~= nil then
      local ok, expected = RETRY_FIELDS[key](v)
      if not ok then
        raise("option 'retry." .. key .. "' of route '" .. pattern .. "' must be " .. expected
          .. ", got " .. describe(v))
      end
      out[key] = v
    end
  end
  return out
end

local RETAINED = { new = true, always = true, none = true }

local function check_route_options(opts)
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    raise("options must be a table, got " .. describe(opts))
  end
  local bad = util.unknown_key(opts, ROUTE_OPTIONS)
  if bad ~= nil then
    raise("unknown option " .. util.key_text(bad))
  end
  for _, key in ipairs({ "qos", "shared", "worker_count", "group", "timeout", "name", "ordered" }) do
    local v = opts[key]
    if v ~= nil then
      local ok, expected = ROUTE_OPTIONS[key](v)
      if not ok then
        raise("option '" .. key .. "' must be " .. expected .. ", got " .. describe(v))
      end
    end
  end
  if opts.middleware ~= nil then
    local reason = check_middleware_list("option 'middleware'", opts.middleware)
    if reason then
      raise(reason)
    end
  end
  return opts
end

-- The scope chain's middleware, outermost group first; global excluded
-- because dispatch prepends it when it builds the chains.
local function scope_middleware(scope, own)
  local chain = {}
  local scopes = {}
  while scope and scope ~= root do
    scopes[#scopes + 1] = scope
    scope = scope.parent
  end
  for i = #scopes, 1, -1 do
    local mw = scopes[i].middleware
    for j = 1, #mw do
      chain[#chain + 1] = mw[j]
    end
  end
  for j = 1, #own do
    chain[#chain + 1] = own[j]
  end
  return chain
end

local function full_pattern(scope, pattern)
  if not scope.prefix then
    return pattern
  end
  if pattern == "" then
    return scope.prefix
  end
  if pattern:sub(1, 1) == "/" then
    raise("invalid pattern '" .. pattern .. "' in group '" .. scope.prefix
      .. "': must not start with '/'")
  end
  return scope.prefix .. "/" .. pattern
end

local function add_route(scope, pattern, handler, opts, api)
  if pattern == api then
    raise("call router.on with a dot, not a colon")
  end
  if type(pattern) ~= "string" then
    raise("pattern must be a string, got " .. describe(pattern))
  end
  local full = full_pattern(scope, pattern)
  if not callable(handler) then
    raise("handler for '" .. full .. "' must be a function, got " .. describe(handler))
  end
  opts = check_route_options(opts)
  if opts.retained ~= nil and not RETAINED[opts.retained] then
    raise("option 'retained' of route '" .. full .. "' must be 'new', 'always' or 'none', got "
      .. describe(opts.retained))
  end
  local retry = check_retry(opts.retry, full)
  local compiled, reason = core.compile(full)
  if not compiled then
    raise("invalid pattern '" .. full .. "': " .. tostring(reason))
  end
  local source = util.where()
  local previous = by_filter[compiled.filter]
  if previous then
    local what = full == compiled.filter and ("'" .. full .. "'")
      or ("'" .. full .. "' (filter '" .. compiled.filter .. "')")
    raise("duplicate route " .. what .. ": already registered at " .. previous.source)
  end
  local own = copy(opts.middleware or {})
  local route = {
    pattern = full,
    filter = compiled.filter,
    names = compiled.names,
    handler = handler,
    qos = opts.qos or 0,
    shared = opts.shared or false,
    worker_count = opts.worker_count or 1,
    group = opts.group,
    timeout = opts.timeout,
    name = opts.name or full,
    ordered = opts.ordered or false,
    retained = opts.retained or "new",
    retry = retry,
    source = source,
    middleware = scope_middleware(scope, own),
    _scope = scope,
    _own_middleware = own,
  }
  routes[#routes + 1] = route
  by_filter[compiled.filter] = route
end

local function add_middleware(scope, mw, api)
  if mw == api then
    raise("call router.use with a dot, not a colon")
  end
  if not callable(mw) then
    raise("middleware must be a function, got " .. describe(mw))
  end
  local list = scope.middleware
  list[#list + 1] = mw
end

local GROUP_OPTIONS = { prefix = true, middleware = true }

local make_api

local function add_group(scope, opts, body, api)
  if opts == api then
    raise("call router.group with a dot, not a colon")
  end
  if type(opts) ~= "table" then
    raise("group options must be a table, got " .. describe(opts))
  end
  local bad = util.unknown_key(opts, GROUP_OPTIONS)
  if bad ~= nil then
    raise("unknown group option " .. util.key_text(bad))
  end
  local prefix = opts.prefix
  if prefix ~= nil then
    if type(prefix) ~= "string" or prefix == "" then
      raise("group option 'prefix' must be a non-empty string, got " .. describe(prefix))
    end
    if prefix:sub(1, 1) == "/" or prefix:sub(-1) == "/" then
      raise("group option 'prefix' must not start or end with '/', got " .. describe(prefix))
    end
    if scope.prefix then
      prefix = scope.prefix .. "/" .. prefix
    end
  else
    prefix = scope.prefix
  end
  local mw = {}
  if opts.middleware ~= nil then
    local reason = check_middleware_list("group option 'middleware'", opts.middleware)
    if reason then
      raise(reason)
    end
    mw = copy(opts.middleware)
  end
  if not callable(body) then
    raise("group body must be a function, got " .. describe(body))
  end
  body(make_api(new_scope(scope, prefix, mw)))
end

-- The `r` handed to a group body: on/use/group bound to the group's scope.
function make_api(scope)
  local api = {}
  -- r.on(pattern, handler, opts): register a route under the group's prefix.
  function api.on(pattern, handler, opts)
    add_route(scope, pattern, handler, opts, api)
  end
  -- r.use(mw): add middleware to every route of this group.
  function api.use(mw)
    add_middleware(scope, mw, api)
  end
  -- r.group(opts, body): nested group; prefixes join with '/'.
  function api.group(opts, body)
    add_group(scope, opts, body, api)
  end
  return api
end

-- on(pattern, handler, opts): register a route; raises "file:line: reason".
function M.on(pattern, handler, opts)
  add_route(root, pattern, handler, opts, M)
end

-- use(mw): add global middleware, applied to every route (even earlier ones).
function M.use(mw)
  add_middleware(root, mw, M)
end

-- group({ prefix =, middleware = }, function(r) ... end): routes sharing a
-- prefix and middleware.
function M.group(opts, body)
  add_group(root, opts, body, M)
end

local function positive(v)
  return type(v) == "number" and v > 0 and v < math.huge
end

-- Checks opts against { key = function(v) -> ok, expected }; returns opts or {}.
local function check_options(fname, opts, checks, order)
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    raise(fname .. ": options must be a table, got " .. describe(opts))
  end
  local bad = util.unknown_key(opts, checks)
  if bad ~= nil then
    raise(fname .. ": unknown option " .. util.key_text(bad))
  end
  for _, key in ipairs(order) do
    local v = opts[key]
    if v ~= nil then
      local ok, expected = checks[key](v)
      if not ok then
        raise(fname .. ": option '" .. key .. "' must be " .. expected .. ", got " .. describe(v))
      end
    end
  end
  return opts
end

local EVERY_OPTIONS = {
  name = function(v)
    return type(v) == "string" and v ~= "", "a non-empty string"
  end,
  workers = function(v)
    return v == "one" or v == "all", "'one' or 'all'"
  end,
  timeout = function(v)
    return positive(v), "a positive number of seconds"
  end,
}

-- every(seconds, fn, { name =, workers = "one"|"all", timeout = }): run
-- fn(job) periodically in the worker(s); a run still going when the next
-- is due is skipped.
function M.every(seconds, fn, opts)
  if seconds == M then
    raise("call router.every with a dot, not a colon")
  end
  if not positive(seconds) then
    raise("router.every: interval must be a positive number of seconds, got "
      .. describe(seconds))
  end
  if not callable(fn) then
    raise("router.every: function expected, got " .. describe(fn))
  end
  opts = check_options("router.every", opts, EVERY_OPTIONS, { "name", "workers", "timeout" })
  local source = util.where()
  local name = opts.name or ("every " .. seconds .. "s at " .. tostring(source))
  local previous = by_name[name]
  if previous then
    raise("router.every: duplicate timer name '" .. name .. "': already registered at "
      .. previous.source)
  end
  local timer = {
    name = name,
    every = seconds,
    fn = fn,
    workers = opts.workers or "one",
    timeout = opts.timeout,
    source = source,
  }
  timers[#timers + 1] = timer
  by_name[name] = timer
end

-- Registers fn, given to router.<name>, in list with where it was registered.
local function add_hook(list, name, fn)
  if fn == M then
    raise("call router." .. name .. " with a dot, not a colon")
  end
  if not callable(fn) then
    raise("router." .. name .. ": function expected, got " .. describe(fn))
  end
  list[#list + 1] = { fn = fn, source = util.where() }
end

-- init(fn): run fn(worker) in each worker after the app loads and before it
-- subscribes; it may wait; an error fails that worker's start.
function M.init(fn)
  add_hook(inits, "init", fn)
end

local HEALTH_OPTIONS = {
  every = function(v)
    return positive(v), "a positive number of seconds"
  end,
  timeout = function(v)
    return positive(v), "a positive number of seconds"
  end,
  failures = function(v)
    return util.is_integer(v) and v >= 1, "a positive integer"
  end,
}

-- health(fn, { every = 10, timeout = 5, failures = 3 }): a user health
-- check; failing `failures` times in a row gets the worker replaced.
function M.health(fn, opts)
  if fn == M then
    raise("call router.health with a dot, not a colon")
  end
  if not callable(fn) then
    raise("router.health: function expected, got " .. describe(fn))
  end
  opts = check_options("router.health", opts, HEALTH_OPTIONS, { "every", "timeout", "failures" })
  if health then
    raise("router.health: a health check is already registered at " .. health.source)
  end
  health = {
    fn = fn,
    every = opts.every or 10,
    timeout = opts.timeout or 5,
    failures = opts.failures or 3,
    source = util.where(),
  }
end

-- on_error(fn): fn(ctx, err, info) runs for every failed attempt of every
-- route (a Lua error, a timeout, ctx:fail; not ctx:retry) with info =
-- { attempt, final, reason, traceback, route }; it may wait; its own errors
-- are logged. Several registrations all run, in order.
function M.on_error(fn)
  add_hook(on_error, "on_error", fn)
end

-- _jobs() -> { timers = { records }, inits = { records }, health = record|nil,
-- on_error = { records } }
function M._jobs()
  return { timers = copy(timers), inits = copy(inits), health = health, on_error = copy(on_error) }
end

-- _routes() -> the route records in registration order, with `middleware`
-- recomputed so group-level use() calls made after a route still count.
function M._routes()
  for _, route in ipairs(routes) do
    route.middleware = scope_middleware(route._scope, route._own_middleware)
  end
  return copy(routes)
end

-- _middleware() -> a copy of the global middleware list.
function M._middleware()
  return copy(root.middleware)
end

return M
