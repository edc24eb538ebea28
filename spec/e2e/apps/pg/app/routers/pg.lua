-- PostgreSQL from handlers, for spec/e2e/pg_spec.lua. Each handled message
-- leaves one line "route<TAB>payload<TAB>pid<TAB>redelivered" in
-- $E2E_OUT/<pid>.rec once its statement has ended (route "insert" when it
-- succeeded, "insert-error" when the database answered with an error).
local router = require("routemq.router")
local pg = require("routemq.pg")
local ffi = require("ffi")
ffi.cdef("int getpid(void);")

local db = pg.pool({ url = os.getenv("DATABASE_URL"), size = tonumber(os.getenv("PG_POOL") or "16"),
  connect_timeout = 2 })

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local file
local function record(tag, payload, redelivered)
  if not file then
    file = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
    file:setvbuf("no")
  end
  file:write(tag, "\t", payload, "\t", ffi.C.getpid(), "\t", tostring(redelivered), "\n")
end

-- Middleware that waits on the database too: every message's route is
-- looked up in a table before its handler runs.
router.use(function(ctx, next)
  local rows, err = db:query("select $1::text as topic", ctx.topic)
  if not rows then
    if ctx.topic == "pg/insert" then record("insert-error", ctx.payload, ctx.redelivered) end
    error(err)
  end
  assert(rows[1].topic == ctx.topic)
  return next()
end)

router.on("pg/insert", function(ctx)
  local rows, err = db:query("insert into msgs(payload, pid, redelivered) values ($1, $2, $3) returning id",
    ctx.payload, ffi.C.getpid(), ctx.redelivered)
  if not rows then
    record("insert-error", ctx.payload, ctx.redelivered)
    error(err)
  end
  assert(rows.affected == 1 and type(rows[1].id) == "number")
  record("insert", ctx.payload, ctx.redelivered)
end, { qos = 1, shared = true, worker_count = tonumber(os.getenv("PG_WORKERS") or "1") })

-- Waits on an advisory lock the spec holds: a query that takes as long as
-- the spec wants, with nothing timed.
router.on("pg/lock", function(ctx)
  record("lock-start", ctx.payload, ctx.redelivered)
  assert(db:query("select pg_advisory_lock_shared(42)"))
  assert(db:query("select pg_advisory_unlock_shared(42)"))
  record("lock-done", ctx.payload, ctx.redelivered)
end, { qos = 1, timeout = 120 })

router.on("pg/sleep", function(ctx)
  record("sleep-start", ctx.payload, ctx.redelivered)
  db:query("select pg_sleep(30) -- routemq-spec-sleep")
  record("sleep-done", ctx.payload, ctx.redelivered)
end, { qos = 1, timeout = 1 })

router.on("pg/sleep-tx", function(ctx)
  record("sleep-tx-start", ctx.payload, ctx.redelivered)
  db:transaction(function(tx)
    assert(tx:query("insert into msgs(payload, pid, redelivered) values ($1, 0, false)", "tx-" .. ctx.payload))
    tx:query("select pg_sleep(30) -- routemq-spec-sleep")
  end)
  record("sleep-tx-done", ctx.payload, ctx.redelivered)
end, { qos = 1, timeout = 1 })

router.init(function(worker)
  assert(db:query("insert into jobs(kind, worker) values ('init', $1)", worker))
  -- Each NOTIFY on routemq_spec becomes a row, from the listener's coroutine.
  db:listen("routemq_spec", function(payload)
    assert(db:query("insert into jobs(kind, worker) values ($1, $2)", "notify:" .. payload, worker))
  end)
end)

router.every(0.2, function(job)
  assert(db:query("insert into jobs(kind, worker) values ('every', $1)", job.worker))
end, { name = "pg-ticker" })

router.health(function(worker)
  assert(db:query("insert into jobs(kind, worker) values ('health', $1)", worker))
end, { every = 0.2, timeout = 5, failures = 1000 })
