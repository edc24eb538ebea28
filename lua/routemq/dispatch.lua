-- Turns a loaded app into the per-message entry points the runtime calls:
-- d.match(topic) picks the route, d.call(...) starts its middleware and
-- handler in a coroutine (routemq.runner) and reports the end through
-- io.done.
--
-- Many messages of one route may be in progress at once (WORKER_CONCURRENCY),
-- so nothing per message lives in an upvalue: each has its own ctx, the
-- middleware chain passes it along, and the shared log functions find the
-- ctx of the coroutine that calls them. Ordered routes: routemq.ordered.
--
-- Failures (docs/guide.md, "When a handler fails"): a handler's error, its timeout, ctx:fail and
-- ctx:retry end an attempt. Dispatch catches them itself (routemq.failure),
-- decides with the route's retry policy (routemq.retry) whether another
-- attempt follows (and after how long), runs the app's on_error hooks, and
-- reports (err, traceback, reason, delay) to the runtime: delay = nil means
-- final (the runtime stores a dead letter). The runtime schedules the next
-- attempt and calls again with the same token and attempt + 1.
--
-- One dispatcher's state is one table `s` (see new); the functions below
-- take it, and the closures the runner and the worker need are made once
-- per dispatcher, never per message.
local core = require("routemq.core")
local context = require("routemq.context")
local failure = require("routemq.failure")
local ordered = require("routemq.ordered")
local retry = require("routemq.retry")
local util = require("routemq.util")

local running = coroutine.running
local new_ctx = context.new
local catch, take_traceback = failure.catch, failure.take_traceback
local RETRY, FAIL = context.RETRY, context.FAIL

local M = {}

-- Ranks of the log levels; lines below io.level are dropped before their
-- text is built.
local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

local function noop() end

-- new_log(io, ctx_of) -> the ctx.log table shared by every message: each
-- line goes to io.log with the ctx of the coroutine that writes it. ngx.log
-- lines (routemq.ngx) go there too.
local function new_log(io, ctx_of)
  local min_rank = LEVELS[io.level or "debug"]
  assert(min_rank, "dispatch.new: io.level must be debug, info, warn or error")
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
  local ngx_mod = package.loaded["routemq.ngx"]
  if type(ngx_mod) == "table" then
    ngx_mod.sink = function(level, msg)
      log[level](msg)
    end
  end
  return log
end

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

-- compile_routes(app, io) -> s with, per route index, jobs (its middleware
-- chain and handler), views (ctx.route), timeouts, policies (routemq.retry)
-- and topics (routemq.ordered).
local function compile_routes(app, io)
  local global = app.middleware or {}
  local jobs, views, timeouts, policies = {}, {}, {}, {}
  for i, route in ipairs(app.routes) do
    local chain = {}
    for j = 1, #global do
      chain[#chain + 1] = global[j]
    end
    local own = route.middleware or {}
    for j = 1, #own do
      chain[#chain + 1] = own[j]
    end
    jobs[i] = compile_chain(chain, route.handler)
    views[i] = context.route_view(route)
    timeouts[i] = route.timeout or 30
    policies[i] = retry.policy(route.retry, io.retry)
  end
  return { jobs = jobs, views = views, timeouts = timeouts, policies = policies,
    topics = ordered.topics(app.routes) }
end

-- open(s, index, topic, payload, qos, retain, dup, props, redelivered,
-- params, token, attempt, replayed) -> the ctx of a message (d.call's
-- arguments), the one place a dispatcher builds one. An unknown route index
-- is an error of open's caller's caller (the runtime's).
local function open(s, index, topic, payload, qos, retain, dup, props, redelivered, params, token,
                    attempt, replayed)
  local view = s.views[index]
  if not view then
    error("dispatch: no route with index " .. tostring(index), 3)
  end
  local ctx = new_ctx(view, topic, params, payload, qos, retain, dup, props, redelivered,
    s.worker, s.log, s.io, token, index, attempt, replayed)
  s.last = ctx
  return ctx
end

-- hold(s, held, index, ctx): a message of an ordered route is in progress
-- from now on, started or waiting behind its topic.
local function hold(s, held, index, ctx)
  s.in_progress = s.in_progress + 1
  ordered.enter(held, index, ctx, s.start)
end

-- failed_here(s, index, ctx, ok, e, tb) -> outcome of an attempt whose
-- handler raised (or ctx:retry / ctx:fail), its hooks run in this coroutine.
-- A real error raised after a ctx:retry / ctx:fail that middleware
-- swallowed is what ended the attempt: it wins.
local function failed_here(s, index, ctx, ok, e, tb)
  if not ok and e ~= RETRY and e ~= FAIL then
    ctx._signal = nil
  end
  local p = s.policies[index]
  local outcome = retry.decide(p, ctx, e, tb, "error")
  if outcome[5] and #s.hooks > 0 then
    failure.run_hooks(s.hooks, ctx, outcome[1], failure.info(p, s.views[index], ctx, outcome),
      s.io_log)
  end
  return outcome
end

-- report(s, ctx, ok, err, tb, reason, delay): the end of an attempt started
-- through the runner, to io.done (or ctx._outcome for d.call to read). An
-- ordered route's topic stays held while a retry follows (delay ~= nil).
local function report(s, ctx, ok, err, tb, reason, delay)
  s.in_progress = s.in_progress - 1
  local io_done = s.io_done
  if io_done then
    io_done(ctx._token, ok, err, tb, reason, delay)
  else
    ctx._outcome = { ok, err, tb, reason, delay }
  end
  local index = ctx._route_index
  local held = s.topics[index]
  if held and (ok or delay == nil) then
    ordered.leave(held, index, ctx.topic, s.start)
  end
end

-- hooks_apart(s, index, ctx, outcome): after a timeout (or an error the
-- handler's coroutine did not survive) the hooks run in a job of their own,
-- with the route's timeout; then the attempt is reported.
local function hooks_apart(s, index, ctx, outcome)
  local function hooks_done(_, ok, err)
    if not ok then
      s.io_log("error", "on_error hooks did not finish: " .. tostring(err), ctx)
    end
    report(s, ctx, false, outcome[1], outcome[2], outcome[3], outcome[4])
  end
  local info = failure.info(s.policies[index], s.views[index], ctx, outcome)
  s.runner:start(function()
    failure.run_hooks(s.hooks, ctx, outcome[1], info, s.io_log)
  end, ctx, s.timeouts[index], hooks_done, ctx, ctx)
end

-- guard(s) -> per route index, a job for the runner: the route's chain with
-- its failures caught; the outcome of a failed attempt is left in
-- ctx._failing.
local function guard(s)
  local guarded = {}
  for i, job in ipairs(s.jobs) do
    guarded[i] = function(ctx)
      local ok, e = xpcall(job, catch, ctx)
      if not ok or ctx._signal ~= nil then
        failed_here(s, i, ctx, ok, e, take_traceback())
      end
    end
  end
  return guarded
end

-- attempts(s) -> start, finished. start(index, ctx) runs an attempt through
-- the runner; finished(ctx, ok, err, tb, reason, delay) is the runner's
-- callback at the end of each (ctx is the runner's token): ok; or the
-- outcome of a failed attempt (reason given: an adopted thread's "fail", or
-- ctx._failing: a guarded job's); or a failure the job did not catch (its
-- timeout: reason "timeout").
local function attempts(s)
  local guarded, timeouts = s.guarded, s.timeouts
  local finished
  local function start(index, ctx)
    return s.runner:start(guarded[index], ctx, timeouts[index], finished, ctx, ctx)
  end
  function finished(ctx, ok, err, tb, reason, delay)
    local failing = ctx._failing
    if failing then
      if not ok and reason == "timeout" then
        s.io_log("error", "on_error hooks did not finish: " .. tostring(err), ctx)
      end
      return report(s, ctx, false, failing[1], failing[2], failing[3], failing[4])
    end
    if ok or reason ~= nil and reason ~= "timeout" then
      return report(s, ctx, ok, err, tb, reason, delay)
    end
    local index = ctx._route_index
    local outcome = retry.decide(s.policies[index], ctx, err, tb, reason or "error")
    if #s.hooks == 0 or not s.runner then
      return report(s, ctx, false, outcome[1], outcome[2], outcome[3], outcome[4])
    end
    hooks_apart(s, index, ctx, outcome)
  end
  return start, finished
end

-- matcher(routes) -> d.match(topic) -> route_index, params | nil. The
-- matcher is built on the first call: workers match in C, only the testing
-- harness here.
local function matcher(routes)
  local m
  return function(topic)
    if not m then
      local built = core.matcher()
      for i, route in ipairs(routes) do
        local ok, err = built:add(route.pattern, i)
        if not ok then
          error("dispatch: route '" .. route.pattern .. "' (" .. tostring(route.source) .. "): "
            .. tostring(err), 2)
        end
      end
      m = built
    end
    return m:match(topic)
  end
end

-- wait_outcome(s, index, ctx): without io.done, d.call steps the controller
-- until the attempt ends and raises its error.
local function wait_outcome(s, index, ctx)
  s.runner:run_until(function()
    return ctx._outcome ~= nil
  end, 2 * s.timeouts[index] + 1)
  local outcome = ctx._outcome
  if outcome and not outcome[1] then
    error(outcome[2] .. (outcome[3] and outcome[3] ~= "" and ("\n" .. outcome[3]) or ""), 0)
  end
  return true, true
end

-- caller(s) -> d.call(route_index, topic, payload, qos, retain, dup, props,
-- redelivered, params, token, attempt, replayed) -> true, ok, err,
-- traceback, reason, delay when the attempt has ended already (the common
-- case: the handler did not wait), else false. attempt: 1 (the default) on
-- the first run; replayed: a message handed back from the dead-letter
-- store. A failed attempt gives ok = false, err, traceback, reason ("error",
-- "timeout", "failed": ctx:fail, "retry": ctx:retry) and delay: seconds
-- before the next attempt, nil when none follows (the message is a dead
-- letter). With io.done, an attempt that waits (or waits behind its topic
-- on an ordered route) reports its end through io.done(token, ok, err,
-- traceback, reason, delay); without io.done, d.call steps the controller
-- until the attempt ends and raises its error.
local function caller(s)
  local guarded, timeouts, topics, io_done = s.guarded, s.timeouts, s.topics, s.io_done
  local finished = s.finished
  return function(index, topic, payload, qos, retain, dup, props, redelivered, params, token,
                  attempt, replayed)
    local ctx = open(s, index, topic, payload, qos, retain, dup, props, redelivered, params, token,
      attempt, replayed)
    local held = topics[index]
    if held then
      hold(s, held, index, ctx)
    else
      local fin, ok, err, tb, reason = s.runner:run(guarded[index], ctx, timeouts[index], finished,
        ctx, ctx)
      if not fin then
        s.in_progress = s.in_progress + 1
      else
        local failing = ctx._failing
        if ok and not failing then
          if io_done then
            return true, true
          end
          ctx._outcome = { true }
        elseif failing then
          -- The guarded job caught the failure and ran the hooks.
          if io_done then
            return true, false, failing[1], failing[2], failing[3], failing[4]
          end
          ctx._outcome = { false, failing[1], failing[2], failing[3], failing[4] }
        else
          -- The runner's own failure (a yield outside cqueues): finished
          -- decides and runs the hooks apart; io.done reports (maybe before
          -- this returns false).
          s.in_progress = s.in_progress + 1
          finished(ctx, ok, err, tb, reason)
        end
      end
    end
    if io_done then
      return false
    end
    return wait_outcome(s, index, ctx)
  end
end

-- thread_body(s) -> the body of the C worker's own coroutines, resumed from
-- C with the arguments of d.call, one message per resume. A resume ends in
-- a yield of true (the handler returned), "fail", err, traceback, reason,
-- delay (the attempt failed: see d.call), false (the message waits behind
-- its topic on an ordered route: io.done reports it), a cqueues poll
-- request (the handler or an on_error hook waits: hand the coroutine to
-- d.adopt; io.done reports its end), or an error (a bug here: the
-- coroutine is dead).
local DONE = true -- as routemq.runner's
local yield = coroutine.yield
local function thread_body(s)
  local jobs, topics, ctx_of = s.jobs, s.topics, s.ctx_of
  return function(index, topic, payload, qos, retain, dup, props, redelivered, params, token,
                  attempt, replayed)
    local co = running()
    while true do
      local ctx = open(s, index, topic, payload, qos, retain, dup, props, redelivered, params,
        token, attempt, replayed)
      local held = topics[index]
      if not held then
        ctx_of[co] = ctx
        local ok, e = xpcall(jobs[index], catch, ctx)
        if ok and ctx._signal == nil then
          index, topic, payload, qos, retain, dup, props, redelivered, params, token, attempt,
            replayed = yield(DONE)
        else
          local o = failed_here(s, index, ctx, ok, e, take_traceback())
          index, topic, payload, qos, retain, dup, props, redelivered, params, token, attempt,
            replayed = yield("fail", o[1], o[2], o[3], o[4])
        end
      else
        hold(s, held, index, ctx)
        index, topic, payload, qos, retain, dup, props, redelivered, params, token, attempt,
          replayed = yield(false)
      end
    end
  end
end

-- control(d, s): the entries of d besides match and call.
local function control(d, s)
  local ctx_of = s.ctx_of
  local body = thread_body(s)
  local threads = setmetatable({}, { __mode = "k" })

  -- d.new_thread() -> a coroutine for the C worker (see thread_body).
  function d.new_thread()
    local co = coroutine.create(body)
    threads[co] = true
    if s.runner then
      s.runner:own(co)
    end
    return co
  end

  -- d.adopt(co, POLL, ...) -> true | nil, err: co's handler waits; the
  -- controller drives it from now on and io.done reports its end.
  function d.adopt(co, ...)
    local ctx = ctx_of[co]
    s.in_progress = s.in_progress + 1
    local ok, err = s.runner:adopt(co, s.finished, ctx, ctx, s.timeouts[ctx._route_index], ...)
    if not ok then
      s.in_progress = s.in_progress - 1
    end
    return ok, err
  end

  -- d.attach_runner(r): the runner, once cqueues is loaded (see new).
  function d.attach_runner(r)
    s.runner = r
    d.runner = r
    r.arg_of = ctx_of
    for co in pairs(threads) do
      r:own(co)
    end
  end

  -- d.release(index, topic): the runtime gives up the next attempt of the
  -- message holding `topic` on ordered route `index` (it will not call
  -- again): the messages waiting behind it go on.
  function d.release(index, topic)
    ordered.leave(s.topics[index], index, topic, s.start)
  end

  -- d.in_progress() -> messages started (or queued behind their topic) and
  -- not finished.
  function d.in_progress()
    return s.in_progress
  end

  -- d.current() -> the ctx of the message the calling coroutine runs, else
  -- the one last dispatched.
  function d.current()
    local co = running()
    return co and ctx_of[co] or s.last
  end
end

-- new(app, io, worker_slot[, runner]) -> d; runner: a routemq.runner, nil
-- for a new one, or false for none yet (the worker: cqueues is loaded only
-- when something needs it; d.attach_runner(r) then). The runner's on_resume gets the
-- ctx of the handler about to run again. With
--   io = { publish = function(topic, payload, qos, retain, props, token) end
--            -> true | nil, err,
--          log = function(level, msg, ctx_or_nil) end,
--          done = function(token, ok, err, traceback, reason, delay) end
--            (optional: without it d.call waits for the handler and raises
--            its error; reason and delay: see d.call),
--          retry = { attempts, delay, backoff, max_delay, jitter } (optional:
--            every route's defaults, from ROUTEMQ_RETRY_*; routemq.retry's
--            DEFAULTS for what it leaves out),
--          level = "debug"|"info"|"warn"|"error" (optional, default "debug") }
function M.new(app, io, worker_slot, runner)
  assert(type(app) == "table" and type(app.routes) == "table", "dispatch.new: app expected")
  assert(type(io) == "table" and util.callable(io.publish) and util.callable(io.log),
    "dispatch.new: io must have publish and log functions")
  -- The ctx of the message each coroutine is running, for the log functions.
  local ctx_of = setmetatable({}, { __mode = "k" })
  local log = new_log(io, ctx_of)
  if runner == nil then
    runner = require("routemq.runner").new()
  end
  if runner then
    runner.arg_of = ctx_of
  end

  local s = compile_routes(app, io)
  s.runner = runner
  s.ctx_of = ctx_of
  s.log = log
  s.io, s.io_log, s.io_done = io, io.log, io.done
  s.worker = worker_slot
  s.hooks = failure.hooks(app)
  s.in_progress = 0
  s.last = nil -- the ctx of the message last dispatched (d.current)
  s.guarded = guard(s)
  s.start, s.finished = attempts(s)

  local d = { routes = app.routes, log = log, runner = runner, match = matcher(app.routes) }
  d.call = caller(s)
  control(d, s)
  return d
end

return M
