-- End to end: who may use the admin HTTP endpoint (issue 21) - the Bearer
-- token on everything but /health and /ready, /metrics opened on request,
-- actions refused without a token off loopback, the token never shown, TLS,
-- and the configuration errors of the new variables.
local e2e = require("spec.helpers.e2e")
local netns = require("spec.helpers.netns")
local cjson = require("cjson")

local APP = "spec/e2e/apps/basic"
local TOKEN = "s3cr3t-t0ken-0123456789abcdef"
local UNAUTHORIZED = '{"error":"unauthorized: this endpoint needs Authorization: Bearer <ROUTEMQ_HTTP_TOKEN>"}\n'

--- One request with curl: status code (0 when nothing answered), body, headers.
-- opts: method, headers (list), body, scheme ("https" adds -k), host (default 127.0.0.1).
local function http(port, path, opts)
  opts = opts or {}
  local out, hdr = os.tmpname(), os.tmpname()
  local args = { "curl -s --max-time 5", "-o", out, "-D", hdr, "-w '%{http_code}'" }
  if opts.scheme == "https" then args[#args + 1] = "-k" end
  if opts.method then args[#args + 1] = "-X " .. opts.method end
  for _, h in ipairs(opts.headers or {}) do args[#args + 1] = "-H " .. e2e.quote(h) end
  if opts.body then args[#args + 1] = "--data-binary " .. e2e.quote(opts.body) end
  local url = string.format("%s://%s:%d%s", opts.scheme or "http", opts.host or "127.0.0.1", port, path)
  args[#args + 1] = e2e.quote(url)
  local code = tonumber(e2e.sh(table.concat(args, " ")):match("(%d+)%s*$")) or 0
  local body, headers = e2e.read(out), e2e.read(hdr)
  os.remove(out)
  os.remove(hdr)
  return code, body, headers
end

local function bearer(t) return { "Authorization: Bearer " .. (t or TOKEN) } end

local function post(port, path, body, headers)
  local h = { "Content-Type: application/json" }
  for _, x in ipairs(headers or {}) do h[#h + 1] = x end
  return http(port, path, { method = "POST", headers = h, body = body or "{}" })
end

--- routemq run on the basic app with the admin endpoint on addr:port; waits
-- until /health answers and every worker is connected.
local function start(broker, env, workers)
  local port = e2e.free_port()
  local e = { E2E_SHARED_WORKERS = workers or 2, ROUTEMQ_HTTP = (env.addr or "127.0.0.1") .. ":" .. port }
  for k, v in pairs(env) do if k ~= "addr" then e[k] = v end end
  local r = e2e.routemq(broker, APP, "run", e)
  assert(e2e.wait_for(function() return r.ready(workers or 2) end, 15), e2e.read(r.log))
  r.port = port
  return r
end

describe("admin HTTP access", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("asks for the token everywhere but /health, /ready and the console's files; 401 in JSON", function()
    local r = start(broker, { ROUTEMQ_HTTP_TOKEN = TOKEN })
    assert.equal(200, (http(r.port, "/health")))
    assert.equal(200, (http(r.port, "/ready")))
    local code, body = http(r.port, "/")
    assert.equal(200, code)
    assert.matches("<title>routemq console</title>", body, 1, true)
    for _, path in ipairs({ "/status", "/stats", "/errors", "/metrics", "/status?cluster=1" }) do
      local c, b, h = http(r.port, path)
      assert.equal(401, c, path)
      assert.equal(UNAUTHORIZED, b, path)
      assert.matches('WWW-Authenticate: Bearer realm="routemq"', h, 1, true)
      assert.is_nil(h:lower():find("access%-control"), path .. " has no CORS header")
      assert.equal(401, (http(r.port, path, { headers = bearer("wrong-token-0123456789abcdef") })), path)
      assert.equal(401, (http(r.port, path, { headers = bearer(TOKEN .. "x") })), path)
      assert.equal(401, (http(r.port, path, { headers = { "Authorization: Basic " .. TOKEN } })), path)
      assert.equal(200, (http(r.port, path, { headers = bearer() })), path)
    end
    -- Actions too, before their body is looked at.
    local c, b = post(r.port, "/reload")
    assert.equal(401, c)
    assert.equal(UNAUTHORIZED, b)
    -- A cross-origin request gets no CORS header, even with the token.
    local _, _, h = http(r.port, "/status", { headers = { "Origin: http://evil.example", bearer()[1] } })
    assert.is_nil(h:lower():find("access%-control"))
    local _, _, h2 = http(r.port, "/reload", { method = "OPTIONS", headers = { "Origin: http://evil.example",
      "Access-Control-Request-Method: POST" } })
    assert.is_nil(h2:lower():find("access%-control"))
  end)

  it("logs refusals with the peer, at most 5 lines per 10 s, and never the token", function()
    local r = start(broker, { ROUTEMQ_HTTP_TOKEN = TOKEN })
    http(r.port, "/status")
    http(r.port, "/metrics", { headers = bearer("guess-0123456789abcdef-guess") })
    for _ = 1, 20 do http(r.port, "/status") end
    local log = e2e.read(r.log)
    assert.matches("admin HTTP: refused GET /status from 127.0.0.1: no token", log, 1, true)
    assert.matches("admin HTTP: refused GET /metrics from 127.0.0.1: wrong token", log, 1, true)
    local _, lines = log:gsub("admin HTTP: refused", "")
    assert.equal(5, lines)
    assert.is_nil(log:find("guess-0123456789abcdef-guess", 1, true))
    assert.is_nil(log:find(TOKEN, 1, true))
  end)

  it("keeps the token out of the process list, /proc/<pid>/environ, status and /status", function()
    local r = start(broker, { ROUTEMQ_HTTP_TOKEN = TOKEN })
    local pids = r.workers()
    pids[#pids + 1] = r.pid
    for _, pid in ipairs(pids) do
      assert.is_nil(e2e.read("/proc/" .. pid .. "/environ"):find(TOKEN, 1, true), "environ of " .. pid)
      assert.is_nil(e2e.read("/proc/" .. pid .. "/cmdline"):find(TOKEN, 1, true), "cmdline of " .. pid)
    end
    -- The titles routemq's processes show (the shell that started it is the shell's business).
    for line in e2e.sh("ps axww -o args"):gmatch("[^\n]+") do
      if line:match("^routemq:") then assert.is_nil(line:find(TOKEN, 1, true), line) end
    end
    local _, body = http(r.port, "/status", { headers = bearer() })
    assert.is_nil(body:find(TOKEN, 1, true))
    local out = e2e.sh(string.format("cd %s && env ROUTEMQ_RUN_DIR=%s %s status --json --app %s", e2e.root,
      r.dir .. "/run", e2e.bin, APP))
    assert.matches('"generation":1', out, 1, true)
    assert.is_nil(out:find(TOKEN, 1, true))
  end)

  it("reads the token from ROUTEMQ_HTTP_TOKEN_FILE and opens /metrics with ROUTEMQ_HTTP_METRICS=open", function()
    local file = e2e.tmpdir() .. "/token"
    e2e.write(file, TOKEN .. "\n")
    local r = start(broker, { ROUTEMQ_HTTP_TOKEN_FILE = file, ROUTEMQ_HTTP_METRICS = "open" })
    local code, body = http(r.port, "/metrics")
    assert.equal(200, code)
    assert.matches("routemq_build_info", body, 1, true)
    assert.equal(401, (http(r.port, "/status")))
    assert.equal(200, (http(r.port, "/status", { headers = bearer() })))
  end)

  it("without a token, on loopback: reading is open, actions need a JSON body and an address as Host", function()
    local r = start(broker, {})
    assert.equal(200, (http(r.port, "/status")))
    local c, b = http(r.port, "/reload", { method = "POST", body = "{}" })
    assert.equal(415, c)
    assert.equal('{"error":"actions take a JSON body: send Content-Type: application/json"}\n', b)
    -- A page of another site whose name was rebound to 127.0.0.1.
    c, b = post(r.port, "/reload", "{}", { "Host: rebind.evil.example:" .. r.port })
    assert.equal(403, c)
    assert.equal('{"error":"forbidden: without ROUTEMQ_HTTP_TOKEN, actions need a Host of 127.0.0.1, [::1] or '
      .. 'localhost"}\n', b)
    c, b = post(r.port, "/reload")
    assert.equal(200, c)
    assert.same({ ok = true, generation = 2, workers = 2,
      message = "generation 2 loaded; replacing the workers one by one" }, cjson.decode(b))
    local log = e2e.read(r.log)
    assert.is_nil(log:find("not a loopback address", 1, true))
  end)

  it("without a token, off loopback: warns at start and refuses actions with 403", function()
    if not netns.available() then
      pending("needs root with ip (a non-loopback address of our own)")
      return
    end
    local net = netns.new()
    local r = start(broker, { addr = net.ip })
    local log = e2e.read(r.log)
    assert.matches("ROUTEMQ_HTTP: " .. net.ip .. ":" .. r.port .. " is not a loopback address and ROUTEMQ_HTTP_TOKEN "
      .. "is not set: anyone who reaches it reads the status, routes and errors (actions are refused); set "
      .. "ROUTEMQ_HTTP_TOKEN", log, 1, true)
    assert.equal(200, (http(r.port, "/status", { host = net.ip })))
    local c, b = http(r.port, "/reload", { host = net.ip, method = "POST",
      headers = { "Content-Type: application/json" }, body = "{}" })
    assert.equal(403, c)
    assert.equal('{"error":"forbidden: actions need ROUTEMQ_HTTP_TOKEN when the admin endpoint is not bound to a '
      .. 'loopback address"}\n', b)
    local _, status = http(r.port, "/status", { host = net.ip })
    assert.equal(1, cjson.decode(status).generation)
  end)

  it("serves HTTPS with ROUTEMQ_HTTP_TLS_CERT and _KEY", function()
    local dir = e2e.tmpdir()
    e2e.sh(string.format("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 1 "
      .. "-subj /CN=127.0.0.1 2>/dev/null", dir, dir))
    local r = start(broker, { ROUTEMQ_HTTP_TOKEN = TOKEN, ROUTEMQ_HTTP_TLS_CERT = dir .. "/cert.pem",
      ROUTEMQ_HTTP_TLS_KEY = dir .. "/key.pem" })
    assert.matches("admin HTTP on https://127.0.0.1:" .. r.port .. "/", e2e.read(r.log), 1, true)
    assert.equal(200, (http(r.port, "/health", { scheme = "https" })))
    assert.equal(401, (http(r.port, "/status", { scheme = "https" })))
    assert.equal(200, (http(r.port, "/status", { scheme = "https", headers = bearer() })))
    assert.equal(0, (http(r.port, "/health")), "plain HTTP gets no answer")
  end)
end)

describe("admin HTTP configuration errors", function()
  --- routemq check with env; exit code and stderr.
  local function check(env)
    local parts = { "env -u ROUTEMQ_HTTP_TOKEN -u ROUTEMQ_HTTP_TOKEN_FILE" }
    for k, v in pairs(env) do parts[#parts + 1] = e2e.quote(k .. "=" .. v) end
    local errf = os.tmpname()
    local rc = tonumber(e2e.sh(string.format("cd %s && %s %s check --app %s > /dev/null 2> %s; echo $?", e2e.root,
      table.concat(parts, " "), e2e.bin, APP, errf)):match("%d+"))
    local err = e2e.read(errf)
    os.remove(errf)
    return rc, err
  end

  it("names the variable and what is wrong, never the token", function()
    local dir = e2e.tmpdir()
    local cases = {
      { { ROUTEMQ_HTTP_TOKEN = "short" },
        "ROUTEMQ_HTTP_TOKEN: the token has 5 characters; use at least 16 (e.g. openssl rand -hex 32)" },
      { { ROUTEMQ_HTTP_TOKEN = "has space 0123456789" },
        "ROUTEMQ_HTTP_TOKEN: the token must be printable ASCII without spaces (character 4 is not)" },
      { { ROUTEMQ_HTTP_TOKEN = TOKEN, ROUTEMQ_HTTP_TOKEN_FILE = dir .. "/t" },
        "ROUTEMQ_HTTP_TOKEN_FILE: set together with ROUTEMQ_HTTP_TOKEN; set only one" },
      { { ROUTEMQ_HTTP_TOKEN_FILE = dir .. "/missing" },
        "ROUTEMQ_HTTP_TOKEN_FILE: " .. dir .. "/missing: No such file or directory" },
      { { ROUTEMQ_HTTP_METRICS = "public" }, "ROUTEMQ_HTTP_METRICS: 'public' is not token or open" },
      { { ROUTEMQ_HTTP_TLS_CERT = dir .. "/cert.pem" },
        "ROUTEMQ_HTTP_TLS_KEY: required together with ROUTEMQ_HTTP_TLS_CERT" },
      { { ROUTEMQ_HTTP_TLS_CERT = dir .. "/cert.pem", ROUTEMQ_HTTP_TLS_KEY = dir .. "/key.pem" },
        "ROUTEMQ_HTTP_TLS_CERT: " .. dir .. "/cert.pem: No such file or directory" },
    }
    for _, case in ipairs(cases) do
      local rc, err = check(case[1])
      assert.equal(1, rc, case[2])
      assert.equal("routemq: " .. case[2] .. "\n", err)
    end
  end)
end)
