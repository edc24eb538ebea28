-- A local HTTP API for spec/e2e/wait_spec.lua: answers every request with
-- 200 "ok" after DELAY_MS (default 10) ms. Usage: luajit http_server.lua PORT
local http_server = require("http.server")
local http_headers = require("http.headers")
local cqueues = require("cqueues")

local delay = tonumber(os.getenv("DELAY_MS") or "10") / 1000
local server = assert(http_server.listen({
  host = "127.0.0.1",
  port = assert(tonumber(arg[1]), "port expected"),
  onstream = function(_, stream)
    stream:get_headers()
    stream:get_body_as_string()
    cqueues.sleep(delay)
    local res = http_headers.new()
    res:append(":status", "200")
    stream:write_headers(res, false)
    stream:write_chunk("ok", true)
  end,
}))
assert(server:listen())
assert(server:loop())
