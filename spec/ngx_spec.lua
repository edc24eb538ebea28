-- routemq.ngx: OpenResty's cosocket API on cqueues, checked against a local
-- TCP server written in the spec and against a real redis-server driven by
-- Debian's lua-resty-redis (nginx.redis), unchanged.
local e2e = require("spec.helpers.e2e")
local cqueues = require("cqueues")
local csocket = require("cqueues.socket")
local ngx_mod = require("routemq.ngx")
local runner_mod = require("routemq.runner")

local ngx = ngx_mod.ngx

-- Runs fn() as a job on a fresh runner until it ends; returns its outcome.
local function run(fn, limit, r)
  r = r or runner_mod.new()
  local out
  r:start(fn, nil, limit or 5, function(_, ok, err, tb) out = { ok = ok, err = err, tb = tb } end)
  r:run_until(function() return out ~= nil end, (limit or 5) + 1)
  assert(out, "job did not finish")
  assert(out.ok, tostring(out.err) .. "\n" .. tostring(out.tb))
  return out
end

-- A server on the runner's controller: each connection gets serve(sock).
local function server(r, serve)
  local srv = csocket.listen({ host = "127.0.0.1", port = 0 })
  srv:listen()
  local _, _, port = srv:localname()
  r.cq:wrap(function()
    for client in srv:clients() do
      r.cq:wrap(function()
        client:setmode("b", "b")
        serve(client)
        client:close()
      end)
    end
  end)
  return port, srv
end

describe("routemq.ngx", function()
  it("installs the global ngx with the constants clients use", function()
    assert.equal(ngx, _G.ngx)
    assert.equal(require("cjson").null, ngx.null)
    assert.equal(4, ngx.ERR)
    assert.equal(8, ngx.DEBUG)
    assert.is_true(math.abs(ngx.now() - os.time()) < 2)
  end)

  it("sends strings and nested tables, receives lines, counts and everything", function()
    local r = runner_mod.new()
    local port = server(r, function(c)
      local line = c:xread("*l", "b")
      c:xwrite("got " .. line .. "\r\nplain\nABCDEFpre--BOUNDpost--BOUND", "bn")
      c:xwrite("tail and more", "bn")
    end)
    run(function()
      local sock = ngx.socket.tcp()
      sock:settimeout(2000)
      assert(sock:connect("127.0.0.1", port))
      assert.equal(11, sock:send({ "he", { "llo", 1 }, true, "\n" }))
      assert.equal("got hello1true", sock:receive())
      assert.equal("plain", sock:receive("*l"))
      assert.equal("ABC", sock:receive(3))
      assert.equal("DEF", sock:receive(3))
      local until_bound = sock:receiveuntil("--BOUND")
      assert.equal("pre", until_bound())
      assert.equal("post", until_bound())
      assert.equal("tail and more", sock:receive("*a"))
      assert.equal(1, sock:close())
      assert.same({ nil, "closed" }, { sock:close() })
    end, 5, r)
  end)

  it("reads receiveuntil in chunks of a given size", function()
    local r = runner_mod.new()
    local port = server(r, function(c)
      c:xwrite("0123456789abc--X--rest", "bn")
    end)
    run(function()
      local sock = ngx.socket.tcp()
      assert(sock:connect("127.0.0.1", port))
      local it = sock:receiveuntil("--X--")
      local parts = {}
      while true do
        local data, err = it(4)
        assert.is_nil(err)
        if not data then break end
        parts[#parts + 1] = data
      end
      assert.equal("0123456789abc", table.concat(parts))
      assert.equal("rest", sock:receive("*a"))
    end, 5, r)
  end)

  it("reports timeouts and a closed peer as OpenResty does", function()
    local r = runner_mod.new()
    local port = server(r, function(c)
      c:xwrite("partial", "bn")
      cqueues.sleep(0.3)
    end)
    run(function()
      local sock = ngx.socket.tcp()
      sock:settimeout(100)
      assert(sock:connect("127.0.0.1", port))
      local t0 = cqueues.monotime()
      assert.same({ nil, "timeout", "" }, { sock:receive(100) })
      assert.is_true(cqueues.monotime() - t0 < 0.25)
      sock:settimeout(2000)
      assert.same({ nil, "closed", "partial" }, { sock:receive() })
      local refused = ngx.socket.tcp()
      local ok, err = refused:connect("127.0.0.1", e2e.free_port())
      assert.is_nil(ok)
      assert.matches("^connect failed: ", err)
    end, 5, r)
  end)

  it("sleeps without blocking other jobs and logs to the sink", function()
    local r = runner_mod.new()
    local lines = {}
    local old = ngx_mod.sink
    ngx_mod.sink = function(level, msg) lines[#lines + 1] = level .. " " .. msg end
    local finished = 0
    local t0 = cqueues.monotime()
    for i = 1, 50 do
      r:start(function()
        ngx.sleep(0.1)
        if i == 1 then ngx.log(ngx.ERR, "slept ", 0.1, " s ", ngx.null) end
      end, nil, 5, function(_, ok) assert(ok); finished = finished + 1 end)
    end
    r:run_until(function() return finished == 50 end, 5)
    ngx_mod.sink = old
    assert.equal(50, finished)
    assert.is_true(cqueues.monotime() - t0 < 1)
    assert.same({ "error slept 0.1 s null" }, lines)
  end)

  describe("with lua-resty-redis against redis-server", function()
    local function start_redis()
      local port = e2e.free_port()
      local dir = e2e.tmpdir()
      local pid = e2e.spawn("redis-server --bind 127.0.0.1 --port " .. port
        .. " --save '' --appendonly no --dir " .. dir, dir .. "/redis.log")
      e2e.defer(function() e2e.kill(pid, "KILL") end)
      assert(e2e.wait_for(function()
        local s = csocket.connect({ host = "127.0.0.1", port = port })
        local ok = pcall(s.connect, s, 0.2)
        s:close()
        return ok
      end, 5), "redis-server did not start")
      return port
    end

    it("runs unchanged, pools connections and counts exactly under concurrency", function()
      local port = start_redis()
      local redis = require("nginx.redis")
      local r = runner_mod.new()
      local finished, failed = 0, {}
      for _ = 1, 300 do
        r:start(function()
          local red = redis:new()
          red:set_timeout(2000)
          assert(red:connect("127.0.0.1", port))
          assert(red:incr("counter"))
          assert.equal(ngx.null, red:get("missing"))
          assert(red:set_keepalive(10000, 20))
        end, nil, 10, function(_, ok, err)
          finished = finished + 1
          if not ok then failed[#failed + 1] = err end
        end)
      end
      assert.is_true(r:run_until(function() return finished == 300 end, 15))
      assert.same({}, failed)
      assert.equal(20, ngx_mod.pool_size("127.0.0.1:" .. port))
      run(function()
        local red = redis:new()
        assert(red:connect("127.0.0.1", port))
        assert.is_true(red:get_reused_times() >= 1) -- from the pool
        assert.equal("300", red:get("counter"))
        assert(red:set("bin", "a\r\nb\0c"))
        assert.equal("a\r\nb\0c", red:get("bin"))
        red:init_pipeline()
        red:incr("p")
        red:incr("p")
        assert.same({ 1, 2 }, red:commit_pipeline())
        red:close()
      end, 5, r)
    end)
  end)
end)
