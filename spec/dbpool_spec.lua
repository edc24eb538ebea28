-- routemq.dbpool: the pool routemq.pg and routemq.mysql share, over a driver
-- whose connections are plain tables (the drivers' own specs, spec/e2e/pg*
-- and mysql, run it against real servers).
local cqueues = require("cqueues")
local dbpool = require("routemq.dbpool")
local runner_mod = require("routemq.runner")
local sys = require("spec.helpers.sys")

-- A driver that counts what it opens and closes; connect waits one step.
local function driver()
  local d = { opened = 0, closed = 0, fail = false }
  d.name = "fake"
  d.error = function(fields) return fields end
  d.log = function() end
  d.clean = function() return true end
  d.reap = function() end
  d.drop = function() end
  local Conn = {}
  Conn.__index = Conn
  function Conn:ok() return not self.closed end
  function Conn.idle_alive() return true end
  function Conn:close()
    self.closed = true
    d.closed = d.closed + 1
  end
  d.connect = function()
    cqueues.sleep(0)
    if d.fail then
      return nil, { message = "refused" }
    end
    d.opened = d.opened + 1
    return setmetatable({ id = d.opened }, Conn)
  end
  return d
end

local function pool(d, opts)
  local _, P = dbpool.class(d)
  return P, P.new(opts or { size = 1 }, {})
end

describe("routemq.dbpool", function()
  it("does not use its parent's connections in a forked child, idle or given back", function()
    local r = runner_mod.new()
    local d = driver()
    local P, db = pool(d, { size = 2 })
    local held, idle
    r:start(function()
      held = assert(P.acquire(db))
      idle = assert(P.acquire(db))
      P.give(db, idle)
    end, nil, 5, function() end)
    assert.is_true(r:run_until(function() return idle ~= nil end, 5))
    assert.same({ open = 2, idle = 1, waiting = 0 }, db:stats())
    -- The child: status 0 when it opened its own and closed the parent's.
    local status = sys.in_child(function()
      local got
      r:start(function()
        got = assert(P.acquire(db))
        P.give(db, held) -- checked out before the fork
      end, nil, 5, function() end)
      if not r:run_until(function() return got ~= nil end, 5) then
        return 1
      end
      if got == idle or got.id ~= 3 then
        return 2
      end
      if not held.closed or db:stats().open ~= 1 then
        return 3
      end
      return 0
    end)
    assert.equal(0, status, "the child's status (1: no connection, 2: the parent's idle one, 3: kept the parent's)")
    -- The parent's pool is as it was.
    local again
    r:start(function() again = assert(P.acquire(db)) end, nil, 5, function() end)
    assert.is_true(r:run_until(function() return again ~= nil end, 5))
    assert.equal(idle, again)
  end)

  it("serves waiting callers first come, first served: one that gives back and asks again queues behind them",
    function()
      local r = runner_mod.new()
      local P, db = pool(driver())
      local order, finished = {}, 0
      local function job(name, rounds)
        return function()
          for _ = 1, rounds do
            local conn = assert(P.acquire(db))
            order[#order + 1] = name
            cqueues.sleep(0.001)
            P.give(db, conn)
          end
        end
      end
      local function done(_, ok, err)
        assert(ok, err)
        finished = finished + 1
      end
      r:start(job("a", 3), nil, 5, done)
      r:start(job("b", 1), nil, 5, done)
      r:start(job("c", 1), nil, 5, done)
      assert.is_true(r:run_until(function() return finished == 3 end, 5))
      -- With a wake-everyone condition, "a" took the connection back at once
      -- (a, a, a, b, c); handed over in line, it waits its turn.
      assert.same({ "a", "b", "c", "a", "a" }, order)
      assert.same({ open = 1, idle = 1, waiting = 0 }, db:stats())
    end)

  it("hands a connection to a job whose first wait the controller has not taken yet", function()
    local r = runner_mod.new()
    local P, db = pool(driver())
    local conn
    r:start(function() conn = assert(P.acquire(db)) end, nil, 5, function() end)
    assert.is_true(r:run_until(function() return conn ~= nil end, 5))
    local outcome
    -- Its first slice runs inside start: it gets in line, and its poll is
    -- taken by the controller at the next step, after this give.
    r:start(function()
      local c = assert(P.acquire(db))
      P.give(db, c)
    end, nil, 1, function(_, ok, err) outcome = { ok, err } end)
    P.give(db, conn)
    assert.is_true(r:run_until(function() return outcome ~= nil end, 5))
    assert.same({ true }, outcome)
  end)

  it("passes a connection on when a caller waiting in line is dropped at its deadline", function()
    local r = runner_mod.new()
    local d = driver()
    local P, db = pool(d)
    local outcomes = {}
    local holder_done = false
    r:start(function()
      local conn = assert(P.acquire(db))
      cqueues.sleep(0.2)
      P.give(db, conn)
    end, nil, 5, function(_, ok) holder_done = ok end)
    -- Dropped at 0.05 s while in line.
    r:start(function() P.acquire(db) end, nil, 0.05, function(_, ok, err) outcomes.dropped = { ok, err } end)
    r:start(function()
      local conn = assert(P.acquire(db))
      P.give(db, conn)
    end, nil, 5, function(_, ok, err) outcomes.served = { ok, err } end)
    assert.is_true(r:run_until(function() return holder_done and outcomes.served ~= nil end, 5))
    assert.same({ false, "timeout after 0.05 s" }, outcomes.dropped)
    assert.same({ true }, outcomes.served)
    assert.same({ open = 1, idle = 1, waiting = 0 }, db:stats())
    assert.equal(1, d.opened)
  end)

  it("bounds the wait in line with acquire_timeout and leaves the line clean", function()
    local r = runner_mod.new()
    local P, db = pool(driver(), { size = 1, acquire_timeout = 0.05 })
    local got, finished = {}, 0
    r:start(function()
      local conn = assert(P.acquire(db))
      cqueues.sleep(0.2)
      P.give(db, conn)
    end, nil, 5, function() finished = finished + 1 end)
    r:start(function()
      got = { P.acquire(db) }
    end, nil, 5, function() finished = finished + 1 end)
    assert.is_true(r:run_until(function() return finished == 2 end, 5))
    assert.is_nil(got[1])
    assert.equal("no connection free in the pool (size 1) after 0.05 s", got[2].message)
    assert.same({ open = 1, idle = 1, waiting = 0 }, db:stats())
  end)

  it("lets a waiter open a connection in the place of a broken one; a failed open passes the place on", function()
    local r = runner_mod.new()
    local d = driver()
    local P, db = pool(d)
    local results, finished = {}, 0
    local function done() finished = finished + 1 end
    r:start(function()
      local conn = assert(P.acquire(db))
      cqueues.sleep(0.01)
      conn:close() -- broken: the pool does not keep it
      d.fail = true -- and the server refuses the next two connects
      P.give(db, conn)
    end, nil, 5, done)
    for i = 1, 2 do
      r:start(function()
        local conn, err = P.acquire(db)
        results[i] = conn and conn.id or err.message
        if i == 2 then
          d.fail = false
        end
      end, nil, 5, done)
    end
    assert.is_true(r:run_until(function() return finished == 3 end, 5))
    assert.same({ "refused", "refused" }, results)
    assert.same({ open = 0, idle = 0, waiting = 0 }, db:stats())
    r:start(function()
      local conn = assert(P.acquire(db))
      results[3] = conn.id
      P.give(db, conn)
    end, nil, 5, done)
    assert.is_true(r:run_until(function() return finished == 4 end, 5))
    assert.equal(2, results[3])
    assert.same({ open = 1, idle = 1, waiting = 0 }, db:stats())
  end)
end)
