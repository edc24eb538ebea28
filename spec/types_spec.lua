-- share/types: the LuaLS definitions editors complete from. No language
-- server runs here, so this checks what it would rely on: every file is
-- valid Lua marked ---@meta, the annotations are well formed and name only
-- types that are defined, and every public function, method and field of the
-- real modules is annotated (an API added without its annotation fails here).
local ROOT = os.getenv("ROUTEMQ_ROOT") or "."
local TYPES = ROOT .. "/share/types/routemq/"
local FILES = { "context", "router", "testing", "core", "console" }

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  return s
end

local texts = {}
for _, name in ipairs(FILES) do texts[name] = read(TYPES .. name .. ".lua") end
local all = table.concat({ texts.context, texts.router, texts.testing, texts.core, texts.console }, "\n")

-- The fields of one ---@class block: the @field lines right after it.
local function class_fields(class)
  local fields = {}
  local block = all:match("\n%-%-%-@class " .. class:gsub("%.", "%%.") .. "\n(.-)\n[^%-]")
    or all:match("\n%-%-%-@class " .. class:gsub("%.", "%%.") .. "\n(.*)$") or ""
  for name in block:gmatch("%-%-%-@field ([%w_]+)") do fields[name] = true end
  return fields
end

local function public_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return keys
end

describe("share/types", function()
  it("are Lua files marked ---@meta", function()
    for _, name in ipairs(FILES) do
      assert(loadstring(texts[name], "@" .. name))
      assert.matches("^%-%-%-@meta", texts[name], nil, name)
    end
  end)

  it("use only known tags, and every ---@param names a parameter of the function it documents", function()
    local known = { meta = true, class = true, field = true, param = true, ["return"] = true, alias = true }
    for _, name in ipairs(FILES) do
      local params = {}
      local n = 0
      for line in (texts[name] .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        local tag = line:match("^%-%-%-@(%w+)")
        if tag then
          assert.is_true(known[tag] or false, name .. ".lua:" .. n .. ": unknown tag @" .. tag)
        end
        local p = line:match("^%-%-%-@param ([%w_]+)%??%s+%S")
        if p then params[#params + 1] = p end
        local args = line:match("^function [%w_.:]+%(([^)]*)%)")
        if args then
          local declared = {}
          for a in args:gmatch("[%w_]+") do declared[#declared + 1] = a end
          assert.same(declared, params, name .. ".lua:" .. n)
          params = {}
        elseif not line:match("^%-%-%-") then
          assert.same({}, params, name .. ".lua:" .. n .. ": ---@param not followed by its function")
        end
      end
    end
  end)

  it("refer only to routemq types they define", function()
    local defined = {}
    for t in all:gmatch("%-%-%-@class (routemq%.[%w_.]+)") do defined[t] = true end
    for t in all:gmatch("%-%-%-@alias (routemq%.[%w_.]+)") do defined[t] = true end
    for line in all:gmatch("[^\n]+") do
      if line:match("^%-%-%-@") and not line:match("^%-%-%-@class") and not line:match("^%-%-%-@alias routemq") then
        for t in line:gmatch("routemq%.[%w_]+[%w_.]*") do
          t = t:gsub("%.$", "")
          assert.is_true(defined[t] or false, "undefined type " .. t .. " in: " .. line)
        end
      end
    end
  end)

  it("annotate every public function of routemq.router", function()
    local router = require("routemq.router")
    for _, k in ipairs(public_keys(router)) do
      assert.truthy(texts.router:find("\nfunction router%." .. k .. "%("), "router." .. k .. " is not annotated")
    end
  end)

  describe("of ctx and the testing harness", function()
    local testing = require("routemq.testing")
    local app = testing.app(ROOT .. "/share/template")

    it("annotate every field and method of ctx", function()
      local res = app:dispatch("sensors/1/data", { json = { temp = 1 } })
      local ctx = assert(res.ctx)
      local fields = class_fields("routemq.Context")
      for _, k in ipairs(public_keys(ctx)) do
        assert.is_true(fields[k] or false, "ctx." .. k .. " is not a ---@field of routemq.Context")
      end
      for _, k in ipairs(public_keys(getmetatable(ctx).__index)) do
        assert.truthy(texts.context:find("\nfunction Context:" .. k .. "%("), "ctx:" .. k .. " is not annotated")
      end
    end)

    it("annotate routemq.testing, the harness and what dispatch returns", function()
      for _, k in ipairs(public_keys(testing)) do
        assert.truthy(texts.testing:find("\nfunction testing%." .. k .. "%("), "testing." .. k)
      end
      for _, k in ipairs(public_keys(getmetatable(app).__index)) do
        assert.truthy(texts.testing:find("\nfunction TestApp:" .. k .. "%("), "app:" .. k .. " is not annotated")
      end
      local fields = class_fields("routemq.DispatchResult")
      for _, k in ipairs(public_keys(app:dispatch("sensors/1/data", { json = { temp = 99 } }))) do
        assert.is_true(fields[k] or false, "dispatch result ." .. k)
      end
      fields = class_fields("routemq.Route")
      for _, k in ipairs({ "pattern", "filter", "sub", "qos", "shared", "worker_count", "name", "source" }) do
        assert.is_true(fields[k] or false, "route ." .. k)
        assert.is_not_nil(app.routes[1][k], "route ." .. k)
      end
    end)

    it("annotate the console's app object", function()
      local console = require("routemq.console").app(ROOT .. "/share/template")
      for _, k in ipairs(public_keys(getmetatable(console).__index)) do
        assert.truthy(texts.console:find("\nfunction ConsoleApp:" .. k .. "%("), "console app:" .. k)
      end
    end)
  end)
end)
