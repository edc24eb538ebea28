-- What the C worker calls in Lua, in one table: the dispatcher's entry, the
-- cqueues controller it must step, and the app's init functions, timers and
-- health check (routemq.jobs), all on one runner.
local dispatch = require("routemq.dispatch")
local jobs_mod = require("routemq.jobs")
local runner_mod = require("routemq.runner")

local M = {}

-- new(app, io, slot) -> {
--   call(index, topic, payload, qos, retain, dup, props, redelivered, params, token),
--   step() -> true | nil, err          one controller step, never waits,
--   pollfd -> descriptor               readable when a step is due,
--   timeout() -> seconds | nil         until the controller's next timer,
--   init(seconds) -> true | nil, err, traceback,
--   start_jobs(), stop_jobs() }
-- io: see routemq.dispatch and routemq.jobs; io.resume(route_index, token)
-- is called before a waiting handler's code runs again (route 0, token -1
-- for timers, init and health).
function M.new(app, io, slot)
  local runner = runner_mod.new()
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
  local d = dispatch.new(app, io, slot, runner)
  local jobs = jobs_mod.new(app, runner, io, slot)
  local cq = runner.cq
  return {
    call = d.call,
    -- handlers in coroutines the C worker resumes itself (cheapest), when
    -- cqueues could be taught about them (runner.direct)
    new_thread = runner_mod.direct and d.new_thread or nil,
    adopt = d.adopt,
    step = function()
      return cq:step(0)
    end,
    pollfd = cq:pollfd(),
    timeout = function()
      return cq:timeout()
    end,
    init = function(seconds)
      return jobs:run_init(seconds)
    end,
    start_jobs = function()
      jobs:start()
    end,
    stop_jobs = function()
      jobs:stop()
    end,
  }
end

return M
