-- PostgreSQL values to and from Lua: a result's rows typed by column (text
-- format, converted by OID) and a query's parameters as libpq's arrays.
local cjson = require("cjson")
local ffi = require("ffi")
local pq = require("routemq.pglib")

local M = {}

local C = ffi.C
local null = cjson.null
M.null = null

local PGRES_TUPLES_OK = 2 -- ExecStatusType
local BOOL, BYTEA, INT8, INT2, INT4, OID = 16, 17, 20, 21, 23, 26
local FLOAT4, FLOAT8 = 700, 701
local TWO53 = 2 ^ 53

local retlen = ffi.new("size_t[1]")

local function value(res, r, c, oid)
  if pq.PQgetisnull(res, r, c) == 1 then
    return null
  end
  local p = pq.PQgetvalue(res, r, c)
  if oid == INT4 or oid == INT2 or oid == OID or oid == FLOAT8 or oid == FLOAT4 then
    -- strtod reads NaN, Infinity and -Infinity as the server writes them.
    return C.strtod(p, nil)
  elseif oid == INT8 then
    local n = C.strtod(p, nil)
    -- Exact as a number within +-2^53; beyond, the exact decimal text.
    if n > -TWO53 and n < TWO53 then
      return n
    end
    return ffi.string(p, pq.PQgetlength(res, r, c))
  elseif oid == BOOL then
    return p[0] == 116 -- 't'
  elseif oid == BYTEA then
    local buf = pq.PQunescapeBytea(p, retlen)
    if buf == nil then
      error("routemq.pg: out of memory decoding bytea", 0)
    end
    local s = ffi.string(buf, retlen[0])
    pq.PQfreemem(buf)
    return s
  end
  -- text, varchar, numeric (exact), json/jsonb (as text), dates, ...
  return ffi.string(p, pq.PQgetlength(res, r, c))
end

-- rows(res) -> array of rows keyed by column name, plus rows.affected.
local function rows_of(res)
  local rows = {}
  local st = pq.PQresultStatus(res)
  if st == PGRES_TUPLES_OK then
    local nr, nf = pq.PQntuples(res), pq.PQnfields(res)
    local names, oids = {}, {}
    for c = 0, nf - 1 do
      names[c] = ffi.string(pq.PQfname(res, c))
      oids[c] = pq.PQftype(res, c)
    end
    for r = 0, nr - 1 do
      local row = {}
      for c = 0, nf - 1 do
        row[names[c]] = value(res, r, c, oids[c])
      end
      rows[r + 1] = row
    end
  end
  local n = pq.PQcmdTuples(res)
  rows.affected = (n ~= nil and n[0] ~= 0) and tonumber(ffi.string(n)) or 0
  return rows
end

M.rows = rows_of

local function number_text(v)
  if v ~= v then
    return "NaN"
  elseif v == math.huge then
    return "Infinity"
  elseif v == -math.huge then
    return "-Infinity"
  elseif v == math.floor(v) and v > -2 ^ 63 and v < 2 ^ 63 then
    return ("%.0f"):format(v)
  end
  return ("%.17g"):format(v)
end

local Bytea = {}
M.Bytea = Bytea
-- bytea(s) -> s marked to be sent as binary (bytea) rather than text.
function M.bytea(s)
  if type(s) ~= "string" then
    error("routemq.pg: pg.bytea expects a string, got " .. type(s), 2)
  end
  return setmetatable({ s }, Bytea)
end

-- params(n, args, level) -> values, lengths, formats, keep: libpq's parameter
-- arrays: values as text (the server infers their types), strings
-- with NUL bytes and pg.bytea() values in binary format.
function M.params(n, args, level)
  local values = ffi.new("const char *[?]", n)
  local lengths = ffi.new("int[?]", n)
  local formats = ffi.new("int[?]", n)
  local keep = {}
  for i = 1, n do
    local v = args[i]
    local t = type(v)
    local s, binary = nil, false
    if v == nil or v == null then
      s = nil
    elseif t == "string" then
      s, binary = v, v:find("\0", 1, true) ~= nil
    elseif t == "number" then
      s = number_text(v)
    elseif t == "boolean" then
      s = v and "true" or "false"
    elseif t == "table" and getmetatable(v) == Bytea then
      s, binary = v[1], true
    elseif t == "cdata" and (ffi.istype("int64_t", v) or ffi.istype("uint64_t", v)) then
      s = tostring(v):gsub("U?LL$", "")
    else
      error(("routemq.pg: parameter $%d is a %s (pass strings, numbers, booleans, pg.null or pg.bytea(s);"
        .. " encode tables yourself, e.g. cjson.encode)"):format(i, t), level)
    end
    if s ~= nil then
      keep[i] = s
      values[i - 1] = s
      lengths[i - 1] = #s
      formats[i - 1] = binary and 1 or 0
    end
  end
  return values, lengths, formats, keep
end


return M
