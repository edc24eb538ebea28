-- routemq.core as a Lua C module: it takes the Lua API from the program that
-- loads it. Linked to libluajit, it brought a second LuaJIT into Debian's
-- luajit executable (which has LuaJIT built in): two collectors and two
-- interpreters on one state, and busted crashed now and then.
local core = require("routemq.core")

describe("routemq.core", function()
  it("is a module that does not link libluajit or liblua", function()
    local path = assert(package.searchpath("routemq.core", package.cpath))
    local p = assert(io.popen("readelf -d " .. path .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    assert.matches("NEEDED", out)
    assert.is_nil(out:match("lib[%w]*lua[%w.%-]*%.so[%w.]*"), out)
  end)

  it("works in this LuaJIT", function()
    assert.equal("a/+", core.compile("a/{b}").filter)
  end)
end)
