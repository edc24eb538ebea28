-- Turns a loaded app into the per-message entry points the runtime calls:
-- d.match(topic) picks the route, d.call(...) starts its middleware and
-- handler in a coroutine (routemq.runner) and reports the end through
-- io.done.
--
-- Many messages of one route may be in progress at once (WORKER_CONCURRENCY),
-- so nothing per message lives in an upvalue: each has its own ctx, the
-- middleware chain passes it along, and the shared log functions find the
-- ctx of the coroutine that calls them. Routes with `ordered = true` handle
-- the messages of one topic one after the other, in arrival order.
local core = require("routemq.core")
local context = require("routemq.context")
local util = require("routemq.util")

local running = coroutine.running

local M = {}

-- Ranks of the log levels; lines below io.level are dropped before their
-- text is built.
local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

local function noop() end

-- chain: middleware list, global first. Returns a function(ctx) running the
-- chain, or the handler itself when there is no middleware. Each message
-- gets its own `next` closures, so chains of concurrent messages never mix.
local function compile_chain(chain, handler)
  local n = #chain
  if n == 0 then
    return handler
  end
  return function(ctx)
    local function step(i)
      if i > n then
        return handler(ctx)
      end
      return chain[i](ctx, function()
        return step(i + 1)
      end)
    end
    return step(1)
  end
end

-- new(app, io, worker_slot[, runner]) -> d; runner: a routemq.runner, nil
-- for a new one, or false for none yet (the worker: cqueues is loaded only
-- when something needs it; d.attach_runner(r) then). The runner's on_resume gets the
-- ctx of the handler about to run again. With
--   io = { publish = function(topic, payload, qos, retain, props, token) end
--            -> true | nil, err,
--          log = function(level, msg, ctx_or_nil) end,
--          done = function(token, ok, err, traceback) end (optional: without
--            it d.call waits for the handler and raises its error),
--          level = "debug"|"info"|"warn"|"error" (optional, default "debug") }
function M.new(app, io, worker_slot, runner)
  assert(type(app) == "table" and type(app.routes) == "table", "dispatch.new: app expected")
  assert(type(io) == "table" and util.callable(io.publish) and util.callable(io.log),
    "dispatch.new: io must have publish and log functions")
  local min_rank = LEVELS[io.level or "debug"]
  assert(min_rank, "dispatch.new: io.level must be debug, info, warn or error")
  if runner == nil then
    runner = require("routemq.runner").new()
  end

  -- The ctx of the message each coroutine is running, for the log functions.
  local ctx_of = setmetatable({}, { __mode = "k" })
  if runner then
    runner.arg_of = ctx_of
  end
  local last -- the ctx of the message last dispatched (d.current)
  local io_log = io.log
  local log = {}
  for level, rank in pairs(LEVELS) do
    if rank < min_rank then
      log[level] = noop
    else
      log[level] = function(...)
        local co = running()
        io_log(level, util.concat_args(log, ...), co and ctx_of[co])
      end
    end
  end

  -- ngx.log lines (routemq.ngx) go where the handler's own lines go.
  local ngx_mod = package.loaded["routemq.ngx"]
  if type(ngx_mod) == "table" then
    ngx_mod.sink = function(level, msg)
      log[level](msg)
    end
  end

  local global = app.middleware or {}
  local jobs, views, timeouts, ordered = {}, {}, {}, {}
  for i, route in ipairs(app.routes) do
    local chain = {}
    for j = 1, #global do
      chain[#chain + 1] = global[j]
    end
    local own = route.middleware or {}
    for j = 1, #own do
      chain[#chain + 1] = own[j]
    end
    local run = compile_chain(chain, route.handler)
    jobs[i] = run
    views[i] = context.route_view(route)
    timeouts[i] = route.timeout or 30
    -- topic -> list of waiting ctxs (empty while one runs and none waits)
    ordered[i] = route.ordered and {} or false
  end

  local new_ctx = context.new
  local d = { routes = app.routes, log = log, runner = runner }
  local io_done = io.done
  local in_progress = 0

  local finished -- forward declaration: starting and finishing call each other

  local function start(index, ctx)
    return runner:start(jobs[index], ctx, timeouts[index], finished, ctx, ctx)
  end

  -- A message of an ordered route: started at once when no other message of
  -- its topic is in progress, else queued behind them (finished starts it).
  local function start_ordered(waiting, index, ctx)
    in_progress = in_progress + 1
    local queue = waiting[ctx.topic]
    if queue then
      queue[#queue + 1] = ctx
    else
      waiting[ctx.topic] = {}
      start(index, ctx)
    end
  end

  -- Called once per message by the runner (ctx is the runner's token).
  function finished(ctx, ok, err, tb)
    in_progress = in_progress - 1
    local index = ctx._route_index
    local waiting = ordered[index]
    if waiting then
      local topic = ctx.topic
      local queue = waiting[topic]
      local nxt = queue and queue[1]
      if nxt then
        table.remove(queue, 1)
      else
        waiting[topic] = nil
      end
      if io_done then
        io_done(ctx._token, ok, err, tb)
      else
        ctx._outcome = { ok, err, tb }
      end
      if nxt then
        start(index, nxt)
      end
      return
    end
    if io_done then
      return io_done(ctx._token, ok, err, tb)
    end
    ctx._outcome = { ok, err, tb }
  end

  -- d.match(topic) -> route_index, params | nil. The matcher is built on
  -- the first call: workers match in C, only the testing harness here.
  local matcher
  function d.match(topic)
    if not matcher then
      local m = core.matcher()
      for i, route in ipairs(app.routes) do
        local ok, err = m:add(route.pattern, i)
        if not ok then
          error("dispatch: route '" .. route.pattern .. "' (" .. tostring(route.source) .. "): "
            .. tostring(err), 2)
        end
      end
      matcher = m
    end
    return matcher:match(topic)
  end

  -- d.call(route_index, topic, payload, qos, retain, dup, props, redelivered,
  --        params, token) -> true, ok, err, traceback when the handler has
  -- ended already (the common case: it did not wait), else false. With
  -- io.done, a handler that waits (or waits behind its topic on an ordered
  -- route) reports its end through io.done(token, ok, err, traceback);
  -- without io.done, d.call steps the controller until the handler ends and
  -- raises its error.
  function d.call(index, topic, payload, qos, retain, dup, props, redelivered, params, token)
    local job = jobs[index]
    if not job then
      error("dispatch: no route with index " .. tostring(index), 2)
    end
    local ctx = new_ctx(views[index], topic, params, payload, qos, retain, dup, props,
      redelivered, worker_slot, log, io, token, index)
    last = ctx
    local waiting = ordered[index]
    if not waiting then
      local fin, ok, err, tb = runner:run(job, ctx, timeouts[index], finished, ctx, ctx)
      if fin then
        if io_done then
          return true, ok, err, tb
        end
        ctx._outcome = { ok, err, tb }
      else
        in_progress = in_progress + 1
      end
    else
      start_ordered(waiting, index, ctx)
    end
    if io_done then
      return false
    end
    runner:run_until(function()
      return ctx._outcome ~= nil
    end, timeouts[index] + 1)
    local outcome = ctx._outcome
    if outcome and not outcome[1] then
      error(outcome[2] .. (outcome[3] and outcome[3] ~= "" and ("\n" .. outcome[3]) or ""), 0)
    end
    return true, true
  end

  -- The C worker's way in: its own coroutines, resumed from C with the
  -- arguments of d.call, one message per resume. A resume ends in a yield
  -- of true (the handler returned), false (the message waits behind its
  -- topic on an ordered route: io.done reports it), a cqueues poll request
  -- (the handler waits: hand the coroutine to d.adopt), or an error (the
  -- handler's; the coroutine is dead).
  local DONE = true -- as routemq.runner's
  local yield = coroutine.yield
  local threads = setmetatable({}, { __mode = "k" })
  local function thread_body(index, topic, payload, qos, retain, dup, props, redelivered, params, token)
    local co = running()
    while true do
      local job = jobs[index]
      if not job then
        error("dispatch: no route with index " .. tostring(index))
      end
      local ctx = new_ctx(views[index], topic, params, payload, qos, retain, dup, props,
        redelivered, worker_slot, log, io, token, index)
      last = ctx
      local waiting = ordered[index]
      if not waiting then
        ctx_of[co] = ctx
        job(ctx)
        index, topic, payload, qos, retain, dup, props, redelivered, params, token = yield(DONE)
      else
        start_ordered(waiting, index, ctx)
        index, topic, payload, qos, retain, dup, props, redelivered, params, token = yield(false)
      end
    end
  end

  -- d.new_thread() -> a coroutine for the C worker (see thread_body).
  function d.new_thread()
    local co = coroutine.create(thread_body)
    threads[co] = true
    if runner then
      runner:own(co)
    end
    return co
  end

  -- d.adopt(co, POLL, ...) -> true | nil, err: co's handler waits; the
  -- controller drives it from now on and io.done reports its end.
  function d.adopt(co, ...)
    local ctx = ctx_of[co]
    in_progress = in_progress + 1
    local ok, err = runner:adopt(co, finished, ctx, ctx, timeouts[ctx._route_index], ...)
    if not ok then
      in_progress = in_progress - 1
    end
    return ok, err
  end

  -- d.attach_runner(r): the runner, once cqueues is loaded (see new).
  function d.attach_runner(r)
    runner = r
    d.runner = r
    r.arg_of = ctx_of
    for co in pairs(threads) do
      r:own(co)
    end
  end

  -- d.in_progress() -> messages started (or queued behind their topic) and
  -- not finished.
  function d.in_progress()
    return in_progress
  end

  -- d.current() -> the ctx of the message the calling coroutine runs, else
  -- the one last dispatched.
  function d.current()
    local co = running()
    return co and ctx_of[co] or last
  end

  return d
end

return M
