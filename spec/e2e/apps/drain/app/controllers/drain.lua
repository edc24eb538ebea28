-- Leaves "<route>\t<payload>\t<monotonic ns>" per handled message in
-- $E2E_OUT/<pid>.stamps.
local ffi = require("ffi")
ffi.cdef [[
  int getpid(void);
  struct drain_ts { long sec; long nsec; };
  int clock_gettime(int clk, struct drain_ts *ts);
]]

local M = {}
local ts = ffi.new("struct drain_ts")
local file

function M.stamp(ctx)
  if not file then
    file = assert(io.open((os.getenv("E2E_OUT") or "/tmp") .. "/" .. ffi.C.getpid() .. ".stamps", "a"))
    file:setvbuf("line")
  end
  ffi.C.clock_gettime(1, ts)
  file:write(ctx.route.pattern, "\t", ctx.payload, "\t", tostring(ts.sec * 1000000000LL + ts.nsec):gsub("LL$", ""),
    "\n")
end

return M
