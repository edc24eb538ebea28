-- The matcher (routemq.core, the one the runtime and routemq.testing use) and a
-- real mosquitto agree on MQTT subscription semantics: for every route pattern
-- and every topic below, the broker delivers the topic to a subscription on the
-- pattern's filter exactly when the matcher says the pattern matches it.
--
-- One mosquitto_sub per pattern (so we know which subscription delivered), each
-- also subscribed to its own probe topic zzprobe/<i>/+ to tell when it is
-- subscribed and when it has received everything published before the probe.
--
-- $SYS: mosquitto denies PUBLISH to $SYS/... from clients (it logs "Denied
-- PUBLISH" and drops the message; mosquitto_pub still exits 0), so $SYS topics
-- cannot be published here. Instead the broker's own retained $SYS/broker/...
-- topics, which a subscriber gets when it subscribes, are checked against every
-- pattern; and the client-publishable $-prefixed topic $internal/... exercises
-- the rule that wildcards at the first level do not match $-topics.
local e2e = require("spec.helpers.e2e")
local core = require("routemq.core")

local PATTERNS = {
  "a/{x}",              -- a/+
  "a/{rest...}",        -- a/#, also matches "a" itself
  "a/#",                -- raw, same filter as a/{rest...}
  "{rest...}",          -- #
  "#",
  "+",
  "a/+/c",
  "a/{x}/{y}",
  "a/b",
  "a/b/#",
  "+/+",
  "+/#",
  "a//b",               -- an empty level
  "/x",                 -- empty first level
  "/{x}",
  "{x}/",               -- empty last level
  "a/{x}//c",
  "$internal/{x}",
  "$internal/#",
  "$SYS/#",
  "$SYS/broker/{x}",
  "$SYS/{x}/clients/{y}",
  "+/broker/#",         -- must not see $SYS/broker/...
  "dev/ünï/#",          -- UTF-8 levels
  "dev/{name}/état",
  "café/{x}",           -- precomposed é (U+00E9)
}

local TOPICS = {
  "a", "a/b", "a/c", "a/b/c", "a/x/c", "a/b/c/d", "a/b/c/d/e/f/g/h", "a/", "a//", "a//b", "a/b/",
  "a///c", "a/q//c", "a/q/c/", "a/x/y",
  "/", "//", "/x", "/y", "/x/", "x/", "x", "b", "b/c", "x/y", "x/y/z",
  "A/b", "a /b", "a/b c", " a",
  "$internal", "$internal/", "$internal/x", "$internal/x/y", "$other/a", "internal/x",
  "dev/ünï", "dev/ünï/1", "dev/unï/1", "dev/a/état", "dev/a/etat", "dev/日本/état",
  "ünï", "ünï/ç",
  "café/1", "cafe\204\129/1",  -- the same word with a decomposed é: a different topic
  "sensors/42/data", "x/broker/y",
}

local PROBE = "zzprobe/"

local PUBLISHED = {}
for _, t in ipairs(TOPICS) do PUBLISHED[t] = true end

local function index_of(pattern)
  for i, p in ipairs(PATTERNS) do
    if p == pattern then return i end
  end
end

-- Most specific first: per level, literal (or the filter ending) beats '+' beats
-- '#', decided left to right (docs/guide.md, "Patterns"). Returns true when filter f ranks before g.
local function more_specific(f, g)
  local function levels(s)
    local t = {}
    for level in (s .. "/"):gmatch("(.-)/") do t[#t + 1] = level end
    return t
  end
  local function rank(level)
    if level == "+" then return 1 elseif level == "#" then return 2 else return 0 end
  end
  local a, b = levels(f), levels(g)
  for i = 1, math.max(#a, #b) do
    local ra, rb = a[i] and rank(a[i]) or 0, b[i] and rank(b[i]) or 0
    if ra ~= rb then return ra < rb end
  end
  return false
end

-- The topic rebuilt from a pattern and the params the matcher captured.
local function rebuild(pattern, params)
  local out = {}
  for level in (pattern .. "/"):gmatch("(.-)/") do
    local rest = level:match("^{(.+)%.%.%.}$")
    local one = level:match("^{(.+)}$")
    if rest then
      if params[rest] ~= nil then out[#out + 1] = params[rest] end
    elseif one then
      out[#out + 1] = params[one]
    else
      out[#out + 1] = level
    end
  end
  return table.concat(out, "/")
end

local function has_raw_wildcard(pattern)
  for level in (pattern .. "/"):gmatch("(.-)/") do
    if level == "+" or level == "#" then return true end
  end
  return false
end

describe("matcher and mosquitto", function()
  local broker, dir
  local subs = {}          -- i -> { pid =, log = }
  local delivered = {}     -- i -> set of topics delivered to pattern i
  -- The $SYS topics checked: those the "$SYS/#" subscriber got before its ready
  -- probe. They existed (retained) by the time it subscribed, so every matching
  -- subscriber got them, live or retained, whatever mosquitto's periodic $SYS
  -- update (sys_interval) does later.
  local sys_topics = {}
  local filters = {}       -- i -> compiled filter

  local function lines(path)
    local set = {}
    for line in e2e.read(path):gmatch("[^\n]+") do set[line] = true end
    return set
  end

  local function publish_all(topics)
    local cmds = {}
    for _, t in ipairs(topics) do
      cmds[#cmds + 1] = string.format("mosquitto_pub -p %d -q 1 -t %s -m %s || echo FAILED %s",
        broker.port, e2e.quote(t), e2e.quote(t), e2e.quote(t))
    end
    return e2e.sh("sh -c " .. e2e.quote(table.concat(cmds, "\n")) .. " 2>&1")
  end

  -- Publishes zzprobe/<i>/<tag> until every subscriber has logged it.
  local function probe(tag)
    return e2e.wait_for(function()
      local topics, missing = {}, 0
      for i, s in ipairs(subs) do
        if not e2e.read(s.log):find(PROBE .. i .. "/" .. tag, 1, true) then
          missing = missing + 1
          topics[#topics + 1] = PROBE .. i .. "/" .. tag
        end
      end
      if missing == 0 then return true end
      publish_all(topics)
      return false
    end, 10, 0.1)
  end

  setup(function()
    broker = e2e.broker()
    dir = e2e.tmpdir()
    for i, p in ipairs(PATTERNS) do
      local c = assert(core.compile(p))
      filters[i] = c.filter
      local log = dir .. "/sub" .. i .. ".log"
      local pid = e2e.spawn(string.format("mosquitto_sub -p %d -q 1 -F %%t -t %s -t %s", broker.port,
        e2e.quote(c.filter), e2e.quote(PROBE .. i .. "/+")), log)
      subs[i] = { pid = pid, log = log }
    end
    assert(probe("ready"), "subscribers did not get ready")
    local out = publish_all(TOPICS)
    assert(not out:find("FAILED"), out)
    assert(probe("end"), "subscribers did not get the end probe")
    for i, s in ipairs(subs) do
      delivered[i] = {}
      for t in pairs(lines(s.log)) do
        if t:sub(1, #PROBE) ~= PROBE then
          delivered[i][t] = true
        end
      end
    end
    local all = index_of("$SYS/#")
    for line in e2e.read(subs[all].log):gmatch("[^\n]+") do
      if line == PROBE .. all .. "/ready" then break end
      sys_topics[line] = true
    end
  end)

  teardown(function()
    for _, s in ipairs(subs) do
      if s.pid and e2e.alive(s.pid) then e2e.kill(s.pid, "TERM") end
    end
    for _, s in ipairs(subs) do
      if s.pid then
        e2e.wait_for(function() return not e2e.alive(s.pid) end, 3)
        if e2e.alive(s.pid) then e2e.kill(s.pid, "KILL") end
      end
    end
    if broker then broker.stop() end
    if dir then e2e.sh("rm -rf " .. e2e.quote(dir) .. " " .. e2e.quote(broker.dir)) end
  end)

  it("uses at least 15 patterns and 40 topics, all valid", function()
    assert.is_true(#PATTERNS >= 15)
    assert.is_true(#TOPICS >= 40)
    for _, t in ipairs(TOPICS) do assert.is_true(core.validate_topic(t), t) end
  end)

  it("gets the broker's retained $SYS topics, and no $SYS publish from a client", function()
    local i = index_of("$SYS/#")
    local sys = delivered[i]
    assert.is_true(sys["$SYS/broker/version"])
    assert.is_true(sys["$SYS/broker/retained messages/count"])
    assert.is_true(sys_topics["$SYS/broker/version"])
    local probe_out = e2e.publish(broker.port, "$SYS/client/x", "denied", "-q 1")
    -- The broker sends each subscriber its messages in order: once the
    -- probes published after it are in, it would be too.
    assert(probe("after-sys"), "subscribers did not get the probe")
    assert.equal("", probe_out)
    assert.is_nil(lines(subs[i].log)["$SYS/client/x"])
  end)

  for i, pattern in ipairs(PATTERNS) do
    it("agrees on '" .. pattern .. "'", function()
      local m = core.matcher()
      assert.is_true(m:add(pattern, 1))
      local universe = {}
      for _, t in ipairs(TOPICS) do universe[#universe + 1] = t end
      for t in pairs(sys_topics) do universe[#universe + 1] = t end
      local wrong = {}
      for _, t in ipairs(universe) do
        local id, params = m:match(t)
        local broker_says = delivered[i][t] == true
        if broker_says ~= (id ~= nil) then
          wrong[#wrong + 1] = string.format("'%s': broker %s, matcher %s", t,
            broker_says and "delivered" or "did not deliver", id and "matched" or "did not match")
        elseif id and not has_raw_wildcard(pattern) then
          assert.equal(t, rebuild(pattern, params), "params of '" .. pattern .. "' for '" .. t .. "'")
        end
      end
      -- The broker delivered nothing we did not publish (or it retained).
      for t in pairs(delivered[i]) do
        assert.is_true(t:sub(1, 5) == "$SYS/" or PUBLISHED[t], "unexpected delivery '" .. t .. "'")
      end
      assert.same({}, wrong, "filter " .. filters[i])
      assert.is_not_nil(next(delivered[i]), "nothing delivered to " .. filters[i] .. ": the check would be vacuous")
    end)
  end

  it("picks the most specific of the routes the broker delivered for", function()
    local m = core.matcher()
    local id_of = {}       -- filter -> the first pattern index with it
    for i, p in ipairs(PATTERNS) do
      if not id_of[filters[i]] then
        id_of[filters[i]] = i
        assert.is_true(m:add(p, i))
      end
    end
    local universe = {}
    for _, t in ipairs(TOPICS) do universe[#universe + 1] = t end
    for t in pairs(sys_topics) do universe[#universe + 1] = t end
    local checked = 0
    for _, t in ipairs(universe) do
      local best
      for i = 1, #PATTERNS do
        if id_of[filters[i]] == i and delivered[i][t] and (not best or more_specific(filters[i], filters[best])) then
          best = i
        end
      end
      local got = m:match(t)
      assert.equal(best, got, "'" .. t .. "': expected " .. (best and PATTERNS[best] or "no route")
        .. ", got " .. (got and PATTERNS[got] or "no route"))
      checked = checked + 1
    end
    assert.is_true(checked >= 40)
  end)
end)
