-- Installed copies work outside the source tree (README.md, "Building and installing"): `make install`
-- (cmake --install of the configured build, without rebuilding) and the rock
-- (rockspec/routemq-scm-1.rockspec, built with luarocks --deps-mode=none).
local e2e = require("spec.helpers.e2e")

local ROOT = e2e.root
local BUILD = e2e.bin:match("^(.*)/[^/]*$") or (ROOT .. "/build")

local scratch = {}

local function tmpdir()
  local d = e2e.tmpdir()
  scratch[#scratch + 1] = d
  return d
end

-- Runs a shell command from the repository root with LUA_PATH / LUA_CPATH
-- unset unless given in env; returns rc, stdout, stderr.
local function run(cmd, env)
  local dir = tmpdir()
  local parts = { "env -u LUA_PATH -u LUA_CPATH -u LUA_INIT" }
  for k, v in pairs(env or {}) do parts[#parts + 1] = e2e.quote(k .. "=" .. v) end
  local rc = e2e.sh(string.format("cd %s && %s sh -c %s > %s/out 2> %s/err; echo $?", e2e.quote(ROOT),
    table.concat(parts, " "), e2e.quote(cmd), dir, dir))
  return tonumber(rc:match("%d+")), e2e.read(dir .. "/out"), e2e.read(dir .. "/err")
end

-- A LuaJIT script that loads the default app through routemq.testing from the
-- installed modules, dispatches a hot reading and prints where things came from.
local DISPATCH = [[
local testing = require("routemq.testing")
local app = testing.app(".")
local res = app:dispatch("sensors/42/data", { json = { temp = 99 }, qos = 1 })
assert(res.error == nil, res.error)
print(res.route)
print(res.published[1].topic, res.published[1].json.temp)
print(package.searchpath("routemq.testing", package.path))
print(package.searchpath("routemq.core", package.cpath))
]]

local function check_dispatch(prefix, lua_path, lua_cpath)
  local rc, out, err = run("luajit -e " .. e2e.quote(DISPATCH), { LUA_PATH = lua_path, LUA_CPATH = lua_cpath })
  assert.equal(0, rc, err)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  assert.equal("sensors/{device_id}/data", lines[1])
  assert.equal("alerts/42\t99", lines[2])
  assert.equal(prefix .. "/share/lua/5.1/routemq/testing.lua", lines[3])
  assert.equal(prefix .. "/lib/lua/5.1/routemq/core.so", lines[4])
end

teardown(function()
  for _, d in ipairs(scratch) do e2e.sh("rm -rf " .. e2e.quote(d)) end
end)

describe("make install", function()
  local prefix

  setup(function()
    prefix = tmpdir() .. "/prefix"
    local rc, out, err = run("cmake --install " .. e2e.quote(BUILD) .. " --prefix " .. e2e.quote(prefix))
    assert(rc == 0, out .. err)
  end)

  it("installs the executable, the Lua modules and the C module", function()
    assert.equal(0, (run("test -x " .. e2e.quote(prefix .. "/bin/routemq"))))
    assert.equal(0, (run("test -f " .. e2e.quote(prefix .. "/lib/lua/5.1/routemq/core.so"))))
    local _, listing = run("ls lua/routemq")
    for name in listing:gmatch("(%S+)%.lua") do
      assert.equal(0, (run("test -f " .. e2e.quote(prefix .. "/share/lua/5.1/routemq/" .. name .. ".lua"))), name)
    end
  end)

  it("runs routemq check from the installed copy", function()
    local rc, out, err = run(e2e.quote(prefix .. "/bin/routemq") .. " check --app .")
    assert.equal(0, rc, err)
    assert.matches("\nok: 3 routes, 2 workers\n$", out)
    rc, out = run(e2e.quote(prefix .. "/bin/routemq") .. " version")
    assert.equal(0, rc)
    assert.equal("routemq 0.1.0\n", out)
  end)

  it("finds its Lua modules under <prefix>/share/lua/5.1, not in the source tree", function()
    local copy = tmpdir() .. "/prefix"
    run("cp -r " .. e2e.quote(prefix) .. " " .. e2e.quote(copy))
    run("rm " .. e2e.quote(copy .. "/share/lua/5.1/routemq/router.lua"))
    local rc, out, err = run(e2e.quote(copy .. "/bin/routemq") .. " check --app .")
    assert.equal(1, rc, out)
    assert.matches("cannot find routemq's Lua modules", err, 1, true)
  end)

  it("lets plain LuaJIT require routemq.testing and dispatch to the default app", function()
    check_dispatch(prefix, prefix .. "/share/lua/5.1/?.lua;;", prefix .. "/lib/lua/5.1/?.so;;")
  end)

  it("creates an application from <prefix>/share/routemq and installs the man page", function()
    local app = tmpdir() .. "/myapp"
    local rc, out, err = run(e2e.quote(prefix .. "/bin/routemq") .. " new " .. e2e.quote(app))
    assert.equal(0, rc, out .. err)
    assert.truthy(e2e.read(app .. "/.luarc.json"):find(prefix .. "/share/routemq/types", 1, true))
    rc, out, err = run("cd " .. e2e.quote(app) .. " && " .. e2e.quote(prefix .. "/bin/routemq") .. " test")
    assert.equal(0, rc, out .. err)
    assert.equal(0, (run("test -f " .. e2e.quote(prefix .. "/share/man/man1/routemq.1.gz"))))
  end)
end)

describe("rockspec/routemq-scm-1.rockspec", function()
  local ROCKSPEC = "rockspec/routemq-scm-1.rockspec"

  it("lists every module in lua/routemq", function()
    local text = e2e.read(ROOT .. "/" .. ROCKSPEC)
    local _, listing = run("ls lua/routemq")
    for name in listing:gmatch("(%S+)%.lua") do
      assert.matches('["routemq.' .. name .. '"] = "lua/routemq/' .. name .. '.lua"', text, 1, true)
    end
    assert.matches('["routemq.core"]', text, 1, true)
  end)

  it("builds offline with luarocks --deps-mode=none and works from its tree", function()
    -- Built from a copy, so luarocks' object files stay out of the source tree.
    local src = tmpdir()
    local tree = src .. "/tree"
    assert.equal(0, (run("cp -r lua runtime rockspec " .. e2e.quote(src))))
    local rc, out, err = run("cd " .. e2e.quote(src) .. " && luarocks --lua-version=5.1 make --deps-mode=none --tree="
      .. e2e.quote(tree) .. " " .. ROCKSPEC)
    assert.equal(0, rc, out .. err)
    local filter
    rc, filter, err = run("luajit -e 'print(require(\"routemq.core\").compile(\"a/{b}\").filter)'",
      { LUA_PATH = tree .. "/share/lua/5.1/?.lua;;", LUA_CPATH = tree .. "/lib/lua/5.1/?.so;;" })
    assert.equal(0, rc, err)
    assert.equal("a/+\n", filter)
    check_dispatch(tree, tree .. "/share/lua/5.1/?.lua;;", tree .. "/lib/lua/5.1/?.so;;")
  end)
end)
