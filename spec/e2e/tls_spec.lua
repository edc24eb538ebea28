-- End to end: TLS to a real mosquitto (docs/configuration.md, MQTT_TLS_*; issue 14 item 5). A CA, a
-- server and a client certificate made with openssl; a broker that requires
-- client certificates. Every failed handshake is logged with OpenSSL's reason
-- and the broker's address (rate-limited) and retried for as long as the
-- worker runs; bad TLS files stop the start with their path.
local e2e = require("spec.helpers.e2e")

local APP = "spec/e2e/apps/basic"

local function openssl(dir, args)
  local out = e2e.sh(string.format("cd %s && openssl %s 2>&1; echo rc=$?", dir, args))
  assert(out:match("rc=0%s*$"), "openssl " .. args .. ": " .. out)
end

--- A CA, another CA, a server certificate for 127.0.0.1 and a client certificate.
local function make_certs()
  local d = e2e.tmpdir()
  e2e.defer(function() e2e.sh("rm -rf " .. d) end)
  for _, ca in ipairs({ "ca", "otherca" }) do
    openssl(d, "req -x509 -newkey rsa:2048 -nodes -keyout " .. ca .. ".key -out " .. ca .. ".crt -days 2 -subj /CN="
      .. ca)
  end
  e2e.write(d .. "/san.ext", "subjectAltName=IP:127.0.0.1\n")
  for _, name in ipairs({ "server", "client" }) do
    openssl(d, "req -newkey rsa:2048 -nodes -keyout " .. name .. ".key -out " .. name .. ".csr -subj /CN=" .. name)
    openssl(d, "x509 -req -in " .. name .. ".csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out " .. name
      .. ".crt" .. (name == "server" and " -extfile san.ext" or ""))
  end
  e2e.sh("chmod 0755 " .. d .. " && chmod 0644 " .. d .. "/*")
  return d
end

--- mosquitto with one TLS listener on 127.0.0.1 requiring client certificates.
local function tls_broker(certs)
  local dir = e2e.tmpdir()
  e2e.sh("chmod 0777 " .. dir)
  local port = e2e.free_port()
  e2e.write(dir .. "/mosquitto.conf", table.concat({
    "listener " .. port .. " 127.0.0.1", "allow_anonymous true", "persistence false",
    "cafile " .. certs .. "/ca.crt", "certfile " .. certs .. "/server.crt", "keyfile " .. certs .. "/server.key",
    "require_certificate true", "log_type error",
    -- Started as root, mosquitto would read the certificates as the mosquitto
    -- user, who may not enter the test's private temporary directory.
    "user root", "" }, "\n"))
  local exe = io.open("/usr/sbin/mosquitto") and "/usr/sbin/mosquitto" or "mosquitto"
  local b = { port = port, dir = dir }
  b.pid = e2e.spawn(exe .. " -c " .. dir .. "/mosquitto.conf", dir .. "/broker.log")
  e2e.defer(function()
    e2e.kill(b.pid, "TERM")
    e2e.wait_for(function() return not e2e.alive(b.pid) end, 5)
    if e2e.alive(b.pid) then e2e.kill(b.pid, "KILL") end
    e2e.sh("rm -rf " .. dir)
  end)
  assert(e2e.wait_for(function()
    local out = e2e.sh(string.format("mosquitto_pub -h 127.0.0.1 -p %d --cafile %s/ca.crt --cert %s/client.crt "
      .. "--key %s/client.key -t routemq/probe -n 2>&1; echo $?", port, certs, certs, certs))
    return out:match("^0%s*$")
  end, 10), "mosquitto did not start: " .. e2e.read(dir .. "/broker.log"))
  return b
end

local function start(b, app, env)
  local e = { WORKER_COUNT = 1, MQTT_TLS_ENABLED = "true", MQTT_RETRY_MIN_DELAY = 0.01, MQTT_RETRY_MAX_DELAY = 0.05 }
  for k, v in pairs(env) do e[k] = v end
  local r = e2e.routemq(b, app, "run", e)
  e2e.defer(r.stop)  -- its log stays for the sanitizer check of scripts/test.sh
  return r
end

--- The failed attempts logged so far: a list of { attempt =, reason =, line = }.
-- A handshake that OpenSSL failed is logged with its reason; when the broker
-- closed the socket before OpenSSL could read its alert (the write of
-- CONNECT failed first), the line says the connection was closed.
local function failures(r, port)
  local list = {}
  for line in e2e.read(r.log):gmatch("[^\n]+") do
    for _, what in ipairs({ "TLS handshake with", "connecting to" }) do
      local prefix = what .. " 127.0.0.1:" .. port .. " failed: "
      local at = line:find(prefix, 1, true)
      if at then
        local reason, attempt = line:sub(at + #prefix):match("^(.-); attempt (%d+), retrying in [%d.]+ s$")
        list[#list + 1] = { attempt = tonumber(attempt), reason = reason, line = line }
      end
    end
  end
  return list
end

describe("TLS to the broker", function()
  it("logs every failed handshake with OpenSSL's reason, within the rate limit, and keeps retrying", function()
    local certs = make_certs()
    local b = tls_broker(certs)
    local wrong_ca = start(b, e2e.copy_app(APP), { MQTT_TLS_CA_CERTS = certs .. "/otherca.crt",
      MQTT_TLS_CERTFILE = certs .. "/client.crt", MQTT_TLS_KEYFILE = certs .. "/client.key" })
    local no_cert = start(b, e2e.copy_app(APP), { MQTT_TLS_CA_CERTS = certs .. "/ca.crt" })
    -- The server certificate is for 127.0.0.1, not for localhost.
    local wrong_name = start(b, e2e.copy_app(APP), { MQTT_BROKER = "localhost", MQTT_TLS_CA_CERTS = certs .. "/ca.crt",
      MQTT_TLS_CERTFILE = certs .. "/client.crt", MQTT_TLS_KEYFILE = certs .. "/client.key" })
    -- 10 lines per 10 s are logged; the first failure after the window says
    -- how many were not, and is logged itself: the proof that retries went on.
    local summary = "failed connection attempts were not logged %(rate limit: 10 per 10 s%)"
    for _, r in ipairs({ wrong_ca, no_cert }) do
      assert(e2e.wait_for(function() return e2e.read(r.log):match(summary) and #failures(r, b.port) >= 11 end, 20),
        e2e.read(r.log))
    end
    for name, case in pairs({
      ["wrong CA"] = { r = wrong_ca,
        reason = "^error:0A000086:SSL routines::certificate verify failed %(self%-signed certificate in certificate "
          .. "chain%)$" },
      ["no client certificate"] = { r = no_cert,
        reason = "^error:0A00045C:SSL routines::tlsv13 alert certificate required$",
        closed = "^the broker closed the connection before answering CONNECT %([%a ]+%); a broker that requires "
          .. "a client certificate does this when it has none %(MQTT_TLS_CERTFILE, MQTT_TLS_KEYFILE%), its log "
          .. "says why$" },
    }) do
      local list = failures(case.r, b.port)
      local with_reason = 0
      for i, f in ipairs(list) do
        if f.reason:match(case.reason) then with_reason = with_reason + 1
        else assert.matches(case.closed or case.reason, f.reason, 1, name .. ": " .. f.line) end
        if i > 1 then assert.is_true(f.attempt > list[i - 1].attempt, name .. ": " .. f.line) end
      end
      assert.is_true(with_reason > 0, name .. ": no line with OpenSSL's reason")
      -- 10 in the first window, then attempts numbered past what was logged.
      assert.equal(10, list[10].attempt, name)
      assert.is_true(list[11].attempt > 11, name .. ": " .. list[11].line)
      local log = e2e.read(case.r.log)
      local skipped = tonumber(log:match("(%d+) " .. summary))
      assert.equal(list[11].attempt - 11, skipped, name)
      assert.is_nil(log:find("connected to", 1, true), name)
      assert.equal(1, #case.r.workers(), name)  -- the worker waits and retries: no crash loop
    end
    assert.matches("error %[worker 0%] TLS handshake with localhost:" .. b.port .. " failed: host name verification "
      .. "failed: error:0A000086:SSL routines::certificate verify failed; attempt 1, retrying in [%d.]+ s\n",
      e2e.read(wrong_name.log))
  end)

  it("connects after the CA file is fixed and the application reloaded", function()
    local certs = make_certs()
    local b = tls_broker(certs)
    local app = e2e.copy_app(APP)
    e2e.sh(string.format("cp %s/otherca.crt %s/ca.pem", certs, app))
    local r = start(b, app, { MQTT_TLS_CA_CERTS = app .. "/ca.pem", MQTT_TLS_CERTFILE = certs .. "/client.crt",
      MQTT_TLS_KEYFILE = certs .. "/client.key" })
    assert(e2e.wait_for(function() return #failures(r, b.port) >= 2 end, 10), e2e.read(r.log))
    e2e.sh(string.format("cp %s/ca.crt %s/ca.pem", certs, app))
    local out = e2e.sh(string.format("cd %s && ROUTEMQ_RUN_DIR=%s/run %s reload --app %s 2>&1; echo rc=$?",
      e2e.root, r.dir, e2e.bin, app))
    assert.matches("rc=0%s*$", out)
    assert(e2e.wait_for(function() return r.ready(1) end, 10), e2e.read(r.log))
    assert.matches("connected to 127%.0%.0%.1:" .. b.port, e2e.read(r.log))
  end)

  it("stops the start naming a TLS file that is missing or does not parse (exit 1)", function()
    local certs = make_certs()
    local app = e2e.copy_app(APP)
    e2e.write(app .. "/junk.pem", "not a certificate\n")
    local cases = {
      { { MQTT_TLS_CA_CERTS = app .. "/missing.pem" },
        "routemq: MQTT_TLS_CA_CERTS: " .. app .. "/missing.pem: No such file or directory" },
      { { MQTT_TLS_CA_CERTS = app .. "/junk.pem" },
        "routemq: MQTT_TLS_CA_CERTS: " .. app .. "/junk.pem: no PEM certificate in it "
          .. "(error:0480006C:PEM routines::no start line)" },
      { { MQTT_TLS_CA_CERTS = certs .. "/ca.crt", MQTT_TLS_CERTFILE = certs .. "/client.key",
          MQTT_TLS_KEYFILE = certs .. "/client.key" },
        "routemq: MQTT_TLS_CERTFILE: " .. certs .. "/client.key: no PEM certificate in it "
          .. "(error:0480006C:PEM routines::no start line)" },
      { { MQTT_TLS_CA_CERTS = certs .. "/ca.crt", MQTT_TLS_CERTFILE = certs .. "/client.crt",
          MQTT_TLS_KEYFILE = certs .. "/client.crt" },
        "routemq: MQTT_TLS_KEYFILE: " .. certs .. "/client.crt: no PEM private key in it "
          .. "(error:1E08010C:DECODER routines::unsupported)" },
      { { MQTT_TLS_CA_CERTS = certs .. "/ca.crt", MQTT_TLS_CERTFILE = certs .. "/client.crt",
          MQTT_TLS_KEYFILE = certs .. "/server.key" },
        "routemq: MQTT_TLS_KEYFILE: " .. certs .. "/server.key: the key does not belong to the certificate of "
          .. "MQTT_TLS_CERTFILE (" .. certs .. "/client.crt)" },
      { { MQTT_TLS_CA_CERTS = certs },
        "routemq: MQTT_TLS_CA_CERTS: " .. certs .. ": not a regular file" },
    }
    for _, c in ipairs(cases) do
      local env = "MQTT_TLS_ENABLED=true MQTT_BROKER=127.0.0.1 ROUTEMQ_RUN_DIR=" .. app .. "/run"
      for k, v in pairs(c[1]) do env = env .. " " .. k .. "=" .. v end
      for _, cmd in ipairs({ "run", "check" }) do
        local out = e2e.sh(string.format("cd %s && env -u MQTT_TLS_CERTFILE -u MQTT_TLS_KEYFILE %s timeout 10 %s %s "
          .. "--app %s 2>&1; echo rc=$?", e2e.root, env, e2e.bin, cmd, app))
        assert.equal(c[2] .. "\nrc=1\n", out)
      end
    end
  end)
end)
