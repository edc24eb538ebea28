-- Dead-letter messages: the JSON envelope a poison message is published in.
--
-- The worker calls envelope() once per dead-lettered message; the payload
-- travels as text when it is UTF-8 without NUL bytes, else as base64.
local cjson = require("cjson")
local core = require("routemq.core")

local floor, concat = math.floor, table.concat

local M = {}

-- A private cjson instance: the app may reconfigure the global cjson module.
local json_encode = cjson.new().encode

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64char(n)
  return B64:sub(n + 1, n + 1)
end

--- Standard base64 (RFC 4648, with padding) of a binary string.
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    out[#out + 1] = b64char(floor(n / 262144) % 64) .. b64char(floor(n / 4096) % 64)
      .. (b and b64char(floor(n / 64) % 64) or "=") .. (c and b64char(n % 64) or "=")
  end
  return concat(out)
end

-- True when s can travel as a JSON string: well-formed UTF-8 (no overlongs,
-- surrogates or code points above U+10FFFF) and no NUL byte.
local function is_text(s)
  return not s:find("%z") and core.utf8_valid(s)
end

--- The envelope: { topic, route, error, attempts, payload, payload_encoding = "utf8"|"base64" }.
function M.envelope(topic, payload, route, err, attempts)
  local text = is_text(payload)
  return json_encode({
    topic = topic,
    route = route,
    error = err,
    attempts = attempts,
    payload = text and payload or M.base64(payload),
    payload_encoding = text and "utf8" or "base64",
  })
end

return M
