-- Small helpers shared by the routemq Lua modules: error locations that point
-- at the user's code, value descriptions for error messages, argument checks.
local M = {}

local getinfo = debug.getinfo
local select, tostring, type = select, tostring, type
local concat = table.concat

-- Every routemq module lives next to this file; frames from there are ours
-- and must be skipped when blaming a line of the user's code.
local own_source = getinfo(1, "S").source
local own_prefix = own_source:match("^(@.*[/\\])")

local function is_own(source)
  if own_prefix then
    return source:sub(1, #own_prefix) == own_prefix
  end
  return source == own_source
end

local function chunkname(info)
  local c = info.source:sub(1, 1)
  if c == "@" or c == "=" then
    return info.source:sub(2)
  end
  return info.short_src
end

-- where() -> "file:line" of the innermost Lua frame outside routemq, or nil.
function M.where()
  local level = 2
  while true do
    local info = getinfo(level, "Sl")
    if not info then
      return nil
    end
    if info.what ~= "C" and info.currentline and info.currentline > 0
        and not is_own(info.source) then
      return chunkname(info) .. ":" .. info.currentline
    end
    level = level + 1
  end
end

-- raise(reason): throw "file:line: reason" blaming the user's call site.
function M.raise(reason)
  local at = M.where()
  error(at and (at .. ": " .. reason) or reason, 0)
end

-- describe(v) -> short text naming a value for "got ..." in error messages.
function M.describe(v)
  local t = type(v)
  if t == "string" then
    return "'" .. v .. "'"
  elseif t == "number" or t == "boolean" or t == "nil" then
    return tostring(v)
  end
  return "a " .. t
end

-- callable(v) -> true for functions and tables/userdata with __call.
function M.callable(v)
  if type(v) == "function" then
    return true
  end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

-- is_integer(v) -> true for finite whole numbers.
function M.is_integer(v)
  return type(v) == "number" and v % 1 == 0 and v > -math.huge and v < math.huge
end

-- concat_args(skip, ...) -> the args tostring'ed and joined without a
-- separator (like ngx.log); a leading `skip` value (the log table itself,
-- when called as log:info(...)) is dropped.
function M.concat_args(skip, ...)
  local n = select("#", ...)
  local first = 1
  if n > 0 and (...) == skip then
    first = 2
  end
  if n == first then
    local v = select(n, ...)
    return type(v) == "string" and v or tostring(v)
  end
  local parts = {}
  for i = first, n do
    parts[#parts + 1] = tostring((select(i, ...)))
  end
  return concat(parts)
end

-- unknown_key(t, allowed) -> the first key of t (in sorted order, so the
-- message is stable) that is not in `allowed`, or nil.
function M.unknown_key(t, allowed)
  local bad
  for k in pairs(t) do
    if not allowed[k] then
      if bad == nil or tostring(k) < tostring(bad) then
        bad = k
      end
    end
  end
  return bad
end

-- key_text(k) -> a table key written for a message: 'name' or [1].
function M.key_text(k)
  if type(k) == "string" then
    return "'" .. k .. "'"
  end
  return "[" .. tostring(k) .. "]"
end

-- show_topic(s) -> s as it may appear in an error or a log line, the rules of
-- log_topic in runtime/log.c: backslash and control bytes escaped (\\, \0,
-- \n, \t, \xNN), and a topic longer than 120 bytes cut to its first 120
-- followed by "... (N bytes)", so the reason after it is never crowded out.
local TOPIC_SHOWN = 120
local topic_escapes = { ["\\"] = "\\\\", ["\0"] = "\\0", ["\n"] = "\\n", ["\t"] = "\\t" }

local function escape_byte(c)
  return topic_escapes[c] or string.format("\\x%02x", c:byte())
end

function M.show_topic(s)
  local shown = s:sub(1, TOPIC_SHOWN):gsub("[%z\1-\31\127\\]", escape_byte)
  if #s > TOPIC_SHOWN then shown = shown .. "... (" .. #s .. " bytes)" end
  return shown
end

return M
