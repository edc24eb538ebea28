-- Writes the benchmark results: JSON (raw numbers), a Markdown table, and a
-- gnuplot PNG of the throughput; for a full run also into docs/.
local cjson = require("cjson")

local M = {}

local function commas(n)
  local s = string.format("%d", math.floor(n + 0.5))
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^(-?),", "%1"))
end

function M.fmt(v, unit)
  if type(v) ~= "number" or v ~= v then
    return "–"
  end
  if unit == "msg/s" or unit == "msgs" or unit == "µs" then
    return commas(v)
  elseif unit == "matches/s" then
    return string.format("%.1f M", v / 1e6)
  elseif unit == "µs/msg" or unit == "MB" or unit == "per msg" then
    return string.format("%.2f", v)
  elseif unit == "ms" then
    return string.format("%.1f", v)
  end
  return string.format("%g", v)
end

function M.list(values, unit)
  local t = {}
  for i = 1, #values do
    t[#t + 1] = M.fmt(values[i], unit)
  end
  return #t > 0 and table.concat(t, ", ") or "–"
end

local SECTIONS = {
  { id = "throughput", title = "1. Throughput through mosquitto (rate = handled / (last handled − first published))" },
  { id = "scaling", title = "1b. More consumers on one shared subscription, through mosquitto (CPU: utime+stime "
    .. "of each process; the broker's from /proc/<pid>/stat)" },
  { id = "replay", title = "2. Subscriber cost without the broker (replay server, subscriber alone on a core)" },
  { id = "memory", title = "3. Memory (idle, after connecting; from /proc/<pid>/smaps_rollup)" },
  { id = "wait", title = "3b. A handler that waits 10 ms, QoS 1, through mosquitto (rate = handled / "
    .. "(last handled − first published))" },
  { id = "db", title = "3d. A handler inserting one row per message into PostgreSQL, QoS 1, through mosquitto "
    .. "(rate = handled / (last handled − first published))" },
  { id = "rr", title = "3c. Request/reply latency, one request at a time (bench/bench_rr.c: request → "
    .. "reply → response; broker with set_tcp_nodelay true unless said otherwise)" },
  { id = "restart", title = "4a. Restart after kill -9 (4 workers, kills rotated over the slots every 0.3 s)" },
  { id = "reload", title = "4b. Reload (SIGHUP) of 4 workers under QoS 1 load" },
  { id = "matcher", title = "5. Topic matcher (build/bench_matcher)" },
}

local function markdown(result)
  local m = result.machine
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format("Command: `%s` — %s; %d run(s) per scenario, %s messages per throughput/replay run, "
    .. "%d topics; total %d s.", result.command, result.quick and "quick smoke run" or "full run", result.runs,
    commas(result.messages), result.topics, result.seconds))
  add("")
  add("| Machine | |")
  add("|---|---|")
  add("| CPUs (`nproc`) | " .. m.nproc .. " |")
  add("| CPU (`lscpu`) | " .. m.cpu .. " |")
  add("| Memory | " .. m.memory .. " |")
  add("| Kernel | " .. m.kernel .. " |")
  add("| OS | " .. m.os .. " |")
  add("| Broker | " .. m.mosquitto .. " |")
  add("| libmosquitto | " .. m.libmosquitto .. " |")
  add("| LuaJIT | " .. m.luajit .. " |")
  if m.node then
    add("| Node.js peer | node " .. m.node .. ", mqtt.js " .. (m.mqttjs or "?") .. " |")
  end
  if m.python then
    add("| Python peer | Python " .. m.python .. " (/usr/bin/python3), paho-mqtt " .. (m.paho or "?") .. " |")
  end
  for _, why in ipairs(result.peers_skipped or {}) do
    add("| Peer skipped | " .. why .. " |")
  end
  add("| Date, commit | " .. m.date .. ", " .. (m.commit ~= "" and m.commit or "?") .. " (with the working tree) |")
  for _, sec in ipairs(SECTIONS) do
    local any = false
    for _, r in ipairs(result.rows) do
      if r.section == sec.id then
        any = true
        break
      end
    end
    if any then
      add("")
      add("#### " .. sec.title)
      add("")
      add("| Scenario | Unit | n | Min | Median | Max | Target | Met | Notes |")
      add("|---|---|--:|--:|--:|--:|---|---|---|")
      for _, r in ipairs(result.rows) do
        if r.section == sec.id then
          local s = r.summary
          local target, met = "", ""
          if r.target then
            target = r.target.text
            if r.target.ratio then
              target = target .. string.format("; ratio %.2f", r.target.ratio)
            end
            met = r.target.ok and "yes" or "**no**"
          end
          add(string.format("| %s | %s | %d | %s | %s | %s | %s | %s | %s |", r.label, r.unit, s.n or 0,
            M.fmt(s.min, r.unit), M.fmt(s.median, r.unit), M.fmt(s.max, r.unit), target, met, r.note or ""))
        end
      end
    end
  end
  if #result.errors > 0 then
    add("")
    add("Errors during the run:")
    add("")
    for _, e in ipairs(result.errors) do
      add("- " .. (e:gsub("\n.*", "")))
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- The plot: one panel per question, bars = median, error bars = min–max.
-- Each bar group names the rows it shows by id (a missing row: no bar).
local PANELS = {
  { name = "throughput", title = "Throughput through mosquitto (thousand msg/s, higher is better)", scale = 1e-3,
    cols = { "QoS 0", "QoS 1" }, bars = {
      { "bench_sub (C)", "throughput_yardstick_qos0", "throughput_yardstick_qos1" },
      { "mosquitto_sub", "throughput_mosquitto_sub_qos0", "throughput_mosquitto_sub_qos1" },
      { "Node.js mqtt.js", "throughput_peer_node_qos0", "throughput_peer_node_qos1" },
      { "Python paho", "throughput_peer_python_qos0", "throughput_peer_python_qos1" },
      { "routemq 1 worker", "throughput_routemq_1_qos0", "throughput_routemq_1_qos1" },
      { "routemq 2 workers", "throughput_routemq_2_qos0", "throughput_routemq_2_qos1" },
      { "routemq 4 workers", "throughput_routemq_4_qos0", "throughput_routemq_4_qos1" },
    } },
  { name = "cpu", title = "CPU per message, replay server, no broker (µs, lower is better)",
    cols = { "QoS 0", "QoS 1" }, bars = {
      { "bench_sub (C)", "replay_yardstick_qos0_cpu", "replay_yardstick_qos1_cpu" },
      { "Node.js mqtt.js", "replay_peer_node_qos0_cpu", "replay_peer_node_qos1_cpu" },
      { "Python paho", "replay_peer_python_qos0_cpu", "replay_peer_python_qos1_cpu" },
      { "routemq worker", "replay_routemq_1_qos0_cpu", "replay_routemq_1_qos1_cpu" },
    } },
  { name = "memory", title = "Memory when idle (MB, lower is better)", cols = { "RSS", "PSS" }, bars = {
      { "bench_sub (C)", "memory_yardstick_rss", "memory_yardstick_pss" },
      { "Node.js mqtt.js", "memory_node_rss", "memory_node_pss" },
      { "Python paho", "memory_python_rss", "memory_python_pss" },
      { "routemq master", "memory_master_rss_1", "memory_master_pss_1" },
      { "routemq worker", "memory_worker_rss_1", "memory_worker_pss_1" },
    } },
  { name = "wait", title = "Handler that waits 10 ms, QoS 1 (msg/s, log scale)", log = true,
    cols = { "msg/s" }, bars = {
      { "routemq, 256 in progress", "wait_routemq_c256" },
      { "routemq, 1024 in progress", "wait_routemq_c1024" },
      { "Node.js, async", "wait_peer_node" },
      { "Python paho, 1 thread", "wait_peer_python" },
    } },
  { name = "rr", title = "Request/reply round trip, QoS 1 (µs, log scale, lower is better)", log = true,
    cols = { "p50", "p99" }, bars = {
      { "routemq ctx:reply", "rr_routemq_1_qos1_p50", "rr_routemq_1_qos1_p99" },
      { "bare libmosquitto (C)", "rr_bare_qos1_p50", "rr_bare_qos1_p99" },
      { "Node.js mqtt.js", "rr_peer_node_qos1_p50", "rr_peer_node_qos1_p99" },
      { "Python paho", "rr_peer_python_qos1_p50", "rr_peer_python_qos1_p99" },
      { "routemq, broker Nagle on", "rr_routemq_1_nagle_qos1_p50", "rr_routemq_1_nagle_qos1_p99" },
    } },
}

-- Writes <dir>/benchmarks-<panel>.dat for the panels that have data; returns
-- those panels.
local function plot_data(result, dir)
  local by_id = {}
  for _, r in ipairs(result.rows) do
    by_id[r.id] = r
  end
  local panels = {}
  for _, panel in ipairs(PANELS) do
    local lines, any = { "# label then median min max per column" }, false
    local scale = panel.scale or 1
    for _, bar in ipairs(panel.bars) do
      local cells, label = {}, bar[1]
      for i = 2, #bar do
        local row = by_id[bar[i]]
        local sm = row and row.summary or {}
        if sm.median then
          any = true
          cells[#cells + 1] = string.format("%.3f %.3f %.3f", sm.median * scale, sm.min * scale, sm.max * scale)
        else
          cells[#cells + 1] = "NaN NaN NaN"
          if row and row.unavailable then
            label = label .. " (n/a)"
          end
        end
      end
      if bar[2] and by_id[bar[2]] then
        lines[#lines + 1] = string.format("%q ", label) .. table.concat(cells, " ")
      end
    end
    if any then
      local f = assert(io.open(dir .. "/benchmarks-" .. panel.name .. ".dat", "wb"))
      f:write(table.concat(lines, "\n") .. "\n")
      f:close()
      panels[#panels + 1] = panel
    end
  end
  return panels
end

local function plot(result, dir)
  local panels = plot_data(result, dir)
  if #panels == 0 then
    return false
  end
  local m = result.machine
  local rows = math.ceil(#panels / 2)
  local gp = {
    string.format("set terminal pngcairo size 1400,%d font 'sans,10'", 80 + 420 * rows),
    "set output '" .. dir .. "/benchmarks.png'",
    "set termoption noenhanced",
    string.format('set multiplot layout %d,2 title "routemq and what users would write instead: median of %d '
      .. 'run(s), bars min-max; %s msgs per throughput run\\n%s CPUs %s, %s%s%s"', rows, result.runs,
      commas(result.messages), m.nproc, m.cpu, m.mosquitto,
      m.node and (", node " .. m.node .. " mqtt.js " .. (m.mqttjs or "?")) or "",
      m.python and (", Python " .. m.python .. " paho " .. (m.paho or "?")) or ""),
    "set style data histogram",
    "set style histogram errorbars gap 1.5 lw 1",
    "set style fill solid 0.7 border -1",
    "set boxwidth 0.9",
    "set grid ytics",
    "set xtics rotate by -15",
  }
  for _, panel in ipairs(panels) do
    local file = "'" .. dir .. "/benchmarks-" .. panel.name .. ".dat'"
    gp[#gp + 1] = "set title '" .. panel.title .. "'"
    gp[#gp + 1] = panel.log and "set logscale y; set yrange [10:*]; set key top left"
      or "unset logscale y; set yrange [0:*]; set key top right"
    local parts = {}
    for i, col in ipairs(panel.cols) do
      local c = 2 + (i - 1) * 3
      parts[#parts + 1] = string.format("%s using %d:%d:%d%s title '%s'", i == 1 and file or "''", c, c + 1, c + 2,
        i == 1 and ":xtic(1)" or "", col)
    end
    gp[#gp + 1] = "plot " .. table.concat(parts, ", ")
  end
  gp[#gp + 1] = "unset multiplot"
  local gpf = assert(io.open(dir .. "/benchmarks.gp", "wb"))
  gpf:write(table.concat(gp, "\n") .. "\n")
  gpf:close()
  return os.execute("gnuplot '" .. dir .. "/benchmarks.gp' 2>'" .. dir .. "/gnuplot.err'") == 0
end

local function sanitize(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return cjson.null
    end
    return v
  elseif type(v) == "table" then
    local t = {}
    local n = 0
    for k in pairs(v) do
      if type(k) == "number" and k > n then
        n = k
      end
    end
    local is_array = n > 0
    if is_array then
      for i = 1, n do
        local x = v[i]
        t[i] = x == nil and cjson.null or sanitize(x)
      end
      return t
    end
    for k, x in pairs(v) do
      t[tostring(k)] = sanitize(x)
    end
    return t
  end
  return v
end

local BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"

-- Replaces the generated part of docs/benchmarks.md (between the markers).
local function update_doc(path, md)
  local f = io.open(path, "rb")
  local doc = f and f:read("*a")
  if f then f:close() end
  local block = BEGIN .. "\n" .. md .. END
  if doc and doc:find(BEGIN, 1, true) and doc:find(END, 1, true) then
    local a = doc:find(BEGIN, 1, true)
    local _, b = doc:find(END, 1, true)
    doc = doc:sub(1, a - 1) .. block .. doc:sub(b + 1)
  else
    doc = (doc or "# Benchmarks\n") .. "\n## Results\n\n" .. block .. "\n"
  end
  local w = assert(io.open(path, "wb"))
  w:write(doc)
  w:close()
end

function M.write_all(result, dir, docs)
  local json = cjson.encode(sanitize(result))
  local md = markdown(result)
  local function put(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
  end
  put(dir .. "/benchmarks.json", json .. "\n")
  put(dir .. "/benchmarks.md", md)
  local png = plot(result, dir)
  if not png then
    io.stderr:write("bench: no plot (gnuplot failed or no throughput data; see " .. dir .. "/gnuplot.err)\n")
  end
  if docs then
    put(docs .. "/benchmarks.json", json .. "\n")
    if png then
      os.execute("cp '" .. dir .. "/benchmarks.png' '" .. docs .. "/benchmarks.png'")
    end
    update_doc(docs .. "/benchmarks.md", md)
  end
end

return M
