-- Marks that a forked child does not share, checked without a system call:
-- a pool asks on every checkout whether its connections are its process's
-- own, and getpid() there was two of the seven system calls of a query.
--
--   local mark = forkmark.mark()   -- in this process
--   forkmark.same(mark)            -- true here, false in a forked child
--
-- How: one page the kernel zeroes in a forked child (MADV_WIPEONFORK,
-- Linux 4.14) holds this process's epoch; a child that asks for a mark
-- starts a new epoch. Where the kernel refuses, the mark is the pid and
-- every check is a getpid().
local ffi = require("ffi")

pcall(ffi.cdef, [[
  int getpid(void);
  void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
  int munmap(void *addr, size_t length);
  int madvise(void *addr, size_t length, int advice);
]])

local C = ffi.C

local M = {}

local PAGE = 4096
local PROT_READ_WRITE = 3
local MAP_PRIVATE_ANONYMOUS = 0x22
local MADV_WIPEONFORK = 18

-- The epoch page (int32_t *), nil where the kernel refuses; and the last
-- epoch handed out, which a child inherits with the rest of the heap.
local page, epoch = nil, 0
do
  local p = C.mmap(nil, PAGE, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0)
  if ffi.cast("intptr_t", p) ~= -1 then
    if C.madvise(p, PAGE, MADV_WIPEONFORK) == 0 then
      page = ffi.cast("int32_t *", p)
    else
      C.munmap(p, PAGE)
    end
  end
end

-- M.mark() -> a value M.same is true for in this process only.
function M.mark()
  if page == nil then
    return C.getpid()
  end
  if page[0] == 0 then
    epoch = epoch + 1
    page[0] = epoch
  end
  return page[0]
end

-- M.same(mark) -> whether mark was made in this process (not before a fork).
function M.same(mark)
  if page == nil then
    return mark == C.getpid()
  end
  return page[0] == mark
end

-- M.wipes_on_fork: whether the page is used (false: every check is a getpid).
M.wipes_on_fork = page ~= nil

return M
