-- The readings app against a fake readings API: a lua-http server on
-- 127.0.0.1 run by the harness's own cqueues controller.
local testing = require("routemq.testing")
local http_server = require("http.server")
local http_headers = require("http.headers")
local cjson = require("cjson")

describe("readings", function()
  local app, stored, answer

  setup(function()
    app = testing.app(".")
    stored = {}
    local server = assert(http_server.listen({
      host = "127.0.0.1",
      port = 0,
      onstream = function(_, stream)
        local req = stream:get_headers()
        local body = cjson.decode(stream:get_body_as_string())
        local status, text = answer(req:get(":path"), body)
        local res = http_headers.new()
        res:append(":status", status)
        stream:write_headers(res, false)
        stream:write_chunk(text, true)
      end,
    }))
    assert(server:listen())
    local _, host, port = server:localname()
    app.runner.cq:wrap(function() assert(server:loop()) end)
    app.env = { READINGS_API_URL = ("http://%s:%d"):format(host, port) }
  end)

  before_each(function()
    answer = function(path, body)
      stored[#stored + 1] = { path = path, body = body }
      return "201", cjson.encode({ id = #stored })
    end
  end)

  it("stores a reading through the API and acknowledges it", function()
    local res = app:dispatch("readings/s1", { json = { value = 21.5, at = 1700000000 }, qos = 1 })
    assert.is_nil(res.error)
    assert.same({ path = "/sensors/s1/readings",
      body = { sensor = "s1", value = 21.5, at = 1700000000 } }, stored[#stored])
    assert.equal("readings/s1/ack", res.published[1].topic)
    assert.equal(1, res.published[1].qos)
    assert.same({ ok = true, id = #stored }, res.published[1].json)
  end)

  it("acknowledges a refused reading with the API's reason", function()
    answer = function() return "422", "value out of range" end
    local res = app:dispatch("readings/s2", { json = { value = 1e9 } })
    assert.is_nil(res.error)
    assert.same({ ok = false, error = "refused: value out of range" }, res.published[1].json)
  end)

  it("rejects a payload without a value without calling the API", function()
    local before = #stored
    local res = app:dispatch("readings/s3", { payload = "not json" })
    assert.equal(before, #stored)
    assert.is_false(res.published[1].json.ok)
  end)

  it("fails the message (to be counted and logged) when the API fails", function()
    answer = function() return "503", "down" end
    local res = app:dispatch("readings/s4", { json = { value = 1 } })
    assert.matches("readings API answered 503: down", res.error)
    assert.same({}, res.published)
  end)
end)
