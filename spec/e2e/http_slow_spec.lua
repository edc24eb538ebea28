-- End to end: the admin HTTP endpoint holds up against clients that hold
-- half-sent requests (issue 14 item 7): /health keeps answering at once,
-- whether they fit in the connection limit or go past it.
local e2e = require("spec.helpers.e2e")
local ffi = require("ffi")

ffi.cdef [[
  struct slow_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };
  int connect(int fd, const void *addr, unsigned int len);
  long send(int fd, const void *buf, unsigned long n, int flags);
]]
local MSG_NOSIGNAL = 0x4000

--- Opens a connection to 127.0.0.1:port and sends the start of a request.
local function slow_client(port)
  local fd = ffi.C.socket(2, 1, 0)
  assert(fd >= 0, "socket")
  local a = ffi.new("struct slow_sockaddr_in", { family = 2, port = math.floor(port / 256) + (port % 256) * 256,
    addr = 0x0100007f })
  assert(ffi.C.connect(fd, a, ffi.sizeof(a)) == 0, "connect")
  local head = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
  ffi.C.send(fd, head, #head, MSG_NOSIGNAL)
  return fd
end

--- One more byte of each client's header: active, so no idle timeout applies.
local function trickle(fds)
  for _, fd in ipairs(fds) do ffi.C.send(fd, "a", 1, MSG_NOSIGNAL) end
end

--- GET /health: status code and seconds (curl's time_total).
local function health(port)
  local res = e2e.sh(string.format("curl -s -o /dev/null -w '%%{http_code} %%{time_total}' --max-time 5 "
    .. "http://127.0.0.1:%d/health", port))
  local code, t = res:match("^(%d+) ([%d.]+)")
  return tonumber(code) or 0, tonumber(t)
end

describe("admin HTTP with slow clients", function()
  it("answers /health within a probe's 1 s while 100, then 400, clients hold half-sent requests", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local port = e2e.free_port()
    local r = e2e.routemq(b, e2e.copy_app("spec/e2e/apps/basic"), "run",
      { WORKER_COUNT = 1, ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    e2e.defer(r.stop)  -- its log stays for the sanitizer check of scripts/test.sh
    assert(e2e.wait_for(function() return health(port) == 200 end, 10), e2e.read(r.log))
    local fds = {}
    e2e.defer(function() for _, fd in ipairs(fds) do ffi.C.close(fd) end end)
    local times = {}
    for _, n in ipairs({ 100, 400 }) do
      while #fds < n do fds[#fds + 1] = slow_client(port) end
      for _ = 1, 6 do
        -- The clients' pace, not a wait for anything: a slow client sends
        -- one more byte every 0.5 s, which is what is simulated here.
        e2e.sleep(0.5)
        trickle(fds)
        for _ = 1, 3 do
          local code, t = health(port)
          assert.equal(200, code, n .. " slow clients: /health answered " .. code)
          -- A liveness probe's default timeout (Kubernetes: 1 s); the figure
          -- itself (well below) depends on the machine and is printed below.
          assert.is_true(t < 1, n .. " slow clients: /health took " .. t .. " s")
          times[#times + 1] = t
        end
      end
    end
    table.sort(times)
    print(string.format("/health with slow clients: %d requests, median %.1f ms, max %.1f ms", #times,
      times[math.ceil(#times / 2)] * 1000, times[#times] * 1000))
    -- Past the limit the longest-waiting connections were closed, and the log says so.
    assert.matches("admin HTTP: %d+ connections open: closed the %d+ longest waiting for their client",
      e2e.read(r.log))
  end)
end)
