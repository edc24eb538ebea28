-- ctx:json()'s decoder (runtime/core/json_scan.c, json_decode.c) against
-- lua-cjson, which it replaces: the same values for every valid text, never
-- a value where lua-cjson has none, and RFC 8259's rules where lua-cjson is
-- lenient.
local core = require("routemq.core")
local cjson = require("cjson")
local cjson_decode = require("cjson.safe").new().decode

local decode = core.json_decode

-- Deep equality that tells -0 from 0 (lua-cjson keeps the sign).
local function same(a, b)
  if type(a) ~= type(b) then
    return false
  end
  if type(a) == "number" then
    return a == b and (a ~= 0 or 1 / a == 1 / b)
  end
  if type(a) ~= "table" then
    return a == b
  end
  for k, v in pairs(a) do
    if not same(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

-- A small seeded generator, the same texts on every run.
local function rng(seed)
  local state = seed
  return function(n)
    state = (state * 1103515245 + 12345) % 2147483648
    return state % n
  end
end

local PIECES = { "a", "Z", " ", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t",
  "\\u0041", "\\u00e9", "\\u20AC", "\\ud83d\\ude00", "\\u0000", "é", "€", "😀", "~", "{", "]" }

local function gen_string(r)
  local out = {}
  for i = 1, r(6) do
    out[i] = PIECES[r(#PIECES) + 1]
  end
  return '"' .. table.concat(out) .. '"'
end

local function gen_number(r)
  local s = (r(2) == 0 and "-" or "")
  local int = r(3) == 0 and "0" or tostring(r(9) + 1) .. string.rep("7", r(20))
  s = s .. int
  if r(2) == 0 then
    s = s .. "." .. tostring(r(1000000)) .. string.rep("3", r(15))
  end
  if r(3) == 0 then
    s = s .. ({ "e", "E" })[r(2) + 1] .. ({ "", "+", "-" })[r(3) + 1] .. tostring(r(330))
  end
  return s
end

local WS = { "", "", " ", "\n", "\t ", "\r\n" }

local function gen_value(r, depth)
  local kind = depth > 4 and r(5) or r(7)
  local ws = WS[r(#WS) + 1]
  if kind == 0 then
    return gen_string(r)
  elseif kind == 1 then
    return gen_number(r)
  elseif kind == 2 then
    return ({ "true", "false", "null" })[r(3) + 1]
  elseif kind == 3 or kind == 4 then
    return gen_number(r)
  elseif kind == 5 then
    local items = {}
    for i = 1, r(6) do
      items[i] = ws .. gen_value(r, depth + 1) .. ws
    end
    return "[" .. table.concat(items, ",") .. "]"
  end
  local members = {}
  for i = 1, r(6) do
    members[i] = ws .. gen_string(r) .. ws .. ":" .. ws .. gen_value(r, depth + 1)
  end
  return "{" .. table.concat(members, ",") .. ws .. "}"
end

describe("core.json_decode", function()
  it("gives lua-cjson's values for the benchmark's payload and the usual shapes", function()
    local texts = {
      '{"seq":123456,"id":3,"temp":21.53,"hum":48.1,"bat":3.71}', "[]", "{}", " [ ] ",
      '[1,2,[3,{"a":null}]]', '{"a":1,"a":2}', '"\\u0000x"', "-0", "0.1", "1e400", "-1e-400",
      "12345678901234567890", "1.7976931348623157e308", "4.9e-324", "0.30000000000000004",
      "9007199254740993", "  true ", "false", '"a\\u00e9\\ud83d\\ude00\\n"', "1E+2", "0e999",
    }
    for _, text in ipairs(texts) do
      local ours, err = decode(text)
      assert.is_nil(err, text)
      assert.is_true(same(ours, (cjson_decode(text))), text)
    end
  end)

  it("decodes null as cjson.null", function()
    assert.equal(cjson.null, decode("null"))
    assert.equal(cjson.null, decode('{"a":null}').a)
  end)

  it("gives lua-cjson's values for 5,000 generated documents", function()
    local r = rng(42)
    local agreed = 0
    for _ = 1, 5000 do
      local text = gen_value(r, 0)
      local ours, err = decode(text)
      local theirs = cjson_decode(text)
      assert.is_nil(err, text)
      assert.is_true(same(ours, theirs), text)
      agreed = agreed + 1
    end
    assert.equal(5000, agreed)
  end)

  it("rounds 20,000 generated numbers exactly as strtod does", function()
    local r = rng(7)
    for _ = 1, 20000 do
      local text = gen_number(r)
      local ours = decode(text)
      assert.is_true(same(ours, (cjson_decode(text))), text)
    end
  end)

  it("rounds as strtod does on both sides of the exactly representable powers of ten", function()
    local r = rng(11)
    local mantissas = { "1", "7", "123", "9007199254740991", "9007199254740993", "4503599627370497",
      "18014398509481985", "999999999999999999", "1234567890123456789" }
    for _ = 1, 40 do
      mantissas[#mantissas + 1] = tostring(r(2147483647)) .. tostring(r(2147483647))
    end
    for _, m in ipairs(mantissas) do
      for e = -40, 40 do
        for _, text in ipairs({ m .. "e" .. e, "-" .. m .. "e" .. e, "0." .. m .. "e" .. e }) do
          assert.is_true(same(decode(text), (cjson_decode(text))), text)
        end
      end
    end
  end)

  it("never gives a value where lua-cjson gives none (50,000 mutated documents)", function()
    local r = rng(2026)
    local bytes = { "\0", "\1", "\31", '"', "\\", "{", "}", "[", "]", ",", ":", "-", ".", "e",
      "0", "9", "u", "n", "t", "f", " ", "\128", "\192", "\237\160\128", "\255" }
    local accepted = 0
    for _ = 1, 50000 do
      local text = gen_value(r, 2)
      local at = r(#text + 1) + 1
      local op = r(3)
      local b = bytes[r(#bytes) + 1]
      if op == 0 then
        text = text:sub(1, at - 1) .. b .. text:sub(at)
      elseif op == 1 then
        text = text:sub(1, at - 1) .. text:sub(at + 1)
      else
        text = text:sub(1, at - 1) .. b .. text:sub(at + 1)
      end
      local ours, err = decode(text)
      if ours ~= nil then
        accepted = accepted + 1
        assert.is_true(same(ours, (cjson_decode(text))), text)
      else
        assert.is_string(err)
      end
    end
    -- Mutations keep some texts valid; the comparison above must have had work.
    assert.is_true(accepted > 1000)
  end)

  it("builds documents with more containers than fit its first count buffer", function()
    local rows = {}
    for i = 1, 500 do
      rows[i] = string.format('{"i":%d,"tags":["a","b"],"pos":{"x":%d}}', i, -i)
    end
    local text = "[" .. table.concat(rows, ",") .. "]"
    local doc = assert(decode(text))
    assert.equal(500, #doc)
    assert.equal(500, doc[500].i)
    assert.equal(-500, doc[500].pos.x)
    assert.is_true(same(doc, (cjson_decode(text))))
  end)

  it("takes 1,000 levels of nesting and refuses 1,001", function()
    local ok = string.rep("[", 1000) .. string.rep("]", 1000)
    assert.is_table(decode(ok))
    local value, err = decode(string.rep("[", 1001) .. string.rep("]", 1001))
    assert.is_nil(value)
    assert.equal("nested too deeply (more than 1000 levels) at character 1001", err)
    value, err = decode(string.rep('{"a":', 1001) .. "1" .. string.rep("}", 1001))
    assert.is_nil(value)
    assert.equal("nested too deeply (more than 1000 levels) at character 5001", err)
  end)

  it("names the problem and where it is", function()
    local cases = {
      { "", "expected a value at character 1" },
      { "   ", "expected a value at character 4" },
      { "{oops", "expected a string key at character 2" },
      { "[1,]", "expected a value at character 4" },
      { "[1 2]", "expected ',' or ']' at character 4" },
      { '{"a":1 "b":2}', "expected ',' or '}' at character 8" },
      { '{"a" 1}', "expected ':' at character 6" },
      { "1 2", "unexpected data after the value at character 3" },
      { "tru", "expected a value at character 1" },
      { '"abc', "unterminated string at character 1" },
      { '"ab\\', "unterminated string at character 4" },
      { '"a\tb"', "control character in string at character 3" },
      { '"a\\x"', "invalid escape in string at character 3" },
      { '"\\u12G4"', "invalid \\u escape in string at character 2" },
      { '"\\ud800"', "unpaired surrogate in string at character 2" },
      { '"\\udc00\\ud800"', "unpaired surrogate in string at character 2" },
      { '"\255"', "invalid UTF-8 in string at character 2" },
      { '"\237\160\128"', "invalid UTF-8 in string at character 2" },
      { "-", "invalid number at character 1" },
      { "1.", "invalid number at character 1" },
      { "1e+", "invalid number at character 1" },
    }
    for _, case in ipairs(cases) do
      local value, err = decode(case[1])
      assert.is_nil(value, case[1])
      assert.equal(case[2], err, case[1])
    end
  end)

  it("refuses what lua-cjson lets through but JSON does not allow", function()
    local cases = {
      { "01", "invalid number (leading zero) at character 1" },
      { "0x10", "unexpected data after the value at character 2" },
      { "NaN", "expected a value at character 1" },
      { "-Infinity", "invalid number at character 1" },
      { "+1", "expected a value at character 1" },
      { '"a\1"', "control character in string at character 3" },
      { '"\192\128"', "invalid UTF-8 in string at character 2" },
      { "[1]\0garbage", "unexpected data after the value at character 4" },
    }
    for _, case in ipairs(cases) do
      assert.is_not_nil(cjson_decode(case[1]), case[1])
      local value, err = decode(case[1])
      assert.is_nil(value, case[1])
      assert.equal(case[2], err, case[1])
    end
  end)

  it("returns an error for what is not a string, and raises nothing", function()
    local value, err = decode(nil)
    assert.is_nil(value)
    assert.equal("expected a string to decode, got nil", err)
    value, err = decode({})
    assert.is_nil(value)
    assert.equal("expected a string to decode, got table", err)
  end)
end)
