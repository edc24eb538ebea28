-- routemq.mysql (docs/guide.md, "Databases") against a real MariaDB (Debian mariadb-server):
-- the API on a controller in this process, then handlers inserting a row per
-- message and a statement stopped with KILL QUERY at its handler's timeout.
local e2e = require("spec.helpers.e2e")
local myh = require("spec.helpers.mariadb")
local cqh = require("spec.helpers.cq")
local cqueues = require("cqueues")
local csocket = require("cqueues.socket")
local mysql = require("routemq.mysql")
local runner_mod = require("routemq.runner")

local APP = e2e.root .. "/spec/e2e/apps/mysql"

local run = cqh.run

describe("routemq.mysql", function()
  local server, db
  setup(function()
    server = myh.start()
    db = mysql.pool({ url = server.url, size = 4 })
  end)
  teardown(function() server.stop() end)

  it("round-trips values, stores parameters literally, returns errors and raises on misuse", function()
    server.sql("create table test.t(id int auto_increment primary key, s longtext, b longblob, d double, "
      .. "big bigint, n decimal(40, 10))")
    local evil = "x'); drop table t; -- \\' \" ? `"
    local blob = "\0\1\2\0\255'\\x00\0"
    local big = string.rep("0123456789abcdef", 65536)
    run(function()
      local r = assert(db:query("insert into t(s, b, d, big, n) values (?, ?, ?, ?, ?)", evil, blob,
        1.7976931348623157e308, "9223372036854775807", "123456789012345678901234567890.0123456789"))
      assert.equal(1, r.affected)
      local got = assert(db:query("select s, b, d, big, n, null as z, -2147483648 as i from t where id = ?",
        r.insert_id))[1]
      assert.same({ s = evil, b = blob, d = 1.7976931348623157e308, big = "9223372036854775807",
        n = "123456789012345678901234567890.0123456789", z = mysql.null, i = -2147483648 }, got)
      assert(db:query("insert into t(s) values (?)", big))
      assert.equal(big, assert(db:query("select s from t where length(s) = ?", #big))[1].s)
      -- ? inside quotes and comments is not a parameter.
      assert.equal("a?b", assert(db:query("select 'a?b' as v /* ? */ -- ?\n"))[1].v)
      local rows, err = db:query("select * from no_such_table where x = ?", 1)
      assert.is_nil(rows)
      assert.equal(1146, err.errno)
      assert.equal("42S02", err.sqlstate)
      assert.equal("ERROR 1146 (42S02): Table 'test.no_such_table' doesn't exist", tostring(err))
      local ok, e = pcall(function() db:query("select ?, ?", 1) end)
      assert.is_false(ok)
      assert.matches("mysql_spec%.lua:%d+: routemq%.mysql: db:query: the SQL has more %? than the 1 parameter", e)
      ok, e = pcall(function() db:query("select ?", {}) end)
      assert.is_false(ok)
      assert.matches("mysql_spec%.lua:%d+: routemq%.mysql: db:query: parameter 1 is a table", e)
      assert.equal(0, db:stats().waiting)
      assert.equal(db:stats().open, db:stats().idle)
    end)
    -- Stored as given, and the table is still there.
    assert.equal("1", server.sql("select count(*) from test.t where s like 'x'');%' and length(s) = " .. #evil))
  end)

  it("commits, rolls back on a raised error or a failed statement; times out connecting", function()
    server.sql("create table test.acct(name varchar(10) primary key, n int)")
    local silent = csocket.listen({ host = "127.0.0.1", port = 0 })
    local _, _, port = silent:localname()
    run(function()
      assert.same({ "done" }, { db:transaction(function(tx)
        assert(tx:query("insert into acct values (?, ?)", "a", 1))
        return "done"
      end) })
      local ok, e = pcall(db.transaction, db, function(tx)
        assert(tx:query("update acct set n = 100"))
        error("changed my mind")
      end)
      assert.is_false(ok)
      assert.matches("changed my mind", e)
      local r, err = db:transaction(function(tx)
        tx:query("update acct set n = 200")
        tx:query("insert into acct values (?, ?)", "a", 3)
      end)
      assert.is_nil(r)
      assert.equal(1062, err.errno)
      local slow = mysql.pool({ url = "mysql://u:p@127.0.0.1:" .. port .. "/x", connect_timeout = 0.5 })
      local t0 = cqueues.monotime()
      r, err = slow:query("select 1")
      assert.is_nil(r)
      assert.equal("connect timeout after 0.5 s", err.message)
      assert.is_true(cqueues.monotime() - t0 < 3)
    end)
    silent:close()
    assert.equal("a\t1", server.sql("select name, n from test.acct"))
  end)

  it("stops the statement of a job dropped at its deadline with KILL QUERY", function()
    local sleeping = "select count(*) from information_schema.processlist where info like '%sleep(30)%' "
      .. "and info not like '%processlist%'"
    local cq = cqueues.new()
    local r = runner_mod.new(cq)
    local one = mysql.pool({ url = server.url, size = 1 })
    local outcome
    r:start(function() one:query("select sleep(30)") end, nil, 0.5, function(_, ok, err) outcome = { ok, err } end)
    assert(r:run_until(function() return outcome ~= nil end, 10))
    assert.same({ false, "timeout after 0.5 s" }, outcome)
    assert(r:run_until(function() return one:stats().open == 0 end, 10))
    assert(e2e.wait_for(function() return server.sql(sleeping) == "0" end, 5))
    local got
    r:start(function() got = assert(one:query("select 41 + 1 as v"))[1].v end, nil, 5, function() end)
    assert(r:run_until(function() return got ~= nil end, 10))
    assert.equal(42, got)
  end)

  it("inserts one row per message from handlers (concurrency 64, pool 16); a timed-out one is killed", function()
    server.sql("create table test.msgs(id int auto_increment primary key, payload varchar(20), pid int); "
      .. "create table test.jobs(kind varchar(10), worker int)")
    local broker = e2e.broker()
    e2e.defer(broker.stop)
    local r = e2e.routemq(broker, APP, "run", { DATABASE_URL = server.url, WORKER_CONCURRENCY = 64, DB_POOL = 16 })
    assert.truthy(e2e.wait_for(function() return r.ready(1) end, 20), e2e.read(r.log))
    e2e.publish(broker.port, "my/sleep", "S", "-q 1")
    local n = 5000
    local t0 = e2e.now()
    e2e.publish_lines(broker.port, "my/insert", e2e.seq(1, n), 1)
    e2e.settle(r.dir, n, 5)
    local took = e2e.now() - t0
    assert.same({ 0, 0 }, { e2e.tally(r.dir, n) })
    assert.equal(tostring(n), server.sql("select count(*) from test.msgs"))
    assert.equal("1", server.sql("select count(*) from test.jobs where kind = 'init'"))
    assert(e2e.wait_for(function() return e2e.read(r.log):find("timeout after 1 s", 1, true) end, 10))
    assert(e2e.wait_for(function()
      return server.sql("select count(*) from information_schema.processlist where info like "
        .. "'%routemq-spec-sleep%' and info not like '%processlist%'") == "0"
    end, 10))
    print(string.format("\n  MariaDB insert per message, 1 worker x 64, pool 16: %d rows in %.2f s (%.0f msg/s, "
      .. "publishing included)", n, took, n / took))
  end)
end)
