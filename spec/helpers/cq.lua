-- Running spec code on a cqueues controller of its own in the busted
-- process (the database drivers' APIs need one).
local cqueues = require("cqueues")

local M = {}

-- run(fn, limit): runs fn on a new controller until it and what it started
-- end (limit s, 60 by default); raises fn's error with its traceback.
function M.run(fn, limit)
  local cq = cqueues.new()
  local err
  cq:wrap(function()
    local ok, e = xpcall(fn, debug.traceback)
    if not ok then err = e end
  end)
  local stop = cqueues.monotime() + (limit or 60)
  while not cq:empty() do
    assert(cq:step(0.5))
    assert(cqueues.monotime() < stop, "still running after " .. (limit or 60) .. " s")
  end
  if err then error(err, 0) end
end

-- until_(pred, limit) -> pred(): waits (on the controller) until pred() or
-- limit s (10 by default).
function M.until_(pred, limit)
  local stop = cqueues.monotime() + (limit or 10)
  while not pred() and cqueues.monotime() < stop do cqueues.sleep(0.02) end
  return pred()
end

return M
