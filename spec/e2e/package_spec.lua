-- The Debian package (make package): built, checked with dpkg-deb and
-- lintian, installed with apt-get, the README's install and quick-start lines
-- run as they are written (the port of mosquitto_pub being the one dev
-- printed), then removed: nothing of ours may be left. It installs into the
-- machine's /usr, so it runs only as root (CI runs as root on a throwaway
-- machine) and removes the package again whatever happens.
local e2e = require("spec.helpers.e2e")

local Q = e2e.quote
local ROOT = e2e.root
local BUILD = e2e.bin:match("^(.*)/[^/]*$") or (ROOT .. "/build")
local ENABLED = e2e.sh("id -u"):match("^0%s") and e2e.sh("command -v apt-get") ~= ""
  and os.getenv("ROUTEMQ_SKIP_PACKAGE") == nil

-- Runs a shell command as a user of the package would: no Lua paths from the
-- source tree, the system PATH. Returns rc, stdout, stderr.
local function run(cmd, dir)
  local tmp = e2e.tmpdir()
  local rc = e2e.sh(string.format("cd %s && env -u LUA_PATH -u LUA_CPATH -u LUA_INIT "
    .. "PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive sh -c %s > %s/out 2> %s/err < /dev/null; "
    .. "echo $?", Q(dir or ROOT), Q(cmd), tmp, tmp))
  local out, err = e2e.read(tmp .. "/out"), e2e.read(tmp .. "/err")
  e2e.sh("rm -rf " .. Q(tmp))
  return tonumber(rc:match("%d+")), out, err
end

-- The lines of the README's ```sh block that follows `<!-- marker`.
local function readme_block(marker)
  local text = e2e.read(ROOT .. "/README.md")
  local at = assert(text:find("<!-- " .. marker, 1, true), "README has no block " .. marker)
  local block = assert(text:match("```sh\n(.-)```", at))
  local lines = {}
  for line in block:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines
end

-- A README line run as root on a machine without sudo: drop the "sudo ".
local function as_root(line)
  if e2e.sh("command -v sudo") == "" then return (line:gsub("^sudo ", "")) end
  return line
end

local APT = "apt-get -y -q -o DPkg::Lock::Timeout=300 "

local function installed()
  return e2e.sh("dpkg-query -W -f='${db:Status-Abbrev}' routemq 2>/dev/null"):match("^ii") ~= nil
end

local function remove()
  return run(APT .. "remove routemq")
end

local describe_if = ENABLED and describe or pending

describe_if("the Debian package", function()
  local deb, files, existed, work

  local function install()
    existed = {}
    -- The README's install block, line by line, in the source tree.
    for _, line in ipairs(readme_block("install")) do
      if line:match("^make package") then line = line .. " BUILD=" .. Q(BUILD) end
      if line:find("./build/", 1, true) then line = line:gsub("%./build/", BUILD .. "/") end
      if line:find("apt-get install", 1, true) then
        -- Which of the package's paths exist without it (/usr/bin, ...).
        deb = e2e.sh("ls " .. Q(BUILD) .. "/routemq_*.deb"):match("[^\n]+")
        local _, listing = run("dpkg-deb -c " .. Q(deb))
        for path in listing:gmatch("%s%./(%S*)") do
          path = "/" .. path:gsub("/$", "")
          if run("test -e " .. Q(path)) == 0 then existed[path] = true end
        end
      end
      local rc, out, err = run(as_root(line))
      assert(rc == 0, line .. "\n" .. out .. err)
    end
    assert(installed(), "routemq is not installed")
    local _, list = run("dpkg -L routemq")
    files = {}
    for path in list:gmatch("[^\n]+") do
      if path ~= "/." then files[#files + 1] = path end
    end
  end

  setup(function()
    work = e2e.tmpdir()
    if installed() then remove() end
    -- A failed set-up must not leave the package installed either.
    local ok, err = pcall(install)
    if not ok then
      if installed() then remove() end
      error(err, 0)
    end
  end)

  teardown(function()
    if installed() then remove() end
    if work then e2e.sh("rm -rf " .. Q(work)) end
  end)

  it("is named routemq_<version>_<arch>.deb and its Depends are computed", function()
    local arch = e2e.sh("dpkg --print-architecture"):match("%S+")
    assert.equal(BUILD .. "/routemq_0.1.0_" .. arch .. ".deb", deb)
    local _, info = run("dpkg-deb --info " .. Q(deb))
    local depends = info:match("\n Depends: ([^\n]+)")
    assert.truthy(depends, info)
    for _, dep in ipairs({ "lua-cjson", "lua-cqueues", "libmosquitto1 (>=", "libc6 (>=", "libbsd0" }) do
      assert.truthy(depends:find(dep, 1, true), dep .. " missing from Depends: " .. depends)
    end
    assert.matches("\n Recommends: [^\n]*mosquitto", info)
    assert.matches("\n Recommends: [^\n]*lua%-busted", info)
    assert.matches("\n Recommends: [^\n]*libpq5", info)  -- routemq.pg
    assert.matches("\n Recommends: [^\n]*libmariadb3", info)  -- routemq.mysql
  end)

  it("has no lintian errors", function()
    local rc, out, err = run("lintian --fail-on error " .. Q(deb))
    assert.equal(0, rc, out .. err)
    assert.is_nil(out:match("\nE: ") or out:match("^E: "), out)
  end)

  it("installs the files where Debian's LuaJIT, man and systemd look", function()
    local multiarch = e2e.sh("dpkg-architecture -qDEB_HOST_MULTIARCH"):match("%S+")
    for _, path in ipairs({ "/usr/bin/routemq", "/usr/share/lua/5.1/routemq/router.lua",
      "/usr/share/lua/5.1/routemq/testing.lua", "/usr/lib/" .. multiarch .. "/lua/5.1/routemq/core.so",
      "/usr/share/routemq/template/app/routers/sensors.lua", "/usr/share/routemq/types/routemq/context.lua",
      "/usr/share/man/man1/routemq.1.gz", "/lib/systemd/system/routemq@.service" }) do
      assert.equal(0, (run("test -e " .. Q(path))), path)
    end
    local rc, out = run("command -v routemq")
    assert.equal(0, rc)
    assert.equal("/usr/bin/routemq\n", out)
    rc, out = run("man -w routemq")
    assert.equal(0, rc, out)
    local unit = e2e.read("/lib/systemd/system/routemq@.service")
    assert.matches("\nType=notify\n", unit)
    assert.matches("\nExecStart=/usr/bin/routemq run %-%-app %%f\n", unit)
    assert.matches("\nExecReload=/bin/kill %-HUP %$MAINPID\n", unit)
    if run("command -v systemd-analyze") == 0 then
      -- An instance of the template, as `systemctl enable routemq@srv-myapp` makes.
      local units = e2e.tmpdir()
      run("ln -s /lib/systemd/system/routemq@.service " .. Q(units .. "/routemq@srv-myapp.service"))
      local vrc, vout, verr = run("systemd-analyze verify " .. Q(units .. "/routemq@srv-myapp.service"))
      e2e.sh("rm -rf " .. Q(units))
      assert.equal(0, vrc, vout .. verr)
    end
  end)

  it("runs the README's quick start word for word, with nothing from the source tree", function()
    local cwd = work
    local dev_log, dev_pid, broker_pid, port
    e2e.defer(function()
      if dev_pid and e2e.alive(dev_pid) then
        e2e.kill(dev_pid, "TERM")
        e2e.wait_for(function() return not e2e.alive(dev_pid) end, 10)
        if e2e.alive(dev_pid) then e2e.kill(dev_pid, "KILL") end
      end
      if broker_pid and e2e.alive(broker_pid) then e2e.kill(broker_pid, "KILL") end
    end)
    for _, line in ipairs(readme_block("quick start")) do
      if line:match("^cd ") then
        cwd = cwd .. "/" .. line:match("^cd (%S+)")
      elseif line == "routemq dev" then
        dev_log = work .. "/dev.log"
        dev_pid = e2e.spawn("cd " .. Q(cwd) .. " && exec env -u LUA_PATH -u LUA_CPATH PATH=/usr/sbin:/usr/bin:/bin "
          .. line, dev_log)
        local up
        port, broker_pid, up = e2e.dev_broker(dev_log)
        assert.truthy(up, e2e.read(dev_log))
      else
        local rc, out, err = run(line, cwd)
        assert.equal(0, rc, line .. "\n" .. out .. err)
        if line == "routemq test" then assert.matches("6 successes / 0 failures / 0 errors", out) end
      end
    end
    assert.truthy(dev_log, "the quick start has no routemq dev line")
    local publish = readme_block("publish")
    assert.equal(1, #publish)
    local line = publish[1]:gsub("<port>", port)
    assert.truthy(e2e.read(dev_log):find(line, 1, true), "dev does not print the README's line: " .. line)
    local rc, out, err = run(line, cwd)
    assert.equal(0, rc, out .. err)
    assert.truthy(e2e.wait_for(function() return e2e.read(dev_log):find("reading from 42: 91", 1, true) end, 10),
      e2e.read(dev_log))

    -- The application's specs also run under plain busted, and the console
    -- works from the installed copy.
    rc, out, err = run("busted --lua=luajit", cwd)
    assert.equal(0, rc, out .. err)
    assert.matches("6 successes / 0 failures / 0 errors", out)
    rc, out = run("printf 'app:dispatch(\"sensors/42/data\", { json = { temp = 99 } })\\n' | routemq console", cwd)
    assert.equal(0, rc, out)
    assert.truthy(out:find("publish  alerts/42 qos 1", 1, true), out)
    local luarc = e2e.read(cwd .. "/.luarc.json")
    assert.truthy(luarc:find('"/usr/share/routemq/types"', 1, true), luarc)
  end)

  it("is removed by apt-get remove without leaving a file behind", function()
    local rc, out, err = remove()
    assert.equal(0, rc, out .. err)
    assert.is_false(installed())
    local left = {}
    for _, path in ipairs(files) do
      if not existed[path] and run("test -e " .. Q(path) .. " || test -L " .. Q(path)) == 0 then
        left[#left + 1] = path
      end
    end
    assert.same({}, left)
    for _, dir in ipairs({ "/usr/share/routemq", "/usr/share/lua/5.1/routemq", "/usr/share/doc/routemq" }) do
      assert.equal(1, (run("test -e " .. Q(dir))), dir)
    end
  end)
end)
