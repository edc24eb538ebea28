-- Handlers that wait (docs/guide.md, "Handlers that wait"): routemq.runner and the concurrent dispatcher.
local cqueues = require("cqueues")
local runner_mod = require("routemq.runner")
local helper = require("spec.helpers.dispatch")

local route = helper.route

-- A dispatcher over `routes` whose io records what happens (spec/helpers/
-- dispatch.lua); rec.d.call records the outcome d.call returns for a
-- handler that did not wait, as the worker's C side does.
local function setup(routes, middleware)
  local rec = helper.setup(routes, { middleware = middleware })
  rec.d = setmetatable({ call = rec.call_direct }, { __index = rec.d })
  return rec
end

describe("routemq.runner", function()
  it("finishes a handler that does not wait inside start, reusing coroutines", function()
    local r = runner_mod.new()
    local seen = {}
    local cos = {}
    local function done(token, ok, err) seen[#seen + 1] = { token, ok, err } end
    for i = 1, 3 do
      assert.is_true(r:start(function(x)
        cos[coroutine.running()] = true
        assert(x == "arg")
      end, "arg", 1, done, i))
    end
    assert.same({ { 1, true }, { 2, true }, { 3, true } }, seen)
    local n = 0
    for _ in pairs(cos) do n = n + 1 end
    assert.equal(1, n)
    assert.equal(0, r.active)
  end)

  it("reports an error with its message and traceback, and goes on", function()
    local r = runner_mod.new()
    local out
    r:start(function() error("boom") end, nil, 1, function(_, ok, err, tb)
      out = { ok, err, tb }
    end)
    assert.is_false(out[1])
    assert.matches("^spec/wait_spec%.lua:%d+: boom$", out[2])
    assert.matches("^stack traceback:", out[3])
  end)

  it("wakes a job waiting on a condition that the next job signals before the controller steps", function()
    local condition = require("cqueues.condition")
    local r = runner_mod.new()
    local cond = condition.new()
    local outcome
    r:start(function() assert(cond:wait(0.5), "signal missed") end, nil, 1, function(_, ok, err)
      outcome = { ok, err }
    end)
    assert.is_true(r:start(function() cond:signal() end, nil, 1, function() end))
    assert.is_true(r:run_until(function() return outcome ~= nil end, 5))
    assert.same({ true }, outcome)
  end)

  it("lets many waiting jobs overlap", function()
    local r = runner_mod.new()
    local finished = 0
    local t0 = cqueues.monotime()
    for _ = 1, 200 do
      assert.is_false(r:start(function() cqueues.sleep(0.05) end, nil, 5, function(_, ok)
        assert(ok)
        finished = finished + 1
      end))
    end
    assert.equal(200, r.active)
    assert.is_true(r:run_until(function() return finished == 200 end, 5))
    assert.is_true(cqueues.monotime() - t0 < 2) -- 200 x 50 ms one after the other is 10 s
    assert.equal(0, r.active)
  end)

  it("cancels a job still waiting at its deadline", function()
    local r = runner_mod.new()
    local out
    local after = false
    r:start(function()
      cqueues.sleep(60)
      after = true
    end, nil, 0.2, function(_, ok, err, tb) out = { ok, err, tb } end)
    assert.is_true(r:run_until(function() return out ~= nil end, 5))
    assert.same({ false, "timeout after 0.2 s" }, { out[1], out[2] })
    assert.is_false(after)
    assert.equal(0, r.active)
  end)

  it("resumes a job that polls with nothing at once (a bare cqueues.poll)", function()
    local r = runner_mod.new()
    local out
    local t0 = cqueues.monotime()
    r:start(function()
      for _ = 1, 3 do
        cqueues.poll()
      end
    end, nil, 5, function(_, ok) out = ok end)
    assert.is_true(r:run_until(function() return out ~= nil end, 5))
    assert.is_true(out)
    assert.is_true(cqueues.monotime() - t0 < 1)
  end)

  it("counts a wait from when the job asked, not from the controller's next step", function()
    local r = runner_mod.new()
    local got
    assert.is_false(r:start(function() got = { cqueues.poll(0.05) } end, nil, 5, function() end))
    -- The controller is busy for longer than the wait before it steps (a
    -- step that ends hundreds of other jobs): the wait is over by then.
    local busy_until = cqueues.monotime() + 0.06
    repeat until cqueues.monotime() >= busy_until
    assert(r:step(0))
    assert(r:step(0))
    -- ... and the job sees the timeout it asked for.
    assert.same({ 0.05 }, got)
  end)

  it("leaves a NaN timeout of a wait as cqueues reads it: no timeout", function()
    local condition = require("cqueues.condition")
    local r = runner_mod.new()
    local cond = condition.new()
    local got
    assert.is_false(r:start(function() got = { cqueues.poll(cond, 0 / 0) } end, nil, 5, function() end))
    local busy_until = cqueues.monotime() + 0.02
    repeat until cqueues.monotime() >= busy_until
    assert(r:step(0))
    assert(r:step(0))
    assert.is_nil(got) -- shortened to 0, it would have woken here
    cond:signal()
    assert.is_true(r:run_until(function() return got ~= nil end, 5))
    assert.equal(cond, got[1])
  end)

  it("refuses a plain coroutine.yield in a handler", function()
    local r = runner_mod.new()
    local out
    r:start(function() coroutine.yield("x") end, nil, 1, function(_, ok, err)
      out = { ok, err }
    end)
    assert.same({ false, "a handler yielded outside cqueues (use cqueues to wait)" }, out)
  end)
end)

describe("concurrent dispatch", function()
  it("keeps one ctx per message through middleware and log lines", function()
    local mw = function(ctx, next)
      ctx.seen_by_mw = ctx.topic
      cqueues.sleep(0.05 * tonumber(ctx.params.n))
      return next()
    end
    local rec = setup({ route("m/{n}", function(ctx)
      cqueues.sleep(0.01)
      ctx.log.info("handling ", ctx.topic, " mw saw ", ctx.seen_by_mw)
      ctx:publish("out/" .. ctx.params.n, "x")
    end) }, { mw })
    for i = 5, 1, -1 do
      local index, params = rec.d.match("m/" .. i)
      rec.d.call(index, "m/" .. i, "", 1, false, false, nil, false, params, "token" .. i)
    end
    assert.equal(5, rec.d.in_progress())
    assert.is_true(rec.wait(5))
    assert.equal(0, rec.d.in_progress())
    for _, line in ipairs(rec.logs) do
      assert.equal("handling " .. line.topic .. " mw saw " .. line.topic, line.msg)
    end
    assert.equal(5, #rec.logs)
    for _, p in ipairs(rec.published) do
      assert.equal("token" .. p.topic:match("%d+"), p.token)
    end
    -- shorter waits finish first: the messages really overlapped
    assert.equal("token1", rec.done[1].token)
    assert.equal("token5", rec.done[5].token)
  end)

  it("handles one topic at a time, in arrival order, on an ordered route", function()
    local order = {}
    local function handler(ctx)
      cqueues.sleep(math.random() * 0.005)
      order[#order + 1] = ctx.topic .. "#" .. ctx.payload
    end
    local function run(ordered)
      order = {}
      local rec = setup({ route("o/{t}", handler, { ordered = ordered }) })
      for i = 1, 20 do
        for t = 1, 5 do
          local topic = "o/" .. t
          local index, params = rec.d.match(topic)
          rec.d.call(index, topic, tostring(i), 1, false, false, nil, false, params, i)
        end
      end
      assert.is_true(rec.wait(100))
      local last, reordered = {}, false
      for _, item in ipairs(order) do
        local topic, n = item:match("^(.-)#(%d+)$")
        n = tonumber(n)
        if last[topic] and n < last[topic] then
          reordered = true
        end
        last[topic] = n
      end
      return reordered, #order
    end
    math.randomseed(7)
    local reordered, n = run(true)
    assert.equal(100, n)
    assert.is_false(reordered)
    reordered, n = run(false)
    assert.equal(100, n)
    assert.is_true(reordered)
  end)

  it("reports a waiting handler's timeout as its error and goes on", function()
    local rec = setup({ route("slow", function() cqueues.sleep(60) end, { timeout = 0.2 }),
      route("fast", function(ctx) ctx:publish("ok", "1") end) })
    rec.d.call(1, "slow", "", 1, false, false, nil, false, {}, "s")
    rec.d.call(2, "fast", "", 1, false, false, nil, false, {}, "f")
    assert.is_true(rec.wait(2))
    assert.same({ token = "f", ok = true, path = "fast" }, rec.done[1])
    assert.same({ token = "s", ok = false, err = "timeout after 0.2 s", reason = "timeout",
      path = "slow" }, rec.done[2])
  end)
end)

describe("stepping the controller (routemq.worker)", function()
  it("runs in one step() what a step made ready: a job woken by another's signal", function()
    local cond = require("cqueues.condition").new()
    local done = {}
    local io = {
      publish = function() return true end,
      log = function() end,
      done = function(token, ok, err) done[#done + 1] = { token = token, ok = ok, err = err } end,
      outgoing_fd = function() return -1 end,
    }
    local app = { routes = {
      route("waits", function() assert(cond:wait(5), "not signalled") end),
      route("signals", function()
        cqueues.poll() -- let the others run first
        cond:signal()
      end),
    } }
    local g = require("routemq.worker").new(app, io, 0)
    assert.is_false((g.call(1, "waits", "", 1, false, false, nil, false, {}, "w")))
    assert.is_false((g.call(2, "signals", "", 1, false, false, nil, false, {}, "s")))
    -- Step 1 takes both waits, step 2 resumes "signals", whose signal makes
    -- "waits" ready for step 3: one call of step() runs all three.
    assert.is_true((g.step()))
    assert.same({ { token = "s", ok = true }, { token = "w", ok = true } }, done)
  end)
end)

describe("publishing at the outgoing bound (routemq.worker)", function()
  local ffi = require("ffi")
  ffi.cdef [[
    int eventfd(unsigned int initval, int flags);
    long write(int fd, const void *buf, unsigned long n);
    int close(int fd);
  ]]

  it("waits on the controller until below the bound, and publishes anyway where it cannot wait", function()
    local fd = ffi.C.eventfd(0, 0x80800) -- not readable: over the bound
    local over, sent, done = true, {}, {}
    local io = {
      publish = function(_, payload, _, _, _, _, nowait)
        if over and not nowait then
          return false
        end
        sent[#sent + 1] = { payload = payload, nowait = nowait or false }
        return true
      end,
      log = function() end,
      done = function(token, ok, err)
        done[#done + 1] = { token = token, ok = ok, err = err }
      end,
      outgoing_fd = function() return fd end,
    }
    local app = { routes = {
      route("w", function(ctx) ctx:publish("o", "waited") end),
      route("c", function(ctx)
        (" "):gsub(" ", function() ctx:publish("o", "inside gsub") end)
      end),
    } }
    local g = require("routemq.worker").new(app, io, 0)
    -- A yield across string.gsub's C call is impossible: no wait.
    assert.is_true((g.call(2, "c", "", 1, false, false, nil, false, {}, "c")))
    assert.same({ { payload = "inside gsub", nowait = true } }, sent)
    -- Outside any coroutine: no wait either.
    assert.is_false(io.wait_outgoing())
    -- A handler waits, and the worker goes on stepping.
    assert.is_false((g.call(1, "w", "", 1, false, false, nil, false, {}, "w")))
    for _ = 1, 10 do assert.is_true((g.step())) end
    assert.equal(1, #sent)
    assert.same({}, done)
    over = false
    ffi.C.write(fd, ffi.new("uint64_t[1]", 1), 8)
    for _ = 1, 10 do
      g.step()
      if #done > 0 then break end
    end
    assert.same({ token = "w", ok = true }, done[1])
    assert.same({ payload = "waited", nowait = false }, sent[2])
    ffi.C.close(fd)
  end)
end)
