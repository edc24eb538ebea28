-- util.show_topic: topics in errors and logs shown safely, with the same
-- rules as log_topic in runtime/log.c (runtime/tests/test_log_topic.c).
local util = require("routemq.util")

describe("util.show_topic", function()
  it("keeps a plain topic and UTF-8 as they are", function()
    assert.equal("sensors/1/temp", util.show_topic("sensors/1/temp"))
    assert.equal("caf\195\169", util.show_topic("caf\195\169"))
    assert.equal("", util.show_topic(""))
  end)

  it("escapes NUL, control bytes and backslash", function()
    assert.equal("a\\0b", util.show_topic("a\0b"))
    assert.equal("a\\nb\\tc\\\\d\\x01\\x7f", util.show_topic("a\nb\tc\\d\1\127"))
  end)

  it("shortens a long topic to 120 bytes and its length", function()
    assert.equal(string.rep("x", 120) .. "... (70000 bytes)", util.show_topic(string.rep("x", 70000)))
    assert.equal(string.rep("\\x01", 120) .. "... (121 bytes)", util.show_topic(string.rep("\1", 121)))
    assert.equal(string.rep("y", 120), util.show_topic(string.rep("y", 120)))
  end)
end)
