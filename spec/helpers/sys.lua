--- Clocks, sleeping, signals, ports and bounded waits for the test helpers
-- (spec/helpers/e2e.lua) and the benchmark driver (bench/lib/proc.lua): one
-- copy, so both measure deadlines the same way (CLOCK_MONOTONIC, never
-- os.time()'s whole seconds).
local ffi = require("ffi")
local bit = require("bit")

-- Each declaration apart and protected: specs and modules loaded in the same
-- process declare some of these functions too; the struct names are ours.
for _, decl in ipairs({
  "struct rmq_sys_timespec { long tv_sec; long tv_nsec; };",
  "struct rmq_sys_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };",
  "int clock_gettime(int clk, struct rmq_sys_timespec *ts);",
  "int nanosleep(const struct rmq_sys_timespec *req, struct rmq_sys_timespec *rem);",
  "int kill(int pid, int sig);",
  "int socket(int domain, int type, int protocol);",
  "int bind(int fd, const void *addr, unsigned int len);",
  "int connect(int fd, const void *addr, unsigned int len);",
  "int getsockname(int fd, void *addr, unsigned int *len);",
  "int close(int fd);",
  "int fork(void);",
  "int waitpid(int pid, int *status, int options);",
  "void _exit(int status);",
}) do
  pcall(ffi.cdef, decl)
end

local C = ffi.C
local M = {}

M.SIGHUP, M.SIGINT, M.SIGQUIT, M.SIGKILL, M.SIGUSR1, M.SIGUSR2, M.SIGTERM = 1, 2, 3, 9, 10, 12, 15
M.SIGCONT, M.SIGSTOP, M.SIGTTIN, M.SIGTTOU = 18, 19, 21, 22

local ts = ffi.new("struct rmq_sys_timespec")

--- in_child(fn) -> the exit status of a forked child that runs fn and
-- leaves with its return value (99 when fn raises; 128 + the signal when
-- it was killed). The child ends with _exit: nothing of the parent's
-- (buffered output, busted's reporting) runs twice.
function M.in_child(fn)
  local pid = C.fork()
  assert(pid >= 0, "fork failed")
  if pid == 0 then
    local ok, code = pcall(fn)
    C._exit(ok and tonumber(code) or 99)
  end
  local status = ffi.new("int[1]")
  assert(C.waitpid(pid, status, 0) == pid, "waitpid failed")
  local sig = bit.band(status[0], 0x7f)
  if sig ~= 0 then
    return 128 + sig
  end
  return bit.rshift(bit.band(status[0], 0xff00), 8)
end

--- Wall-clock seconds (with fractions) since the epoch.
function M.now()
  C.clock_gettime(0, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

--- Wall-clock time in µs (a double keeps µs exactly).
function M.now_us()
  C.clock_gettime(0, ts)
  return tonumber(ts.tv_sec) * 1e6 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

--- Monotonic seconds (with fractions), for deadlines.
function M.mono()
  C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

--- Sleeps for sec seconds.
function M.sleep(sec)
  local req = ffi.new("struct rmq_sys_timespec")
  req.tv_sec = math.floor(sec)
  req.tv_nsec = math.floor((sec - math.floor(sec)) * 1e9)
  C.nanosleep(req, nil)
end

--- Sends signal sig (a number, or a name: "TERM", "KILL"...; default TERM)
-- to pid; true when it was sent.
function M.signal(pid, sig)
  if type(sig) ~= "number" then
    local name = sig or "TERM"
    sig = M["SIG" .. name]
    if not sig then error("unknown signal name '" .. tostring(name) .. "'", 2) end
  end
  return C.kill(pid, sig) == 0
end

local function htons(p)
  return bit.bor(bit.lshift(bit.band(p, 0xff), 8), bit.rshift(p, 8))
end
local LOOPBACK = 0x0100007F -- 127.0.0.1 in network order on little-endian

--- A TCP port on 127.0.0.1 that nothing listened on a moment ago.
function M.free_port()
  local fd = C.socket(2, 1, 0)
  local sa = ffi.new("struct rmq_sys_sockaddr_in")
  sa.family = 2
  sa.addr = LOOPBACK
  local len = ffi.new("unsigned int[1]", ffi.sizeof(sa))
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind failed")
  C.getsockname(fd, sa, len)
  C.close(fd)
  return htons(sa.port)
end

--- Whether something accepts TCP connections on 127.0.0.1:port.
function M.can_connect(port)
  local fd = C.socket(2, 1, 0)
  local sa = ffi.new("struct rmq_sys_sockaddr_in")
  sa.family = 2
  sa.port = htons(port)
  sa.addr = LOOPBACK
  local ok = C.connect(fd, sa, ffi.sizeof(sa)) == 0
  C.close(fd)
  return ok
end

--- Calls fn every step seconds (default 0.05) until it returns a truthy
-- value or timeout seconds (default 10) pass on the monotonic clock; returns
-- that value, or fn()'s last one. fn is always called at least once, and
-- once more at the deadline.
function M.wait_for(fn, timeout, step)
  local deadline = M.mono() + (timeout or 10)
  local v = fn()
  while not v and M.mono() < deadline do
    M.sleep(step or 0.05)
    v = fn()
  end
  return v
end

--- The whole output of shell command cmd.
function M.sh(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("*a")
  p:close()
  return s
end

--- The whole content of the file at path, or nil when it cannot be read.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- Writes s to path, replacing it.
function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

return M
