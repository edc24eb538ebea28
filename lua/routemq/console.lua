-- `routemq console`: a read-eval-print loop with the application loaded
-- through routemq.testing. `app:dispatch(topic, msg)` shows what the
-- handlers would publish and log, `app:routes()` the route table,
-- `app:reload()` loads the application again; app modules are requireable.
local testing = require("routemq.testing")
local cjson_safe = require("cjson.safe")

local M = {}

local json_encode = cjson_safe.new().encode

-- Short, single-line rendering of a value for results and tables.
local function show(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "string" then
    return string.format("%q", v)
  end
  if t ~= "table" then
    return tostring(v)
  end
  local mt = getmetatable(v)
  if mt and mt.__tostring then
    return tostring(v)
  end
  if depth >= 2 then
    return "{...}"
  end
  local parts, n = {}, 0
  for i = 1, #v do
    n = n + 1
    if n > 20 then
      parts[#parts + 1] = "..."
      break
    end
    parts[#parts + 1] = show(v[i], depth + 1)
  end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= #v and k % 1 == 0) then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    n = n + 1
    if n > 20 then
      parts[#parts + 1] = "..."
      break
    end
    local name = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k, depth + 1) .. "]"
    parts[#parts + 1] = name .. " = " .. show(v[k], depth + 1)
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end
M.show = show

local function payload_text(payload)
  if payload == nil then
    return ""
  end
  if payload:find("[%z\1-\8\14-\31\127-\255]") then
    return string.format("<%d bytes>", #payload)
  end
  return payload
end

-- What a dispatch did, one line per fact, as the console prints it.
local Result = {}
Result.__index = Result
Result.__tostring = function(res)
  if not res.matched then
    return "no route matches this topic (the runtime would count it as unmatched)"
  end
  local lines = { "route    " .. res.route .. "  params " .. show(res.params) }
  for _, entry in ipairs(res.logs) do
    lines[#lines + 1] = string.format("log      %-5s %s", entry.level, entry.msg)
  end
  for _, p in ipairs(res.published) do
    lines[#lines + 1] = string.format("publish  %s qos %d%s  %s", p.topic, p.qos or 0,
      p.retain and " retained" or "", payload_text(p.payload))
  end
  if #res.published == 0 then
    lines[#lines + 1] = "publish  (nothing)"
  end
  if res.error then
    lines[#lines + 1] = "error    " .. res.error
  end
  return table.concat(lines, "\n")
end

local RouteList = {}
RouteList.__tostring = function(list)
  local lines = {}
  for _, r in ipairs(list) do
    lines[#lines + 1] = string.format("%-32s %-40s qos %d%s", r.pattern, r.sub, r.qos or 0,
      r.shared and string.format("  shared x%d", r.worker_count or 1) or "")
  end
  if #lines == 0 then
    return "(no routes)"
  end
  return table.concat(lines, "\n")
end

local Console = {}
Console.__index = Console

-- app:dispatch(topic, msg) -> the harness's result, printed as a summary.
function Console:dispatch(topic, msg)
  if type(msg) == "string" then
    msg = { payload = msg }
  end
  return setmetatable(self.harness:dispatch(topic, msg), Result)
end

-- app:routes() -> the route table, printed one route a line.
function Console:routes()
  return setmetatable(self.harness.routes, RouteList)
end

-- app:route(pattern) -> one route record.
function Console:route(pattern)
  return self.harness:route(pattern)
end

-- app:reload() -> loads the application from disk again.
function Console:reload()
  self.harness = testing.app(self.dir)
  return self:routes()
end

-- M.app(dir) -> the console's `app` object; raises the load error.
function M.app(dir)
  local c = setmetatable({ dir = dir }, Console)
  c.harness = testing.app(dir)
  return c
end

local function print_results(n, ...)
  if n == 0 then
    return
  end
  local parts = {}
  for i = 1, n do
    parts[i] = show((select(i, ...)))
  end
  print(table.concat(parts, "\t"))
end

-- The traceback without the console's own frames below the typed chunk.
local function traceback(e)
  return (debug.traceback(tostring(e), 2):gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
end

-- Compiles what was typed: an expression first (so `1 + 1` prints 2), then a
-- statement. Returns the chunk, or nil and the error, and whether more input
-- would complete it.
local function compile(source, env)
  local chunk = loadstring("return " .. source, "=console")
  if not chunk then
    local err
    chunk, err = loadstring(source, "=console")
    if not chunk then
      return nil, err, err:find("<eof>", 1, true) ~= nil
    end
  end
  return setfenv(chunk, env)
end

-- run({ app = dir, readline = fn(prompt) -> line|nil, editing = bool }) -> 0
function M.run(opts)
  local read = opts.readline or function(prompt)
    io.stdout:write(prompt)
    io.stdout:flush()
    return io.read("*l")
  end
  local env = setmetatable({}, { __index = _G })
  local ok, app = pcall(M.app, ".")
  if ok then
    env.app = app
    print(string.format("routemq console: %s, %d route%s. app:dispatch(topic, { json = ... }), "
      .. "app:routes(), app:reload(); Ctrl-D leaves.", opts.app or ".", #app.harness.routes,
      #app.harness.routes == 1 and "" or "s"))
  else
    print("routemq console: the application did not load: " .. tostring(app))
    print("fix it, then: app = require('routemq.console').app('.')")
  end
  env.testing = testing
  env.json = json_encode

  local pending
  while true do
    local line = read(pending and ">> " or "> ")
    if line == nil then
      io.stdout:write("\n")
      return 0
    end
    local source = pending and (pending .. "\n" .. line) or line
    if source:match("^%s*$") then
      pending = nil
    else
      local chunk, err, more = compile((source:gsub("^%s*=", "return ")), env)
      if chunk then
        pending = nil
        local results = { xpcall(chunk, traceback) }
        if results[1] then
          print_results(table.maxn(results) - 1, unpack(results, 2, table.maxn(results)))
        else
          print(results[2])
        end
      elseif more then
        pending = source
      else
        pending = nil
        print(err)
      end
    end
  end
end

return M
