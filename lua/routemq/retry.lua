-- A route's retry policy (docs/delivery.md, "Retries"): its settings, the delay before the
-- next attempt, and what follows a failed attempt.
local context = require("routemq.context")

local random = math.random
local RETRY, FAIL = context.RETRY, context.FAIL

local M = {}

-- Retry settings when io.retry (ROUTEMQ_RETRY_*) leaves one out. jitter has
-- no variable: ±10 % spreads the retries of messages that failed together
-- (an outage) without making one message's delays unpredictable.
M.DEFAULTS = { attempts = 1, delay = 1, backoff = 2, max_delay = 300, jitter = 0.1 }
local FIELDS = { "attempts", "delay", "backoff", "max_delay", "jitter" }

-- policy(route_retry, defaults) -> the route's effective retry settings.
function M.policy(own, defaults)
  local p = {}
  for _, k in ipairs(FIELDS) do
    local v = own and own[k]
    if v == nil then
      v = defaults and defaults[k]
    end
    if v == nil then
      v = M.DEFAULTS[k]
    end
    p[k] = v
  end
  return p
end

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

-- decide(p, ctx, err, tb, reason) -> outcome { err, tb, reason, delay, hook }:
-- what follows a failed attempt of ctx under policy p (delay nil: none, the
-- message is a dead letter; hook: the on_error hooks run). Kept in
-- ctx._failing so that a timeout while the hooks run reports it rather than
-- a new failure.
function M.decide(p, ctx, err, tb, reason)
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

return M
