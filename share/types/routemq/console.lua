---@meta routemq.console
-- LuaLS definitions of the `app` object of `routemq console`. Editors only.

---@class routemq.ConsoleApp
---@field harness routemq.TestApp the testing harness behind it
local ConsoleApp = {}

---Sends a message to the routes and prints what was published and logged.
---@param topic string
---@param msg? routemq.TestMessage|string a message, or a payload string
---@return routemq.DispatchResult
function ConsoleApp:dispatch(topic, msg) end

---The route table, printed one route a line.
---@return routemq.Route[]
function ConsoleApp:routes() end

---@param pattern string
---@return routemq.Route?
function ConsoleApp:route(pattern) end

---Loads the application from disk again.
---@return routemq.Route[]
function ConsoleApp:reload() end

---@class routemq.console
local console = {}

---The console's `app` object for the application in `dir`.
---@param dir string
---@return routemq.ConsoleApp
function console.app(dir) end

return console
