-- What the C worker calls in Lua, in one table: the dispatcher's entries,
-- the cqueues controller it must step, and the app's init functions, timers
-- and health check (routemq.jobs), all on one runner.
--
-- cqueues (and the OpenSSL it links, ~4 MB of resident pages) is loaded only
-- when something needs it: at start for an app with timers, init or health
-- functions or ordered routes, or one that loaded cqueues itself; else on
-- the first require("cqueues") of a handler. Until then pollfd() is nil
-- and the controller does not exist.
local dispatch = require("routemq.dispatch")

local M = {}

-- What one step makes ready (a connection given back wakes the next job in
-- the pool's line; a signalled condition) runs only at the next step. The
-- worker's step() takes those at once, up to this many steps, rather than
-- after another turn of the worker's loop (its system calls included).
local STEPS_PER_CALL = 8

local function has_ordered(app)
  for _, route in ipairs(app.routes) do
    if route.ordered then
      return true
    end
  end
  return false
end

-- new(app, io, slot) -> {
--   new_thread() -> coroutine, adopt(co, ...)   handlers (dispatch),
--   call(...)                                   d.call, when no controller is needed up front,
--   step() -> true | nil, err                   controller steps until nothing is ready
--                                               (at most STEPS_PER_CALL), never waits,
--   pollfd() -> descriptor | nil                readable when a step is due,
--   timeout() -> seconds | nil                  until the controller's next timer,
--   init(seconds) -> true | nil, err, traceback,
--   start_jobs(), stop_jobs() }
-- io: see routemq.dispatch and routemq.jobs; io.resume(route_index, token)
-- is called before a waiting handler's code runs again (route 0, token -1
-- for timers, init and health).
function M.new(app, io, slot)
  -- M.log(level, msg): the worker's log, for libraries (routemq.pg's notices).
  M.log = io.log
  local d = dispatch.new(app, io, slot, false)
  local runner, jobs

  local function make_runner()
    local runner_mod = require("routemq.runner")
    if not runner_mod.direct then
      io.log("error", "this cqueues version could not be taught to run handlers resumed by the worker: "
        .. "handlers that wait block the worker", nil)
    end
    runner = runner_mod.new()
    local io_resume = io.resume
    if io_resume then
      runner.on_resume = function(ctx)
        if ctx then
          io_resume(ctx._route_index, ctx._token)
        else
          io_resume(0, -1)
        end
      end
    end
    d.attach_runner(runner)
    jobs = require("routemq.jobs").new(app, runner, io, slot)
  end

  -- io.wait_outgoing() -> true once the worker's outgoing publishes are
  -- below their bound, the calling coroutine having waited on the controller
  -- (routemq.context's send calls it when io.publish says false); false when
  -- the caller cannot wait: not a coroutine on the controller, or a C call
  -- (a string.gsub callback, a C library's callback) between it and the yield.
  -- Its deadline is its job's: a handler still waiting at its route's
  -- timeout is cancelled like any waiting handler.
  local wake
  io.wait_outgoing = function()
    if coroutine.running() == nil then
      return false
    end
    local cqueues = require("cqueues") -- makes the runner if nothing needed it yet
    if not cqueues.running() then
      return false
    end
    wake = wake or { pollfd = io.outgoing_fd(), events = "r" }
    return (pcall(cqueues.poll, wake))
  end

  if #(app.timers or {}) > 0 or #(app.inits or {}) > 0 or app.health or has_ordered(app)
      or package.loaded["cqueues"] then
    make_runner()
  else
    -- Loaded by the searchers after this one, then the runner is made
    -- before the module is handed to the code that asked for it.
    package.preload["cqueues"] = function(name)
      package.preload["cqueues"] = nil
      local mod, tried = nil, {}
      for i = 2, #package.loaders do
        local loader = package.loaders[i](name)
        if type(loader) == "function" then
          mod = loader(name)
          break
        elseif type(loader) == "string" then
          tried[#tried + 1] = loader
        end
      end
      if mod == nil then
        error("module '" .. name .. "' not found:" .. table.concat(tried), 2)
      end
      package.loaded[name] = mod
      make_runner()
      return mod
    end
  end

  return {
    call = function(...)
      if not runner then
        make_runner()
      end
      return d.call(...)
    end,
    new_thread = d.new_thread,
    adopt = d.adopt,
    step = function()
      if runner then
        local cq = runner.cq
        local ok, err = cq:step(0)
        for _ = 2, STEPS_PER_CALL do
          if not ok or cq:timeout() ~= 0 then
            break
          end
          ok, err = cq:step(0)
        end
        return ok, err
      end
      return true
    end,
    pollfd = function()
      return runner and runner.cq:pollfd()
    end,
    timeout = function()
      return runner and runner.cq:timeout()
    end,
    init = function(seconds)
      if jobs then
        return jobs:run_init(seconds)
      end
      return true
    end,
    start_jobs = function()
      if jobs then
        jobs:start()
      end
    end,
    stop_jobs = function()
      if jobs then
        jobs:stop()
      end
    end,
  }
end

return M
