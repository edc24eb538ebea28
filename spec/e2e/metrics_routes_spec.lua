-- End to end: /metrics of an application with many routes (issue 14 item 6).
-- Every route is counted however many there are, and the page lists the
-- routes with traffic only once the application has more than 256 routes.
local e2e = require("spec.helpers.e2e")
local prom = require("spec.helpers.prom")

local function metrics(port)
  local out = os.tmpname()
  local code = e2e.sh(string.format("curl -s -o %s -w '%%{http_code}' --max-time 5 http://127.0.0.1:%d/metrics",
    out, port))
  local body = e2e.read(out)
  os.remove(out)
  if code ~= "200" then return nil, body end
  return assert(prom.parse(body)), body
end

describe("/metrics with 20,000 routes", function()
  it("counts traffic on the last route and lists only routes with traffic", function()
    local b = e2e.broker()
    e2e.defer(b.stop)
    local app = e2e.tmpdir()
    e2e.defer(function() e2e.sh("rm -rf " .. app) end)
    e2e.sh("mkdir -p " .. app .. "/app/routers")
    e2e.write(app .. "/app/routers/many.lua", [[
local router = require("routemq.router")
local function handle() end
for i = 1, 20000 do router.on("r/" .. i .. "/{x}", handle, { qos = 1 }) end
]])
    local port = e2e.free_port()
    local r = e2e.routemq(b, app, "run", { WORKER_COUNT = 1, ROUTEMQ_HTTP = "127.0.0.1:" .. port })
    e2e.defer(r.stop)  -- its log stays for the sanitizer check of scripts/test.sh
    assert(e2e.wait_for(function() return r.ready(1) end, 30), e2e.read(r.log))
    local out = e2e.publish_lines(b.port, "r/20000/a", e2e.seq(1, 7), 1)
    assert.matches("rc=0", out)
    e2e.publish(b.port, "r/300/b", "x", "-q 1")
    local m, body
    assert(e2e.wait_for(function()
      m, body = metrics(port)
      return m and m:value("routemq_messages_total", { route = "r/20000/{x}", result = "ok" }) == 7
        and m:value("routemq_messages_total", { route = "r/300/{x}", result = "ok" }) == 1
    end, 10), body)
    assert.equal(7, m:value("routemq_handler_duration_seconds_count", { route = "r/20000/{x}" }))
    assert.equal(0, m:value("routemq_messages_total", { route = "r/20000/{x}", result = "error" }))
    -- Routes without traffic are left out; nothing is counted under "_other".
    assert.is_nil(m:value("routemq_messages_total", { route = "r/1/{x}", result = "ok" }))
    assert.is_nil(m:value("routemq_messages_total", { route = "_other", result = "ok" }))
    local routes = {}
    for line in body:gmatch("routemq_messages_total{route=\"([^\"]+)\"") do routes[line] = true end
    assert.same({ ["r/20000/{x}"] = true, ["r/300/{x}"] = true }, routes)
    assert.is_true(#body < 16384, "page of " .. #body .. " bytes")
  end)
end)
