-- The ingest app against a real PostgreSQL: $DATABASE_URL when set (its
-- readings table is emptied), else a throwaway server started here (Debian
-- postgresql: initdb into a temporary directory as the postgres user when run
-- as root, a free port on 127.0.0.1, stopped at the end).
local testing = require("routemq.testing")

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

-- A throwaway PostgreSQL; returns its URL and a stop function.
local function start_postgres()
  local bin = sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1"):gsub("%s+$", "")
  assert(bin ~= "", "set DATABASE_URL or install PostgreSQL (Debian postgresql)")
  local dir = sh("mktemp -d /tmp/ingest-pg.XXXXXX"):gsub("%s+$", "")
  local as = sh("id -u"):match("^0%s") and "runuser -u postgres -- " or ""
  if as ~= "" then sh("chmod 0755 " .. dir .. " && chown postgres " .. dir) end
  local port = 20000 + math.random(20000)
  local out = sh(as .. bin .. "/initdb -D " .. dir .. "/data -A trust -U postgres --no-sync --no-instructions "
    .. "> " .. dir .. "/initdb.log 2>&1 && " .. as .. bin .. "/pg_ctl -D " .. dir .. "/data -l " .. dir
    .. "/server.log -w -o '-p " .. port .. " -k " .. dir .. " -c listen_addresses=127.0.0.1' start > /dev/null 2>&1; "
    .. "echo rc=$?")
  assert(out:match("rc=0"), "PostgreSQL did not start: " .. sh("cat " .. dir .. "/*.log"))
  local pid = sh("head -1 " .. dir .. "/data/postmaster.pid"):match("%d+")
  return ("postgres://postgres@127.0.0.1:%d/postgres"):format(port), function()
    sh("kill -INT " .. pid .. "; while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.05; done; rm -rf " .. dir)
  end
end

describe("ingest", function()
  local app, url, stop, psql

  setup(function()
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16))
    url = os.getenv("DATABASE_URL")
    if not url then
      url, stop = start_postgres()
    end
    psql = function(sql)
      return (sh("psql -X -A -t -q " .. ("%q"):format(url) .. " -c " .. ("%q"):format(sql) .. " 2>&1"):gsub("%s+$", ""))
    end
    app = testing.app(".", { env = { DATABASE_URL = url, DATABASE_POOL = 4 }, init = true })
  end)
  teardown(function()
    if stop then stop() end
  end)
  before_each(function() psql("truncate readings") end)

  it("stores a reading per message", function()
    local res = app:dispatch("sensors/s1/data", { json = { temp = 21.5, humidity = 40 }, qos = 1 })
    assert.is_nil(res.error)
    res = app:dispatch("sensors/s1/data", { json = { temp = -3.25 }, qos = 1 })
    assert.is_nil(res.error)
    assert.equal("s1|21.5|40\ns1|-3.25|", psql("select device, temp, humidity from readings order by id"))
  end)

  it("stores a device name with quotes literally", function()
    local res = app:dispatch("sensors/x'); drop table readings; --/data", { json = { temp = 1 } })
    assert.is_nil(res.error)
    assert.equal("x'); drop table readings; --", psql("select device from readings"))
  end)

  it("drops a payload that is not a reading, with a warning", function()
    local res = app:dispatch("sensors/s2/data", { payload = "not json" })
    assert.is_nil(res.error)
    assert.equal("0", psql("select count(*) from readings"))
    assert.equal("warn", res.logs[1].level)
    assert.matches("not a reading from s2", res.logs[1].msg)
  end)

  it("replies with the latest reading of a sensor", function()
    app:dispatch("sensors/s3/data", { json = { temp = 10 } })
    app:dispatch("sensors/s3/data", { json = { temp = 11 } })
    local res = app:dispatch("sensors/s3/latest", { props = { response_topic = "replies/1" } })
    assert.is_nil(res.error)
    assert.equal("replies/1", res.published[1].topic)
    assert.equal(11, res.published[1].json.temp)
    res = app:dispatch("sensors/nope/latest", { props = { response_topic = "replies/2" } })
    assert.same({ error = "no reading" }, res.published[1].json)
  end)

  it("prunes old readings", function()
    app:dispatch("sensors/s4/data", { json = { temp = 1 } })
    psql("insert into readings(device, temp, at) values ('old', 1, now() - interval '90 days')")
    local res = app:tick("prune")
    assert.is_nil(res.error)
    assert.equal("s4", psql("select string_agg(device, ',') from readings"))
  end)

  it("fails the message when the database refuses it", function()
    psql("alter table readings add constraint sane check (temp < 1000)")
    local res = app:dispatch("sensors/s5/data", { json = { temp = 5000 } })
    psql("alter table readings drop constraint sane")
    assert.matches('ERROR 23514: new row for relation "readings" violates check constraint "sane"', res.error)
  end)
end)
