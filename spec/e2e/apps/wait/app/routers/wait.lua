-- Handlers that wait, for spec/e2e/wait_spec.lua. Each handled message leaves
-- one line "route<TAB>payload<TAB>pid<TAB>redelivered" in $E2E_OUT/<pid>.rec.
local router = require("routemq.router")
local cqueues = require("cqueues")
local ffi = require("ffi")
ffi.cdef("int getpid(void);")

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local file
local function record(tag, payload, redelivered)
  if not file then
    file = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
    file:setvbuf("no")
  end
  file:write(tag, "\t", payload, "\t", ffi.C.getpid(), "\t", tostring(redelivered), "\n")
end

local wait_s = tonumber(os.getenv("WAIT_MS") or "10") / 1000

-- While the file $HOLD_FILE exists, a message's first run waits for it to go,
-- after adding its payload to $E2E_OUT/<pid>.held: the test then knows that
-- message is in progress in that worker until it removes the file.
local hold_file = os.getenv("HOLD_FILE")
local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
local function hold(ctx)
  if not hold_file or ctx.redelivered or not exists(hold_file) then return end
  local f = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".held", "a"))
  f:write(ctx.payload, "\n")
  f:close()
  repeat cqueues.sleep(0.05) until not exists(hold_file)
end

router.on("wait/sleep", function(ctx)
  hold(ctx)
  cqueues.sleep(wait_s)
  record("sleep", ctx.payload, ctx.redelivered)
end, { qos = 1, shared = true, worker_count = tonumber(os.getenv("SLEEP_WORKERS") or "1") })

-- The first message of each topic takes longest: without ordering, later
-- ones of its topic are certain to finish before it.
local function jitter(ctx)
  cqueues.sleep(ctx.payload == "1" and 1 or math.random() * 0.005)
  record(ctx.topic, ctx.payload, ctx.redelivered)
end
router.on("wait/ordered/{t}", jitter, { qos = 1, ordered = true })
router.on("wait/unordered/{t}", jitter, { qos = 1 })

router.on("wait/stuck", function(ctx)
  record("stuck-start", ctx.payload, ctx.redelivered)
  cqueues.sleep(60)
end, { qos = 1, timeout = 1 })

router.on("wait/spin", function(ctx)
  record("spin", ctx.payload, ctx.redelivered)
  if not ctx.redelivered then
    while true do end -- luacheck: ignore 512
  end
end, { qos = 1, timeout = 1 })

router.on("wait/quick", function(ctx)
  record("quick", ctx.payload, ctx.redelivered)
end, { qos = 1 })

router.every(0.2, function(job)
  record("tick", tostring(job.worker), false)
end, { name = "ticker", workers = os.getenv("TICK_WORKERS") or "one" })

if os.getenv("INIT_PORT") then
  router.init(function(worker)
    local sock = require("cqueues.socket").connect({ host = "127.0.0.1",
      port = tonumber(os.getenv("INIT_PORT")) })
    assert(sock:connect(2))
    sock:write("hello from " .. worker .. "\n")
    sock:flush()
    sock:close()
    record("init", tostring(worker), false)
  end)
end

local flag = os.getenv("HEALTH_FLAG")
if flag then
  router.health(function()
    local f = io.open(flag)
    if f then
      f:close()
      return false
    end
    record("health", "ok", false)  -- the test counts the checks that passed
    return true
  end, { every = 0.2, timeout = 1, failures = 3 })
end

-- POSTs the payload to $API_URL (a local lua-http server) with lua-http.
router.on("wait/http", function(ctx)
  local request = require("http.request")
  local req = request.new_from_uri(os.getenv("API_URL") .. "/readings")
  req.headers:upsert(":method", "POST")
  req:set_body(ctx.payload)
  local headers, stream = assert(req:go(10))
  assert(stream:get_body_as_string(10))
  assert(headers:get(":status") == "200", headers:get(":status"))
  record("http", ctx.payload, ctx.redelivered)
end, { qos = 1 })

-- INCRs a Redis key through lua-resty-redis on routemq.ngx, pooled.
router.on("wait/incr", function(ctx)
  require("routemq.ngx")
  local redis = require("nginx.redis")
  local red = redis:new()
  red:set_timeout(5000)
  assert(red:connect("127.0.0.1", tonumber(os.getenv("REDIS_PORT"))))
  assert(red:incr("counter"))
  assert(red:set_keepalive(10000, 64))
  record("incr", ctx.payload, ctx.redelivered)
end, { qos = 1 })
