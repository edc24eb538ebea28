--- A small parser and validator of the Prometheus text exposition format
-- 0.0.4, strict enough to catch what a scraper would reject or misread:
--   * `# HELP` / `# TYPE` of a family come before its samples, once each;
--   * a family's samples are contiguous, no series appears twice;
--   * metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*;
--   * label values are double-quoted with only \\, \" and \n escapes;
--   * values are floats (or +Inf, -Inf, NaN);
--   * counters are named *_total and never negative;
--   * histograms: per label set, buckets with increasing `le`, cumulative
--     counts, a last bucket `+Inf` equal to `_count`, and a `_sum`.
-- parse(text) returns a result with :value(name, labels) and :series(name),
-- or nil and "line N: reason".
local M = {}

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"
local TYPES = { counter = true, gauge = true, histogram = true, summary = true, untyped = true }

local function number(s)
  if s == "+Inf" or s == "Inf" then return math.huge end
  if s == "-Inf" then return -math.huge end
  if s == "NaN" then return 0 / 0 end
  if not s:match("^[-+]?%d*%.?%d+[eE]?[-+]?%d*$") then return nil end
  return tonumber(s)
end

-- Parses `{a="x",b="y"}` starting at position i of line (at the "{").
-- Returns the labels table, the position after "}", or nil and an error.
local function parse_labels(line, i)
  local labels, order = {}, {}
  i = i + 1
  while true do
    if line:sub(i, i) == "}" then return labels, i + 1, order end
    local name, j = line:match("^([^=]*)=()", i)
    if not name then return nil, "label without '='" end
    if not name:match(LABEL) or name:match("^__") then return nil, "bad label name '" .. name .. "'" end
    if labels[name] then return nil, "label '" .. name .. "' twice" end
    if line:sub(j, j) ~= '"' then return nil, "label value of '" .. name .. "' not quoted" end
    j = j + 1
    local value = {}
    while true do
      local c = line:sub(j, j)
      if c == "" then return nil, "unterminated label value" end
      if c == '"' then break end
      if c == "\\" then
        local e = line:sub(j + 1, j + 1)
        if e == "\\" then value[#value + 1] = "\\"
        elseif e == '"' then value[#value + 1] = '"'
        elseif e == "n" then value[#value + 1] = "\n"
        else return nil, "bad escape '\\" .. e .. "' in a label value" end
        j = j + 2
      else
        value[#value + 1] = c
        j = j + 1
      end
    end
    labels[name] = table.concat(value)
    order[#order + 1] = name
    i = j + 1
    local sep = line:sub(i, i)
    if sep == "," then i = i + 1 elseif sep ~= "}" then return nil, "expected ',' or '}' after a label" end
  end
end

local function series_key(name, labels, skip)
  local keys = {}
  for k in pairs(labels) do if k ~= skip then keys[#keys + 1] = k end end
  table.sort(keys)
  local parts = { name }
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. labels[k] end
  return table.concat(parts, "\0")
end

-- The family a sample belongs to, given the families declared so far.
local function family_of(families, name)
  if families[name] then return name end
  for _, suffix in ipairs({ "_bucket", "_sum", "_count" }) do
    local base = name:sub(1, -#suffix - 1)
    if name:sub(-#suffix) == suffix and families[base] and
      (families[base].type == "histogram" or (families[base].type == "summary" and suffix ~= "_bucket")) then
      return base
    end
  end
  return name
end

local function check_histogram(fam)
  local groups = {}
  for _, s in ipairs(fam.samples) do
    local key = series_key("", s.labels, "le")
    local g = groups[key] or { buckets = {} }
    groups[key] = g
    if s.name == fam.name .. "_bucket" then
      if not s.labels.le then return "a bucket of " .. fam.name .. " without le" end
      g.buckets[#g.buckets + 1] = { le = number(s.labels.le), v = s.value, raw = s.labels.le }
    elseif s.name == fam.name .. "_sum" then g.sum = s.value
    elseif s.name == fam.name .. "_count" then g.count = s.value
    else return "unexpected sample " .. s.name .. " in histogram " .. fam.name end
  end
  for _, g in pairs(groups) do
    local b = g.buckets
    if #b == 0 then return fam.name .. ": no buckets" end
    for i = 1, #b do
      if not b[i].le then return fam.name .. ": bad le '" .. b[i].raw .. "'" end
      if i > 1 and b[i].le <= b[i - 1].le then return fam.name .. ": le not increasing at " .. b[i].raw end
      if i > 1 and b[i].v < b[i - 1].v then return fam.name .. ": buckets not cumulative at le=" .. b[i].raw end
    end
    if b[#b].le ~= math.huge then return fam.name .. ": the last bucket is not +Inf" end
    if g.count == nil or g.sum == nil then return fam.name .. ": _sum or _count missing" end
    if b[#b].v ~= g.count then return fam.name .. ": +Inf bucket " .. b[#b].v .. " ~= _count " .. g.count end
  end
end

local function check_family(fam)
  if fam.type == "counter" then
    if not fam.name:match("_total$") then return "counter " .. fam.name .. " is not named *_total" end
    for _, s in ipairs(fam.samples) do
      if s.value ~= s.value or s.value < 0 then return "counter " .. s.name .. " is negative" end
    end
  elseif fam.type == "histogram" then
    return check_histogram(fam)
  end
end

local Result = {}
Result.__index = Result

--- The value of the one sample of `name` whose labels include `labels`; nil when none.
function Result:value(name, labels)
  local found
  for _, s in ipairs(self.samples) do
    if s.name == name then
      local ok = true
      for k, v in pairs(labels or {}) do if s.labels[k] ~= v then ok = false end end
      if ok then
        assert(found == nil, "more than one sample of " .. name .. " matches")
        found = s.value
      end
    end
  end
  return found
end

--- Every sample of `name`.
function Result:series(name)
  local out = {}
  for _, s in ipairs(self.samples) do if s.name == name then out[#out + 1] = s end end
  return out
end

local function parse_comment(line, st)
  local kind, name, rest = line:match("^#%s+(%u+)%s+(%S+)%s*(.*)$")
  if kind ~= "HELP" and kind ~= "TYPE" then return end  -- other comments are allowed
  if not name:match(NAME) then return "bad metric name '" .. name .. "'" end
  local fam = st.families[name]
  if fam and fam.closed then return name .. ": " .. kind .. " after its samples" end
  if not fam then
    fam = { name = name, samples = {} }
    st.families[name] = fam
    st.order[#st.order + 1] = fam
  end
  if kind == "HELP" then
    if fam.help then return name .. ": HELP twice" end
    fam.help = rest
  else
    if fam.type then return name .. ": TYPE twice" end
    if not TYPES[rest] then return name .. ": unknown type '" .. rest .. "'" end
    if #fam.samples > 0 then return name .. ": TYPE after samples" end
    fam.type = rest
  end
end

local function parse_sample(line, st)
  local name, i = line:match("^([^%s{]+)()")
  if not name or not name:match(NAME) then return "bad metric name in '" .. line .. "'" end
  local labels = {}
  if line:sub(i, i) == "{" then
    labels, i = parse_labels(line, i)
    if not labels then return i end  -- i is the error
  end
  local value, ts = line:sub(i):match("^%s+(%S+)%s*(%S*)%s*$")
  if not value then return "no value in '" .. line .. "'" end
  local v = number(value)
  if not v then return "bad value '" .. value .. "'" end
  if ts ~= "" and not ts:match("^-?%d+$") then return "bad timestamp '" .. ts .. "'" end
  local fname = family_of(st.families, name)
  local fam = st.families[fname]
  if not fam or not fam.type then return name .. ": sample before its # TYPE line" end
  if not fam.help then return name .. ": sample before its # HELP line" end
  if fam.closed then return name .. ": samples of " .. fname .. " are not together" end
  if st.current and st.current ~= fam then st.current.closed = true end
  st.current = fam
  local key = series_key(name, labels)
  if st.seen[key] then return name .. ": the same series twice" end
  st.seen[key] = true
  local s = { name = name, labels = labels, value = v }
  fam.samples[#fam.samples + 1] = s
  st.samples[#st.samples + 1] = s
end

--- Parses and validates text; returns a result or nil, "line N: reason".
function M.parse(text)
  local st = { families = {}, order = {}, samples = {}, seen = {} }
  local n = 0
  if text:sub(-1) ~= "\n" and text ~= "" then return nil, "the text does not end with a newline" end
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    local err
    if line:match("^#") then err = parse_comment(line, st)
    elseif not line:match("^%s*$") then err = parse_sample(line, st) end
    if err then return nil, "line " .. n .. ": " .. err end
  end
  for _, fam in ipairs(st.order) do
    if not fam.type then return nil, fam.name .. ": no # TYPE" end
    local err = check_family(fam)
    if err then return nil, err end
  end
  return setmetatable({ families = st.families, samples = st.samples }, Result)
end

return M
