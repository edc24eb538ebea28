-- End to end: observability and control against a real broker - the control
-- socket (status, reload, stop, scale), the admin HTTP endpoint (/health,
-- /ready, /status, /metrics), logs, the password staying hidden, and
-- systemd notifications.
local e2e = require("spec.helpers.e2e")
local prom = require("spec.helpers.prom")
local cjson = require("cjson")
local ffi = require("ffi")

ffi.cdef [[
  struct obs_sockaddr_un { uint16_t family; char path[108]; };
  int connect(int fd, const void *addr, unsigned int len);
  long read(int fd, void *buf, unsigned long n);
  long send(int fd, const void *buf, unsigned long n, int flags);
  long recv(int fd, void *buf, unsigned long n, int flags);
]]
-- Declared apart: routemq.pg and routemq.mysql, loaded in the same process by
-- other specs, declare them too (the C library's own types).
for _, decl in ipairs({ "struct pollfd { int fd; short events; short revents; };",
  "int poll(struct pollfd *fds, unsigned long n, int ms);" }) do
  pcall(ffi.cdef, decl)
end
local AF_UNIX, SOCK_STREAM, SOCK_DGRAM, SOCK_NONBLOCK = 1, 1, 2, 0x800
local MSG_DONTWAIT, MSG_NOSIGNAL = 0x40, 0x4000

local APP = "spec/e2e/apps/basic"

local seq = e2e.seq

--- Runs `routemq <args> --app <app>` on r's run directory; returns exit code,
-- stdout, stderr and the seconds it took. prefix goes before the command.
local function ctl(r, args, app, prefix)
  local out, err = os.tmpname(), os.tmpname()
  local cmd = string.format("cd %s; %s env ROUTEMQ_RUN_DIR=%s %s %s --app %s > %s 2> %s; echo $?", e2e.root,
    prefix or "", r.dir .. "/run", e2e.bin, args, app or APP, out, err)
  local t0 = e2e.now()
  local code = tonumber(e2e.sh(cmd):match("(%d+)%s*$"))
  local dt = e2e.now() - t0
  local o, e = e2e.read(out), e2e.read(err)
  os.remove(out)
  os.remove(err)
  return code, o, e, dt
end

local function status_json(r, app)
  local code, out, err = ctl(r, "status --json", app)
  assert(code == 0, "routemq status --json: " .. tostring(code) .. " " .. err)
  return cjson.decode(out)
end

--- GET http://127.0.0.1:port/path: status code (0 when nothing answers), body, seconds.
local function http(port, path)
  local out = os.tmpname()
  local res = e2e.sh(string.format("curl -s -o %s -w '%%{http_code} %%{time_total}' --max-time 5 "
    .. "http://127.0.0.1:%d%s", out, port, path))
  local body = e2e.read(out)
  os.remove(out)
  local code, t = res:match("^(%d+) ([%d.]+)")
  return tonumber(code) or 0, body, tonumber(t)
end

local function metrics(port)
  local code, body = http(port, "/metrics")
  assert(code == 200, "/metrics answered " .. code)
  return assert(prom.parse(body)), body
end

local function ok_count(m, route) return m:value("routemq_messages_total", { route = route, result = "ok" }) end

--- The rows of the status table by slot: { pid, gen, state, restarts, line }.
local function table_rows(out)
  local rows = {}
  for line in out:gmatch("[^\n]+") do
    local slot, pid, gen, state = line:match("^%s*(%d+)%s+(%S+)%s+(%d+)%s+(%S+)")
    if slot then
      local restarts = line:match("(%d+)%s+[%d.]+ MB$") or line:match("(%d+)%s+%-$")
      rows[tonumber(slot)] = { pid = tonumber(pid), gen = tonumber(gen), state = state,
        restarts = tonumber(restarts), line = line }
    end
  end
  return rows
end

local function unix_addr(path)
  local a = ffi.new("struct obs_sockaddr_un")
  a.family = AF_UNIX
  ffi.copy(a.path, path)
  return a
end

--- A non-blocking stream connection to a UNIX socket, or nil.
local function unix_connect(path)
  local fd = ffi.C.socket(AF_UNIX, SOCK_STREAM + SOCK_NONBLOCK, 0)
  local a = unix_addr(path)
  if ffi.C.connect(fd, a, ffi.sizeof(a)) ~= 0 then
    ffi.C.close(fd)
    return nil
  end
  return fd
end

--- Sends as much of s as the socket takes without blocking (never SIGPIPE).
local function unix_send(fd, s)
  local off = 0
  while off < #s do
    local n = tonumber(ffi.C.send(fd, ffi.cast("const char *", s) + off, #s - off, MSG_NOSIGNAL))
    if n <= 0 then break end
    off = off + n
  end
  return off
end

--- What arrives on fd within timeout seconds; and true when the peer closed.
local function unix_read(fd, timeout)
  local buf, parts = ffi.new("char[4096]"), {}
  local deadline = e2e.now() + timeout
  local p = ffi.new("struct pollfd")
  while e2e.now() < deadline do
    p.fd, p.events, p.revents = fd, 1, 0
    if ffi.C.poll(p, 1, 50) > 0 then
      local n = tonumber(ffi.C.read(fd, buf, 4096))
      if n <= 0 then return table.concat(parts), true end
      parts[#parts + 1] = ffi.string(buf, n)
    end
  end
  return table.concat(parts), false
end

describe("routemq status, reload, stop", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("shows the workers under load, a killed worker's restart and a reload's generations; exit 2 once stopped",
    function()
      local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3 })
      assert.truthy(e2e.wait_for(function() return r.ready(3) end, 15), e2e.read(r.log))
      local pub = e2e.publish_background(broker.port, "slowshared/1", 15000, r.dir .. "/pub.log")
      e2e.defer(function() e2e.kill(pub, "TERM") end)

      -- Under load: the header, three rows, counts going up, handlers in flight.
      local times, seen_inflight, last = {}, false, -1
      for _ = 1, 10 do
        local code, out, err, dt = ctl(r, "status")
        assert.equal(0, code, err)
        times[#times + 1] = dt
        assert.matches("master " .. r.pid, out, 1, true)
        assert.matches("app      " .. e2e.root .. "/" .. APP, out, 1, true)
        assert.matches("broker   127.0.0.1:" .. broker.port, out, 1, true)
        assert.matches("workers  3", out, 1, true)
        local rows = table_rows(out)
        for slot = 0, 2 do assert.truthy(rows[slot], out) end
        if out:find("slowshared/{n} %d") then seen_inflight = true end
        local total = tonumber(out:match("messages (%d+)"))
        assert.is_true(total >= last)
        last = total
        -- The pace of the samples (10 over about 2 s of load), not a wait for
        -- anything: the figures are taken while messages flow.
        e2e.sleep(0.2)
      end
      table.sort(times)
      print(string.format("\n  routemq status under load: median %.1f ms, max %.1f ms",
        times[math.floor(#times / 2) + 1] * 1000, times[#times] * 1000))
      assert.is_true(seen_inflight, "no handler was ever shown in flight")
      assert.is_true(last > 0)

      -- A killed worker: a new pid in its slot, and the restarts column says 1.
      local before = status_json(r)
      local victim = before.slots[2].pid
      e2e.kill(victim, "KILL")
      local after
      assert.truthy(e2e.wait_for(function()
        after = status_json(r)
        return after.slots[2].pid ~= victim and after.slots[2].pid > 0 and after.slots[2].restarts == 1
      end, 10))
      assert.equal(1, after.totals.restarts)
      assert.equal(1, after.restarts_by_reason.signal)
      local _, out = ctl(r, "status")
      local rows = table_rows(out)
      assert.equal(1, rows[1].restarts, out)
      assert.equal(0, rows[0].restarts, out)
      assert.equal(before.slots[2].generation + 1, rows[1].gen)

      -- A reload under load: every slot gets a new generation.
      local code, rout, rerr = ctl(r, "reload")
      assert.equal(0, code, rerr)
      assert.matches("reloaded: generation 2, 3 workers", rout)
      local reloaded = status_json(r)
      assert.equal(2, reloaded.generation)
      for i = 1, 3 do
        assert.is_true(reloaded.slots[i].generation > after.slots[i].generation, "slot " .. (i - 1))
      end
      assert.equal(1, reloaded.reloads.ok)

      -- stop waits for the master to be gone; then status has nobody to ask.
      local scode, _, serr, sdt = ctl(r, "stop")
      assert.equal(0, scode, serr)
      assert.is_false(e2e.alive(r.pid))
      print(string.format("  routemq stop under load: %.0f ms", sdt * 1000))
      assert.equal("", e2e.read(r.dir .. "/run/routemq.pid"))
      assert.equal("gone", e2e.sh("test -e " .. r.dir .. "/run/control.sock || echo gone"):match("%a+"))
      local code2, _, err2 = ctl(r, "status")
      assert.equal(2, code2)
      assert.equal("routemq: no master running for " .. e2e.root .. "/" .. APP .. " (" .. r.dir
        .. "/run/control.sock: No such file or directory)\n", err2)
    end)

  it("reload: a broken router exits 1 with file:line and keeps the workers; a good change exits 0", function()
    local dir = e2e.copy_app(APP)
    local router = dir .. "/app/routers/e2e.lua"
    local r = e2e.routemq(broker, dir, "run", { E2E_SHARED_WORKERS = 2 })
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15), e2e.read(r.log))
    local pids = r.workers()
    local good = e2e.read(router)
    e2e.write(router, good .. "\nrouter.on(\"broken/{n}\", function() end, { qos = 7 })\n")
    local code, _, err = ctl(r, "reload", dir)
    assert.equal(1, code)
    assert.matches("^routemq reload: app/routers/e2e%.lua:%d+: ", err)
    assert.same(pids, r.workers())
    assert.equal(1, status_json(r, dir).reloads.failed)

    e2e.write(router, good .. "\nrouter.on(\"extra/{n}\", C.count, { qos = 1 })\n")
    local code2, out2, err2 = ctl(r, "reload", dir)
    assert.equal(0, code2, err2)
    assert.matches("reloaded: generation 2", out2)
    e2e.publish_lines(broker.port, "extra/1", { "x1", "x2" }, 1)
    assert.truthy(e2e.wait_for(function() return #e2e.records(r.dir) >= 2 end, 10))
  end)

  it("scale 4 runs 4 workers, scale 1 one", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 2 })
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15), e2e.read(r.log))
    local code, out, err = ctl(r, "scale 4")
    assert.equal(0, code, err)
    assert.equal("4 workers (was 2)\n", out)
    assert.truthy(e2e.wait_for(function() return r.count_workers() == 4 end, 10))
    assert.truthy(e2e.wait_for(function()
      local s = status_json(r)
      return s.workers == 4 and #s.slots == 4 and s.ready
    end, 10))
    code, out = ctl(r, "scale 1")
    assert.equal(0, code)
    assert.equal("1 worker (was 4)\n", out)
    assert.truthy(e2e.wait_for(function() return r.count_workers() == 1 end, 10))
    local code0, _, err2 = ctl(r, "scale 0")
    assert.equal(1, code0)
    assert.matches("not a whole number", err2)
  end)

  it("refuses a second master on the same run directory; a stale pid file does not block a start", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    local run_dir = r.dir .. "/run"
    local r2 = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, ROUTEMQ_RUN_DIR = run_dir })
    assert.equal(1, r2.exit_code())
    local want = "routemq: a master is already running for " .. e2e.root .. "/" .. APP .. " (pid " .. r.pid
      .. ", run directory " .. run_dir .. ")"
    assert.truthy(e2e.read(r2.log):find(want, 1, true), e2e.read(r2.log))
    assert.is_true(e2e.alive(r.pid))

    -- A master that crashed leaves its pid file and socket behind.
    local worker = r.workers()[1]
    e2e.kill(r.pid, "KILL")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(r.pid) and not e2e.alive(worker) end, 10))
    assert.equal("socket", e2e.sh("test -S " .. run_dir .. "/control.sock && echo socket"):match("%a+"))
    local code, _, err = ctl(r, "status")
    assert.equal(2, code)
    assert.matches("no master running for .*Connection refused%)", err)
    e2e.write(run_dir .. "/routemq.pid", "1\n")  -- alive, but not a routemq master
    local r3 = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, ROUTEMQ_RUN_DIR = run_dir })
    assert.truthy(e2e.wait_for(function() return r3.ready(1) end, 15), e2e.read(r3.log))
    assert.equal(tostring(r3.pid), e2e.read(run_dir .. "/routemq.pid"):match("%d+"))
    assert.equal(0, (ctl(r, "status")))
  end)
end)

describe("the control socket", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("is 0600 in a 0700 directory, refuses other users and survives garbage", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 15), e2e.read(r.log))
    local run_dir = r.dir .. "/run"
    local sock = run_dir .. "/control.sock"
    assert.equal("600 socket", e2e.sh("stat -c '%a %F' " .. sock):match("^(%d+ %a+)"))
    assert.equal("700", e2e.sh("stat -c %a " .. run_dir):match("%d+"))
    assert.equal("600", e2e.sh("stat -c %a " .. run_dir .. "/routemq.pid"):match("%d+"))

    -- Another user cannot reach it through the file system...
    local as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
    local code, _, err = ctl(r, "status", APP, as_nobody)
    assert.equal(2, code, err)
    assert.matches("cannot reach the master .*Permission denied%)", err)
    -- ...and, should the modes be opened, the master itself refuses it.
    e2e.sh(string.format("chmod 0755 %s %s; chmod 0666 %s", r.dir, run_dir, sock))
    code, _, err = ctl(r, "stop", APP, as_nobody)
    e2e.sh(string.format("chmod 0700 %s %s; chmod 0600 %s", r.dir, run_dir, sock))
    assert.equal(1, code)
    assert.equal("routemq stop: permission denied\n", err)
    assert.is_true(e2e.alive(r.pid))
    assert.matches("refused a connection from another user", e2e.read(r.log))

    -- Garbage: random bytes, a 1 MB line, NUL bytes, silent connections.
    local silent = {}
    for i = 1, 5 do silent[i] = assert(unix_connect(sock)) end
    local junk = {}
    for i = 1, 65536 do junk[i] = string.char(math.random(0, 255)) end
    local replies = {}
    for _, payload in ipairs({ table.concat(junk), string.rep("x", 1024 * 1024), "\0\1\2status\n", "sta" }) do
      local fd = assert(unix_connect(sock))
      unix_send(fd, payload)
      local got = unix_read(fd, payload == "sta" and 3 or 1)
      replies[#replies + 1] = got
      ffi.C.close(fd)
    end
    assert.matches("^error ", replies[1])
    assert.equal("error request too long (at most 511 bytes)\n", replies[2])
    assert.matches("^error unknown request", replies[3])
    assert.equal("", replies[4])  -- half a request: dropped after the request deadline
    local t0 = e2e.now()
    local scode, out = ctl(r, "status")
    assert.equal(0, scode)
    assert.matches("master " .. r.pid, out, 1, true)
    assert.is_true(e2e.now() - t0 < 1, "status was slow while silent connections were open")
    -- The silent ones are closed by the master within its 2 s request deadline.
    for _, fd in ipairs(silent) do
      local data, closed = unix_read(fd, 4)
      assert.equal("", data)
      assert.is_true(closed)
      ffi.C.close(fd)
    end
    -- More connections than it serves at once: the extra ones are told so, and it recovers.
    local many = {}
    for i = 1, 20 do many[i] = assert(unix_connect(sock)) end
    local busy = unix_read(many[20], 1)
    assert.equal("error busy: too many control connections\n", busy)
    for _, fd in ipairs(many) do ffi.C.close(fd) end
    assert.equal(0, (ctl(r, "status")))
    assert.is_true(e2e.alive(r.pid))
  end)
end)

describe("admin HTTP", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("/ready is 503 until every slot is ready, while the broker is away and while stopping; /health 200", function()
    local dir = e2e.copy_app(APP)
    -- Loading takes a while, so the start is long enough to be seen.
    e2e.write(dir .. "/app/routers/zz_slow_load.lua",
      'local ffi = require("ffi")\nffi.cdef("int usleep(unsigned int);")\nffi.C.usleep(1000000)\n')
    local port = e2e.free_port()
    local r = e2e.routemq(broker, dir, "run", { E2E_SHARED_WORKERS = 2, ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    local codes = {}
    assert.truthy(e2e.wait_for(function()
      local c = http(port, "/ready")
      if c ~= 0 and codes[#codes] ~= c then codes[#codes + 1] = c end
      return c == 200
    end, 20, 0.02), e2e.read(r.log))
    assert.same({ 503, 200 }, codes)
    assert.equal(200, (http(port, "/health")))
    local _, body = http(port, "/ready")
    assert.equal("ready: 2 workers ready\n", body)

    broker.stop()
    assert.truthy(e2e.wait_for(function() return http(port, "/ready") == 503 end, 10))
    assert.equal(200, (http(port, "/health")))
    assert.matches("^not ready: worker %d is ", (select(2, http(port, "/ready"))))
    broker.start()
    assert.truthy(e2e.wait_for(function() return http(port, "/ready") == 200 end, 20), e2e.read(r.log))

    -- Stopping with a slow handler in flight: still alive, no longer ready.
    e2e.publish(broker.port, "slow", "3", "-q 1")
    assert.truthy(e2e.wait_for(function()
      local _, json = http(port, "/status")
      local s = cjson.decode(json)
      return s.slots[1].in_flight ~= cjson.null and s.slots[1].in_flight.route == "slow"
    end, 10))
    e2e.kill(r.pid, "TERM")
    local c, b = http(port, "/ready")
    assert.equal(503, c)
    assert.equal("not ready: stopping\n", b)
    assert.equal(200, (http(port, "/health")))
    assert.equal(404, (http(port, "/nope")))
    assert.truthy(e2e.wait_for(function() return not e2e.alive(r.pid) end, 10))
    assert.equal(0, r.exit_code())
  end)

  it("/metrics is valid Prometheus text counting what was published, across a worker restart and a reload",
    function()
      local dir = e2e.copy_app(APP)
      local router = dir .. "/app/routers/e2e.lua"
      local port = e2e.free_port()
      local r = e2e.routemq(broker, dir, "run", { E2E_SHARED_WORKERS = 3, ROUTEMQ_HTTP = ":" .. port,
        ROUTEMQ_POISON_ATTEMPTS = 1 })
      assert.truthy(e2e.wait_for(function() return http(port, "/ready") == 200 end, 15), e2e.read(r.log))
      local m = metrics(port)
      assert.equal(0, ok_count(m, "shared/{n}"))
      assert.equal(1, m:value("routemq_build_info", { version = e2e.sh(e2e.bin .. " version"):match("routemq (%S+)") }))
      assert.equal(3, m:value("routemq_workers", { state = "ready" }))
      for slot = 0, 2 do assert.equal(1, m:value("routemq_mqtt_connected", { slot = tostring(slot) })) end

      e2e.publish_lines(broker.port, "shared/1", seq(1, 250), 1)
      e2e.publish_lines(broker.port, "fail/1", seq(1, 3), 1)
      assert.truthy(e2e.wait_for(function()
        m = metrics(port)
        return ok_count(m, "shared/{n}") == 250 and m:value("routemq_messages_total",
          { route = "fail/{n}", result = "error" }) == 3
      end, 10))

      -- kill -9 a worker between two batches: the totals keep counting.
      e2e.kill(r.slots()[1].pid, "KILL")
      assert.truthy(e2e.wait_for(function()
        return metrics(port):value("routemq_worker_restarts_total", { reason = "signal" }) == 1
          and http(port, "/ready") == 200
      end, 10))
      e2e.publish_lines(broker.port, "shared/1", seq(251, 500), 1)
      assert.truthy(e2e.wait_for(function() return ok_count(metrics(port), "shared/{n}") == 500 end, 10))

      -- A reload that puts a route first re-indexes every route: counting goes by pattern.
      local src = e2e.read(router)
      e2e.write(router, (src:gsub('router%.on%("shared', 'router.on("extra/{n}", C.count, { qos = 1 })\n%0', 1)))
      assert.equal(0, (ctl(r, "reload", dir)))
      e2e.publish_lines(broker.port, "shared/1", seq(501, 600), 1)
      e2e.publish_lines(broker.port, "extra/1", seq(1, 5), 1)
      e2e.publish(broker.port, "crash/1", "poison", "-q 1")
      assert.truthy(e2e.wait_for(function()
        m = metrics(port)
        return ok_count(m, "shared/{n}") == 600 and ok_count(m, "extra/{n}") == 5 and
          m:value("routemq_messages_total", { route = "crash/{n}", result = "dead_lettered" }) == 1
      end, 15), (select(2, metrics(port))))
      -- Nothing more is counted: sentinels behind the messages, in every
      -- worker, are handled and counted (k of them on shared/{n}).
      local k = e2e.sentinels(broker.port, "shared/1", r.dir)
      assert.truthy(k, "the sentinels were not handled")
      assert.truthy(e2e.wait_for(function()
        m = metrics(port)
        return m:value("routemq_handler_duration_seconds_count", { route = "shared/{n}" }) == 600 + k
      end, 15), (select(2, metrics(port))))
      m = metrics(port)
      assert.equal(600 + k, ok_count(m, "shared/{n}"))
      assert.equal(3, m:value("routemq_messages_total", { route = "fail/{n}", result = "error" }))
      assert.equal(0, m:value("routemq_messages_total", { route = "fail/{n}", result = "ok" }))
      assert.equal(0, m:value("routemq_messages_total", { route = "", result = "unmatched" }))
      assert.equal(600 + k, m:value("routemq_handler_duration_seconds_count", { route = "shared/{n}" }))
      assert.equal(600 + k, m:value("routemq_handler_duration_seconds_bucket", { route = "shared/{n}", le = "+Inf" }))
      assert.is_true(m:value("routemq_handler_duration_seconds_sum", { route = "shared/{n}" }) > 0)
      assert.equal(1, m:value("routemq_reloads_total", { result = "ok" }))
      assert.equal(0, m:value("routemq_reloads_total", { result = "failed" }))
      assert.equal(2, m:value("routemq_worker_restarts_total", { reason = "signal" }))
      assert.equal("counter", m.families.routemq_messages_total.type)
      assert.equal("histogram", m.families.routemq_handler_duration_seconds.type)
      assert.equal("gauge", m.families.routemq_workers.type)

      -- /status is the JSON of `routemq status --json`.
      local code, body = http(port, "/status")
      assert.equal(200, code)
      local s = cjson.decode(body)
      assert.equal(r.pid, s.pid)
      assert.equal(3, #s.slots)
      -- The poison message never finished a handler; the k sentinels did.
      assert.equal(600 + 3 + 5 + k, s.totals.messages)
      local times, size = {}, 0
      for i = 1, 20 do
        local _, b, t = http(port, "/metrics")
        times[i], size = t, #b
      end
      table.sort(times)
      print(string.format("\n  /metrics scrape (%d bytes): median %.2f ms, max %.2f ms", size, times[11] * 1000,
        times[20] * 1000))
    end)

  it("refuses to start when ROUTEMQ_HTTP cannot be bound, naming the variable", function()
    local port = e2e.free_port()
    e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    assert.truthy(e2e.wait_for(function() return http(port, "/health") == 200 end, 15))
    local r2 = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    assert.equal(1, r2.exit_code())
    assert.matches("ROUTEMQ_HTTP: cannot listen on 127.0.0.1:" .. port .. ": Address already in use",
      e2e.read(r2.log))
  end)
end)

describe("the MQTT password", function()
  it("is absent from ps, /proc cmdline and environ of every process, the log, status and metrics", function()
    local secret = "S3cr3t-" .. tostring(math.random(100000, 999999))
    local dir = e2e.tmpdir()
    e2e.sh("mosquitto_passwd -b -c " .. dir .. "/passwd alice " .. secret .. " 2>&1; chmod 0755 " .. dir
      .. "; chmod 0644 " .. dir .. "/passwd")
    local b = e2e.broker({ password_file = dir .. "/passwd", user = "alice", pass = secret })
    e2e.defer(function() b.stop() end)
    -- The password reaches routemq through its environment only: the shell
    -- that starts it reads it from a file, so no command line carries it.
    e2e.write(dir .. "/pw", secret)
    e2e.write(dir .. "/wrap.sh", 'export MQTT_PASSWORD="$(cat ' .. dir .. '/pw)"\nexec ' .. e2e.bin .. ' "$@"\n')
    local port = e2e.free_port()
    local bin = e2e.bin
    e2e.bin = "sh " .. dir .. "/wrap.sh"
    local r = e2e.routemq(b, APP, "run", { E2E_SHARED_WORKERS = 2, MQTT_USERNAME = "alice",
      ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    e2e.bin = bin
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15), e2e.read(r.log))
    e2e.publish_lines(b.port, "single/1", seq(1, 5), 1, "-u alice -P " .. secret)
    assert.truthy(e2e.wait_for(function() return #e2e.records(r.dir) >= 5 end, 10))  -- it did log in

    local function clean(what, text)
      assert.is_nil(text:find(secret, 1, true), "the password shows in " .. what)
    end
    local pids = { r.pid }
    for _, pid in ipairs(r.workers()) do pids[#pids + 1] = pid end
    assert.equal(3, #pids)
    for _, pid in ipairs(pids) do
      clean("/proc/" .. pid .. "/cmdline", e2e.read("/proc/" .. pid .. "/cmdline"))
      clean("/proc/" .. pid .. "/environ", e2e.read("/proc/" .. pid .. "/environ"))
    end
    assert.matches("routemq: master", e2e.read("/proc/" .. r.pid .. "/cmdline"))
    clean("ps -ef", e2e.sh("ps -ef"))
    clean("ps eww", e2e.sh("ps eww -p " .. table.concat(pids, ",")))
    clean("routemq status", (select(2, ctl(r, "status"))))
    clean("routemq status --json", (select(2, ctl(r, "status --json"))))
    clean("/status", (select(2, http(port, "/status"))))
    clean("/metrics", (select(2, http(port, "/metrics"))))
    r.stop()
    clean("the log", e2e.read(r.log))
  end)
end)

describe("logs", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("LOG_FORMAT=json: one JSON object per line with ts, level, msg, worker, route, topic, error, traceback; "
    .. "handler errors rate-limited; nothing per message at info", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 1, LOG_FORMAT = "json" })
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("connected to", 1, true) end, 15))
    local lines_before = select(2, e2e.read(r.log):gsub("\n", ""))
    e2e.publish_lines(broker.port, "shared/1", seq(1, 300), 1)
    e2e.publish_lines(broker.port, "fail/7", seq(1, 25), 1)
    assert.truthy(e2e.wait_for(function() return #e2e.records(r.dir) >= 325 end, 10))
    -- The summary of what the rate limit dropped comes once its 10 s window is over.
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("were not logged", 1, true) end, 15))
    local entries = {}
    for line in e2e.read(r.log):gmatch("[^\n]+") do
      local ok, v = pcall(cjson.decode, line)
      assert.is_true(ok and type(v) == "table", "not a JSON line: " .. line)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", v.ts)
      assert.is_truthy(({ debug = 1, info = 1, warn = 1, error = 1 })[v.level], line)
      assert.is_string(v.msg)
      if v.process == "master" then assert.is_nil(v.worker) else assert.equal(0, v.worker) end
      entries[#entries + 1] = v
    end
    local errors, summary = {}, nil
    for _, v in ipairs(entries) do
      if v.msg == "handler error" then errors[#errors + 1] = v end
      if v.msg:find("were not logged", 1, true) then summary = v end
    end
    assert.equal(10, #errors)
    local e = errors[1]
    assert.equal("error", e.level)
    assert.equal("fail/{n}", e.route)
    assert.equal("fail/7", e.topic)
    assert.matches("boom on fail/7", e.error)
    assert.matches("stack traceback", e.traceback)
    assert.equal("15 handler errors were not logged (rate limit: 10 per 10 s)", summary.msg)
    assert.equal("warn", summary.level)
    -- 325 messages: the 10 error lines and the summary, nothing per message.
    local lines_after = select(2, e2e.read(r.log):gsub("\n", ""))
    assert.is_true(lines_after - lines_before <= 12, (lines_after - lines_before) .. " lines for 325 messages")
  end)

  it("LOG_LEVEL=warn drops info lines and keeps warnings, tagged with their process", function()
    local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 2, LOG_LEVEL = "warn" })
    -- Both workers are up and subscribed (at warn, no "connected to" line says so).
    assert.truthy(e2e.wait_for(function()
      local st = e2e.status(r, APP)
      return st and #st.slots == 2 and st.slots[1].state == "ready" and st.slots[2].state == "ready"
    end, 15))
    e2e.kill(r.slots()[1].pid, "KILL")
    assert.truthy(e2e.wait_for(function() return e2e.read(r.log):find("exited: signal 9", 1, true) end, 10))
    local log = e2e.read(r.log)
    assert.is_nil(log:find(" info  ", 1, true), log)
    assert.matches("Z warn  %[master%] worker 1 %(pid %d+%) exited: signal 9 %(SIGKILL%); restarting", log)
  end)
end)

describe("systemd notify", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("sends READY=1 when every slot is ready, RELOADING=1/READY=1 around a reload, STOPPING=1, WATCHDOG=1",
    function()
      local dir = e2e.tmpdir()
      local path = dir .. "/notify.sock"
      local fd = ffi.C.socket(AF_UNIX, SOCK_DGRAM + SOCK_NONBLOCK, 0)
      local a = unix_addr(path)
      assert.equal(0, ffi.C.bind(fd, a, ffi.sizeof(a)))
      e2e.defer(function() ffi.C.close(fd) end)
      local got = {}
      local buf = ffi.new("char[4096]")
      local function drain()
        while true do
          local n = tonumber(ffi.C.recv(fd, buf, 4096, MSG_DONTWAIT))
          if n <= 0 then return end
          got[#got + 1] = ffi.string(buf, n)
        end
      end
      local function index_of(pattern, from)
        for i = from or 1, #got do if got[i]:find(pattern) then return i end end
      end

      local r = e2e.routemq(broker, APP, "run", { E2E_SHARED_WORKERS = 3, NOTIFY_SOCKET = path,
        WATCHDOG_USEC = 200000 })
      assert.truthy(e2e.wait_for(function() drain(); return index_of("READY=1") end, 15), e2e.read(r.log))
      local ready = index_of("READY=1")
      assert.matches("STATUS=3 workers ready", got[ready])
      assert.equal(3, select(2, e2e.read(r.log):gsub("connected to", "")))
      for i = 1, ready - 1 do assert.equal("WATCHDOG=1", got[i]) end

      -- The socket queues a few datagrams only, and the master's send waits
      -- on a full queue: read them as they come, also during the commands.
      local function command(cmd)
        local _, rcfile = e2e.spawn(string.format("env ROUTEMQ_RUN_DIR=%s %s %s --app %s", r.dir .. "/run", e2e.bin,
          cmd, APP), dir .. "/" .. cmd .. ".log")
        assert.truthy(e2e.wait_for(function() drain(); return e2e.read(rcfile) ~= "" end, 60), e2e.read(r.log))
        return tonumber(e2e.read(rcfile):match("%d+")), e2e.read(dir .. "/" .. cmd .. ".log")
      end
      assert.equal(0, (command("reload")))
      assert.truthy(e2e.wait_for(function() drain(); return index_of("READY=1", ready + 1) end, 10))
      local reloading = index_of("RELOADING=1", ready + 1)
      assert.truthy(reloading)
      assert.matches("MONOTONIC_USEC=%d+", got[reloading])
      assert.is_true(index_of("READY=1", ready + 1) > reloading)

      local function count(msg)
        local c = 0
        for _, m in ipairs(got) do if m == msg then c = c + 1 end end
        return c
      end
      assert.truthy(e2e.wait_for(function() drain(); return count("WATCHDOG=1") >= 10 end, 30))
      local code, out = command("stop")
      assert.equal(0, code, out)
      drain()
      assert.truthy(index_of("STOPPING=1", reloading))
      local watchdogs = 0
      for _, m in ipairs(got) do if m == "WATCHDOG=1" then watchdogs = watchdogs + 1 end end
      assert.is_true(watchdogs >= 10, watchdogs .. " WATCHDOG=1 (WATCHDOG_USEC 200 ms: every 100 ms)")
    end)
end)

describe("the prom helper", function()
  it("rejects what a scraper would: samples before TYPE, bad escapes, counters without _total, "
    .. "non-cumulative buckets, +Inf not equal to _count", function()
    local function bad(text, why)
      local r, err = prom.parse(text)
      assert.is_nil(r, "accepted: " .. text)
      assert.matches(why, err)
    end
    bad("x_total 1\n", "before its # TYPE")
    bad("# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"\\q\"} 1\n", "bad escape")
    bad("# HELP x h\n# TYPE x counter\nx 1\n", "not named %*_total")
    bad("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
      "not cumulative")
    bad("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 3\n",
      "~= _count")
    bad("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n", "not %+Inf")
    bad("# HELP g h\n# TYPE g gauge\ng{1a=\"x\"} 1\n", "bad label name")
    bad("# HELP g h\n# TYPE g gauge\ng 1\ng 2\n", "twice")
    local ok = assert(prom.parse("# HELP g h\n# TYPE g gauge\ng{a=\"q\\\"\\\\\\n\"} 1.5\n"))
    assert.equal(1.5, ok:value("g", { a = "q\"\\\n" }))
  end)
end)
