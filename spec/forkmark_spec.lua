-- routemq.forkmark: a mark holds in the process that made it, not in a
-- forked child (which makes its own), checked in real forks.
local ffi = require("ffi")
local forkmark = require("routemq.forkmark")

pcall(ffi.cdef, [[
  int fork(void);
  int waitpid(int pid, int *status, int options);
  void _exit(int status);
]])

-- in_child(fn) -> the exit status of a forked child running fn, which
-- returns the status (an error: 99). The child leaves with _exit: nothing
-- of the parent's (buffers, busted) runs twice.
local function in_child(fn)
  local pid = ffi.C.fork()
  assert(pid >= 0, "fork failed")
  if pid == 0 then
    local ok, code = pcall(fn)
    ffi.C._exit(ok and code or 99)
  end
  local status = ffi.new("int[1]")
  assert(ffi.C.waitpid(pid, status, 0) == pid)
  assert.equal(0, bit.band(status[0], 0x7f), "the child was killed")
  return bit.rshift(bit.band(status[0], 0xff00), 8)
end

describe("routemq.forkmark", function()
  it("uses the page the kernel wipes in a child (no getpid per check)", function()
    assert.is_true(forkmark.wipes_on_fork)
  end)

  it("holds a mark in its process, not in a forked child, which makes marks of its own", function()
    local mark = forkmark.mark()
    assert.is_true(forkmark.same(mark))
    assert.equal(mark, forkmark.mark())
    local status = in_child(function()
      if forkmark.same(mark) then
        return 1
      end
      local own = forkmark.mark()
      if own == mark or not forkmark.same(own) or forkmark.same(mark) then
        return 2
      end
      -- A grandchild shares neither.
      local pid = ffi.C.fork()
      if pid == 0 then
        ffi.C._exit((forkmark.same(own) or forkmark.same(mark)) and 1 or 0)
      end
      local st = ffi.new("int[1]")
      ffi.C.waitpid(pid, st, 0)
      return st[0] == 0 and 0 or 3
    end)
    assert.equal(0, status)
    assert.is_true(forkmark.same(mark))
  end)
end)
