-- Process, clock and file helpers for the benchmark driver (LuaJIT FFI):
-- children are started with fork/exec so the driver can wait for them,
-- time their exit and stop them by pid.
local ffi = require("ffi")
local bit = require("bit")

pcall(ffi.cdef, [[
  typedef int pid_t;
  pid_t fork(void);
  int execvp(const char *file, char *const argv[]);
  void _exit(int status);
  int kill(pid_t pid, int sig);
  pid_t waitpid(pid_t pid, int *status, int options);
  int open(const char *path, int flags, int mode);
  int close(int fd);
  int dup2(int oldfd, int newfd);
  int setenv(const char *name, const char *value, int overwrite);
  int unsetenv(const char *name);
  long sysconf(int name);
]])

local C = ffi.C
-- Clocks, sleeping, signals, ports and waits are shared with the specs' helpers.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local sys = dofile(here .. "/../../spec/helpers/sys.lua")
local M = {}
M.now_us, M.mono, M.sleep, M.free_port, M.can_connect, M.sh, M.read, M.write =
  sys.now_us, sys.mono, sys.sleep, sys.free_port, sys.can_connect, sys.sh, sys.read, sys.write

local O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC, O_APPEND = 0, 1, 64, 512, 1024
local WNOHANG = 1
M.SIGKILL, M.SIGTERM, M.SIGHUP, M.SIGUSR1 = 9, 15, 1, 10

-- "1795405511527218077" (ns) -> µs as a double.
function M.ns_to_us(s)
  s = tostring(s)
  if #s <= 3 then
    return 0
  end
  return tonumber(s:sub(1, -4)) + tonumber(s:sub(-3)) / 1000
end

M.CLK_TCK = tonumber(C.sysconf(2))

-- Children started by spawn and not yet reaped: pid -> name.
M.children = {}

local function redirect(fd, path, flags)
  local f = C.open(path, flags, 420)
  if f >= 0 then
    C.dup2(f, fd)
    C.close(f)
  end
end

-- spawn(argv, { env = {K = V | false}, stdout = path, stderr = path,
-- append = bool }) -> pid. Environment entries set to false are removed.
function M.spawn(argv, opts)
  opts = opts or {}
  local n = #argv
  local cargv = ffi.new("char *[?]", n + 1)
  local keep = {}
  for i = 1, n do
    local s = tostring(argv[i])
    keep[i] = ffi.new("char[?]", #s + 1, s)
    cargv[i - 1] = keep[i]
  end
  cargv[n] = nil
  -- Output files are removed first: the caller polls them for the child's
  -- first lines and must not read a previous child's.
  if not opts.append then
    for _, path in ipairs({ opts.stdout, opts.stderr }) do
      if path and not path:find("^/dev/") then
        os.remove(path)
      end
    end
  end
  io.stdout:flush()
  io.stderr:flush()
  local pid = C.fork()
  if pid < 0 then
    error("fork failed for " .. argv[1])
  end
  if pid == 0 then
    for k, v in pairs(opts.env or {}) do
      if v == false then
        C.unsetenv(k)
      else
        C.setenv(k, tostring(v), 1)
      end
    end
    local wflags = O_WRONLY + O_CREAT + (opts.append and O_APPEND or O_TRUNC)
    redirect(0, "/dev/null", O_RDONLY)
    local out = opts.stdout or "/dev/null"
    redirect(1, out, wflags)
    if opts.stderr == nil or opts.stderr == out then
      C.dup2(1, 2)
    else
      redirect(2, opts.stderr, wflags)
    end
    C.execvp(cargv[0], cargv)
    C._exit(127)
  end
  M.children[pid] = argv[1]
  return pid
end

local status = ffi.new("int[1]")

local function decode(st)
  local sig = bit.band(st, 0x7f)
  if sig == 0 then
    return { code = bit.band(bit.rshift(st, 8), 0xff) }
  end
  return { signal = sig }
end

-- reap(pid, timeout_s) -> { code | signal, at_us } once it has exited, or nil.
function M.reap(pid, timeout)
  local deadline = M.mono() + (timeout or 0)
  local step = 0.0005
  repeat
    local r = C.waitpid(pid, status, WNOHANG)
    if r == pid then
      local res = decode(status[0])
      res.at_us = M.now_us()
      M.children[pid] = nil
      return res
    elseif r < 0 then
      M.children[pid] = nil
      return { code = -1, at_us = M.now_us() }
    end
    if M.mono() >= deadline then
      return nil
    end
    M.sleep(step)
    if step < 0.005 then
      step = step * 1.5
    end
  until false
end

-- Whether a child is still running (reaps it when it has exited).
function M.alive(pid)
  if not M.children[pid] then
    return false
  end
  local r = C.waitpid(pid, status, WNOHANG)
  if r == 0 then
    return true
  end
  M.children[pid] = nil
  return false
end

function M.signal(pid, sig)
  return sys.signal(pid, sig)
end

-- stop(pid, sig, timeout): signal, wait, then SIGKILL what is left.
function M.stop(pid, sig, timeout)
  if not pid or not M.children[pid] then
    return nil
  end
  C.kill(pid, sig or M.SIGTERM)
  local r = M.reap(pid, timeout or 5)
  if not r then
    C.kill(pid, M.SIGKILL)
    r = M.reap(pid, 5)
  end
  return r
end

-- Stops every child still running (used on error paths).
function M.stop_all()
  for pid in pairs(M.children) do
    M.stop(pid, M.SIGTERM, 3)
  end
end

-- wait_for(fn, timeout_s, interval_s) -> fn's first truthy result, or nil.
function M.wait_for(fn, timeout, interval)
  return sys.wait_for(fn, timeout, interval or 0.01) or nil
end

-- key=value pairs of a tool's output line(s) -> table (last one wins).
function M.kv(s)
  local t = {}
  for k, v in (s or ""):gmatch("([%w_]+)=(%S+)") do
    t[k] = v
  end
  return t
end

-- Children of `ppid` whose title is "routemq: worker <slot> ...": slot -> pid.
function M.worker_pids(ppid)
  local t = {}
  for line in M.sh("pgrep -P " .. ppid .. " 2>/dev/null"):gmatch("%d+") do
    local pid = tonumber(line)
    local cmd = M.read("/proc/" .. pid .. "/cmdline") or ""
    local slot = cmd:match("^routemq: worker (%d+)")
    if slot then
      t[tonumber(slot)] = pid
    end
  end
  return t
end

-- The fields of /proc/<pid>/stat as numbers (strings where not), by their
-- number in proc(5): utime is [14], stime [15], cutime [16], cstime [17];
-- nil when the process is gone.
function M.proc_stat(pid)
  local s = M.read("/proc/" .. pid .. "/stat")
  local rest = s and s:match("^.*%) (.*)$")
  if not rest then
    return nil
  end
  local f = { pid, "comm" }
  for w in rest:gmatch("%S+") do
    f[#f + 1] = tonumber(w) or w
  end
  return f
end

-- utime + stime of a process in µs (/proc/<pid>/stat, clock-tick resolution),
-- and its on-CPU time in µs from /proc/<pid>/schedstat (ns resolution).
function M.proc_cpu_us(pid)
  local f = M.proc_stat(pid)
  if not f then
    return nil
  end
  local ticks = f[14] + f[15]
  local sched = M.read("/proc/" .. pid .. "/schedstat")
  local run_ns = sched and tonumber(sched:match("^(%d+)"))
  return ticks * 1e6 / M.CLK_TCK, run_ns and run_ns / 1000
end

-- Rss and Pss of a process in kB (/proc/<pid>/smaps_rollup).
function M.mem_kb(pid)
  local s = M.read("/proc/" .. pid .. "/smaps_rollup")
  if not s then
    return nil
  end
  return tonumber(s:match("\nRss:%s+(%d+)")), tonumber(s:match("\nPss:%s+(%d+)"))
end

-- Rss/Pss by mapping (file name, [heap], [anon], ...) from /proc/<pid>/smaps,
-- largest Rss first: { { name, rss_kb, pss_kb }, ... }.
function M.mem_by_mapping(pid)
  local s = M.read("/proc/" .. pid .. "/smaps")
  if not s then
    return {}
  end
  local by, order, name = {}, {}, nil
  for line in s:gmatch("[^\n]+") do
    local path = line:match("^%x+%-%x+ %S+ %x+ %S+ %d+%s*(.*)$")
    if path then
      name = path ~= "" and path:gsub("^.*/", "") or "[anon]"
      if not by[name] then
        by[name] = { name = name, rss_kb = 0, pss_kb = 0 }
        order[#order + 1] = by[name]
      end
    elseif name then
      local rss = line:match("^Rss:%s+(%d+)")
      local pss = line:match("^Pss:%s+(%d+)")
      if rss then by[name].rss_kb = by[name].rss_kb + tonumber(rss) end
      if pss then by[name].pss_kb = by[name].pss_kb + tonumber(pss) end
    end
  end
  table.sort(order, function(a, b) return a.rss_kb > b.rss_kb end)
  return order
end

return M
