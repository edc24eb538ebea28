-- The connection pool routemq.pg and routemq.mysql share: per-worker
-- connections opened on first use, kept idle up to idle_timeout, at most
-- size open, a bounded wait for one to come back, a fork detected (forkmark),
-- and a connection of a job dropped at its deadline cleaned up (the driver's
-- steps) before anyone else gets it.
--
--   local Pool, P = dbpool.class{ name = "routemq.pg", connect = ..., ... }
--
-- Pool is the metatable of the driver's db objects (it adds query,
-- transaction, ... to it); P holds the functions for the driver only (new,
-- check_self, acquire, give), kept off Pool so users do not see them as
-- db methods.
local cqueues = require("cqueues")
local condition = require("cqueues.condition")
local forkmark = require("routemq.forkmark")
local runner = require("routemq.runner")

local M = {}

local monotime = cqueues.monotime

-- class(driver) -> Pool, P. driver:
--   name: the prefix of error and log messages ("routemq.pg")
--   connect(params, timeout, pool) -> conn | nil, err
--   error(fields) -> err: the driver's error object
--   log(level, msg): the driver's log (for the default pool log)
--   clean(conn) -> whether a usable, not busy conn is idle (no transaction)
--   reap(pool, conn): stops what conn was doing for a dropped job (runs on
--     a thread of its own; may raise)
--   drop(conn): closes a conn abandoned mid-statement
-- A conn has ok(), idle_alive(), close(), busy; the pool sets since, owner, mark.
function M.class(driver)
  local name, connect, new_error, clean = driver.name, driver.connect, driver.error, driver.clean
  local reap_steps, drop = driver.reap, driver.drop
  local Pool = {}
  Pool.__index = Pool
  local P = {}

  local function default_log(msg)
    driver.log("warn", name .. ": " .. msg)
  end

  -- level 4: check_number, P.new, the driver's pool(), the user's call.
  local function check_number(opts, option, default)
    local v = opts[option]
    if v == nil then
      return default
    end
    if type(v) ~= "number" or v <= 0 then
      error(("%s: pool option %s must be a positive number, got %s"):format(name, option, tostring(v)), 4)
    end
    return v
  end

  -- P.new(opts, params) -> pool. Call it from the driver's pool() (not as
  -- a tail call): an option error points at that function's caller.
  function P.new(opts, params)
    return setmetatable({
      params = params,
      size = check_number(opts, "size", 10),
      idle_timeout = check_number(opts, "idle_timeout", 60),
      connect_timeout = check_number(opts, "connect_timeout", 5),
      acquire_timeout = check_number(opts, "acquire_timeout", 30),
      log = opts.log or default_log,
      idle = {},
      total = 0,
      waiting = 0,
      queue = { first = 1, last = 0 },
      mark = forkmark.mark(), -- of the process whose connections these are
    }, Pool)
  end

  -- P.check_self(self, method): raises, at the caller of the db method
  -- that calls it, unless self is a pool on a cqueues controller.
  function P.check_self(self, method)
    if getmetatable(self) ~= Pool then
      error(("%s: call it as db:%s(...), not db.%s(...)"):format(name, method, method), 3)
    end
    if not cqueues.running() then
      error(("%s: db:%s must run in a handler, middleware, router.init, router.every or "
        .. "router.health function (on the worker's cqueues controller)"):format(name, method), 3)
    end
  end

  -- Hands what (a connection, or true: leave to open one) to the longest
  -- waiting caller; false when nobody waits.
  local function hand(self, what)
    local q = self.queue
    while q.first <= q.last do
      local w = q[q.first]
      q[q.first] = nil
      q.first = q.first + 1
      if not w.gone then
        w.got = what
        -- A waiter whose poll the controller has not taken yet (a job's
        -- first wait is handed over at the next step) would miss the
        -- signal: its timeout 0 wakes it as soon as the poll is taken.
        w.timeout = 0
        w.pollfd:signal()
        return true
      end
    end
    return false
  end

  -- The place of a connection that is gone (closed, or never opened):
  -- to the longest waiting caller, who opens one in it, or given up.
  local function pass_place(self)
    if not hand(self, true) then
      self.total = self.total - 1
    end
  end

  -- Gives conn back: to the longest waiting caller, or kept idle when clean,
  -- else closed (and a waiter may open a new one in its place). One opened
  -- before a fork, in a child, is closed and not counted: its place is the
  -- parent's.
  local function release(self, conn)
    if conn.mark ~= self.mark or not forkmark.same(self.mark) then
      conn:close()
      return
    end
    if conn:ok() and not conn.busy and clean(conn) then
      conn.since = monotime()
      if not hand(self, conn) then
        self.idle[#self.idle + 1] = conn
      end
    else
      conn:close()
      pass_place(self)
    end
  end

  -- Cleans up after a job dropped at its deadline, then gives the
  -- connection back clean (or closes it), on a thread of its own.
  local function reap(self, conn)
    local cq = cqueues.running()
    if not cq then
      drop(conn)
      return release(self, conn)
    end
    cq:wrap(function()
      local ok, err = pcall(reap_steps, self, conn)
      if not ok then
        self.log("cleaning up after a timed-out handler: " .. tostring(err))
        drop(conn)
      end
      release(self, conn)
    end)
  end

  -- Opens a connection in a place already counted in total; on failure
  -- the place goes to the next waiter (who tries in turn) or is given up.
  local function open(self)
    local conn, err = connect(self.params, self.connect_timeout, self)
    if conn then
      conn.mark = self.mark
    else
      pass_place(self)
    end
    return conn, err
  end

  -- Waits in line for a connection (or a place to open one) handed over by
  -- release; a caller dropped while in line passes on what it was handed.
  local function wait_in_line(self, deadline)
    local q = self.queue
    local w = { pollfd = condition.new(), timeout = nil } -- polled as an object, like a cqueues promise
    q.last = q.last + 1
    q[q.last] = w
    self.waiting = self.waiting + 1
    local co = coroutine.running()
    runner.on_cancel(co, w, function()
      w.gone = true
      self.waiting = self.waiting - 1
      if w.got == true then
        pass_place(self)
      elseif w.got then
        release(self, w.got)
      end
    end)
    while w.got == nil do
      local left = deadline - monotime()
      if left <= 0 then
        break
      end
      cqueues.poll(w, left)
    end
    runner.on_cancel(co, w, nil)
    w.gone = true
    self.waiting = self.waiting - 1
    return w.got
  end

  -- Takes a connection: an idle one still alive, a new one while under
  -- size, or waits in line (first come, first served: a new caller does
  -- not overtake those waiting) for one to be handed over.
  local function checkout(self)
    if not forkmark.same(self.mark) then
      -- A forked child: the parent's connections are not ours.
      self.idle, self.total, self.waiting, self.mark = {}, 0, 0, forkmark.mark()
      self.queue = { first = 1, last = 0 }
    end
    if self.waiting == 0 then
      local idle = self.idle
      while #idle > 0 do
        local conn = table.remove(idle)
        if monotime() - conn.since <= self.idle_timeout and conn:idle_alive() then
          return conn
        end
        conn:close()
        self.total = self.total - 1
      end
      if self.total < self.size then
        self.total = self.total + 1
        return open(self)
      end
    end
    local got = wait_in_line(self, monotime() + self.acquire_timeout)
    if got == true then
      return open(self)
    elseif got then
      return got -- just given back clean: no idle check needed
    end
    return nil, new_error({ message = ("no connection free in the pool (size %d) after %g s")
      :format(self.size, self.acquire_timeout) })
  end

  -- P.acquire(self) -> conn | nil, err; P.give(self, conn): a checkout
  -- that the runner undoes (reaps) if the job is dropped, and its return.
  function P.acquire(self)
    local conn, err = checkout(self)
    if conn then
      local co = coroutine.running()
      conn.owner = co
      runner.on_cancel(co, conn, function() reap(self, conn) end)
    end
    return conn, err
  end

  function P.give(self, conn)
    runner.on_cancel(conn.owner, conn, nil)
    conn.owner = nil
    release(self, conn)
  end

  -- db:stats() -> { open, idle, waiting }
  function Pool:stats()
    return { open = self.total, idle = #self.idle, waiting = self.waiting }
  end

  return Pool, P
end

return M
