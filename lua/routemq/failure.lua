-- What a failed attempt goes through besides its retry policy: the error
-- handler of every attempt and the app's on_error hooks.
local context = require("routemq.context")
local util = require("routemq.util")

local traceback = debug.traceback
local RETRY, FAIL = context.RETRY, context.FAIL

local M = {}

-- The error handler of every attempt (xpcall(job, catch, ctx)): the message
-- as text, the traceback (from the raise, "stack traceback:..." as the C
-- side's luavm_pcall splits it) left for take_traceback, called right after
-- xpcall returns.
local last_tb
local function split_tb(full)
  local cut = full:find("\nstack traceback:", 1, true)
  return cut and full:sub(cut + 1) or ""
end
local function catch(e)
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
M.catch = catch

-- take_traceback() -> the traceback catch left (nil for ctx:retry).
function M.take_traceback()
  local tb = last_tb
  last_tb = nil
  return tb
end

-- hooks(app) -> app.on_error as a list of { fn, source }.
function M.hooks(app)
  local hooks = {}
  for i, h in ipairs(app.on_error or {}) do
    if type(h) == "table" and not util.callable(h) then
      hooks[i] = h
    else
      hooks[i] = { fn = h, source = "on_error hook " .. i }
    end
  end
  return hooks
end

-- info(p, view, ctx, outcome) -> the table a hook gets about the failure
-- (outcome: routemq.retry's decide; p: the route's policy, view its ctx.route).
function M.info(p, view, ctx, outcome)
  return {
    attempt = ctx.attempt,
    attempts = p.attempts,
    final = outcome[4] == nil,
    reason = outcome[3],
    traceback = outcome[2],
    delay = outcome[4],
    route = view.pattern,
  }
end

-- run_hooks(hooks, ctx, err, info, log): every hook in order, in the calling
-- coroutine (a hook may wait); their own errors go to log(level, msg, ctx),
-- never to a hook.
function M.run_hooks(hooks, ctx, err, info, log)
  ctx._hook = true
  for i = 1, #hooks do
    local h = hooks[i]
    local ok, e = xpcall(h.fn, catch, ctx, err, info)
    if not ok then
      local tb = last_tb
      last_tb = nil
      log("error", "on_error hook (" .. tostring(h.source) .. ") failed: " .. tostring(e)
        .. (tb and tb ~= "" and ("\n" .. tb) or ""), ctx)
    end
  end
end

return M
