-- Configuration errors name where the bad value is (issue 14 item 8): a value
-- from <app>/.env is reported with the file and its line, one from the real
-- environment without; `run` warns about an application without routes.
local e2e = require("spec.helpers.e2e")

local CONFIG_VARS = { "MQTT_BROKER", "MQTT_PORT", "MQTT_TLS_ENABLED", "MQTT_TLS_CA_CERTS", "WORKER_STOP_TIMEOUT",
  "LOG_LEVEL", "ROUTEMQ_RUN_DIR", "ROUTEMQ_HTTP", "WORKER_COUNT" }

--- An application directory (realpath) with the basic app and the given .env.
local function app_with_env(env_text, routers)
  local dir = e2e.tmpdir()
  e2e.defer(function() e2e.sh("rm -rf " .. dir) end)
  if routers then
    e2e.sh("mkdir -p " .. dir .. "/app/routers")
    e2e.write(dir .. "/app/routers/r.lua", routers)
  else
    e2e.copy_app("spec/e2e/apps/basic", dir)
  end
  if env_text then e2e.write(dir .. "/.env", env_text) end
  return (e2e.sh("realpath " .. dir):gsub("%s+$", ""))
end

--- `routemq <cmd> --app <app>` with env (and the config variables otherwise unset): rc, stderr.
local function routemq(cmd, app, env, timeout)
  local parts = { "env" }
  for _, k in ipairs(CONFIG_VARS) do parts[#parts + 1] = "-u " .. k end
  for k, v in pairs(env or {}) do parts[#parts + 1] = e2e.quote(k .. "=" .. v) end
  local errf = os.tmpname()
  local rc = tonumber(e2e.sh(string.format("cd %s && %s timeout %d %s %s --app %s > /dev/null 2> %s; echo $?",
    e2e.root, table.concat(parts, " "), timeout or 10, e2e.bin, cmd, app, errf)):match("%d+"))
  local err = e2e.read(errf)
  os.remove(errf)
  return rc, err
end

describe("configuration errors", function()
  it("name <app>/.env and the line of a bad value from it", function()
    local app = app_with_env("# broker\nMQTT_BROKER=127.0.0.1\n\nexport MQTT_PORT = abc\nWORKER_STOP_TIMEOUT=-1\n")
    for _, cmd in ipairs({ "check", "run" }) do
      local rc, err = routemq(cmd, app)
      assert.equal(1, rc)
      assert.equal("routemq: " .. app .. "/.env:4: MQTT_PORT: 'abc' is not a port number (1-65535)\n", err)
    end
    local rc, err = routemq("check", app, { MQTT_PORT = "1883" })
    assert.equal(1, rc)
    assert.equal("routemq: " .. app .. "/.env:5: WORKER_STOP_TIMEOUT: '-1' is not a number of seconds >= 0\n", err)
  end)

  it("name no file for a bad value from the environment, which wins over .env", function()
    local app = app_with_env("MQTT_PORT=1883\nLOG_LEVEL=info\n")
    local rc, err = routemq("check", app, { MQTT_PORT = "x" })
    assert.equal(1, rc)
    assert.equal("routemq: MQTT_PORT: 'x' is not a port number (1-65535)\n", err)
  end)

  it("name the .env line of a TLS file that does not exist", function()
    local app = app_with_env("MQTT_TLS_ENABLED=true\nMQTT_TLS_CA_CERTS=/nonexistent/ca.pem\n")
    local rc, err = routemq("run", app)
    assert.equal(1, rc)
    assert.equal("routemq: " .. app .. "/.env:2: MQTT_TLS_CA_CERTS: /nonexistent/ca.pem: No such file or directory\n",
      err)
  end)
end)

describe("routemq run of an application without routes", function()
  it("warns that its worker subscribes to nothing", function()
    local app = app_with_env(nil, 'local router = require("routemq.router")\nassert(router)\n')
    local dir = e2e.tmpdir()
    e2e.defer(function() e2e.sh("rm -rf " .. dir) end)
    local _, err = routemq("run", app, { MQTT_BROKER = "127.0.0.1", MQTT_PORT = tostring(e2e.free_port()),
      ROUTEMQ_RUN_DIR = dir .. "/run" }, 2)
    assert.matches("warn  %[master%] the application in " .. app:gsub("%p", "%%%0") .. " registers no routes %(no "
      .. "router%.on in app/routers/%*%.lua%): its worker connects and subscribes to nothing\n", err)
  end)
end)
