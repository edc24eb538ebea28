-- Loads an application directory: runs every app/routers/*.lua in name order
-- against a fresh router registry and returns the resulting route table.
--
-- Application modules (require("app.controllers.x")) are found under the app
-- root by a package searcher and get chunk names relative to that root, so
-- errors read "app/controllers/x.lua:12: ..." wherever the app lives.
local core = require("routemq.core")

local M = {}

-- Searcher state lives in the registry, not in this module, so that a second
-- copy of this module (busted insulation re-requires modules) shares it
-- instead of stacking another searcher that looks under a stale root.
local REGISTRY_KEY = "routemq.app.searcher"

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local data = f:read("*a") -- nil for a directory
  f:close()
  return data
end

local function searcher_state()
  local registry = debug.getregistry()
  local state = registry[REGISTRY_KEY]
  if state then
    return state
  end
  state = { root = nil, modules = {}, files = nil }
  -- searcher(name) -> loader | "no file" text, looking under the app root,
  -- or for app/... in the generation's snapshot only (never on disk).
  state.searcher = function(name)
    local root = state.root
    if not root then
      return nil
    end
    local rel = name:gsub("%.", "/")
    local tried = {}
    for _, candidate in ipairs({ rel .. ".lua", rel .. "/init.lua" }) do
      local path = root .. "/" .. candidate
      local source
      if state.files and candidate:sub(1, 4) == "app/" then
        source = state.files[candidate]
        path = path .. "' in the running generation (run routemq reload for new files)"
      else
        source = read_file(path)
      end
      if source then
        local chunk, err = loadstring(source, "@" .. candidate)
        if not chunk then
          error(err, 0) -- already "file:line: reason"
        end
        state.modules[name] = true
        return chunk
      end
      tried[#tried + 1] = "\n\tno file '" .. path .. "'"
    end
    return table.concat(tried)
  end
  table.insert(package.loaders, 2, state.searcher)
  registry[REGISTRY_KEY] = state
  return state
end

-- Modules of the previously loaded app must not leak into the next one.
local function forget_app_modules(state)
  for name in pairs(state.modules) do
    package.loaded[name] = nil
  end
  state.modules = {}
end

local function has_location(msg)
  return msg:match("^[^\n]-:%d+:") ~= nil
end

-- Runs one router file; returns true or nil, "file:line: reason", traceback.
local function run_router(root, rel, files)
  local source
  if files then
    source = files[rel]
  else
    source = read_file(root .. "/" .. rel)
  end
  if not source then
    return nil, rel .. ": cannot read file"
  end
  local chunk, err = loadstring(source, "@" .. rel)
  if not chunk then
    return nil, err, err
  end
  local traceback
  local ok, failure = xpcall(chunk, function(e)
    traceback = debug.traceback(tostring(e), 2)
    return e
  end)
  if ok then
    return true
  end
  local msg = tostring(failure)
  if type(failure) ~= "string" or not has_location(msg) then
    msg = rel .. ": " .. msg
  end
  return nil, msg, traceback
end

local function check_options(opts)
  if opts == nil then
    return "routemq", 30
  end
  if type(opts) ~= "table" then
    return nil, "app.load: options must be a table"
  end
  local group = opts.group_name or "routemq"
  local timeout = opts.handler_timeout or 30
  if type(group) ~= "string" or group == "" or group:find("[/+#]") then
    return nil, "app.load: group_name must be a non-empty string without '/', '+' or '#'"
  end
  if type(timeout) ~= "number" or timeout ~= timeout or timeout <= 0 then
    return nil, "app.load: handler_timeout must be a positive number"
  end
  if opts.files ~= nil and type(opts.files) ~= "table" then
    return nil, "app.load: files must be a table of path = source"
  end
  return group, timeout
end

-- describe_jobs({ timers =, inits =, health =, on_error = }) -> lines for `routemq
-- routes` (empty string when the app has none).
function M.describe_jobs(jobs)
  local lines = {}
  for _, t in ipairs(jobs.timers) do
    lines[#lines + 1] = ("every %gs  %s  workers=%s  timeout=%gs  %s"):format(t.every, t.name,
      t.workers, t.timeout, tostring(t.source))
  end
  for _, i in ipairs(jobs.inits) do
    lines[#lines + 1] = "init  " .. tostring(i.source)
  end
  for _, hook in ipairs(jobs.on_error or {}) do
    lines[#lines + 1] = "on_error  " .. tostring(hook.source)
  end
  local h = jobs.health
  if h then
    lines[#lines + 1] = ("health  every=%gs  timeout=%gs  failures=%d  %s"):format(h.every,
      h.timeout, h.failures, tostring(h.source))
  end
  if #lines == 0 then
    return ""
  end
  return table.concat(lines, "\n") .. "\n"
end


-- The router files of a snapshot, in name order like core.listdir.
local function snapshot_routers(files)
  local names = {}
  for path in pairs(files) do
    local name = path:match("^app/routers/([^/]+)$")
    if name then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end

-- load(root, { group_name =, handler_timeout =, files = }) -> app | nil, err, traceback
-- files: { ["app/routers/x.lua"] = source, ... }, the generation's snapshot
-- the runtime read once; without it the files are read from disk.
-- app = { root =, routes = { route records }, middleware = { global mw }, files =,
--         timers =, inits =, health =, on_error = { { fn =, source = } } }
function M.load(root, opts)
  root = root or "."
  if type(root) ~= "string" or root == "" then
    return nil, "app.load: root must be a non-empty string"
  end
  root = root:gsub("(.)/+$", "%1")
  local group_name, handler_timeout = check_options(opts)
  if not group_name then
    return nil, handler_timeout
  end

  -- Required here, not at the top, so app files and this loader share the
  -- router instance that package.loaded holds right now.
  local router = require("routemq.router")
  router._reset()
  local state = searcher_state()
  forget_app_modules(state)
  state.root = root
  local snapshot = opts and opts.files
  state.files = snapshot

  local names
  if snapshot then
    names = snapshot_routers(snapshot)
    if #names == 0 and not core.listdir(root .. "/app/routers") then
      return nil, "no app/routers directory in " .. root
    end
  else
    names = core.listdir(root .. "/app/routers")
    if not names then
      return nil, "no app/routers directory in " .. root
    end
  end
  local files = {}
  for _, name in ipairs(names) do
    if name:sub(1, 1) ~= "." and name:match("%.lua$") then
      local rel = "app/routers/" .. name
      local ok, err, traceback = run_router(root, rel, snapshot)
      if not ok then
        router._reset()
        return nil, err, traceback
      end
      files[#files + 1] = rel
    end
  end

  local routes = router._routes()
  for i, route in ipairs(routes) do
    route.index = i
    route.group = route.group or group_name
    route.timeout = route.timeout or handler_timeout
    route.sub = route.shared and ("$share/" .. route.group .. "/" .. route.filter)
      or route.filter
  end
  local jobs = router._jobs()
  for _, timer in ipairs(jobs.timers) do
    timer.timeout = timer.timeout or math.min(timer.every, handler_timeout)
  end
  return {
    root = root,
    routes = routes,
    middleware = router._middleware(),
    files = files,
    timers = jobs.timers,
    inits = jobs.inits,
    health = jobs.health,
    on_error = jobs.on_error,
    jobs_text = M.describe_jobs(jobs),
  }
end

return M
