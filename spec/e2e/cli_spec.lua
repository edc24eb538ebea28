-- The routemq command line (README.md, "Using it"; docs/configuration.md): exact output and exit codes of
-- version, check, routes, test and run, configuration errors, and <app>/.env.
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson.safe")

-- Configuration variables that the real environment must not leak into a run.
local CONFIG_VARS = {
  "MQTT_BROKER", "MQTT_PORT", "MQTT_GROUP_NAME", "MQTT_PROTOCOL", "MQTT_TLS_ENABLED", "MQTT_CLIENT_ID",
  "WORKER_COUNT", "LOG_LEVEL", "LOG_FORMAT", "ROUTEMQ_RUN_DIR", "ROUTEMQ_HTTP",
}

local scratch = {}  -- temporary directories to remove at the end

local function tmpdir()
  local d = e2e.tmpdir()
  scratch[#scratch + 1] = d
  return d
end

-- Runs `routemq <args>` from the repository root with the config variables
-- unset except those in env; returns { rc =, out =, err =, first = first stderr line }.
local function routemq(args, env, opts)
  opts = opts or {}
  local dir = tmpdir()
  local parts = { "env" }
  for _, k in ipairs(CONFIG_VARS) do parts[#parts + 1] = "-u " .. k end
  for _, k in ipairs(opts.unset or {}) do parts[#parts + 1] = "-u " .. k end
  for k, v in pairs(env or {}) do parts[#parts + 1] = e2e.quote(k .. "=" .. tostring(v)) end
  local cmd = string.format("cd %s && %s timeout %d %s %s > %s/out 2> %s/err; echo $?", e2e.quote(e2e.root),
    table.concat(parts, " "), opts.timeout or 20, e2e.quote(opts.bin or e2e.bin), args, dir, dir)
  local rc = tonumber(e2e.sh(cmd):match("%d+"))
  local err = e2e.read(dir .. "/err")
  return { rc = rc, out = e2e.read(dir .. "/out"), err = err, first = err:match("^[^\n]*") }
end

local function realpath(p)
  return (e2e.sh("realpath " .. e2e.quote(p)):gsub("%s+$", ""))
end

-- A copy of a fixture application in a fresh directory.
local function copy_app(fixture)
  return realpath(e2e.copy_app(fixture, tmpdir()))
end

local function routes_json(res)
  assert.equal(0, res.rc, res.err)
  local list, err = cjson.decode(res.out)
  assert.is_table(list, err)
  local by = {}
  for _, r in ipairs(list) do by[r.pattern] = r end
  return list, by
end

teardown(function()
  for _, d in ipairs(scratch) do e2e.sh("rm -rf " .. e2e.quote(d)) end
end)

describe("routemq version and usage", function()
  it("prints the version", function()
    local res = routemq("version")
    assert.equal(0, res.rc)
    assert.equal("routemq 0.1.0\n", res.out)
    assert.equal("", res.err)
  end)

  it("rejects an unknown command with the usage, exit 1", function()
    local res = routemq("frobnicate")
    assert.equal(1, res.rc)
    assert.equal("routemq: unknown command 'frobnicate'", res.first)
    assert.matches("\nusage: routemq <command> %[options%]\n", res.err)
    assert.equal("", res.out)
  end)

  it("rejects no command at all with the usage, exit 1", function()
    local res = routemq("")
    assert.equal(1, res.rc)
    assert.equal("usage: routemq <command> [options]", res.first)
  end)

  it("rejects an unknown option of run, exit 1", function()
    local res = routemq("run --bogus", { MQTT_BROKER = "127.0.0.1", MQTT_PORT = 1 })
    assert.equal(1, res.rc)
    assert.equal("routemq run: unknown option '--bogus'", res.first)
    assert.matches("\nusage: routemq", res.err)
  end)
end)

describe("routemq check", function()
  local cases = {
    { "spec/fixtures/bad_pattern", "app/routers/bad.lua:3: invalid pattern 'a/#/b': '#' must be the last level" },
    { "spec/fixtures/broken", "app/routers/broken.lua:4: ')' expected (to close '(' at line 3) near 'router'" },
    { "spec/fixtures/router_error", "app/routers/boom.lua:4: boom" },
    { "spec/fixtures/controller_error", "app/controllers/bad.lua:4: attempt to index local 'settings' (a nil value)" },
  }
  for _, case in ipairs(cases) do
    it("reports " .. case[1] .. " as file:line: reason, exit 1", function()
      local res = routemq("check --app " .. case[1])
      assert.equal(1, res.rc)
      assert.equal(case[2], res.first)
      assert.equal("", res.out)
    end)
  end

  it("reports the same error from a copy of the app elsewhere, relative to the app root", function()
    local dir = copy_app("spec/fixtures/bad_pattern")
    local res = routemq("check --app " .. e2e.quote(dir))
    assert.equal(1, res.rc)
    assert.equal(cases[1][2], res.first)
  end)

  it("prints the default app's route table, exit 0", function()
    local res = routemq("check --app .")
    assert.equal(0, res.rc, res.err)
    assert.equal("", res.err)
    local lines = {}
    for line in res.out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.matches("^PATTERN%s+SUBSCRIPTION%s+QOS%s+SHARED%s+WORKERS%s+GROUP$", lines[1])
    local rows = {}
    for i = 2, #lines - 1 do
      local pattern, sub, qos, shared, workers, group = lines[i]:match("^(%S+)%s+(%S+)%s+(%d)%s+(%a+)%s+(%d+)%s+(%S+)$")
      assert.is_not_nil(pattern, lines[i])
      rows[pattern] = { sub = sub, qos = tonumber(qos), shared = shared, workers = tonumber(workers), group = group }
    end
    assert.same({ sub = "$share/routemq/sensors/+/data", qos = 1, shared = "yes", workers = 2, group = "routemq" },
      rows["sensors/{device_id}/data"])
    assert.same({ sub = "alerts/+", qos = 1, shared = "no", workers = 1, group = "-" }, rows["alerts/{device_id}"])
    assert.same({ sub = "devices/+/commands/+", qos = 1, shared = "no", workers = 1, group = "-" },
      rows["devices/{device_id}/commands/{command}"])
    assert.equal("ok: 3 routes, 2 workers", lines[#lines])
  end)

  it("counts the workers given with --workers", function()
    local res = routemq("check --app . --workers 5")
    assert.equal(0, res.rc, res.err)
    assert.matches("\nok: 3 routes, 5 workers\n$", res.out)
  end)
end)

describe("routemq routes --json", function()
  it("is the route table of the app as JSON", function()
    local list, by = routes_json(routemq("routes --json --app ."))
    assert.equal(3, #list)
    for _, r in ipairs(list) do
      for _, k in ipairs({ "pattern", "subscription", "group" }) do assert.is_string(r[k], k) end
      assert.is_number(r.qos)
      assert.is_boolean(r.shared)
      assert.is_number(r.worker_count)
    end
    local s = by["sensors/{device_id}/data"]
    assert.same({ "$share/routemq/sensors/+/data", 1, true, 2, "routemq" },
      { s.subscription, s.qos, s.shared, s.worker_count, s.group })
    local a = by["alerts/{device_id}"]
    assert.same({ "alerts/+", 1, false, 1 }, { a.subscription, a.qos, a.shared, a.worker_count })
    assert.equal("devices/+/commands/+", by["devices/{device_id}/commands/{command}"].subscription)
  end)

  it("agrees with the route table routemq.testing loads", function()
    local _, by = routes_json(routemq("routes --json --app ."))
    local app = require("routemq.testing").app(e2e.root)
    assert.equal(#app.routes, 3)
    for _, r in ipairs(app.routes) do
      local j = by[r.pattern]
      assert.is_table(j, r.pattern)
      assert.same({ r.sub, r.qos, r.shared, r.worker_count, r.group },
        { j.subscription, j.qos, j.shared, j.worker_count, j.group })
    end
  end)

  it("takes the worker count of shared routes from --workers", function()
    local list, by = routes_json(routemq("routes --json --app . --workers 5"))
    assert.equal(5, by["sensors/{device_id}/data"].worker_count)
    for _, r in ipairs(list) do
      if not r.shared then assert.equal(1, r.worker_count, r.pattern) end
    end
  end)

  it("takes the worker count from WORKER_COUNT and the share group from MQTT_GROUP_NAME", function()
    local _, by = routes_json(routemq("routes --json --app .", { WORKER_COUNT = 5, MQTT_GROUP_NAME = "g1" }))
    local s = by["sensors/{device_id}/data"]
    assert.equal(5, s.worker_count)
    assert.equal("g1", s.group)
    assert.equal("$share/g1/sensors/+/data", s.subscription)
    assert.equal("alerts/+", by["alerts/{device_id}"].subscription)
  end)

  it("lets --workers win over WORKER_COUNT", function()
    local _, by = routes_json(routemq("routes --json --app . --workers 3", { WORKER_COUNT = 5 }))
    assert.equal(3, by["sensors/{device_id}/data"].worker_count)
  end)

  it("keeps a route's own group", function()
    local _, by = routes_json(routemq("routes --json --app spec/fixtures/basic", { MQTT_GROUP_NAME = "g1" }))
    assert.equal("$share/pinned/a/+/pinned", by["a/{id}/pinned"].subscription)
    assert.equal("$share/g1/a/+/data", by["a/{id}/data"].subscription)
    assert.equal(3, by["a/{id}/data"].worker_count)
  end)
end)

describe("bad configuration", function()
  local cases = {
    { "MQTT_PORT", "abc", "routemq: MQTT_PORT: 'abc' is not a port number (1-65535)" },
    { "WORKER_COUNT", "0", "routemq: WORKER_COUNT: '0' is not a whole number from 1 to 1024" },
    { "MQTT_PROTOCOL", "7", "routemq: MQTT_PROTOCOL: '7' is not a supported protocol (5 or 3.1.1)" },
    { "LOG_LEVEL", "loud", "routemq: LOG_LEVEL: 'loud' is not one of debug, info, warn, error" },
    { "MQTT_TLS_ENABLED", "maybe", "routemq: MQTT_TLS_ENABLED: 'maybe' is not a boolean (true or false)" },
  }

  for _, case in ipairs(cases) do
    it("stops routemq check on " .. case[1] .. "=" .. case[2] .. ", exit 1", function()
      local res = routemq("check --app .", { [case[1]] = case[2] })
      assert.equal(1, res.rc)
      assert.equal(case[3], res.first)
      assert.equal("", res.out)
    end)
  end

  describe("for routemq run", function()
    local dir, port, pid

    -- A mosquitto that logs every connection, so a run that connects shows up.
    setup(function()
      dir = tmpdir()
      port = e2e.free_port()
      e2e.write(dir .. "/mosquitto.conf", "listener " .. port .. " 127.0.0.1\nallow_anonymous true\n"
        .. "persistence false\nlog_type all\nconnection_messages true\n")
      pid = e2e.spawn("mosquitto -c " .. dir .. "/mosquitto.conf", dir .. "/broker.log")
      assert(e2e.wait_for(function()
        return e2e.sh("mosquitto_pub -p " .. port .. " -t probe -n 2>&1; echo $?"):match("^0%s*$")
      end, 10), e2e.read(dir .. "/broker.log"))
    end)

    teardown(function()
      if pid and e2e.alive(pid) then
        e2e.kill(pid, "TERM")
        e2e.wait_for(function() return not e2e.alive(pid) end, 5)
        if e2e.alive(pid) then e2e.kill(pid, "KILL") end
      end
    end)

    local function connections()
      local _, n = e2e.read(dir .. "/broker.log"):gsub("New client connected", "")
      return n
    end

    it("sees a client that connects (control)", function()
      local before = connections()
      e2e.sh("mosquitto_pub -p " .. port .. " -t probe -n")
      assert.is_true(e2e.wait_for(function() return connections() > before end, 5))
    end)

    for _, case in ipairs(cases) do
      it("stops at once on " .. case[1] .. "=" .. case[2] .. ", exit 1, never connecting", function()
        local env = { MQTT_BROKER = "127.0.0.1", MQTT_PORT = port, ROUTEMQ_RUN_DIR = tmpdir() .. "/run" }
        env[case[1]] = case[2]
        local before = connections()
        local t0 = os.time()
        local res = routemq("run --app .", env, { timeout = 10 })
        assert.equal(1, res.rc, res.err)
        assert.equal(case[3], res.first)
        assert.is_true(os.time() - t0 <= 3, "took " .. (os.time() - t0) .. " s")
        -- A control client connects after it: once the broker logged that,
        -- it would have logged an earlier connection too.
        e2e.sh("mosquitto_pub -p " .. port .. " -t probe -n")
        assert.is_true(e2e.wait_for(function() return connections() > before end, 5))
        assert.equal(before + 1, connections())
      end)
    end
  end)
end)

describe("<app>/.env", function()
  local WORKERS_PATTERN = "a/{id}/data"

  it("is read with comments, export and quoted values", function()
    local dir = copy_app("spec/fixtures/basic")
    e2e.write(dir .. "/.env", table.concat({
      "# settings for the basic fixture",
      "",
      "   # an indented comment",
      "export MQTT_GROUP_NAME=from_env   # the share group",
      "WORKER_COUNT='4'",
      'LOG_LEVEL = "debug"',
      "MQTT_CLIENT_ID=\"id # with a hash\"",
      "",
    }, "\n"))
    local _, by = routes_json(routemq("routes --json --app " .. e2e.quote(dir)))
    assert.equal("$share/from_env/a/+/data", by[WORKERS_PATTERN].subscription)
    assert.equal("from_env", by[WORKERS_PATTERN].group)
    assert.equal(4, by[WORKERS_PATTERN].worker_count)
    assert.equal("$share/pinned/a/+/pinned", by["a/{id}/pinned"].subscription)
  end)

  it("reads a double-quoted value with escapes", function()
    local dir = copy_app("spec/fixtures/basic")
    e2e.write(dir .. "/.env", 'MQTT_GROUP_NAME="say \\"hi\\""\n')
    local _, by = routes_json(routemq("routes --json --app " .. e2e.quote(dir)))
    assert.equal('$share/say "hi"/a/+/data', by[WORKERS_PATTERN].subscription)
  end)

  it("loses to the real environment", function()
    local dir = copy_app("spec/fixtures/basic")
    e2e.write(dir .. "/.env", "MQTT_GROUP_NAME=from_env\nWORKER_COUNT=4\n")
    local _, by = routes_json(routemq("routes --json --app " .. e2e.quote(dir),
      { MQTT_GROUP_NAME = "from_real", WORKER_COUNT = 2 }))
    assert.equal("$share/from_real/a/+/data", by[WORKERS_PATTERN].subscription)
    assert.equal(2, by[WORKERS_PATTERN].worker_count)
  end)

  it("names the file, the line and the variable of a bad value that comes from it", function()
    local dir = copy_app("spec/fixtures/basic")
    e2e.write(dir .. "/.env", "LOG_LEVEL=loud\n")
    local res = routemq("check --app " .. e2e.quote(dir))
    assert.equal(1, res.rc)
    assert.equal("routemq: " .. dir .. "/.env:1: LOG_LEVEL: 'loud' is not one of debug, info, warn, error", res.first)
  end)

  it("rejects a malformed line with <path>/.env:<line>, exit 1", function()
    local dir = copy_app("spec/fixtures/basic")
    e2e.write(dir .. "/.env", "# ok\nMQTT_GROUP_NAME=g\nthis line has no equals sign\n")
    for _, cmd in ipairs({ "check", "routes --json" }) do
      local res = routemq(cmd .. " --app " .. e2e.quote(dir))
      assert.equal(1, res.rc, cmd)
      assert.equal("routemq: " .. dir .. "/.env:3: expected KEY=VALUE", res.first, cmd)
      assert.equal("", res.out, cmd)
    end
  end)

  it("rejects an unterminated quote with <path>/.env:<line>, exit 1", function()
    local dir = copy_app("spec/fixtures/basic")
    e2e.write(dir .. "/.env", "MQTT_GROUP_NAME=\"g\n")
    local res = routemq("check --app " .. e2e.quote(dir))
    assert.equal(1, res.rc)
    assert.equal("routemq: " .. dir .. "/.env:1: unterminated quote", res.first)
  end)

  it("stops routemq run on a malformed line before it connects, exit 1", function()
    local dir = copy_app("spec/fixtures/basic")
    e2e.write(dir .. "/.env", "=nokey\n")
    local res = routemq("run --app " .. e2e.quote(dir), { MQTT_BROKER = "127.0.0.1", MQTT_PORT = 1,
      ROUTEMQ_RUN_DIR = tmpdir() .. "/run" }, { timeout = 10 })
    assert.equal(1, res.rc)
    assert.equal("routemq: " .. dir .. "/.env:1: expected KEY=VALUE", res.first)
  end)
end)

describe("routemq test", function()
  local function app_with_spec(body)
    local dir = tmpdir()
    e2e.sh("mkdir -p " .. e2e.quote(dir .. "/app/routers") .. " " .. e2e.quote(dir .. "/spec"))
    e2e.write(dir .. "/app/routers/greet.lua", table.concat({
      'local router = require("routemq.router")',
      'router.on("hello/{name}", function(ctx)',
      '  ctx:publish("greetings/" .. ctx.params.name, { text = "hi " .. ctx.params.name })',
      "end)",
      "",
    }, "\n"))
    e2e.write(dir .. "/spec/greet_spec.lua", table.concat({
      'local testing = require("routemq.testing")',
      'describe("greet", function()',
      '  local app = testing.app(".")',
      '  it("greets by name", function()',
      '    local res = app:dispatch("hello/bob")',
      "    assert.is_nil(res.error)",
      '    assert.equal("hello/{name}", res.route)',
      body,
      "  end)",
      "end)",
      "",
    }, "\n"))
    return dir
  end

  it("runs the app's specs with routemq's modules on the paths, exit 0", function()
    local dir = app_with_spec('    assert.same({ text = "hi bob" }, res.published[1].json)')
    -- No LUA_PATH / LUA_CPATH from the caller: routemq test sets them itself.
    local res = routemq("test --app " .. e2e.quote(dir), nil, { unset = { "LUA_PATH", "LUA_CPATH" } })
    assert.equal(0, res.rc, res.out .. res.err)
    assert.matches("\n1 success / 0 failures / 0 errors / 0 pending : [%d.]+ seconds", res.out)
  end)

  it("passes busted options through", function()
    local dir = app_with_spec('    assert.equal("greetings/bob", res.published[1].topic)')
    local res = routemq("test --app " .. e2e.quote(dir) .. " -o TAP", nil, { unset = { "LUA_PATH", "LUA_CPATH" } })
    assert.equal(0, res.rc, res.out .. res.err)
    assert.equal("ok 1 - greet greets by name\n1..1\n", res.out)
  end)

  it("passes an option with blanks through as one argument (--filter 'greets by')", function()
    local dir = app_with_spec('    assert.equal("greetings/bob", res.published[1].topic)')
    local res = routemq("test --app " .. e2e.quote(dir) .. " -o TAP --filter 'greets by'", nil,
      { unset = { "LUA_PATH", "LUA_CPATH" } })
    assert.equal(0, res.rc, res.out .. res.err)
    assert.equal("ok 1 - greet greets by name\n1..1\n", res.out)
    res = routemq("test --app " .. e2e.quote(dir) .. " -o TAP --filter 'greets nobody'", nil,
      { unset = { "LUA_PATH", "LUA_CPATH" } })
    assert.equal(0, res.rc, res.out .. res.err)
    assert.equal("1..0\n", res.out)
  end)

  it("exits non-zero when a spec fails", function()
    local dir = app_with_spec('    assert.equal("greetings/alice", res.published[1].topic)')
    local res = routemq("test --app " .. e2e.quote(dir), nil, { unset = { "LUA_PATH", "LUA_CPATH" } })
    assert.is_true(res.rc ~= 0 and res.rc ~= 124, "exit " .. tostring(res.rc))
    assert.matches("0 successes / 1 failure / 0 errors / 0 pending", res.out)
  end)
end)
