--- Simulated hosts for end-to-end tests: a bridge in the root namespace with
-- an address range of our own (10.231.K.0/24), one network namespace per
-- host on a veth pair, routemq started in it under its own hostname (UTS
-- namespace), a mosquitto on the bridge address, and a silent black hole per
-- host. Everything made here is named `rmq-<tag>-...` (scripts/test.sh fails
-- on leftovers) and removed when the test ends, pass or fail.
local e2e = require("spec.helpers.e2e")

local M = {}

local function run(cmd)
  local out = e2e.sh(cmd .. " 2>&1; echo \"rc=$?\"")
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc == 0, out
end

local function must(cmd)
  local ok, out = run(cmd)
  assert(ok, cmd .. ": " .. out)
end

--- True when this process may create namespaces (root with ip and tc).
function M.available()
  return run("ip netns list >/dev/null && tc -V >/dev/null && test \"$(id -u)\" = 0")
end

local function used_subnets()
  local used = {}
  for k in e2e.sh("ip -4 -o addr show 2>/dev/null"):gmatch("10%.231%.(%d+)%.") do used[tonumber(k)] = true end
  return used
end

--- A fresh network: bridge rmq-<tag>-br with address 10.231.K.1. Its removal
-- is deferred to the end of the test (after whatever is deferred later).
function M.new()
  local seed = tonumber(e2e.sh("od -An -N2 -tu2 /dev/urandom"):match("%d+"))
  local tag = string.format("%04x", seed)
  local used = used_subnets()
  local k = 1 + seed % 250
  while used[k] do k = k % 250 + 1 end
  local net = { prefix = "rmq-" .. tag, subnet = "10.231." .. k, hosts = {} }
  net.ip = net.subnet .. ".1"
  net.bridge = net.prefix .. "-br"
  net.hole = net.prefix .. "-bh"
  e2e.defer(function() net.remove() end)
  must("ip link add " .. net.bridge .. " type bridge")
  must("ip addr add " .. net.ip .. "/24 dev " .. net.bridge)
  -- A bridge takes the lowest MAC address of its ports unless one was set:
  -- a host added later would change it under the others' neighbour entries
  -- (below) and silently cut them off.
  local mac = e2e.sh("cat /sys/class/net/" .. net.bridge .. "/address"):gsub("%s+", "")
  must("ip link set dev " .. net.bridge .. " address " .. mac)
  must("ip link set " .. net.bridge .. " up")
  -- The black hole: frames redirected to a veth that is down vanish without a trace.
  must("ip link add " .. net.hole .. " type veth peer name " .. net.hole .. "p")

  --- Adds host `name` (namespace rmq-<tag>-h<name>, address 10.231.K.(10+n)).
  function net.host(name)
    local n = 0
    for _ in pairs(net.hosts) do n = n + 1 end
    local h = { name = name, ns = net.prefix .. "-h" .. name, link = net.prefix .. "-" .. name,
      ip = net.subnet .. "." .. (10 + n), hostname = "host" .. name }
    net.hosts[name] = h
    must("ip netns add " .. h.ns)
    must("ip link add " .. h.link .. " type veth peer name eth0 netns " .. h.ns)
    must("ip link set " .. h.link .. " master " .. net.bridge .. " up")
    must("ip -n " .. h.ns .. " addr add " .. h.ip .. "/24 dev eth0")
    must("ip -n " .. h.ns .. " link set eth0 up")
    must("ip -n " .. h.ns .. " link set lo up")
    -- A permanent neighbour entry for the broker: a black hole then drops
    -- the TCP segments silently (as a dead host behind a router does)
    -- instead of failing ARP, which the kernel reports as "No route to host".
    must("ip -n " .. h.ns .. " neigh replace " .. net.ip .. " lladdr " .. mac .. " dev eth0 nud permanent")
    return h
  end

  --- Drops every frame to and from host `name` silently (on = true), or lets them pass again.
  function net.blackhole(name, on)
    local link = net.hosts[name].link
    run("tc qdisc del dev " .. link .. " clsact")
    if not on then return end
    must("tc qdisc add dev " .. link .. " clsact")
    for _, dir in ipairs({ "ingress", "egress" }) do
      must("tc filter add dev " .. link .. " " .. dir
        .. " protocol all u32 match u32 0 0 action mirred egress redirect dev " .. net.hole)
    end
  end

  --- A mosquitto listening on the bridge address (opts as e2e.broker: persistence).
  function net.broker(opts)
    opts = opts or {}
    local dir = e2e.tmpdir()
    e2e.sh("chmod 0777 " .. dir)
    local port = e2e.free_port()
    local conf = dir .. "/mosquitto.conf"
    e2e.write(conf, "listener " .. port .. " " .. net.ip .. "\nallow_anonymous true\nmax_queued_messages 0\n"
      .. "log_type error\nlog_type warning\n"
      .. (opts.persistence and ("persistence true\npersistence_location " .. dir .. "/\nautosave_interval 1\n")
        or "persistence false\n"))
    local b = { port = port, host = net.ip, dir = dir }
    function b.start()
      b.pid = e2e.spawn("/usr/sbin/mosquitto -c " .. conf, dir .. "/broker.log")
      assert(e2e.wait_for(function()
        return e2e.sh("mosquitto_pub -h " .. net.ip .. " -p " .. port .. " -t routemq/probe -n 2>&1; echo $?")
          :match("^0%s*$")
      end, 10), "mosquitto did not start: " .. e2e.read(dir .. "/broker.log"))
    end
    function b.stop()
      if b.pid and e2e.alive(b.pid) then
        e2e.kill(b.pid, "TERM")
        e2e.wait_for(function() return not e2e.alive(b.pid) end, 5)
        if e2e.alive(b.pid) then e2e.kill(b.pid, "KILL") end
      end
    end
    b.start()
    e2e.defer(b.stop)
    return b
  end

  --- Publishes payloads from..to on topic at QoS 1 from the root namespace,
  -- `rate` per second, in the background; returns the pid.
  function net.publish_background(b, topic, from, to, rate, logfile)
    local feeder = string.format("import sys, time\nfor i in range(%d, %d):\n"
      .. "    print(i, flush=True)\n    time.sleep(%g)\n", from, to + 1, 1 / rate)
    local script = logfile .. ".py"
    e2e.write(script, feeder)
    local cmd = string.format("sh -c 'python3 %s | mosquitto_pub -h %s -p %d -t %s -q 1 -l'", script, b.host, b.port,
      topic)
    local pid = e2e.spawn(cmd, logfile)
    e2e.defer(function()
      if not e2e.alive(pid) then return end
      e2e.sh("pkill -KILL -P " .. pid)
      e2e.kill(pid, "KILL")
    end)
    return pid
  end

  --- Runs routemq `args` in host h (its own hostname) against broker b; a
  -- handle like e2e.routemq's. env.MQTT_CLIENT_ID = false leaves the default.
  function net.routemq(h, b, app_dir, args, env, dir)
    dir = dir or e2e.tmpdir()
    local e = { MQTT_BROKER = b.host, MQTT_PORT = b.port, ROUTEMQ_RUN_DIR = dir .. "/run",
      E2E_OUT = dir, WORKER_STOP_TIMEOUT = 5, MQTT_RETRY_MIN_DELAY = 0.1, MQTT_RETRY_MAX_DELAY = 1,
      -- E2E_CLUSTER_KEY runs the scale-out specs with signed presence records (scripts/test.sh).
      ROUTEMQ_CLUSTER_KEY = os.getenv("E2E_CLUSTER_KEY") }
    for name, v in pairs(env or {}) do e[name] = v end
    for name, v in pairs(e) do if v == false then e[name] = nil end end
    local r = { dir = dir, log = dir .. "/routemq.log", host = h }
    local inner = "hostname " .. h.hostname .. "; exec " .. e2e.bin .. " " .. (args or "run") .. " --app " .. app_dir
    r.pid, r.rcfile = e2e.spawn("ip netns exec " .. h.ns .. " unshare --uts sh -c " .. e2e.quote(inner), r.log, e)
    function r.children()
      local pids = {}
      for pid in e2e.sh("pgrep -P " .. r.pid .. " 2>/dev/null"):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
      return pids
    end
    function r.ready(n)
      local _, c = e2e.read(r.log):gsub("connected to [^\n]* subscription", "")
      return c >= n
    end
    function r.stop()
      if e2e.alive(r.pid) then
        e2e.kill(r.pid, "TERM")
        e2e.wait_for(function() return not e2e.alive(r.pid) end, 15)
      end
      r.kill()
      return tonumber(e2e.read(r.rcfile):match("%d+"))
    end
    --- kill -9 of the master and its workers together (a host that dies).
    function r.kill()
      local kids = r.children()
      if e2e.alive(r.pid) then e2e.kill(r.pid, "KILL") end
      for _, pid in ipairs(kids) do if e2e.alive(pid) then e2e.kill(pid, "KILL") end end
      e2e.wait_for(function() return e2e.read(r.rcfile) ~= "" end, 5)
    end
    e2e.defer(r.stop)
    return r
  end

  local function leftovers()
    local left = {}
    local names = e2e.sh("ip netns list 2>/dev/null | awk '{print $1}'; "
      .. "ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1")
    for name in names:gmatch("%S+") do
      if name:sub(1, #net.prefix + 1) == net.prefix .. "-" then left[#left + 1] = name end
    end
    return left
  end

  --- Removes the hosts, the black hole and the bridge (idempotent). A
  -- process still inside a host's namespace (a worker whose master was
  -- killed, say) would keep the namespace and its veth alive after
  -- `ip netns del`, so it is killed first; and a deletion that did not
  -- take is tried again until nothing named rmq-<tag>- is left.
  function net.remove()
    local function once()
      for _, h in pairs(net.hosts) do
        run("ip netns pids " .. h.ns .. " 2>/dev/null | xargs -r kill -KILL")
        run("ip link del " .. h.link)
        run("ip netns del " .. h.ns)
      end
      run("ip link del " .. net.hole)
      run("ip link del " .. net.bridge)
    end
    once()
    if not e2e.wait_for(function()
      if #leftovers() == 0 then return true end
      once()
      return false
    end, 10) then
      io.stderr:write("netns: could not remove ", table.concat(leftovers(), " "), "\n")
    end
  end

  return net
end

--- The group's status as instance r (a routemq handle) sees it:
-- `routemq status --cluster` for the application in app_dir.
function M.cluster(r, app_dir)
  return e2e.sh("ROUTEMQ_RUN_DIR=" .. r.dir .. "/run " .. e2e.bin .. " status --cluster --app " .. app_dir .. " 2>&1")
end

--- Waits (up to 20 s) until the group's status as instance r sees it lists
-- every host of hosts in state (default "running"): their presence records
-- are in. True when it does.
function M.sees(r, hosts, app_dir, state)
  return e2e.wait_for(function()
    local cluster = M.cluster(r, app_dir)
    for _, h in ipairs(hosts) do
      if not cluster:find(h .. "%s+" .. h .. "%s+%d+%s+" .. (state or "running")) then return false end
    end
    return true
  end, 20)
end

return M
