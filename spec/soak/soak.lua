--- The randomized soak (`make soak`, spec/soak/README.md): the soak
-- application under a steady QoS 1 load while a schedule drawn from
-- SOAK_SEED reloads, deploys, kills, scales and restarts the broker; then the
-- invariants. Exits 0 when every invariant holds, 1 naming those that do not.
local e2e = require("spec.helpers.e2e")
local ops_mod = require("spec.soak.ops")
local check = require("spec.soak.check")

local function list_env(name, all)
  local v = os.getenv(name)
  if not v or v == "" or v == "all" then return all end
  if v == "none" then return {} end
  local known, out = {}, {}
  for _, k in ipairs(all) do known[k] = true end
  for k in v:gmatch("[^,%s]+") do
    if not known[k] then
      io.stderr:write(string.format("soak: %s: unknown name %q (known: %s)\n", name, k, table.concat(all, ",")))
      os.exit(1)
    end
    out[#out + 1] = k
  end
  return out
end

local function num_env(name, default)
  local v = os.getenv(name)
  if not v or v == "" then return default end
  local n = tonumber(v)
  if not n or n < 0 then
    io.stderr:write(string.format("soak: %s must be a number >= 0, not %q\n", name, v))
    os.exit(1)
  end
  return n
end

local cfg = {
  seconds = num_env("SOAK_SECONDS", 600),
  seed = num_env("SOAK_SEED", tonumber(e2e.sh("od -An -N3 -tu4 /dev/urandom"):match("%d+")) % 1000000),
  ops = list_env("SOAK_OPS", ops_mod.names),
  kinds = list_env("SOAK_ROUTES", { "plain", "shared", "ordered", "fan", "wait", "state" }),
  rate = num_env("SOAK_RATE", 200),
  fan = num_env("SOAK_FAN", 10),
  workers = num_env("SOAK_WORKERS", 3),
  max_rss_mb = num_env("SOAK_MAX_RSS_MB", 64),
  settle = num_env("SOAK_SETTLE_SECONDS", 60),
  keep = os.getenv("SOAK_KEEP") == "1",
}
cfg.seed = math.floor(cfg.seed)
local kinds_on = {}
for _, k in ipairs(cfg.kinds) do kinds_on[k] = true end
cfg.kinds_on = kinds_on

print(string.format("soak: seed %d, %d s, ops %s, routes %s, %d msg/s", cfg.seed, cfg.seconds,
  #cfg.ops > 0 and table.concat(cfg.ops, ",") or "none", table.concat(cfg.kinds, ","), cfg.rate))
print(string.format("soak: replay with  make soak SOAK_SEED=%d SOAK_SECONDS=%d SOAK_OPS=%s SOAK_ROUTES=%s", cfg.seed,
  cfg.seconds, #cfg.ops > 0 and table.concat(cfg.ops, ",") or "none", table.concat(cfg.kinds, ",")))

-- The schedule: a pure function of the seed and the enabled operations.
local schedule = ops_mod.schedule(cfg.seed, cfg.seconds, cfg.ops, kinds_on)
io.stdout:setvbuf("line")

local work = e2e.tmpdir()
e2e.sh("chmod 0755 " .. work)
local s = {  -- everything the run started and measured
  cfg = cfg, work = work, app = work .. "/app", out = work .. "/out", ctl = work .. "/ctl", run = work .. "/run",
  pids = {}, masters = {}, violations = {}, applied = {}, peak_rss_kb = 0, totals = {},
}
e2e.sh(string.format("mkdir -p %s %s %s", s.app, s.out, s.ctl))
e2e.copy_app("spec/soak/app", s.app)
local id = work:match("([^.]+)$")

s.broker = e2e.broker({ persistence = true })
ops_mod.track(s, s.broker.pid)

-- The fan-out subscriber: a persistent QoS 1 session of its own.
s.sub_file = work .. "/fanout.txt"
s.sub_pid = e2e.spawn(string.format("stdbuf -oL mosquitto_sub -p %d -t 'soak/out/#' -q 1 -i soaksub%s -c",
  s.broker.port, id), s.sub_file)
ops_mod.track(s, s.sub_pid)
assert(e2e.wait_for(function()
  e2e.publish(s.broker.port, "soak/out/probe", "probe", "-q 1")
  return e2e.read(s.sub_file):find("probe") ~= nil
end, 10), "soak: the fan-out subscriber did not subscribe")

s.env = { ROUTEMQ_RUN_DIR = s.run, MQTT_CLIENT_ID = "soak" .. id, MQTT_GROUP_NAME = "gsoak" .. id, E2E_OUT = s.out,
  WORKER_CONCURRENCY = 4, SOAK_SHARED_WORKERS = cfg.workers, SOAK_FAN = cfg.fan, WORKER_STOP_TIMEOUT = 10 }
s.workers, s.base_workers = cfg.workers, cfg.workers
ops_mod.start(s, "run")

s.loader = e2e.spawn(string.format("luajit spec/soak/load.lua %s %d %d %s", s.ctl, s.broker.port, cfg.rate,
  #cfg.kinds > 0 and table.concat(cfg.kinds, ",") or "none"), work .. "/load.log",
  { LUA_PATH = e2e.root .. "/?.lua;;" })
ops_mod.track(s, s.loader)

local t0 = e2e.now()
s.t0 = t0
local last = 0
for _, op in ipairs(schedule) do
  if last + op.gap > cfg.seconds - 1 then break end
  while e2e.now() - t0 < last + op.gap do ops_mod.idle(s) end
  local t = e2e.now() - t0
  local ok, detail = ops_mod.apply(s, op)
  s.applied[op.name] = (s.applied[op.name] or 0) + 1
  print(string.format("  [%6.1f s] %-14s %s%s", t, op.name, detail or "", ok and "" or "  (FAILED)"))
  last = e2e.now() - t0
end
while e2e.now() - t0 < cfg.seconds do ops_mod.idle(s) end

-- The end: stop the load, let everything settle, stop everything.
ops_mod.slow_off(s)
e2e.write(s.ctl .. "/stop", "")
e2e.wait_for(function() return not e2e.alive(s.loader) end, 30)
print(string.format("soak: load stopped after %.0f s; settling", e2e.now() - t0))
local settled = check.settle(s)
print(string.format("soak: %s after %.0f s", settled and "settled" or "NOT settled", e2e.now() - t0))
ops_mod.finish(s)

local report = check.report(s)
print(report.text)
if #report.failed == 0 and not cfg.keep then
  local dirs = { e2e.quote(work), e2e.quote(s.broker.dir) }
  for _, r in ipairs(s.masters) do dirs[#dirs + 1] = e2e.quote(r.dir) end
  e2e.sh("rm -rf " .. table.concat(dirs, " "))
else
  print("soak: records kept in " .. work .. ", broker in " .. s.broker.dir)
  for _, r in ipairs(s.masters) do print("soak: log of master " .. r.pid .. ": " .. r.log) end
end
os.exit(#report.failed == 0 and 0 or 1)
