-- `routemq new DIR`: the generated application passes its own specs and
-- luacheck, `routemq dev` serves its route, and a non-empty directory is
-- refused.
local e2e = require("spec.helpers.e2e")

local Q = e2e.quote

-- Runs a shell command without the source tree's Lua paths (as a user would);
-- returns rc, stdout, stderr.
local function run(cmd)
  local dir = e2e.tmpdir()
  local rc = e2e.sh(string.format("env -u LUA_PATH -u LUA_CPATH -u LUA_INIT sh -c %s > %s/out 2> %s/err; echo $?",
    Q(cmd), dir, dir))
  local out, err = e2e.read(dir .. "/out"), e2e.read(dir .. "/err")
  e2e.sh("rm -rf " .. Q(dir))
  return tonumber(rc:match("%d+")), out, err
end

-- The variables routemq reads (config.c), each of which .env.example documents.
local function config_variables()
  local names = {}
  local src = e2e.read(e2e.root .. "/runtime/config.c")
  for name in src:gmatch('"(%u[%u%d]*_[%u%d_]+)"') do names[name] = true end
  return names
end

describe("routemq new", function()
  local base, app

  setup(function()
    base = e2e.tmpdir()
    app = base .. "/myapp"
    local rc, out, err = run(Q(e2e.bin) .. " new " .. Q(app))
    assert(rc == 0, out .. err)
    assert(out:find("created " .. app, 1, true), out)
  end)

  teardown(function()
    e2e.sh("rm -rf " .. Q(base))
  end)

  it("creates routers, controllers, middleware, a spec and the editor and lint settings", function()
    for _, f in ipairs({ "app/routers/sensors.lua", "app/controllers/sensor.lua", "app/middleware/timing.lua",
      "spec/sensor_spec.lua", ".env.example", ".luacheckrc", ".luarc.json", ".busted", ".gitignore",
      "README.md" }) do
      assert.equal(0, (run("test -f " .. Q(app .. "/" .. f))), f)
    end
    assert.matches("^# myapp\n", e2e.read(app .. "/README.md"))
  end)

  it("passes its own specs with routemq test, and luacheck", function()
    local rc, out, err = run("cd " .. Q(app) .. " && " .. Q(e2e.bin) .. " test")
    assert.equal(0, rc, out .. err)
    assert.matches("6 successes / 0 failures / 0 errors", out)
    rc, out = run("cd " .. Q(app) .. " && luacheck .")
    assert.equal(0, rc, out)
  end)

  it("documents every variable routemq reads in .env.example, with its default", function()
    local text = e2e.read(app .. "/.env.example")
    for name in pairs(config_variables()) do
      assert.truthy(text:find("\n# " .. name .. "=", 1, true), name .. " is missing from .env.example")
    end
    assert.truthy(text:find("\n# MQTT_PORT=1883\n", 1, true))
    assert.truthy(text:find("\n# WORKER_HANDLER_TIMEOUT=30\n", 1, true))
  end)

  it("points the language server at routemq's type definitions", function()
    local luarc = require("cjson").decode(e2e.read(app .. "/.luarc.json"))
    local lib = luarc["workspace.library"][1]
    assert.equal("LuaJIT", luarc["runtime.version"])
    assert.equal(0, (run("test -f " .. Q(lib .. "/routemq/router.lua"))), lib)
    assert.matches("^%-%-%-@meta", e2e.read(lib .. "/routemq/context.lua"))
  end)

  it("refuses a directory that is not empty, exit 1, and changes nothing there", function()
    local rc, out, err = run(Q(e2e.bin) .. " new " .. Q(app))
    assert.equal(1, rc, out)
    assert.equal("routemq new: " .. app .. " is not empty; give a new or empty directory\n", err)
    assert.matches("^# myapp\n", e2e.read(app .. "/README.md"))
    rc, out, err = run(Q(e2e.bin) .. " new")
    assert.equal(1, rc, out)
    assert.equal("routemq: usage: routemq new DIR\n", err)
  end)

  it("fills an existing empty directory", function()
    local empty = base .. "/empty"
    run("mkdir " .. Q(empty))
    local rc, out, err = run("cd " .. Q(empty) .. " && " .. Q(e2e.bin) .. " new .")
    assert.equal(0, rc, out .. err)
    assert.matches("^# empty\n", e2e.read(empty .. "/README.md"))
  end)

  it("is served by routemq dev: a published reading is handled and logged", function()
    local log = base .. "/dev.log"
    local pid, port, broker_pid, up = e2e.dev("cd " .. Q(app) .. " && exec " .. Q(e2e.bin) .. " dev", log,
      { MQTT_CLIENT_ID = "new" .. base:match("([^.]+)$"), ROUTEMQ_RUN_DIR = base .. "/run" })
    assert.truthy(up, e2e.read(log))
    -- The line dev prints is the one the generated README tells to run.
    local hint = e2e.read(log):match("publish to it:%s+(mosquitto_pub [^\n]+)")
    assert.equal("mosquitto_pub -p " .. port .. " -t sensors/42/data -m '{\"temp\": 91}'", hint)
    assert.equal(0, (run(hint)))
    assert.truthy(e2e.wait_for(function() return e2e.read(log):find("reading from 42: 91", 1, true) end, 10),
      e2e.read(log))
    e2e.kill(pid, "TERM")
    assert.truthy(e2e.wait_for(function() return not e2e.alive(pid) end, 10))
    assert.truthy(e2e.wait_for(function() return not e2e.alive(broker_pid) end, 5))
  end)
end)

describe("the man page routemq(1)", function()
  local man = e2e.read(e2e.root .. "/share/man/routemq.1"):gsub("\\%-", "-"):gsub("\\f[BIRP]", "")

  it("names every variable routemq reads", function()
    for name in pairs(config_variables()) do
      assert.truthy(man:find(name, 1, true), name .. " is missing from share/man/routemq.1")
    end
  end)

  it("names every command and option of the usage text, and the exit codes", function()
    local usage = e2e.sh(Q(e2e.bin) .. " help")
    local commands = man:match("\n%.SH COMMANDS\n(.-)\n%.SH ")
    for _, cmd in ipairs({ "run", "dev", "check", "routes", "status", "reload", "stop", "scale", "test", "new",
      "console", "version" }) do
      assert.truthy(usage:find("%f[%l]" .. cmd .. "%f[^%l]"), cmd .. " is not in the usage text")
      assert.truthy(commands:find("\n.B " .. cmd .. "\n", 1, true) or commands:find("\n.BI " .. cmd .. " ", 1, true),
        "no COMMANDS entry for " .. cmd)
    end
    for opt in usage:gmatch("%-%-[%l-]+") do
      assert.truthy(man:find(opt, 1, true), opt)
    end
    assert.truthy(man:find(".SH EXIT STATUS\n.TP\n.B 0\n", 1, true))
    assert.truthy(man:find("\n.B 1\n", 1, true) and man:find("\n.B 2\n", 1, true))
  end)
end)
