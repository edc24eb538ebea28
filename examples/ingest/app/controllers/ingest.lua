-- Readings into PostgreSQL through routemq.pg: a pool per worker, queries
-- that wait without blocking the worker's other messages.
local pg = require("routemq.pg")

local Ingest = {}

local db = pg.pool({
  url = os.getenv("DATABASE_URL"),            -- postgres://user:pass@host:5432/db?sslmode=require
  size = tonumber(os.getenv("DATABASE_POOL") or "") or 16,
})

local KEEP_DAYS = tonumber(os.getenv("READINGS_KEEP_DAYS") or "") or 30

-- router.init: the schema, in each worker (idempotent).
function Ingest.migrate()
  assert(db:query([[
    create table if not exists readings (
      id bigserial primary key,
      device text not null,
      temp double precision not null,
      humidity double precision,
      at timestamptz not null default now()
    );
    create index if not exists readings_device_at on readings (device, at desc);
  ]]))
end

-- sensors/{id}/data {"temp": 21.5, "humidity": 40}: one row per reading. A
-- payload that is not a reading is logged and dropped (retrying would not
-- help); a database error fails the message (logged, counted, retried or
-- dead-lettered as the route says).
function Ingest.store(ctx)
  local r = ctx:json()
  if type(r) ~= "table" or type(r.temp) ~= "number" or (r.humidity ~= nil and type(r.humidity) ~= "number") then
    ctx.log.warn("not a reading from ", ctx.params.id, ": ", ctx.payload:sub(1, 100))
    return
  end
  local rows, err = db:query("insert into readings(device, temp, humidity) values ($1, $2, $3) returning id",
    ctx.params.id, r.temp, r.humidity)
  if not rows then
    error(err)
  end
  ctx.log.debug("stored reading ", rows[1].id, " of ", ctx.params.id)
end

-- sensors/{id}/latest: replies {"temp":..,"humidity":..,"at":".."} or {"error":"no reading"}.
function Ingest.latest(ctx)
  local rows, err = db:query("select temp, humidity, at::text as at from readings where device = $1 "
    .. "order by at desc, id desc limit 1", ctx.params.id)
  if not rows then
    error(err)
  end
  ctx:reply(rows[1] or { error = "no reading" })
end

-- router.every: readings older than READINGS_KEEP_DAYS go.
function Ingest.prune(job)
  local rows = assert(db:query("delete from readings where at < now() - make_interval(days => $1)", KEEP_DAYS))
  job.log.info("pruned ", rows.affected, " readings older than ", KEEP_DAYS, " days")
end

-- router.health: the database answers.
function Ingest.health()
  return assert(db:query("select 1"))
end

return Ingest
