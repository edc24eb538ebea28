-- The dead-letter envelope (routemq.dlq): text payloads as they are, anything
-- that is not UTF-8 as base64, whatever the app did to the global cjson.
local dlq = require("routemq.dlq")
local cjson = require("cjson")

describe("routemq.dlq", function()
  it("encodes base64 with padding (RFC 4648 vectors)", function()
    local v = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==", fooba = "Zm9vYmE=",
      foobar = "Zm9vYmFy", ["\0\255\254"] = "AP/+" }
    for s, want in pairs(v) do assert.equal(want, dlq.base64(s)) end
  end)

  it("keeps a UTF-8 payload as text and names topic, route, error and attempts", function()
    local e = cjson.decode(dlq.envelope("a/b", "温度 {\"t\":1}", "a/{x}", "worker killed by signal 11", 3))
    assert.same({ topic = "a/b", route = "a/{x}", error = "worker killed by signal 11", attempts = 3,
      payload = "温度 {\"t\":1}", payload_encoding = "utf8" }, e)
  end)

  it("sends binary, NUL bytes, surrogates, overlongs and code points above U+10FFFF as base64", function()
    for _, p in ipairs({ "\0", "a\0b", "\255", "\237\160\128", "\192\175", "\244\144\128\128", "\226\130" }) do
      local e = cjson.decode(dlq.envelope("t", p, "t", "e", 1))
      assert.equal("base64", e.payload_encoding)
      assert.equal(dlq.base64(p), e.payload)
    end
  end)

  it("does not depend on how the app configured the global cjson", function()
    local before = dlq.envelope("a/b", "x", "a/{x}", "e", 123)
    local precision = cjson.encode_number_precision()
    cjson.encode_number_precision(1)  -- 123 would become 1e+02
    local after = dlq.envelope("a/b", "x", "a/{x}", "e", 123)
    cjson.encode_number_precision(precision)
    assert.equal(before, after)
    assert.equal(123, cjson.decode(after).attempts)
  end)
end)
