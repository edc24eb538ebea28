-- End to end: a generation is a snapshot. The master reads the application's
-- Lua files when it loads or reloads it; a worker restarted after a crash
-- runs exactly its generation's code, whatever is on disk; `status` says when
-- the files on disk differ; a worker that cannot load its application is
-- restarted as app_error.
local e2e = require("spec.helpers.e2e")
local cjson = require("cjson")

local ROUTER = [[
local router = require("routemq.router")
local C = require("app.controllers.tag")
-- Fails to load while the file 'fail' exists beside app/ (only a worker can see it appear).
if io.open((os.getenv("E2E_APP") or ".") .. "/fail") then error("told to fail") end
router.on("snap/{n}", C.handle, { shared = true, worker_count = 2, qos = 1 })
]]

local function controller(tag)
  return string.format([[
local ffi = require("ffi")
ffi.cdef("int getpid(void);")
local M = {}
function M.handle(ctx)
  local f = assert(io.open(os.getenv("E2E_OUT") .. "/" .. ffi.C.getpid() .. ".rec", "a"))
  f:write(%q, "\t", ctx.payload, "\t", ffi.C.getpid(), "\tfalse\n")
  f:close()
end
return M
]], tag)
end

local function new_app()
  local app = e2e.tmpdir()
  e2e.sh("mkdir -p " .. app .. "/app/routers " .. app .. "/app/controllers")
  e2e.write(app .. "/app/routers/snap.lua", ROUTER)
  e2e.write(app .. "/app/controllers/tag.lua", controller("v1"))
  return app
end

local function ctl(r, app, args)
  local out = os.tmpname()
  local code = tonumber(e2e.sh(string.format("env ROUTEMQ_RUN_DIR=%s %s %s --app %s > %s 2>&1; echo $?",
    r.dir .. "/run", e2e.bin, args, app, out)):match("(%d+)%s*$"))
  local text = e2e.read(out)
  os.remove(out)
  return code, text
end

--- Publishes payloads from..to and returns the tags their handlers recorded (by payload).
local function run_batch(b, r, from, to)
  e2e.publish_lines(b.port, "snap/1", e2e.seq(from, to), 1)
  local tags = {}
  assert(e2e.wait_for(function()
    tags = {}
    for _, rec in ipairs((e2e.records(r.dir))) do
      local n = tonumber(rec.payload)
      if n >= from and n <= to then tags[n] = rec.route end
    end
    local c = 0
    for _ in pairs(tags) do c = c + 1 end
    return c == to - from + 1
  end, 15), "not every message was handled: " .. e2e.read(r.log))
  local seen = {}
  for _, tag in pairs(tags) do seen[tag] = (seen[tag] or 0) + 1 end
  return seen
end

describe("a generation is a snapshot", function()
  local broker
  setup(function() broker = e2e.broker() end)
  teardown(function() broker.stop() end)

  it("runs its generation's code in a replacement worker until reload, and status says the disk differs", function()
    local app = new_app()
    local r = e2e.routemq(broker, app, "run", { E2E_APP = app })
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15), e2e.read(r.log))
    assert.same({ v1 = 10 }, run_batch(broker, r, 1, 10))
    -- ps shows exactly the title: no padding, no stray '.' after it.
    for slot, w in pairs(r.slots()) do
      assert.equal(string.format("routemq: worker %d gen %d\0", slot, w.gen), e2e.read("/proc/" .. w.pid .. "/cmdline"))
    end
    assert.equal("routemq: master " .. app .. "\0", e2e.read("/proc/" .. r.pid .. "/cmdline"))

    local _, before = ctl(r, app, "status")
    assert.is_nil(before:find("changed on disk", 1, true))

    -- A new version on disk, a new module and a router that would fail: none of it is loaded.
    e2e.write(app .. "/app/controllers/tag.lua", controller("v2"))
    e2e.write(app .. "/app/controllers/extra.lua", "return {}\n")
    local _, changed = ctl(r, app, "status")
    assert.truthy(changed:find("app/ changed on disk since generation 1; run routemq reload", 1, true), changed)
    local _, js = ctl(r, app, "status --json")
    assert.is_true(cjson.decode(js:match("{.*}")).app_changed_on_disk)

    for _, pid in ipairs(r.workers()) do e2e.kill(pid, "KILL") end
    assert.truthy(e2e.wait_for(function() return r.ready(4) end, 15), e2e.read(r.log))
    assert.same({ v1 = 20 }, run_batch(broker, r, 11, 30))

    local code, out = ctl(r, app, "reload")
    assert.equal(0, code, out)
    assert.truthy(e2e.wait_for(function() return r.ready(6) end, 20), e2e.read(r.log))
    assert.same({ v2 = 20 }, run_batch(broker, r, 31, 50))
    local _, after = ctl(r, app, "status")
    assert.is_nil(after:find("changed on disk", 1, true), after)
  end)

  it("restarts a worker that cannot load its application as app_error", function()
    local app = new_app()
    local r = e2e.routemq(broker, app, "run", { E2E_APP = app })
    assert.truthy(e2e.wait_for(function() return r.ready(2) end, 15), e2e.read(r.log))

    e2e.write(app .. "/fail", "")
    local victim = r.slots()[1].pid
    e2e.kill(victim, "KILL")
    local status
    assert.truthy(e2e.wait_for(function()
      local _, js = ctl(r, app, "status --json")
      status = cjson.decode(js:match("{.*}") or "{}")
      return status.restarts_by_reason and status.restarts_by_reason.app_error >= 2
    end, 15), e2e.read(r.log))
    assert.truthy(e2e.read(r.log):find("told to fail", 1, true))
    local _, text = ctl(r, app, "status")
    assert.truthy(text:find("app_error %d+"), text)
    os.remove(app .. "/fail")
    assert.truthy(e2e.wait_for(function() return r.slots()[1] and r.ready(3) end, 15), e2e.read(r.log))
    assert.same({ v1 = 10 }, run_batch(broker, r, 1, 10))
  end)
end)
