-- `routemq console` in a real pseudo-terminal (a private tmux server): the
-- application is loaded, a dispatch shows its publish and log lines, app
-- modules can be required, readline's history works, Ctrl-D leaves.
local e2e = require("spec.helpers.e2e")

local Q = e2e.quote

describe("routemq console", function()
  local base, app, tmux, done

  -- Runs a tmux command against the private server.
  local function t(args)
    return e2e.sh(tmux .. " " .. args .. " 2>&1")
  end

  local function screen()
    return t("capture-pane -p -J -S -200 -t console")
  end

  local function wait_screen(text)
    return e2e.wait_for(function() return screen():find(text, 1, true) end, 10)
  end

  -- Types a line as keystrokes, then Enter.
  local function type_line(line)
    t("send-keys -t console -l " .. Q(line))
    t("send-keys -t console Enter")
  end

  setup(function()
    base = e2e.tmpdir()
    app = base .. "/myapp"
    assert(e2e.sh(Q(e2e.bin) .. " new " .. Q(app) .. " >/dev/null 2>&1; echo $?"):match("^0"))
    -- The socket's path names the test's directory, so a server left behind
    -- is found by make test's leftover check.
    tmux = "tmux -S " .. Q(base .. "/tmux.sock")
    done = base .. "/exit"
    local cmd = string.format("cd %s && env -u LUA_PATH -u LUA_CPATH TERM=xterm %s console; echo $? > %s",
      Q(app), Q(e2e.bin), Q(done))
    t("-f /dev/null new-session -d -s console -x 160 -y 50 " .. Q(cmd))
  end)

  teardown(function()
    t("kill-server")
    e2e.sh("rm -rf " .. Q(base))
  end)

  it("loads the application and prints its banner", function()
    assert.truthy(wait_screen("routemq console: " .. app .. ", 2 routes."), screen())
  end)

  it("dispatches a message and shows what would be published and logged", function()
    type_line('app:dispatch("sensors/42/data", { json = { temp = 91 } })')
    assert.truthy(wait_screen("publish  alerts/42 qos 1"), screen())
    local s = screen()
    assert.truthy(s:find("route    sensors/{device_id}/data  params { device_id = \"42\" }", 1, true), s)
    assert.truthy(s:find("log      info  reading from 42: 91", 1, true), s)
  end)

  it("lists the routes", function()
    type_line("app:routes()")
    assert.truthy(wait_screen("sensors/+/data"), screen())
  end)

  it("requires the application's modules and keeps globals between lines", function()
    type_line('Sensor = require("app.controllers.sensor")')
    type_line("type(Sensor.data)")
    assert.truthy(wait_screen('"function"'), screen())
  end)

  it("continues an unfinished statement on the next line and reports errors", function()
    type_line("for i = 1, 2 do")
    type_line("print('line ' .. i * 10)")
    type_line("end")
    assert.truthy(wait_screen("line 20"), screen())
    type_line("nosuch.field")
    assert.truthy(wait_screen("attempt to index global 'nosuch'"), screen())
  end)

  it("edits lines: the up arrow brings back the previous line", function()
    type_line("40 + 2")
    assert.truthy(wait_screen("\n42"), screen())
    t("send-keys -t console Up")
    t("send-keys -t console -l ' + 1'")
    t("send-keys -t console Enter")
    assert.truthy(wait_screen("\n43"), screen())
  end)

  it("leaves on Ctrl-D with exit code 0", function()
    t("send-keys -t console C-d")
    assert.truthy(e2e.wait_for(function() return e2e.read(done) ~= "" end, 10), screen())
    assert.equal("0\n", e2e.read(done))
  end)
end)

describe("routemq console without a terminal", function()
  it("reads lines from a pipe and says why an application does not load", function()
    local dir = e2e.tmpdir()
    e2e.sh("mkdir -p " .. Q(dir .. "/app/routers"))
    e2e.write(dir .. "/app/routers/bad.lua", "local router = require('routemq.router')\nrouter.on('a/#/b', print)\n")
    local out = e2e.sh("printf '1 + 1\\n' | " .. Q(e2e.bin) .. " console --app " .. Q(dir) .. " 2>&1; echo rc=$?")
    e2e.sh("rm -rf " .. Q(dir))
    assert.matches("the application did not load: app/routers/bad.lua:2: invalid pattern 'a/#/b'", out, 1, true)
    assert.matches("\n> 2\n", out, 1, true)
    assert.matches("rc=0\n$", out)
  end)
end)
