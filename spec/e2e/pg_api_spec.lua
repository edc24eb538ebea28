-- routemq.pg's API against a real PostgreSQL 15, on a cqueues controller in
-- this process: values round-trip, parameters are never SQL, errors and
-- misuse, transactions, timeouts, a job dropped at its deadline, LISTEN.
local e2e = require("spec.helpers.e2e")
local pgh = require("spec.helpers.pg")
local cqh = require("spec.helpers.cq")
local cqueues = require("cqueues")
local csocket = require("cqueues.socket")
local pg = require("routemq.pg")
local runner_mod = require("routemq.runner")

local run, until_ = cqh.run, cqh.until_

describe("routemq.pg API", function()
  local server, db
  setup(function()
    server = pgh.start()
    db = pg.pool({ url = server.url, size = 4 })
  end)
  teardown(function() server.stop() end)

  it("round-trips values by type: integers, floats, booleans, text, bytea, json, NULL, numeric edges", function()
    run(function()
      local function one(sql, ...)
        local rows = assert(db:query(sql, ...))
        return rows[1].v
      end
      assert.equal(-32768, one("select $1::int2 as v", -32768))
      assert.equal(2147483647, one("select $1::int4 as v", 2147483647))
      assert.equal(-2147483648, one("select $1::int4 as v", -2147483648))
      assert.equal(2 ^ 53 - 1, one("select $1::int8 as v", 2 ^ 53 - 1))
      assert.equal("9223372036854775807", one("select $1::int8 as v", "9223372036854775807"))
      assert.equal("-9223372036854775808", one("select $1::int8 as v", "-9223372036854775808"))
      assert.equal("123456789012345678901234567890.123456789",
        one("select $1::numeric as v", "123456789012345678901234567890.123456789"))
      assert.equal(1.7976931348623157e308, one("select $1::float8 as v", 1.7976931348623157e308))
      assert.equal(5e-324, one("select $1::float8 as v", 5e-324))
      assert.equal(0.1, one("select $1::float8 as v", 0.1))
      assert.equal(math.huge, one("select $1::float8 as v", math.huge))
      assert.equal(-math.huge, one("select $1::float8 as v", -math.huge))
      local nan = one("select $1::float8 as v", 0 / 0)
      assert.is_true(nan ~= nan)
      assert.equal(true, one("select $1::bool as v", true))
      assert.equal(false, one("select $1::bool as v", false))
      assert.equal("", one("select $1::text as v", ""))
      assert.equal("héllo ✓", one("select $1::text as v", "héllo ✓"))
      assert.equal(pg.null, one("select $1::text as v", nil))
      assert.equal(pg.null, one("select $1::text as v", pg.null))
      assert.equal('{"a": [1, 2]}', one("select $1::jsonb as v", '{"a":[1,2]}'))
      assert.equal('{"a":[1,2]}', one("select $1::json as v", '{"a":[1,2]}'))
      local rows = assert(db:query("select 1 as a, null::int as b, 'x' as c"))
      assert.same({ a = 1, b = pg.null, c = "x" }, rows[1])
      assert.equal(1, rows.affected)
    end)
  end)

  it("stores parameters literally: an injection attempt, NUL bytes in bytea, 1 MB of text", function()
    server.psql("create table if not exists t(id serial primary key, s text, b bytea)")
    local evil = "x'); drop table t; --"
    local blob = "\0\1\2\0\255'\\x00\0"
    local big = string.rep("0123456789abcdef", 65536)
    run(function()
      local r = assert(db:query("insert into t(s, b) values ($1, $2) returning id", evil, pg.bytea(blob)))
      assert.equal(1, r.affected)
      local id = r[1].id
      -- A Lua string with NUL bytes goes as binary by itself.
      assert(db:query("update t set b = $1 where id = $2", blob, id))
      local got = assert(db:query("select s, b, length(b) as n from t where id = $1", id))[1]
      assert.equal(evil, got.s)
      assert.equal(blob, got.b)
      assert.equal(#blob, got.n)
      local r2 = assert(db:query("insert into t(s) values ($1) returning length(s) as n, md5(s) as h", big))
      assert.equal(#big, r2[1].n)
      local back = assert(db:query("select s from t where length(s) = $1", #big))
      assert.equal(big, back[1].s)
    end)
    assert.equal("1", server.psql("select count(*) from t where s = " .. "'x''); drop table t; --'"))
  end)

  it("returns nil, err for database errors (sqlstate, message, detail, one line) and raises on misuse", function()
    run(function()
      local rows, err = db:query("select * from no_such_table where x = $1", 1)
      assert.is_nil(rows)
      assert.equal("42P01", err.sqlstate)
      assert.equal('relation "no_such_table" does not exist', err.message)
      assert.equal('ERROR 42P01: relation "no_such_table" does not exist', tostring(err))
      assert(db:query("create table if not exists u(k int primary key)"))
      assert(db:query("insert into u values ($1) on conflict do nothing", 7))
      local _, dup = db:query("insert into u values ($1)", 7)
      assert.equal("23505", dup.sqlstate)
      assert.equal("Key (k)=(7) already exists.", dup.detail)
      assert.matches("^ERROR 23505: duplicate key value violates unique constraint \"u_pkey\" %(Key %(k%)=%(7%) "
        .. "already exists%.%)$", tostring(dup))
      -- Misuse raises, naming this file and line.
      local ok, e = pcall(function() db:query(42) end)
      assert.is_false(ok)
      assert.matches("pg_api_spec%.lua:%d+: routemq%.pg: db:query expects the SQL text as a string, got number", e)
      ok, e = pcall(function() db.query("select 1") end)
      assert.is_false(ok)
      assert.matches("pg_api_spec%.lua:%d+: routemq%.pg: call it as db:query%(%.%.%.%), not db%.query", e)
      ok, e = pcall(function() db:query("select $1", { 1 }) end)
      assert.is_false(ok)
      assert.matches("pg_api_spec%.lua:%d+: routemq%.pg: parameter %$1 is a table", e)
      -- The pool still serves after all that.
      assert.equal(1, assert(db:query("select 1 as v"))[1].v)
    end)
    local ok, e = pcall(function() db:query("select 1") end)
    assert.is_false(ok)
    assert.matches("pg_api_spec%.lua:%d+: routemq%.pg: db:query must run in a handler", e)
    ok, e = pcall(function() pg.pool({ url = "postgres://h/db?no_such_option=1" }) end)
    assert.is_false(ok)
    assert.matches("pg_api_spec%.lua:%d+: routemq%.pg: bad url", e)
    ok, e = pcall(function() pg.pool({ size = 0 }) end)
    assert.is_false(ok)
    assert.matches("pg_api_spec%.lua:%d+: routemq%.pg: pool option size must be a positive number", e)
  end)

  it("commits a transaction, rolls back on an error raised or a failed statement", function()
    server.psql("create table if not exists acct(name text primary key, n int)")
    run(function()
      local a, b = db:transaction(function(tx)
        assert(tx:query("insert into acct values ($1, $2)", "a", 1))
        assert(tx:query("insert into acct values ($1, $2)", "b", 2))
        return "done", 2
      end)
      assert.same({ "done", 2 }, { a, b })
      local ok, e = pcall(db.transaction, db, function(tx)
        assert(tx:query("update acct set n = 100"))
        error("changed my mind")
      end)
      assert.is_false(ok)
      assert.matches("changed my mind", e)
      local r, err = db:transaction(function(tx)
        tx:query("update acct set n = 200")
        tx:query("insert into acct values ($1, $2)", "a", 3) -- duplicate: the transaction aborts
        tx:query("update acct set n = 300")
        return "not reached as a commit"
      end)
      assert.is_nil(r)
      assert.equal("23505", err.sqlstate)
      local used
      db:transaction(function(tx) used = tx end)
      ok, e = pcall(function() used:query("select 1") end)
      assert.is_false(ok)
      assert.matches("pg_api_spec%.lua:%d+: routemq%.pg: tx:query after its transaction ended", e)
      local stats = db:stats()
      assert.equal(0, stats.waiting)
      assert.equal(stats.open, stats.idle)
    end)
    assert.equal("a|1\nb|2", server.psql("select name, n from acct order by name"))
    assert.equal("0", server.psql("select count(*) from pg_stat_activity where state like 'idle in transaction%'"))
  end)

  it("prepares a statement on its second use, keeps statement_cache of them, and recovers when the server drops "
    .. "them or DDL changes their result", function()
    server.psql("create table if not exists sc(id int primary key, a text)")
    server.psql("insert into sc values (1, 'x') on conflict do nothing")
    local function prepared(conn_db)
      return assert(conn_db:query("select coalesce(string_agg(statement, ' | ' order by statement), '') as s "
        .. "from pg_prepared_statements"))[1].s
    end
    run(function()
      local one = pg.pool({ url = server.url, size = 1 })
      local q = "select * from sc where id = $1"
      assert.same({ id = 1, a = "x" }, assert(one:query(q, 1))[1])
      assert.equal("", prepared(one)) -- seen once: sent unnamed
      assert.same({ id = 1, a = "x" }, assert(one:query(q, 1))[1])
      assert.equal(q, prepared(one))
      for _ = 1, 3 do
        assert.same({ id = 1, a = "x" }, assert(one:query(q, 1))[1])
      end
      assert.equal(q, prepared(one))
      -- DDL changes what the statement returns: prepared again, sent again.
      server.psql("alter table sc add column b int default 7")
      assert.same({ id = 1, a = "x", b = 7 }, assert(one:query(q, 1))[1])
      assert.equal(q, prepared(one))
      -- In a transaction the failed statement aborted it: the error is returned, the next use works.
      server.psql("alter table sc drop column b")
      local r, err = one:transaction(function(tx) return tx:query(q, 1) end)
      assert.is_nil(r)
      assert.equal("0A000", err.sqlstate)
      assert.same({ id = 1, a = "x" }, assert(one:query(q, 1))[1])
      -- The server forgets them all (DISCARD ALL, as a pooler might): prepared again.
      assert(one:query("discard all"))
      assert.same({ id = 1, a = "x" }, assert(one:query(q, 1))[1])
      assert.equal(q, prepared(one))
      -- A bound: the oldest make room, and are deallocated on the server.
      local small = pg.pool({ url = server.url, size = 1, statement_cache = 2 })
      for i = 1, 4 do
        for _ = 1, 2 do
          assert.equal(i, assert(small:query("select $1::int + " .. i - 1 .. " as v", 1))[1].v)
        end
      end
      assert.equal("select $1::int + 2 as v | select $1::int + 3 as v", prepared(small))
      -- statement_cache = 0 prepares nothing (PgBouncer in transaction mode before 1.21).
      local none = pg.pool({ url = server.url, size = 1, statement_cache = 0 })
      for _ = 1, 3 do
        assert.same({ id = 1, a = "x" }, assert(none:query(q, 1))[1])
      end
      assert.equal("", prepared(none))
    end)
    local ok, e = pcall(function() pg.pool({ statement_cache = -1 }) end)
    assert.is_false(ok)
    assert.matches("pg_api_spec%.lua:%d+: routemq%.pg: pool option statement_cache must be a whole number >= 0 "
      .. "%(0: prepare nothing%), got %-1", e)
  end)

  it("gives up connecting after connect_timeout, fails fast on a refused port, bounds the wait for a connection",
    function()
    local silent = csocket.listen({ host = "127.0.0.1", port = 0 })
    local _, _, port = silent:localname()
    local refused = e2e.free_port()
    run(function()
      local slow = pg.pool({ url = "postgres://postgres@127.0.0.1:" .. port .. "/postgres", connect_timeout = 0.5 })
      local t0 = cqueues.monotime()
      local rows, err = slow:query("select 1")
      local took = cqueues.monotime() - t0
      assert.is_nil(rows)
      assert.equal("08001", err.sqlstate)
      assert.equal("connect timeout after 0.5 s", err.message)
      assert.is_true(took >= 0.5 and took < 3, took)
      local bad = pg.pool({ url = "postgres://postgres@localhost:" .. refused .. "/postgres" })
      rows, err = bad:query("select 1")
      assert.is_nil(rows)
      assert.equal("08001", err.sqlstate)
      assert.matches("Connection refused", err.message)
      local one = pg.pool({ url = server.url, size = 1, acquire_timeout = 0.3 })
      local holding = false
      cqueues.running():wrap(function()
        one:transaction(function()
          holding = true
          cqueues.sleep(1)
        end)
      end)
      assert(until_(function() return holding end))
      rows, err = one:query("select 1")
      assert.is_nil(rows)
      assert.equal("no connection free in the pool (size 1) after 0.3 s", err.message)
    end)
    silent:close()
  end)

  it("cancels the query of a job dropped at its deadline on the server, and gets the connection back clean",
    function()
    local sleeping = "select count(*) from pg_stat_activity where state = 'active' and query like '%pg_sleep(30)%' "
      .. "and query not like '%pg_stat_activity%'"
    local cq = cqueues.new()
    local r = runner_mod.new(cq)
    local one = pg.pool({ url = server.url, size = 1 })
    local outcome
    local results = {}
    r:start(function()
      results.plain = one:query("select pg_sleep(30)")
    end, nil, 0.5, function(_, ok, err) outcome = { ok, err } end)
    assert(r:run_until(function() return outcome ~= nil end, 10))
    assert.same({ false, "timeout after 0.5 s" }, outcome)
    assert.is_nil(results.plain)
    assert(r:run_until(function() return one:stats().idle == 1 end, 10))
    assert.equal("0", server.psql(sleeping))
    -- Inside a transaction: cancelled, rolled back, back in the pool.
    server.psql("create table if not exists c(x int)")
    outcome = nil
    r:start(function()
      one:transaction(function(tx)
        assert(tx:query("insert into c values (1)"))
        tx:query("select pg_sleep(30)")
      end)
    end, nil, 0.5, function(_, ok, err) outcome = { ok, err } end)
    assert(r:run_until(function() return outcome ~= nil end, 10))
    assert.same({ false, "timeout after 0.5 s" }, outcome)
    assert(r:run_until(function() return one:stats().idle == 1 end, 10))
    assert.equal("0", server.psql(sleeping))
    assert.equal("0", server.psql("select count(*) from c"))
    -- The same connection serves the next job.
    local got
    r:start(function() got = assert(one:query("select 41 + 1 as v"))[1].v end, nil, 5, function() end)
    assert(r:run_until(function() return got ~= nil end, 10))
    assert.equal(42, got)
    assert.equal(1, one:stats().open)
    assert.matches("canceling statement due to user request", e2e.read(server.log))
  end)

  it("connects with TLS when the URL says sslmode=require", function()
    local data = server.dir .. "/data"
    e2e.sh("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout " .. data
      .. "/server.key -out " .. data .. "/server.crt > /dev/null 2>&1 && chown postgres " .. data .. "/server.key "
      .. data .. "/server.crt && chmod 0600 " .. data .. "/server.key")
    server.psql("alter system set ssl = on")
    server.psql("select pg_reload_conf()")
    local tls = pg.pool({ url = server.url .. "?sslmode=require", size = 1 })
    local plain = pg.pool({ url = server.url .. "?sslmode=disable", size = 1 })
    run(function()
      local q = "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"
      local rows = assert(tls:query(q))
      assert.is_true(rows[1].ssl)
      assert.matches("^TLSv", rows[1].version)
      assert.is_false(assert(plain:query(q))[1].ssl)
    end)
  end)

  it("delivers NOTIFY to db:listen's function, and listens again after the server restarts", function()
    local got = {}
    run(function()
      local l = db:listen("Readings Chan", function(payload, channel, pid)
        got[#got + 1] = { payload, channel, type(pid) }
      end)
      assert(until_(function() return l.listening end))
      server.psql([[notify "Readings Chan", 'one']])
      assert(until_(function() return #got == 1 end))
      server.restart()
      assert(until_(function() return l.listening and l.connects == 2 end, 30))
      server.psql([[notify "Readings Chan", 'two']])
      assert(until_(function() return #got == 2 end))
      l:close()
    end)
    assert.same({ { "one", "Readings Chan", "number" }, { "two", "Readings Chan", "number" } }, got)
  end)
end)
