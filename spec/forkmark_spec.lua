-- routemq.forkmark: a mark holds in the process that made it, not in a
-- forked child (which makes its own), checked in real forks.
local forkmark = require("routemq.forkmark")
local sys = require("spec.helpers.sys")

describe("routemq.forkmark", function()
  it("uses the page the kernel wipes in a child (no getpid per check)", function()
    assert.is_true(forkmark.wipes_on_fork)
  end)

  it("holds a mark in its process, not in a forked child, which makes marks of its own", function()
    local mark = forkmark.mark()
    assert.is_true(forkmark.same(mark))
    assert.equal(mark, forkmark.mark())
    local status = sys.in_child(function()
      if forkmark.same(mark) then
        return 1
      end
      local own = forkmark.mark()
      if own == mark or not forkmark.same(own) or forkmark.same(mark) then
        return 2
      end
      -- A grandchild shares neither.
      local shared = sys.in_child(function()
        return (forkmark.same(own) or forkmark.same(mark)) and 1 or 0
      end)
      return shared == 0 and 0 or 3
    end)
    assert.equal(0, status)
    assert.is_true(forkmark.same(mark))
  end)
end)
