-- Failed attempts (docs/delivery.md, "Retries"): what routemq.dispatch reports to the runtime
-- for an error, a timeout, ctx:fail and ctx:retry, on the fast path (the
-- handler coroutine yields "fail", ...) and the slow path (io.done), with
-- the on_error hooks and ordered routes holding their topic.
local cqueues = require("cqueues")
local retry = require("routemq.retry")
local helper = require("spec.helpers.dispatch")

-- rec.call(...) runs a message as runtime/worker_coro.c's run_in_thread does (spec/helpers/dispatch.lua).
local setup, route = helper.setup, helper.route

-- The 12 arguments of a message on route 1.
local function msg(topic, token, attempt, replayed)
  return 1, topic, "p", 1, false, false, nil, false, {}, token, attempt, replayed
end

local NO_JITTER = { attempts = 3, delay = 1, backoff = 2, max_delay = 300, jitter = 0 }

describe("dispatch of failed attempts", function()
  it("gives ctx.attempt and ctx.replayed, attempt 1 when the runtime passes none", function()
    local seen = {}
    local rec = setup({ route("t", function(ctx)
      seen[#seen + 1] = { ctx.attempt, ctx.replayed }
    end) })
    rec.call(1, "t", "", 0, false, false, nil, false, {}, 1) -- 10 arguments
    rec.call(msg("t", 2, 3, true))
    assert.same({ { 1, false }, { 3, true } }, seen)
    assert.same({ true, true }, { rec.done[1].ok, rec.done[2].ok })
  end)

  it("fast path: an error yields fail with the backoff delay, final at the last attempt", function()
    local rec = setup({ route("t", function() error("db down") end, { retry = NO_JITTER }) })
    for attempt = 1, 3 do
      rec.call(msg("t", attempt, attempt))
    end
    assert.equal(3, #rec.done)
    for i, want in ipairs({ 1, 2 }) do
      local out = rec.done[i]
      assert.equal("fast", out.path)
      assert.is_false(out.ok)
      assert.matches("^spec/retry_spec%.lua:%d+: db down$", out.err)
      assert.matches("^stack traceback:\n", out.tb)
      assert.equal("error", out.reason)
      assert.equal(want, out.delay)
    end
    assert.equal("error", rec.done[3].reason)
    assert.is_nil(rec.done[3].delay)
  end)

  it("takes the defaults from io.retry, then the built-in ones (1 attempt)", function()
    local h = function() error("x") end
    local rec = setup({ route("t", h) })
    rec.call(msg("t", 1, 1))
    assert.is_nil(rec.done[1].delay)
    rec = setup({ route("t", h, { retry = { jitter = 0 } }) },
      { retry = { attempts = 2, delay = 7, backoff = 2, max_delay = 300 } })
    rec.call(msg("t", 1, 1))
    assert.equal(7, rec.done[1].delay)
    -- the route overrides io.retry field by field
    rec = setup({ route("t", h, { retry = { jitter = 0, delay = 3 } }) },
      { retry = { attempts = 2, delay = 7, backoff = 2, max_delay = 300 } })
    rec.call(msg("t", 1, 1))
    assert.equal(3, rec.done[1].delay)
  end)

  it("computes min(max_delay, delay * backoff^(attempt-1)) within the jitter", function()
    local p = retry.policy({ delay = 2, backoff = 3, max_delay = 50, jitter = 0.2 }, nil)
    for _ = 1, 200 do
      local d1, d3, d9 = retry.backoff(p, 1), retry.backoff(p, 3), retry.backoff(p, 9)
      assert.is_true(d1 >= 1.6 and d1 <= 2.4, d1)
      assert.is_true(d3 >= 14.4 and d3 <= 21.6, d3)
      assert.is_true(d9 >= 40 and d9 <= 50, d9)
    end
    assert.equal(0.1, retry.DEFAULTS.jitter)
  end)

  it("ctx:fail goes straight to the store, whatever attempts are left", function()
    local rec = setup({ route("t", function(ctx)
      ctx:fail("customer 42 does not exist")
    end, { retry = NO_JITTER }) })
    rec.call(msg("t", 1, 1))
    local out = rec.done[1]
    assert.same({ false, "customer 42 does not exist", "failed" }, { out.ok, out.err, out.reason })
    assert.is_nil(out.delay)
    assert.matches("spec/retry_spec%.lua:%d+", out.tb)
  end)

  it("ctx:retry asks for another attempt without an error; at the last one it is final", function()
    local rec = setup({ route("t", function(ctx)
      if ctx.attempt == 1 then
        ctx:retry(5)
      end
      ctx:retry()
    end, { retry = NO_JITTER }) })
    rec.call(msg("t", 1, 1))
    rec.call(msg("t", 2, 2))
    rec.call(msg("t", 3, 3))
    assert.same({ false, "retry", 5 }, { rec.done[1].ok, rec.done[1].reason, rec.done[1].delay })
    assert.same({ false, "retry", 2 }, { rec.done[2].ok, rec.done[2].reason, rec.done[2].delay })
    assert.same({ false, "error", "ctx:retry() at the last attempt (3 of 3): no attempt left" },
      { rec.done[3].ok, rec.done[3].reason, rec.done[3].err })
    assert.is_nil(rec.done[3].delay)
    assert.same({}, rec.logs)
  end)

  it("honours ctx:retry and ctx:fail that a middleware's pcall swallowed", function()
    local rec = setup({ route("t", function(ctx) ctx:fail("bad payload") end) }, {
      middleware = { function(_, nxt) pcall(nxt) end },
    })
    rec.call(msg("t", 1, 1))
    assert.same({ false, "failed", "bad payload" },
      { rec.done[1].ok, rec.done[1].reason, rec.done[1].err })
  end)

  it("reports a real error raised after a swallowed ctx:retry as the error", function()
    local rec = setup({ route("t", function(ctx)
      pcall(ctx.retry, ctx, 1)
      error("real trouble")
    end, { retry = NO_JITTER }) })
    rec.call(msg("t", 1, 1))
    assert.same({ "error", 1 }, { rec.done[1].reason, rec.done[1].delay })
    assert.matches("real trouble$", rec.done[1].err)
  end)

  it("checks the arguments of ctx:retry and ctx:fail", function()
    local errs = {}
    local rec = setup({ route("t", function(ctx)
      for _, f in ipairs({
        function() ctx:retry(-1) end,
        function() ctx:retry("5") end,
        function() ctx:fail() end,
        function() ctx:fail("") end,
      }) do
        local _, e = pcall(f)
        errs[#errs + 1] = e
      end
    end) })
    rec.call(msg("t", 1, 1))
    assert.is_true(rec.done[1].ok)
    assert.matches("^spec/retry_spec%.lua:%d+: ctx:retry: seconds must be a number >= 0 "
      .. "%(or nil for the route's backoff%), got %-1$", errs[1])
    assert.matches("got '5'$", errs[2])
    assert.matches("^spec/retry_spec%.lua:%d+: ctx:fail: reason must be a non%-empty string, "
      .. "got nil$", errs[3])
    assert.matches("got ''$", errs[4])
  end)

  it("slow path: a handler that waits then fails reports through io.done", function()
    local rec = setup({ route("t", function()
      cqueues.sleep(0.01)
      error("after a wait")
    end, { retry = NO_JITTER }) })
    rec.call(msg("t", 1, 2))
    assert.equal(0, #rec.done)
    assert.is_true(rec.wait(1))
    local out = rec.done[1]
    assert.equal("slow", out.path)
    assert.matches("after a wait$", out.err)
    assert.matches("^stack traceback:", out.tb)
    assert.same({ "error", 2 }, { out.reason, out.delay })
    assert.equal(0, rec.d.in_progress())
  end)

  it("a timeout is a failed attempt with reason timeout; the hook runs in a job of its own", function()
    local infos = {}
    local rec = setup({ route("t", function()
      cqueues.sleep(30)
    end, { timeout = 0.05, retry = NO_JITTER }) }, {
      on_error = { function(ctx, err, info)
        cqueues.sleep(0.01) -- a hook may wait
        infos[#infos + 1] = { ctx.topic, err, info.reason, info.final, info.attempt, info.delay }
      end },
    })
    rec.call(msg("t", 1, 1))
    assert.is_true(rec.wait(1))
    local out = rec.done[1]
    assert.same({ false, "timeout after 0.05 s", "timeout", 1 },
      { out.ok, out.err, out.reason, out.delay })
    assert.same({ { "t", "timeout after 0.05 s", "timeout", false, 1, 1 } }, infos)
    assert.equal(0, rec.d.in_progress())
  end)

  it("on_error gets every failed attempt (not ctx:retry) with its info, hooks in order", function()
    local calls = {}
    local rec = setup({ route("orders/{id}", function(ctx)
      if ctx.attempt == 1 then
        error("first")
      elseif ctx.attempt == 2 then
        ctx:retry(0)
      end
      ctx:fail("give up")
    end, { retry = NO_JITTER }) }, {
      on_error = {
        function(_, err, info)
          calls[#calls + 1] = { "a", err, info.attempt, info.final, info.reason, info.route,
            type(info.traceback) }
        end,
        function(_, _, info)
          calls[#calls + 1] = { "b", info.attempt }
        end,
      },
    })
    for attempt = 1, 3 do
      rec.call(msg("orders/1", attempt, attempt))
    end
    assert.equal(4, #calls)
    assert.matches("first$", calls[1][2])
    calls[1][2] = nil
    assert.same({ "a", nil, 1, false, "error", "orders/{id}", "string" }, calls[1])
    assert.same({ "b", 1 }, calls[2])
    assert.same({ "a", "give up", 3, true, "failed", "orders/{id}", "string" }, calls[3])
    assert.same({ "b", 3 }, calls[4])
  end)

  it("logs a hook's own error with its traceback, never passing it to a hook", function()
    local calls = 0
    local rec = setup({ route("t", function() error("handler broke") end) }, {
      on_error = {
        function()
          calls = calls + 1
          error("hook broke")
        end,
        function(ctx)
          ctx:fail("nope")
        end,
      },
    })
    rec.call(msg("t", 1, 1))
    assert.equal(1, calls)
    assert.matches("handler broke$", rec.done[1].err)
    assert.equal("error", rec.done[1].reason)
    assert.equal(2, #rec.logs)
    assert.equal("error", rec.logs[1].level)
    assert.equal("t", rec.logs[1].topic)
    assert.matches("^on_error hook %(on_error hook 1%) failed: spec/retry_spec%.lua:%d+: hook broke\n"
      .. "stack traceback:", rec.logs[1].msg)
    assert.matches("ctx:fail: not available in an on_error hook", rec.logs[2].msg)
  end)

  it("a hook that waits on the fast path hands the thread to the controller", function()
    local rec = setup({ route("t", function() error("x") end) }, {
      on_error = { function() cqueues.sleep(0.01) end },
    })
    rec.call(msg("t", 1, 1))
    assert.equal(0, #rec.done)
    assert.is_true(rec.wait(1))
    assert.same({ "slow", false, "error" }, { rec.done[1].path, rec.done[1].ok, rec.done[1].reason })
    assert.is_nil(rec.done[1].delay)
    assert.equal(0, rec.d.in_progress())
  end)

  it("a hook still waiting at the route's timeout does not make a second failure", function()
    local calls = 0
    local rec = setup({ route("t", function()
      cqueues.sleep(0.01)
      error("x")
    end, { timeout = 0.1 }) }, {
      on_error = { function()
        calls = calls + 1
        cqueues.sleep(30)
      end },
    })
    rec.call(msg("t", 1, 1))
    assert.is_true(rec.wait(1))
    assert.is_false(rec.wait(2, 0.3)) -- reported once
    assert.equal(1, calls)
    assert.matches("x$", rec.done[1].err)
    assert.equal("error", rec.done[1].reason)
    assert.matches("on_error hooks did not finish: timeout after 0.1 s", rec.logs[1].msg)
  end)

  describe("on an ordered route", function()
    local function ordered_setup(order)
      return setup({ route("t/{n}", function(ctx)
        order[#order + 1] = ctx.payload .. "#" .. ctx.attempt
        if ctx.payload == "A" and ctx.attempt == 1 then
          error("A fails once")
        end
      end, { ordered = true, retry = NO_JITTER }) })
    end
    local function ordered_msg(topic, payload, token, attempt)
      return 1, topic, payload, 1, false, false, nil, false, {}, token, attempt
    end

    it("a message waiting for its retry holds its topic; the retry starts at once", function()
      local order = {}
      local rec = ordered_setup(order)
      rec.call(ordered_msg("t/1", "A", "a", 1))
      assert.equal(1, #rec.done)
      assert.same({ "a", false, "error", 1 },
        { rec.done[1].token, rec.done[1].ok, rec.done[1].reason, rec.done[1].delay })
      rec.call(ordered_msg("t/1", "B", "b", 1)) -- waits behind A
      rec.call(ordered_msg("t/2", "C", "c", 1)) -- another topic goes on
      assert.same({ "A#1", "C#1" }, order)
      assert.equal(1, rec.d.in_progress())
      rec.call(ordered_msg("t/1", "A", "a", 2)) -- the runtime's retry of A
      assert.same({ "A#1", "C#1", "A#2", "B#1" }, order)
      assert.same({ "a", "c", "a", "b" }, { rec.done[1].token, rec.done[2].token,
        rec.done[3].token, rec.done[4].token })
      assert.is_true(rec.done[3].ok)
      assert.equal(0, rec.d.in_progress())
      rec.call(ordered_msg("t/1", "D", "d", 1)) -- the topic is free again
      assert.same("D#1", order[5])
    end)

    it("a final failure releases the topic", function()
      local order = {}
      local rec = setup({ route("t/{n}", function(ctx)
        order[#order + 1] = ctx.payload
        if ctx.payload == "A" then
          ctx:fail("no")
        end
      end, { ordered = true, retry = NO_JITTER }) })
      rec.call(ordered_msg("t/1", "A", "a", 1))
      rec.call(ordered_msg("t/1", "B", "b", 1))
      assert.same({ "A", "B" }, order)
      assert.same({ "failed", true }, { rec.done[1].reason, rec.done[2].ok })
    end)

    it("d.release lets the waiting messages go on when the runtime gives up a retry", function()
      local order = {}
      local rec = ordered_setup(order)
      rec.call(ordered_msg("t/1", "A", "a", 1))
      rec.call(ordered_msg("t/1", "B", "b", 1))
      assert.same({ "A#1" }, order)
      rec.d.release(1, "t/1")
      assert.same({ "A#1", "B#1" }, order)
    end)
  end)
end)
