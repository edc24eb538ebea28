-- Turns a loaded app into the per-message entry points the runtime calls:
-- d.match(topic) picks the route, d.call(...) runs its middleware and handler.
--
-- Everything that can be prepared once is prepared in dispatch.new: the
-- matcher, each route's public view and its middleware chain (the `next`
-- functions read the current ctx from an upvalue), and one log table whose
-- functions tag lines with the ctx being dispatched. d.call then costs one
-- ctx table and the calls themselves. d.call is not re-entrant for a given
-- route (nothing in a handler calls it), and it does not catch errors: the
-- caller runs it under pcall/xpcall with a traceback handler.
local core = require("routemq.core")
local context = require("routemq.context")
local util = require("routemq.util")

local M = {}

-- Ranks of the log levels; lines below io.level are dropped before their
-- text is built.
local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

local function noop() end

-- chain: middleware list, global first. Returns a function(ctx) running the
-- chain, or the handler itself when there is no middleware.
local function compile_chain(chain, handler)
  local n = #chain
  if n == 0 then
    return handler
  end
  local current
  local steps = {}
  steps[n + 1] = function()
    return handler(current)
  end
  for i = n, 1, -1 do
    local mw, next_step = chain[i], steps[i + 1]
    steps[i] = function()
      return mw(current, next_step)
    end
  end
  local first = steps[1]
  return function(ctx)
    current = ctx
    return first()
  end
end

-- new(app, io, worker_slot) -> d, with
--   io = { publish = function(topic, payload, qos, retain, props, token) end,
--          log = function(level, msg, ctx_or_nil) end,
--          level = "debug"|"info"|"warn"|"error" (optional, default "debug") }
function M.new(app, io, worker_slot)
  assert(type(app) == "table" and type(app.routes) == "table", "dispatch.new: app expected")
  assert(type(io) == "table" and util.callable(io.publish) and util.callable(io.log),
    "dispatch.new: io must have publish and log functions")
  local min_rank = LEVELS[io.level or "debug"]
  assert(min_rank, "dispatch.new: io.level must be debug, info, warn or error")

  local current -- the ctx of the message being (or last) dispatched
  local io_log = io.log
  local log = {}
  for level, rank in pairs(LEVELS) do
    if rank < min_rank then
      log[level] = noop
    else
      log[level] = function(...)
        io_log(level, util.concat_args(log, ...), current)
      end
    end
  end

  local global = app.middleware or {}
  local matcher = core.matcher()
  local runners, views = {}, {}
  for i, route in ipairs(app.routes) do
    local ok, err = matcher:add(route.pattern, i)
    if not ok then
      error("dispatch.new: route '" .. route.pattern .. "' (" .. tostring(route.source)
        .. "): " .. tostring(err), 2)
    end
    local chain = {}
    for j = 1, #global do
      chain[#chain + 1] = global[j]
    end
    local own = route.middleware or {}
    for j = 1, #own do
      chain[#chain + 1] = own[j]
    end
    runners[i] = compile_chain(chain, route.handler)
    views[i] = context.route_view(route)
  end

  local new_ctx = context.new
  local d = { routes = app.routes, log = log }

  -- d.match(topic) -> route_index, params | nil
  function d.match(topic)
    return matcher:match(topic)
  end

  -- d.call(route_index, topic, payload, qos, retain, dup, props, redelivered,
  --        params, token) -> the handler's results; errors propagate to the
  -- caller. token (the runtime's id of the message) is passed to io.publish.
  function d.call(index, topic, payload, qos, retain, dup, props, redelivered, params, token)
    local run = runners[index]
    if not run then
      error("dispatch: no route with index " .. tostring(index), 2)
    end
    local ctx = new_ctx(views[index], topic, params, payload, qos, retain, dup, props,
      redelivered, worker_slot, log, io, token)
    current = ctx
    return run(ctx)
  end

  -- d.current() -> the ctx of the message being (or last) dispatched.
  function d.current()
    return current
  end

  return d
end

return M
