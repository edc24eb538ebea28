-- End to end: routemq.pg (docs/guide.md, "Databases") against a real PostgreSQL 15 and a real
-- broker: rows inserted from handlers exactly once per message, with workers
-- killed, a query cancelled on the server at its handler's timeout while the
-- others keep going, a server restart under load; and the module's API on a
-- cqueues controller in this process (types, errors, transactions, LISTEN).
local e2e = require("spec.helpers.e2e")
local pgh = require("spec.helpers.pg")

local APP = e2e.root .. "/spec/e2e/apps/pg"
local seq = e2e.seq

local function records(dir, tag)
  local out = {}
  for _, rec in ipairs((e2e.records(dir))) do
    if rec.route == tag then out[#out + 1] = rec end
  end
  return out
end

describe("routemq.pg from handlers", function()
  local broker, db
  setup(function()
    broker = e2e.broker()
    db = pgh.start()
  end)
  teardown(function()
    db.stop()
    broker.stop()
  end)
  before_each(function()
    db.psql("drop table if exists msgs, jobs; create table msgs(id serial primary key, payload text not null, "
      .. "pid int not null, redelivered bool not null); create table jobs(kind text, worker int)")
  end)

  local function start(env, n)
    local e = { DATABASE_URL = db.url, WORKER_CONCURRENCY = 64, PG_POOL = 16 }
    for k, v in pairs(env or {}) do e[k] = v end
    local r = e2e.routemq(broker, APP, "run", e)
    assert.truthy(e2e.wait_for(function() return r.ready(n or 1) end, 20), e2e.read(r.log))
    return r
  end

  local function count(sql)
    return tonumber(db.psql(sql))
  end

  it("inserts exactly 20,000 rows for 20,000 QoS 1 messages (2 workers x 64, pool 16); init, every, health, "
    .. "middleware use it too", function()
    local r = start({ PG_WORKERS = 2 }, 2)
    local n = 20000
    local t0 = e2e.now()
    e2e.publish_lines(broker.port, "pg/insert", seq(1, n), 1)
    assert(e2e.wait_for(function() return count("select count(*) from msgs") >= n end, 120), e2e.read(r.log))
    local took = e2e.now() - t0
    e2e.settle(r.dir, n, 5)
    assert.same({ 0, 0 }, { e2e.tally(r.dir, n) })
    assert.equal(n, count("select count(*) from msgs"))
    assert.equal(n, count("select count(distinct payload) from msgs"))
    assert.equal(2, count("select count(distinct pid) from msgs"))
    -- Both workers ran init; the timer and the health check query as well.
    assert.equal("0,1", db.psql("select string_agg(worker::text, ',' order by worker) from jobs where kind = 'init'"))
    assert.is_true(count("select count(*) from jobs where kind = 'every'") > 0)
    assert.is_true(count("select count(*) from jobs where kind = 'health'") > 0)
    -- Connections: at most 16 per worker, plus each worker's listener, plus psql.
    assert.is_true(count("select count(*) from pg_stat_activity where backend_type = 'client backend'") <= 35)
    assert.is_nil(e2e.read(r.log):find("handler error", 1, true), e2e.read(r.log))
    print(string.format("\n  insert per message, 2 workers x 64, pool 16: %d rows in %.2f s (%.0f msg/s, "
      .. "publishing included)", n, took, n / took))
  end)

  it("works one message at a time too (WORKER_CONCURRENCY=1, the default)", function()
    local r = start({ WORKER_CONCURRENCY = 1 })
    e2e.publish_lines(broker.port, "pg/insert", seq(1, 300), 1)
    e2e.settle(r.dir, 300, 5)
    assert.same({ 0, 0 }, { e2e.tally(r.dir, 300) })
    assert.equal(300, count("select count(*) from msgs"))
  end)

  it("loses no message when random workers are killed with -9; rows match the handled messages", function()
    local r = start({ PG_WORKERS = 2 }, 2)
    local n = 20000
    local pub = e2e.spawn(string.format("sh -c 'for i in $(seq 0 19); do seq $((i * 1000 + 1)) $((i * 1000 + 1000)) "
      .. "| mosquitto_pub -p %d -t pg/insert -q 1 -l; sleep 0.5; done'", broker.port), r.dir .. "/pub.log")
    e2e.defer(function() e2e.kill(pub, "TERM") end)
    local kills = e2e.kill_workers(r, 10, 0.7)
    assert(e2e.wait_for(function() return count("select count(distinct payload) from msgs") >= n end, 120),
      e2e.read(r.log))
    e2e.settle(r.dir, n, 5)
    local rows = count("select count(*) from msgs")
    local lost = count("select count(*) from generate_series(1, " .. n .. ") g where not exists "
      .. "(select 1 from msgs where payload = g::text)")
    -- A message is inserted a second time only by its replay after a kill.
    local first_twice = count("select count(*) from (select payload from msgs where not redelivered "
      .. "group by payload having count(*) > 1) x")
    local handled, handled_by = e2e.records(r.dir)
    local rows_by = {}
    for payload, c in db.psql("select payload, count(*) from msgs group by payload"):gmatch("(%d+)|(%d+)") do
      rows_by[payload] = tonumber(c)
    end
    -- Each handled message has its row (recorded after its insert); rows
    -- beyond the records are inserts of messages in progress at a kill.
    local unrecorded, short, extra = 0, 0, 0
    for i = 1, n do
      local recs, got = handled_by[tostring(i)] or 0, rows_by[tostring(i)] or 0
      if recs == 0 then unrecorded = unrecorded + 1 end
      if got < recs then short = short + 1 end
      extra = extra + got - recs
    end
    print(string.format("\n  kill -9 x %d (2 workers x 64, pool 16): %d messages, %d rows, %d lost, %d handled "
      .. "records, %d rows more than records (killed in progress)", kills, n, rows, lost, #handled, extra))
    assert.equal(0, lost)
    assert.equal(0, unrecorded)
    assert.equal(0, short)
    assert.equal(0, first_twice)
    assert.is_true(extra <= kills * 64)
    assert.is_true(rows - n <= kills * 64)
  end)

  it("keeps handling while one handler's query waits, and cancels a query on the server at the route's timeout",
    function()
    local r = start()
    -- The spec holds advisory lock 42: the handler's query waits until it lets go.
    local holder = e2e.spawn(string.format("psql -X -q -h 127.0.0.1 -p %d -U postgres -d postgres -c "
      .. "'select pg_advisory_lock(42)' -c 'select pg_sleep(600)'", db.port), r.dir .. "/holder.log")
    e2e.defer(function() if e2e.alive(holder) then e2e.kill(holder, "KILL") end end)
    assert(e2e.wait_for(function()
      return count("select count(*) from pg_locks where locktype = 'advisory' and granted") == 1
    end, 10))
    e2e.publish(broker.port, "pg/lock", "L", "-q 1")
    assert(e2e.wait_for(function()
      return count("select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
        .. "and query like '%pg_advisory_lock_shared%'") == 1
    end, 10), e2e.read(r.log))
    e2e.publish_lines(broker.port, "pg/insert", seq(1, 500), 1)
    e2e.settle(r.dir, 500, 5)
    assert.same({ 0, 0 }, { e2e.tally(r.dir, 500) })
    assert.equal(500, count("select count(*) from msgs"))
    assert.same({}, records(r.dir, "lock-done")) -- still waiting all along
    -- The holder's backend would sit in its pg_sleep after psql went: end it.
    db.psql("select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and mode = 'ExclusiveLock'")
    assert(e2e.wait_for(function() return #records(r.dir, "lock-done") == 1 end, 10), e2e.read(r.log))

    -- pg_sleep(30) with a 1 s timeout: cancelled on the server long before 30 s.
    local sleeping = "select count(*) from pg_stat_activity where state = 'active' and query like "
      .. "'%routemq-spec-sleep%' and query not like '%pg_stat_activity%'"
    e2e.publish(broker.port, "pg/sleep", "S", "-q 1")
    e2e.publish(broker.port, "pg/sleep-tx", "T", "-q 1")
    e2e.publish_lines(broker.port, "pg/insert", seq(501, 1000), 1)
    e2e.settle(r.dir, 1000, 5)
    assert.same({ 0, 0 }, { e2e.tally(r.dir, 1000) })
    assert(e2e.wait_for(function()
      local _, c = e2e.read(r.log):gsub("timeout after 1 s", "")
      return c == 2
    end, 10), e2e.read(r.log))
    assert(e2e.wait_for(function() return count(sleeping) == 0 end, 10), db.psql("select * from pg_stat_activity"))
    assert.matches("canceling statement due to user request", e2e.read(db.log))
    assert.same({}, records(r.dir, "sleep-done"))
    assert.equal(1, #records(r.dir, "sleep-start"))
    -- The transaction was rolled back, its connection is clean: the pool serves on.
    assert.equal(0, count("select count(*) from msgs where payload = 'tx-T'"))
    assert(e2e.wait_for(function()
      return count("select count(*) from pg_stat_activity where state like 'idle in transaction%'") == 0
    end, 10))
    e2e.publish_lines(broker.port, "pg/insert", seq(1001, 1100), 1)
    e2e.settle(r.dir, 1100, 5)
    assert.same({ 0, 0 }, { e2e.tally(r.dir, 1100) })
    assert.equal(1100, count("select count(*) from msgs where payload not like 'tx-%'"))
  end)

  it("delivers NOTIFY to db:listen set up in router.init, in each worker, again after a server restart",
    function()
    start({ PG_WORKERS = 2 }, 2)
    local function notified(payload)
      return db.psql("select string_agg(worker::text, ',' order by worker) from jobs where kind = 'notify:"
        .. payload .. "'")
    end
    -- LISTEN is in force once pg_stat_activity shows both listeners idle after it.
    assert(e2e.wait_for(function()
      return count("select count(*) from pg_stat_activity where query like 'LISTEN%'") == 2
    end, 20))
    db.psql("notify routemq_spec, 'one'")
    assert(e2e.wait_for(function() return notified("one") == "0,1" end, 10), notified("one"))
    db.restart()
    assert(e2e.wait_for(function()
      return count("select count(*) from pg_stat_activity where query like 'LISTEN%'") == 2
    end, 30))
    db.psql("notify routemq_spec, 'two'")
    assert(e2e.wait_for(function() return notified("two") == "0,1" end, 10), notified("two"))
  end)

  it("survives a server restart under load: errors, then the pool reconnects; nothing hangs", function()
    local r = start()
    local n = 6000
    local pub = e2e.spawn(string.format("sh -c 'for i in $(seq 0 5); do seq $((i * 1000 + 1)) $((i * 1000 + 1000)) "
      .. "| mosquitto_pub -p %d -t pg/insert -q 1 -l; sleep 0.3; done'", broker.port), r.dir .. "/pub.log")
    e2e.defer(function() e2e.kill(pub, "TERM") end)
    assert(e2e.wait_for(function() return count("select count(*) from msgs") >= 500 end, 60), e2e.read(r.log))
    db.restart()
    -- Every message ends, inserted or with an error; none waits forever.
    assert(e2e.wait_for(function()
      return #records(r.dir, "insert") + #records(r.dir, "insert-error") >= n
    end, 120), e2e.read(r.log))
    local ok, failed = #records(r.dir, "insert"), #records(r.dir, "insert-error")
    assert.equal(n, ok + failed)
    assert.equal(ok, count("select count(*) from msgs"))
    -- The pool reconnected: new messages are all inserted.
    e2e.publish_lines(broker.port, "pg/insert", seq(n + 1, n + 300), 1)
    assert(e2e.wait_for(function() return count("select count(*) from msgs") == ok + 300 end, 30), e2e.read(r.log))
    -- libpq closes its socket when the server goes: cqueues never polled that one.
    local log = e2e.read(r.log)
    assert.is_nil(log:find("event disposition", 1, true))
    -- The server's goodbye to the idle listener is a log line of the worker, not raw stderr.
    assert.matches("info  %[worker 0%] postgresql: FATAL:  terminating connection due to administrator command", log)
    assert.is_nil(log:find("\nFATAL:", 1, true))
    print(string.format("\n  server restart under load: %d inserted, %d failed with an error, then 300 of 300 "
      .. "inserted", ok, failed))
  end)
end)
