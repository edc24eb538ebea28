-- lua-language-server reads a new application's .luarc.json and types its
-- code from share/types: a clean app has no diagnostics, a misspelt ctx field
-- and a wrong argument type are flagged. Debian 12 does not package the
-- language server; this runs where one is on PATH or named by LUALS.
local e2e = require("spec.helpers.e2e")

local Q = e2e.quote
local LUALS = os.getenv("LUALS")
if not LUALS or LUALS == "" then
  LUALS = e2e.sh("command -v lua-language-server"):match("[^\n]+")
end

local function check(dir)
  local log = e2e.tmpdir()
  local out = e2e.sh(string.format("timeout 300 %s --check=%s --checklevel=Hint --logpath=%s 2>&1", Q(LUALS), Q(dir),
    Q(log)))
  e2e.sh("rm -rf " .. Q(log))
  return (out:gsub("\27%[[%d;]*m", ""))
end

local describe_if = LUALS and describe or pending

describe_if("lua-language-server on an application from routemq new", function()
  local base, app

  setup(function()
    base = e2e.tmpdir()
    app = base .. "/myapp"
    assert(e2e.sh(Q(e2e.bin) .. " new " .. Q(app) .. " >/dev/null 2>&1; echo $?"):match("^0"))
  end)

  teardown(function()
    e2e.sh("rm -rf " .. Q(base))
  end)

  it("finds no problem in the generated code", function()
    local out = check(app)
    assert.truthy(out:find("no problems found", 1, true), out)
  end)

  it("knows the type of ctx: a misspelt field and a wrong argument are flagged", function()
    e2e.write(app .. "/app/controllers/typo.lua", table.concat({
      "local M = {}",
      "---@param ctx routemq.Context",
      "function M.x(ctx)",
      "  ctx:publish(42, 'x')",
      "  return ctx.tpoic",
      "end",
      "return M",
    }, "\n") .. "\n")
    local out = check(app)
    assert.truthy(out:find("app/controllers/typo.lua:5:%d+ %[Warning%] Undefined field `tpoic`"), out)
    assert.truthy(out:find("app/controllers/typo.lua:4:%d+ %[Warning%] Cannot assign `integer` to parameter `string`"),
      out)
  end)
end)
