--- The soak's steady QoS 1 load (started by spec/soak/soak.lua, in the
-- background): every TICK seconds one batch per route kind, each message a
-- unique id. Usage: luajit spec/soak/load.lua CTL_DIR PORT RATE KINDS
-- (messages per second over all kinds, comma-separated kinds).
-- What the broker acknowledged (mosquitto_pub exited 0) is appended to
-- CTL_DIR/published as "kind<TAB>id" lines; a batch whose mosquitto_pub failed
-- to CTL_DIR/unconfirmed (it may or may not have been delivered).
-- Control files in CTL_DIR: `pause` (the loader answers with `paused` and
-- waits), `stop` (it exits after the current batch).
local e2e = require("spec.helpers.e2e")

local ctl, port, rate, kinds_arg = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4]
local TICK = 0.5

local kinds = {}
for k in kinds_arg:gmatch("[^,]+") do kinds[#kinds + 1] = k end

-- Messages per tick per kind: fan-out handlers publish SOAK_FAN each, so
-- their kind gets a tenth of the rate; retained ones one per tick.
local weight = { plain = 1, shared = 1, ordered = 1, wait = 1, fan = 0.1 }
local total_w = 0
for _, k in ipairs(kinds) do total_w = total_w + (weight[k] or 0) end

local seq = 0
local function ids(kind, n)
  local t = {}
  for _ = 1, n do
    seq = seq + 1
    t[#t + 1] = kind .. "-" .. seq
  end
  return t
end

local function ledger(name, kind, list)
  local f = assert(io.open(ctl .. "/" .. name, "a"))
  for _, id in ipairs(list) do f:write(kind, "\t", id, "\n") end
  f:close()
end

local function exists(name)
  local f = io.open(ctl .. "/" .. name)
  if f then f:close() end
  return f ~= nil
end

-- Publishes every batch at once (one mosquitto_pub each, in parallel) and
-- records each batch in the ledger its exit code says.
local function send(batches)
  local cmds, files = {}, {}
  for i, b in ipairs(batches) do
    local file = string.format("%s/batch-%d", ctl, i)
    e2e.write(file, table.concat(b.ids, "\n") .. "\n")
    files[i] = file
    -- Bounded: a broker that went away mid-batch must not leave it waiting for acknowledgements for ever.
    cmds[#cmds + 1] = string.format(
      "(timeout 20 mosquitto_pub -p %d -t %s -q 1 %s -l < %s > /dev/null 2>&1; echo %d rc=$?) &",
      port, b.topic, b.extra or "", file, i)
  end
  local out = e2e.sh(table.concat(cmds, " ") .. " wait")
  for i, b in ipairs(batches) do
    ledger(out:match("%f[%d]" .. i .. " rc=0") and "published" or "unconfirmed", b.kind, b.ids)
    os.remove(files[i])
  end
end

local sent, active = {}, 0
local tick = 0
while not exists("stop") do
  if exists("pause") then
    e2e.write(ctl .. "/paused", "")
    while exists("pause") and not exists("stop") do e2e.sleep(0.05) end
    os.remove(ctl .. "/paused")
  else
    local t0 = e2e.now()
    tick = tick + 1
    local batches = {}
    for _, kind in ipairs(kinds) do
      if kind == "state" then
        batches[#batches + 1] = { kind = kind, topic = "soak/state/" .. (tick % 8), ids = ids(kind, 1), extra = "-r" }
      elseif weight[kind] then
        -- What is due by the end of this tick since the load started (pauses
        -- excluded), so a slow tick makes the next batch larger.
        local due = math.floor((active + TICK) * rate * weight[kind] / total_w)
        local n = due - (sent[kind] or 0)
        if n > 0 then
          sent[kind] = due
          if kind == "ordered" then
            -- Three topics at once, so the route has topics to run side by side.
            for t = 1, 3 do
              local m = math.floor(n / 3) + (t <= n % 3 and 1 or 0)
              if m > 0 then
                batches[#batches + 1] = { kind = kind, topic = "soak/ordered/" .. t, ids = ids(kind, m) }
              end
            end
          else
            batches[#batches + 1] = { kind = kind, topic = "soak/" .. kind .. "/" .. tick % 16, ids = ids(kind, n) }
          end
        end
      end
    end
    send(batches)
    local left = TICK - (e2e.now() - t0)
    if left > 0 then e2e.sleep(left) end
    active = active + (e2e.now() - t0)
  end
end
