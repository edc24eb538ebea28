--- Dead-letter messages: the JSON envelope a poison message is published in.
local cjson = require("cjson")

local M = {}

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

--- Standard base64 of a binary string.
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1)
      .. (b and b64chars:sub(c3 + 1, c3 + 1) or "=") .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

-- True when s is valid UTF-8 with no NUL byte, so it can travel as a JSON string.
local function is_text(s)
  if s:find("%z") then return false end
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c < 0xE0) and 2 or (c >= 0xE0 and c < 0xF0) and 3
      or (c >= 0xF0 and c < 0xF5) and 4 or nil
    if not len or i + len - 1 > n then return false end
    for k = i + 1, i + len - 1 do
      local cc = s:byte(k)
      if cc < 0x80 or cc > 0xBF then return false end
    end
    i = i + len
  end
  return true
end

--- The envelope: { topic, route, error, attempts, payload, payload_encoding = "utf8"|"base64" }.
function M.envelope(topic, payload, route, err, attempts)
  local text = is_text(payload)
  return cjson.encode({
    topic = topic,
    route = route,
    error = err,
    attempts = attempts,
    payload = text and payload or M.base64(payload),
    payload_encoding = text and "utf8" or "base64",
  })
end

return M
