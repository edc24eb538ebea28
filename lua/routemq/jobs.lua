-- An app's timers (router.every), init functions (router.init) and health
-- check (router.health), run in the worker as coroutines on the runner's
-- controller, like handlers: they may wait with cqueues.
--
-- io (the dispatcher's io table, all optional but log):
--   io.log(level, msg, tag)              tag = { route = { pattern = name } }
--   io.timer(name, "ok"|"error"|"skipped") one timer run's outcome
--   io.health(ok, err, failures_in_a_row, limit) one health check's outcome
local cqueues = require("cqueues")
local context = require("routemq.context")
local util = require("routemq.util")

local M = {}

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }

local Job = { publish = context.publisher("job:publish") }
Job.__index = Job

local function make_log(io, name)
  local tag = { route = { pattern = name } }
  local min_rank = LEVELS[io.level or "debug"] or 1
  local log = {}
  for level, rank in pairs(LEVELS) do
    log[level] = function(...)
      if rank >= min_rank then
        io.log(level, util.concat_args(log, ...), tag)
      end
    end
  end
  return log
end

local Jobs = {}
Jobs.__index = Jobs

-- new(app, runner, io, slot) -> jobs
function M.new(app, runner, io, slot)
  local self = setmetatable({
    app = app,
    runner = runner,
    io = io,
    slot = slot,
    timers = {},   -- name -> { def =, job =, busy =, runs =, skipped = }
    stopped = false,
    failures = 0,  -- health checks failed in a row
  }, Jobs)
  for _, def in ipairs(app.timers or {}) do
    local job = setmetatable({ worker = slot, name = def.name, log = make_log(io, def.name),
      _io = io, _token = nil }, Job)
    self.timers[def.name] = { def = def, job = job, busy = false, runs = 0, skipped = 0,
      errors = 0 }
  end
  return self
end

local function log_failure(io, what, err, tb)
  io.log("error", what .. ": " .. tostring(err) .. (tb and tb ~= "" and ("\n" .. tb) or ""),
    nil)
end

-- jobs:tick(name[, on_done]) starts one run of the named timer now (unless
-- one is still going: then it is skipped); returns false when skipped.
function Jobs:tick(name, on_done)
  local t = self.timers[name]
  if not t then
    error("no timer named '" .. tostring(name) .. "'", 2)
  end
  local io = self.io
  if t.busy then
    t.skipped = t.skipped + 1
    if io.timer then
      io.timer(name, "skipped")
    end
    return false
  end
  t.busy = true
  t.runs = t.runs + 1
  self.runner:start(t.def.fn, t.job, t.def.timeout, function(_, ok, err, tb)
    t.busy = false
    if not ok then
      t.errors = t.errors + 1
      log_failure(io, "timer '" .. name .. "' (" .. tostring(t.def.source) .. ") failed", err, tb)
    end
    if io.timer then
      io.timer(name, ok and "ok" or "error")
    end
    if on_done then
      on_done(ok, err, tb)
    end
  end, nil, nil)
  return true
end

-- The timers this worker runs: workers = "all" everywhere, "one" in slot 0.
function Jobs:mine()
  local list = {}
  for _, def in ipairs(self.app.timers or {}) do
    if def.workers == "all" or self.slot == 0 then
      list[#list + 1] = def.name
    end
  end
  return list
end

-- jobs:start() starts this worker's timers and health check on the
-- controller (the first run comes one interval after start).
function Jobs:start()
  local cq = self.runner.cq
  for _, name in ipairs(self:mine()) do
    local every = self.timers[name].def.every
    cq:wrap(function()
      local due = cqueues.monotime() + every
      while not self.stopped do
        local left = due - cqueues.monotime()
        if left > 0 then
          cqueues.sleep(left)
        end
        if self.stopped then
          return
        end
        self:tick(name)
        due = due + every
        local now = cqueues.monotime()
        if due < now then -- fell behind (a long step): do not burst
          due = now + every
        end
      end
    end)
  end
  local h = self.app.health
  if h then
    cq:wrap(function()
      while not self.stopped do
        cqueues.sleep(h.every)
        if self.stopped then
          return
        end
        self:check_health()
      end
    end)
  end
end

-- jobs:check_health([on_done]) runs the health check once.
function Jobs:check_health(on_done)
  local h = self.app.health
  local io, slot = self.io, self.slot
  if self.health_busy then
    return
  end
  self.health_busy = true
  self.runner:start(function()
    if h.fn(slot) == false then
      error("health check returned false", 0)
    end
  end, nil, h.timeout, function(_, ok, err, tb)
    self.health_busy = false
    if ok then
      self.failures = 0
    else
      self.failures = self.failures + 1
      log_failure(io, ("health check (%s) failed, %d of %d in a row"):format(
        tostring(h.source), self.failures, h.failures), err, tb)
    end
    if io.health then
      io.health(ok, err, self.failures, h.failures)
    end
    if on_done then
      on_done(ok, err)
    end
  end, nil, nil)
end

-- jobs:stop(): no further timer runs or health checks.
function Jobs:stop()
  self.stopped = true
end

-- jobs:run_init(seconds) -> true | nil, err, traceback: runs every init
-- function in order, in one coroutine, waiting up to `seconds` for them.
function Jobs:run_init(seconds)
  local inits = self.app.inits or {}
  if #inits == 0 then
    return true
  end
  local outcome, current
  local slot = self.slot
  self.runner:start(function()
    for _, init in ipairs(inits) do
      current = init
      init.fn(slot)
    end
  end, nil, seconds, function(_, ok, err, tb)
    outcome = { ok, err, tb }
  end, nil, nil)
  self.runner:run_until(function()
    return outcome ~= nil
  end, seconds + 1)
  if not outcome then
    return nil, "init did not finish within " .. seconds .. " s"
  end
  if not outcome[1] then
    local err = tostring(outcome[2])
    if not err:match("^[^\n]-:%d+:") and current then
      err = tostring(current.source) .. ": router.init: " .. err
    end
    return nil, err, outcome[3]
  end
  return true
end

return M
