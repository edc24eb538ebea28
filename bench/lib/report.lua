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
  elseif unit == "µs/msg" or unit == "MB" then
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
  { id = "replay", title = "2. Subscriber cost without the broker (replay server, subscriber alone on a core)" },
  { id = "memory", title = "3. Memory (idle, after connecting; from /proc/<pid>/smaps_rollup)" },
  { id = "wait", title = "3b. A handler that waits 10 ms, QoS 1, through mosquitto (rate = handled / "
    .. "(last handled − first published))" },
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

-- Plot data: one line per subject, QoS 0 and QoS 1 median/min/max (k msg/s).
local function plot_data(result)
  local subjects = {
    { "throughput", "yardstick", "yardstick (bench_sub)" },
    { "throughput", "mosquitto_sub", "mosquitto_sub" },
    { "throughput", "peer_node", "Node.js mqtt.js" },
    { "throughput", "peer_python", "Python paho" },
    { "throughput", "routemq_1", "routemq 1 worker" },
    { "throughput", "routemq_2", "routemq 2 workers" },
    { "throughput", "routemq_4", "routemq 4 workers" },
    { "replay", "yardstick", "replay: yardstick" },
    { "replay", "peer_node", "replay: Node.js mqtt.js" },
    { "replay", "peer_python", "replay: Python paho" },
    { "replay", "routemq_1", "replay: routemq 1 worker" },
  }
  local lines, any = { "# subject q0_median q0_min q0_max q1_median q1_min q1_max (k msg/s)" }, false
  for _, sub in ipairs(subjects) do
    local cells = { string.format("%q", sub[3]) }
    local have = false
    for _, qos in ipairs({ 0, 1 }) do
      local row
      for _, r in ipairs(result.rows) do
        if r.section == sub[1] and r.subject == sub[2] and r.qos == qos and r.unit == "msg/s" then
          row = r
        end
      end
      local s = row and row.summary or {}
      if s.median then
        have = true
        cells[#cells + 1] = string.format("%.1f %.1f %.1f", s.median / 1e3, s.min / 1e3, s.max / 1e3)
      else
        cells[#cells + 1] = "NaN NaN NaN"
      end
    end
    if have then
      any = true
      lines[#lines + 1] = table.concat(cells, " ")
    end
  end
  return any and table.concat(lines, "\n") .. "\n" or nil
end

local function plot(result, dir)
  local data = plot_data(result)
  if not data then
    return false
  end
  local f = assert(io.open(dir .. "/benchmarks.dat", "wb"))
  f:write(data)
  f:close()
  local m = result.machine
  local gp = table.concat({
    "set terminal pngcairo size 1100,600 font 'sans,10'",
    "set output '" .. dir .. "/benchmarks.png'",
    "set termoption noenhanced",
    string.format('set title "routemq throughput by scenario (%s messages, median of %d run(s), '
      .. 'bars: min-max)\\n%s CPUs %s, %s"', commas(result.messages), result.runs, m.nproc, m.cpu, m.mosquitto),
    "set ylabel 'thousand messages / s'",
    "set style data histogram",
    "set style histogram errorbars gap 1.5 lw 1",
    "set style fill solid 0.7 border -1",
    "set boxwidth 0.9",
    "set yrange [0:*]",
    "set grid ytics",
    "set key top left",
    "set xtics rotate by -20",
    "plot '" .. dir .. "/benchmarks.dat' using 2:3:4:xtic(1) title 'QoS 0', '' using 5:6:7 title 'QoS 1'",
  }, "\n") .. "\n"
  local gpf = assert(io.open(dir .. "/benchmarks.gp", "wb"))
  gpf:write(gp)
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
