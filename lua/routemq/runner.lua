-- Runs handlers, timers and init functions as coroutines on one cqueues
-- controller, so code that waits with cqueues (cqueues.sleep, cqueues.socket,
-- lua-http, routemq.ngx) yields to the worker's other work.
--
-- Cost: most handlers never wait. A job starts in a pooled coroutine resumed
-- directly by r:start (one resume, no controller step, no allocation); only
-- when it first waits is it handed to the controller, through a small
-- forwarding coroutine that passes its poll requests up and the controller's
-- answers down. For cqueues to treat that first, directly resumed slice as
-- running on the controller, cqueues.running (and the copy cqueues.poll
-- keeps of it) answer with our controller while such a slice runs.
--
-- A job that is still waiting at its deadline is cancelled: its coroutine is
-- dropped (what it held is closed by the garbage collector) and its done
-- callback gets (false, "timeout after N s", nil, "timeout"). Libraries that
-- hold something mid-wait (routemq.pg's queries) register with M.on_cancel to
-- release it.
local cqueues = require("cqueues")
local condition = require("cqueues.condition")

local monotime = cqueues.monotime
local create, resume, yield = coroutine.create, coroutine.resume, coroutine.yield
local select, tostring, unpack = select, tostring, unpack
local traceback = debug.traceback

local M = {}

local POLL = cqueues._POLL
local DONE = true -- what a pooled coroutine yields when its job has finished
M.DONE = DONE
M.monotime = monotime

-- Jobs being resumed directly (outside a controller step), and their
-- controller: cqueues must believe it is running then.
local direct_depth, direct_cq = 0, nil
-- Coroutines the C worker resumes itself (routemq.dispatch's threads), by
-- their controller: looked up only when cqueues asks.
local thread_cq = setmetatable({}, { __mode = "k" })

local real_running = cqueues.running
local coroutine_running = coroutine.running
local function running(...)
  if direct_depth > 0 then
    return direct_cq, false
  end
  local cq, main = real_running(...)
  if cq == nil then
    local co = coroutine_running()
    local owner = co and thread_cq[co]
    if owner then
      return owner, false
    end
  end
  return cq, main
end

-- Whether cqueues.poll was taught about direct slices; without it every job
-- is started on the controller (slower, same behaviour).
local patched = false
do
  local poll = cqueues.poll
  for i = 1, 64 do
    local name, value = debug.getupvalue(poll, i)
    if name == nil then
      break
    end
    if name == "running" and value == real_running then
      debug.setupvalue(poll, i, running)
      cqueues.running = running
      patched = true
      break
    end
  end
end
M.direct = patched

-- Splits "msg\nstack traceback:..." as the C side's luavm_pcall does.
local last_tb
local function on_error(e)
  local msg = tostring(e)
  local full = traceback(msg, 2)
  local cut = full:find("\nstack traceback:", 1, true)
  last_tb = cut and full:sub(cut + 1) or ""
  return msg
end

-- The body of every pooled coroutine: run a job, report, wait for the next.
local function body(fn, arg)
  while true do
    local ok, err = xpcall(fn, on_error, arg)
    local tb = nil
    if ok then
      err = nil
    else
      tb, last_tb = last_tb, nil
    end
    fn, arg = yield(DONE, ok, err, tb)
  end
end

local Runner = {}
Runner.__index = Runner

-- new([controller]) -> runner; the controller defaults to a new one.
function M.new(cq)
  return setmetatable({
    cq = cq or cqueues.new(),
    pool = {},
    pooled = 0,
    active = 0, -- jobs started and not finished
    -- coroutine -> the arg of the job it runs (pooled ones keep their last),
    -- so code running in a job can find it (the dispatcher's log lines)
    arg_of = setmetatable({}, { __mode = "k" }),
    on_resume = nil, -- optional function(tag) called before each resume on the controller
  }, Runner)
end

local POOL_MAX = 256

local function finish(self, co, done, token, ok, err, tb)
  self.active = self.active - 1
  if self.pooled < POOL_MAX then
    local n = self.pooled + 1
    self.pool[n] = co
    self.pooled = n
  end
  done(token, ok, err, tb)
end

-- Cancel callbacks by job coroutine, then by key (weak: a finished job's
-- coroutine may be collected with what is left in it).
local on_cancel = setmetatable({}, { __mode = "k" })

-- on_cancel(co, key, fn): fn() runs on the controller if co's job is dropped
-- at its deadline; fn = nil removes it. One per (co, key).
function M.on_cancel(co, key, fn)
  local set = on_cancel[co]
  if set == nil then
    if fn == nil then
      return
    end
    set = {}
    on_cancel[co] = set
  end
  set[key] = fn
end

local function cancelled(co)
  local set = on_cancel[co]
  if set then
    on_cancel[co] = nil
    for _, fn in pairs(set) do
      pcall(fn)
    end
  end
end

local function timeout_text(seconds)
  return ("timeout after %g s"):format(seconds)
end

local function pack(...)
  return { n = select("#", ...), ... }
end

-- The controller counts a poll's timeouts from the step that takes the
-- request, which may come long after the job asked: a step that ends
-- hundreds of jobs delays the next one, and the jobs that those ends let
-- start (one after the other, while it ran) would all wake together, each
-- later than it asked. Shortens the request's timeouts (its numbers) by the
-- time since `at`, when the job asked; returns a map shortened -> asked
-- (the controller answers with the number that expired: the job must see
-- its own), or nil when nothing changed.
local function since_asked(req, at)
  local late = monotime() - at
  if late <= 0 then
    return nil
  end
  local asked
  for i = 1, req.n do
    local v = req[i]
    if type(v) == "number" and v == v then -- NaN: no timeout
      local t = v > late and v - late or 0
      asked = asked or {}
      asked[t] = v
      req[i] = t
    end
  end
  return asked
end

-- Drives one job on the controller: passes the coroutine's poll requests
-- up (plus the job's deadline) and the controller's answers down. Poll
-- requests may hold nils, hence the explicit counts. `at`: when the job
-- made its first request; its deadline is `seconds` later.
local function forward(self, co, done, token, tag, seconds, at, adopted, ...)
  local req = pack(...)
  local deadline = at + seconds
  local asked = since_asked(req, at)
  while true do
    local left = deadline - monotime()
    if left <= 0 then
      self.active = self.active - 1
      self.arg_of[co] = nil
      cancelled(co)
      return done(token, false, timeout_text(seconds), nil, "timeout")
    end
    local n = req.n
    local answer
    if n == 0 then
      -- A bare poll means "let the others run, then resume me": adding the
      -- deadline as a timeout would turn it into a wait until the deadline.
      answer = pack(yield(POLL))
    else
      req[n + 1] = left
      answer = pack(yield(POLL, unpack(req, 1, n + 1)))
    end
    if asked then
      for i = 1, answer.n do
        local v = asked[answer[i]]
        if v then
          answer[i] = v
        end
      end
      asked = nil
    end
    if monotime() >= deadline then
      self.active = self.active - 1
      self.arg_of[co] = nil
      cancelled(co)
      return done(token, false, timeout_text(seconds), nil, "timeout")
    end
    if self.on_resume then
      self.on_resume(tag)
    end
    local r = pack(resume(co, unpack(answer, 1, answer.n)))
    if r[1] and r[2] == DONE then
      if adopted then
        -- A thread of the C worker: it yields no outcome (its errors end it).
        self.active = self.active - 1
        self.arg_of[co] = nil
        return done(token, true, nil, nil)
      end
      return finish(self, co, done, token, r[3], r[4], r[5])
    end
    if adopted and r[1] and r[2] == "fail" then
      -- A thread of the C worker whose attempt failed (routemq.dispatch):
      -- done(token, false, err, traceback, reason, delay).
      self.active = self.active - 1
      self.arg_of[co] = nil
      return done(token, false, r[3], r[4], r[5], r[6])
    end
    if not r[1] or r[2] ~= POLL then
      self.active = self.active - 1
      self.arg_of[co] = nil
      if not r[1] then
        local full = traceback(co, tostring(r[2]))
        local cut = full:find("\nstack traceback:", 1, true)
        return done(token, false, tostring(r[2]), cut and full:sub(cut + 1) or nil)
      end
      return done(token, false, "a handler yielded outside cqueues (use cqueues to wait)", nil)
    end
    req = { n = r.n - 2, unpack(r, 3, r.n) }
  end
end

-- Whether a poll request names a cqueues condition.
local function waits_on_condition(...)
  for i = 1, select("#", ...) do
    if condition.type((select(i, ...))) then
      return true
    end
  end
  return false
end

-- After the first, direct slice of a job: (true, ok, err, traceback) when
-- it has ended, false when it waits on the controller (done reports it).
-- Its deadline counts from here: the first slice never waits, and the
-- master's watchdog bounds it.
local function after_first(self, co, done, token, tag, seconds, prev, rok, what, ...)
  direct_depth, direct_cq = direct_depth - 1, prev
  if what == DONE then
    local n = self.pooled
    if n < POOL_MAX then
      n = n + 1
      self.pool[n] = co
      self.pooled = n
    end
    return true, ...
  end
  if not rok or what ~= POLL then
    self.arg_of[co] = nil
    return true, false, not rok and tostring(what)
      or "a handler yielded outside cqueues (use cqueues to wait)", nil
  end
  local ok, err = self.cq:wrap(forward, self, co, done, token, tag, seconds, monotime(), false, ...)
  if not ok then
    self.arg_of[co] = nil
    return true, false, "cannot wait on the controller: " .. tostring(err), nil
  end
  self.active = self.active + 1
  if real_running() == nil and waits_on_condition(...) then
    -- The controller takes the wait at its next step, and a condition
    -- keeps no memory of a signal: one sent before then (by the next
    -- handler, say) would be lost. Step now so the wait is registered.
    self.cq:step(0)
  end
  return false
end

-- r:run(fn, arg, seconds, done, token, tag) runs fn(arg) in a coroutine.
-- Returns true, ok, err, traceback when it ended before run returned (the
-- common case: no wait; done is not called); else false, and done(token,
-- ok, err, traceback) is called once it returns, raises (err = message,
-- traceback = Lua traceback) or is still waiting `seconds` after it first
-- waited (err = "timeout after N s", then a 5th argument "timeout"). tag is
-- handed to r.on_resume.
function Runner:run(fn, arg, seconds, done, token, tag)
  local co
  local n = self.pooled
  if n > 0 then
    local pool = self.pool
    co = pool[n]
    pool[n] = nil
    self.pooled = n - 1
  else
    co = create(body)
  end
  self.arg_of[co] = arg
  local prev = direct_cq
  if not patched then
    local ok, err = self.cq:wrap(function()
      direct_depth = direct_depth + 1
      local fin, hok, herr, tb = after_first(self, co, done, token, tag, seconds, prev, resume(co, fn, arg))
      if fin then
        done(token, hok, herr, tb)
      end
    end)
    if not ok then
      return true, false, "cannot start on the controller: " .. tostring(err), nil
    end
    self:step()
    return false
  end
  direct_depth, direct_cq = direct_depth + 1, self.cq
  return after_first(self, co, done, token, tag, seconds, prev, resume(co, fn, arg))
end

local function report(done, token, fin, ok, err, tb)
  if fin then
    done(token, ok, err, tb)
  end
  return fin
end

-- r:start(fn, arg, seconds, done, token, tag): as r:run, but done is always
-- called (before start returns when the job did not wait); returns whether
-- the job has ended already.
function Runner:start(fn, arg, seconds, done, token, tag)
  return report(done, token, self:run(fn, arg, seconds, done, token, tag))
end

-- r:own(co): co is resumed by the C worker itself, outside controller
-- steps; cqueues code in it must see this runner's controller as running.
function Runner:own(co)
  thread_cq[co] = self.cq
end

-- r:adopt(co, done, token, tag, seconds, POLL, ...) hands a coroutine of
-- the C worker (r:own) that has just yielded a cqueues poll request to the
-- controller; done(token, ok, err, traceback[, reason, delay]) reports its
-- end: a yield of "fail", err, traceback, reason, delay (a failed attempt,
-- routemq.dispatch) gives done(token, false, err, traceback, reason, delay).
function Runner:adopt(co, done, token, tag, seconds, ...)
  local ok, err = self.cq:wrap(forward, self, co, done, token, tag, seconds, monotime(), true,
    select(2, ...))
  if not ok then
    return nil, "cannot wait on the controller: " .. tostring(err)
  end
  self.active = self.active + 1
  return true
end

-- r:step([timeout]) -> true | nil, err: one controller step.
function Runner:step(timeout)
  return self.cq:step(timeout or 0)
end

-- r:pollfd() -> the controller's descriptor, readable when a step is due.
function Runner:pollfd()
  return self.cq:pollfd()
end

-- r:timeout() -> seconds until the controller's next timer, or nil.
function Runner:timeout()
  return self.cq:timeout()
end

-- r:run_until(pred, limit) steps the controller until pred() is true or
-- `limit` seconds passed; returns pred().
function Runner:run_until(pred, limit)
  local stop = monotime() + (limit or 60)
  while not pred() do
    local now = monotime()
    if now >= stop then
      break
    end
    local t = self.cq:timeout()
    local wait = stop - now
    if t and t < wait then
      wait = t
    end
    local ok, err = self.cq:step(wait)
    if not ok then
      error("controller step failed: " .. tostring(err), 0)
    end
  end
  return pred()
end

return M
