-- A dispatcher (routemq.dispatch) on its own runner whose io records what
-- happens, for the specs that drive it without a worker (wait_spec,
-- retry_spec).
local runner_mod = require("routemq.runner")
local dispatch = require("routemq.dispatch")

local M = {}

local function pack(...)
  return { n = select("#", ...), ... }
end

-- route(pattern, handler[, opts]) -> a loaded route; opts: timeout (default
-- 5 s), ordered, middleware, retry.
function M.route(pattern, handler, opts)
  opts = opts or {}
  return { pattern = pattern, filter = pattern:gsub("{[^}]+}", "+"), qos = 1, name = pattern,
    handler = handler, timeout = opts.timeout or 5, ordered = opts.ordered,
    middleware = opts.middleware, retry = opts.retry }
end

-- setup(routes[, opts]) -> rec; opts: middleware, on_error, retry (io.retry).
-- rec.done: one { token, ok, err, tb, reason, delay, path } per finished
-- attempt, path "fast" (the call returned it), "slow" (io.done) or "dead"
-- (the coroutine died); rec.logs: { level, msg, topic }; rec.published:
-- { token, topic, payload }. rec.call(...) runs a message with d.call's 12
-- arguments as the worker does (see below); rec.wait(n[, limit]) steps the
-- controller until n attempts have finished (true) or `limit` seconds (5)
-- have passed.
function M.setup(routes, opts)
  opts = opts or {}
  local rec = { done = {}, logs = {}, published = {} }
  local r = runner_mod.new()
  local function record(token, ok, err, tb, reason, delay, path)
    rec.done[#rec.done + 1] = { token = token, ok = ok, err = err, tb = tb, reason = reason,
      delay = delay, path = path }
  end
  local d = dispatch.new({ routes = routes, middleware = opts.middleware or {},
    on_error = opts.on_error }, {
    publish = function(topic, payload, _, _, _, token)
      rec.published[#rec.published + 1] = { token = token, topic = topic, payload = payload }
      return true
    end,
    log = function(level, msg, ctx)
      rec.logs[#rec.logs + 1] = { level = level, msg = msg, topic = ctx and ctx.topic }
    end,
    done = function(token, ok, err, tb, reason, delay)
      record(token, ok, err, tb, reason, delay, "slow")
    end,
    retry = opts.retry,
  }, 0, r)

  -- rec.call(...): as runtime/worker_coro.c's run_in_thread does: a
  -- coroutine of d.new_thread (reused once it is idle) resumed with the
  -- message, d.adopt when it asks to poll.
  local idle = {}
  function rec.call(...)
    local token = select(10, ...)
    local co = table.remove(idle) or d.new_thread()
    local res = pack(coroutine.resume(co, ...))
    if not res[1] then
      record(token, false, res[2], nil, nil, nil, "dead")
    elseif res[2] == true then
      idle[#idle + 1] = co
      record(token, true, nil, nil, nil, nil, "fast")
    elseif res[2] == false then
      idle[#idle + 1] = co
    elseif res[2] == "fail" then
      idle[#idle + 1] = co
      record(token, false, res[3], res[4], res[5], res[6], "fast")
    else
      assert(d.adopt(co, unpack(res, 2, res.n)))
    end
  end

  -- rec.call_direct(...): through d.call, which returns the outcome of an
  -- attempt that did not wait (the worker's way when it has no controller).
  function rec.call_direct(...)
    local token = select(10, ...)
    local fin, ok, err, tb, reason, delay = d.call(...)
    if fin then
      record(token, ok, err, tb, reason, delay, "fast")
    end
  end

  function rec.wait(n, limit)
    return r:run_until(function()
      return #rec.done >= n
    end, limit or 5)
  end
  rec.d, rec.r = d, r
  return rec
end

return M
