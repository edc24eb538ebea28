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
--
-- Failures (SPEC §10): a handler's error, its timeout, ctx:fail and
-- ctx:retry end an attempt. Dispatch catches them itself, decides with the
-- route's retry policy whether another attempt follows (and after how long),
-- runs the app's on_error hooks, and reports (err, traceback, reason, delay)
-- to the runtime: delay = nil means final (the runtime stores a dead
-- letter). The runtime schedules the next attempt and calls again with the
-- same token and attempt + 1.
local core = require("routemq.core")
local context = require("routemq.context")
local util = require("routemq.util")

local running = coroutine.running
local traceback = debug.traceback
local random = math.random
local RETRY, FAIL = context.RETRY, context.FAIL

local M = {}

-- Retry settings when io.retry (ROUTEMQ_RETRY_*) leaves one out. jitter has
-- no variable: ±10 % spreads the retries of messages that failed together
-- (an outage) without making one message's delays unpredictable.
M.RETRY_DEFAULTS = { attempts = 1, delay = 1, backoff = 2, max_delay = 300, jitter = 0.1 }
local RETRY_FIELDS = { "attempts", "delay", "backoff", "max_delay", "jitter" }

-- policy(route_retry, defaults) -> the route's effective retry settings.
local function policy(own, defaults)
  local p = {}
  for _, k in ipairs(RETRY_FIELDS) do
    local v = own and own[k]
    if v == nil then
      v = defaults and defaults[k]
    end
    if v == nil then
      v = M.RETRY_DEFAULTS[k]
    end
    p[k] = v
  end
  return p
end
M.policy = policy

-- backoff(p, attempt) -> seconds before the attempt after `attempt`:
-- delay * backoff^(attempt-1), jittered by ±jitter, never above max_delay.
local function backoff(p, attempt)
  local base = p.delay * p.backoff ^ (attempt - 1)
  local max = p.max_delay
  if base > max then
    base = max
  end
  local j = p.jitter
  if j > 0 then
    base = base * (1 + j * (2 * random() - 1))
    if base > max then
      base = max
    end
  end
  if base < 0 then
    base = 0
  end
  return base
end
M.backoff = backoff

-- The error handler of every attempt: the message as text, the traceback
-- (from the raise, "stack traceback:..." as the C side's luavm_pcall
-- splits it) left in last_tb, read right after xpcall returns.
local last_tb
local function split_tb(full)
  local cut = full:find("\nstack traceback:", 1, true)
  return cut and full:sub(cut + 1) or ""
end
local function on_error(e)
  if e == RETRY then
    last_tb = nil
    return e
  end
  if e == FAIL then
    last_tb = split_tb(traceback("", 2))
    return e
  end
  local msg = tostring(e)
  last_tb = split_tb(traceback(msg, 2))
  return msg
end

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
--          done = function(token, ok, err, traceback, reason, delay) end
--            (optional: without it d.call waits for the handler and raises
--            its error; reason and delay: see d.call),
--          retry = { attempts, delay, backoff, max_delay, jitter } (optional:
--            every route's defaults, from ROUTEMQ_RETRY_*; M.RETRY_DEFAULTS
--            for what it leaves out),
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
  local jobs, views, timeouts, ordered, policies = {}, {}, {}, {}, {}
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
    policies[i] = policy(route.retry, io.retry)
  end
  local hooks = {}
  for i, h in ipairs(app.on_error or {}) do
    if type(h) == "table" and not util.callable(h) then
      hooks[i] = h
    else
      hooks[i] = { fn = h, source = "on_error hook " .. i }
    end
  end

  local new_ctx = context.new
  local d = { routes = app.routes, log = log, runner = runner }
  local io_done = io.done
  local in_progress = 0

  -- run_hooks(ctx, err, info): every on_error hook in order, in the calling
  -- coroutine (a hook may wait); their own errors are logged, never passed
  -- to a hook.
  local function run_hooks(ctx, err, info)
    ctx._hook = true
    for i = 1, #hooks do
      local h = hooks[i]
      local ok, e = xpcall(h.fn, on_error, ctx, err, info)
      if not ok then
        local tb = last_tb
        last_tb = nil
        io_log("error", "on_error hook (" .. tostring(h.source) .. ") failed: " .. tostring(e)
          .. (tb and tb ~= "" and ("\n" .. tb) or ""), ctx)
      end
    end
  end

  -- decide(index, ctx, err, tb, reason) -> outcome { err, tb, reason,
  -- delay, hook }: what follows a failed attempt; kept in ctx._failing so
  -- that a timeout while the hooks run reports it rather than a new failure.
  local function decide(index, ctx, err, tb, reason)
    local p = policies[index]
    local attempt = ctx.attempt
    local final = attempt >= p.attempts
    local delay
    local hook = true
    local signal = ctx._signal
    if signal == RETRY then
      local seconds = ctx._signal_arg
      if final then
        err = ("ctx:retry(%s) at the last attempt (%d of %d): no attempt left"):format(
          seconds == nil and "" or tostring(seconds), attempt, p.attempts)
        reason = "error"
      else
        err = "ctx:retry: another attempt was asked for"
        reason = "retry"
        delay = seconds or backoff(p, attempt)
        hook = false
      end
      tb = nil
    elseif signal == FAIL then
      err, reason = ctx._signal_arg, "failed"
    elseif not final then
      delay = backoff(p, attempt)
    end
    local outcome = { err, tb, reason, delay, hook }
    ctx._failing = outcome
    return outcome
  end

  local function hook_info(index, ctx, outcome)
    return {
      attempt = ctx.attempt,
      attempts = policies[index].attempts,
      final = outcome[4] == nil,
      reason = outcome[3],
      traceback = outcome[2],
      delay = outcome[4],
      route = views[index].pattern,
    }
  end

  -- failed_here(index, ctx, ok, e, tb) -> outcome of an attempt whose
  -- handler raised (or ctx:retry / ctx:fail), its hooks run in this coroutine.
  -- A real error raised after a ctx:retry / ctx:fail that middleware
  -- swallowed is what ended the attempt: it wins.
  local function failed_here(index, ctx, ok, e, tb)
    if not ok and e ~= RETRY and e ~= FAIL then
      ctx._signal = nil
    end
    local outcome = decide(index, ctx, e, tb, "error")
    if outcome[5] and #hooks > 0 then
      run_hooks(ctx, outcome[1], hook_info(index, ctx, outcome))
    end
    return outcome
  end

  -- A job for the runner: the route's chain with its failures caught; the
  -- outcome of a failed attempt is left in ctx._failing.
  local guarded = {}
  for i = 1, #jobs do
    local job = jobs[i]
    guarded[i] = function(ctx)
      local ok, e = xpcall(job, on_error, ctx)
      if not ok or ctx._signal ~= nil then
        local tb = last_tb
        last_tb = nil
        failed_here(i, ctx, ok, e, tb)
      end
    end
  end

  local finished -- forward declaration: starting and finishing call each other

  local function start(index, ctx)
    return runner:start(guarded[index], ctx, timeouts[index], finished, ctx, ctx)
  end

  -- A message of an ordered route: started at once when no other message of
  -- its topic is in progress, else queued behind them (finished starts it).
  -- A later attempt (attempt > 1) holds its topic already: it starts at once.
  local function start_ordered(waiting, index, ctx)
    in_progress = in_progress + 1
    local queue = waiting[ctx.topic]
    if ctx.attempt > 1 then
      if not queue then
        waiting[ctx.topic] = {}
      end
      start(index, ctx)
    elseif queue then
      queue[#queue + 1] = ctx
    else
      waiting[ctx.topic] = {}
      start(index, ctx)
    end
  end

  -- release(index, topic): the message holding `topic` on an ordered route
  -- has ended; the next one waiting behind it starts.
  local function release(index, topic)
    local waiting = ordered[index]
    local queue = waiting and waiting[topic]
    if not queue then
      return
    end
    local nxt = queue[1]
    if nxt then
      table.remove(queue, 1)
      start(index, nxt)
    else
      waiting[topic] = nil
    end
  end

  -- report(ctx, ok, err, tb, reason, delay): the end of an attempt started
  -- through the runner, to io.done (or ctx._outcome for d.call to read). An
  -- ordered route's topic stays held while a retry follows (delay ~= nil).
  local function report(ctx, ok, err, tb, reason, delay)
    in_progress = in_progress - 1
    if io_done then
      io_done(ctx._token, ok, err, tb, reason, delay)
    else
      ctx._outcome = { ok, err, tb, reason, delay }
    end
    if ordered[ctx._route_index] and (ok or delay == nil) then
      release(ctx._route_index, ctx.topic)
    end
  end

  -- After a timeout (or an error the handler's coroutine did not survive):
  -- the hooks run in a job of their own, with the route's timeout.
  local function hooks_apart(index, ctx, outcome)
    local function hooks_done(_, ok, err)
      if not ok then
        io_log("error", "on_error hooks did not finish: " .. tostring(err), ctx)
      end
      report(ctx, false, outcome[1], outcome[2], outcome[3], outcome[4])
    end
    local info = hook_info(index, ctx, outcome)
    runner:start(function()
      run_hooks(ctx, outcome[1], info)
    end, ctx, timeouts[index], hooks_done, ctx, ctx)
  end

  -- Called once per attempt by the runner (ctx is the runner's token):
  -- ok; or the outcome of a failed attempt (reason given: an adopted
  -- thread's "fail", or ctx._failing: a guarded job's); or a failure the
  -- job did not catch (its timeout: reason "timeout").
  function finished(ctx, ok, err, tb, reason, delay)
    local failing = ctx._failing
    if failing then
      if not ok and reason == "timeout" then
        io_log("error", "on_error hooks did not finish: " .. tostring(err), ctx)
      end
      return report(ctx, false, failing[1], failing[2], failing[3], failing[4])
    end
    if ok or reason ~= nil and reason ~= "timeout" then
      return report(ctx, ok, err, tb, reason, delay)
    end
    local index = ctx._route_index
    local outcome = decide(index, ctx, err, tb, reason or "error")
    if #hooks == 0 or not runner then
      return report(ctx, false, outcome[1], outcome[2], outcome[3], outcome[4])
    end
    hooks_apart(index, ctx, outcome)
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
  --        params, token, attempt, replayed) -> true, ok, err, traceback,
  -- reason, delay when the attempt has ended already (the common case: the
  -- handler did not wait), else false. attempt: 1 (the default) on the
  -- first run; replayed: a message handed back from the dead-letter store.
  -- A failed attempt gives ok = false, err, traceback, reason ("error",
  -- "timeout", "failed": ctx:fail, "retry": ctx:retry) and delay: seconds
  -- before the next attempt, nil when none follows (the message is a dead
  -- letter). With io.done, an attempt that waits (or waits behind its topic
  -- on an ordered route) reports its end through io.done(token, ok, err,
  -- traceback, reason, delay); without io.done, d.call steps the controller
  -- until the attempt ends and raises its error.
  function d.call(index, topic, payload, qos, retain, dup, props, redelivered, params, token,
                  attempt, replayed)
    local job = guarded[index]
    if not job then
      error("dispatch: no route with index " .. tostring(index), 2)
    end
    local ctx = new_ctx(views[index], topic, params, payload, qos, retain, dup, props,
      redelivered, worker_slot, log, io, token, index, attempt, replayed)
    last = ctx
    local waiting = ordered[index]
    if not waiting then
      local fin, ok, err, tb, reason = runner:run(job, ctx, timeouts[index], finished, ctx, ctx)
      if fin then
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
          in_progress = in_progress + 1
          finished(ctx, ok, err, tb, reason)
        end
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
    end, 2 * timeouts[index] + 1)
    local outcome = ctx._outcome
    if outcome and not outcome[1] then
      error(outcome[2] .. (outcome[3] and outcome[3] ~= "" and ("\n" .. outcome[3]) or ""), 0)
    end
    return true, true
  end

  -- The C worker's way in: its own coroutines, resumed from C with the
  -- arguments of d.call, one message per resume. A resume ends in a yield
  -- of true (the handler returned), "fail", err, traceback, reason, delay
  -- (the attempt failed: see d.call), false (the message waits behind its
  -- topic on an ordered route: io.done reports it), a cqueues poll request
  -- (the handler or an on_error hook waits: hand the coroutine to d.adopt;
  -- io.done reports its end), or an error (a bug here: the coroutine is dead).
  local DONE = true -- as routemq.runner's
  local yield = coroutine.yield
  local threads = setmetatable({}, { __mode = "k" })
  local function thread_body(index, topic, payload, qos, retain, dup, props, redelivered, params, token,
                             attempt, replayed)
    local co = running()
    while true do
      local job = jobs[index]
      if not job then
        error("dispatch: no route with index " .. tostring(index))
      end
      local ctx = new_ctx(views[index], topic, params, payload, qos, retain, dup, props,
        redelivered, worker_slot, log, io, token, index, attempt, replayed)
      last = ctx
      local waiting = ordered[index]
      if not waiting then
        ctx_of[co] = ctx
        local ok, e = xpcall(job, on_error, ctx)
        if ok and ctx._signal == nil then
          index, topic, payload, qos, retain, dup, props, redelivered, params, token, attempt,
            replayed = yield(DONE)
        else
          local tb = last_tb
          last_tb = nil
          local o = failed_here(index, ctx, ok, e, tb)
          index, topic, payload, qos, retain, dup, props, redelivered, params, token, attempt,
            replayed = yield("fail", o[1], o[2], o[3], o[4])
        end
      else
        start_ordered(waiting, index, ctx)
        index, topic, payload, qos, retain, dup, props, redelivered, params, token, attempt,
          replayed = yield(false)
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

  -- d.release(index, topic): the runtime gives up the next attempt of the
  -- message holding `topic` on ordered route `index` (it will not call
  -- again): the messages waiting behind it go on.
  function d.release(index, topic)
    release(index, topic)
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
