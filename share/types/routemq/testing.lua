---@meta routemq.testing
-- LuaLS definitions of require("routemq.testing") (docs/guide.md).
-- Editors only: routemq never loads this file.

---A message given to `app:dispatch`.
---@class routemq.TestMessage
---@field payload? string the raw payload
---@field json? any encoded as the payload (instead of `payload`)
---@field qos? routemq.QoS
---@field retain? boolean
---@field dup? boolean
---@field props? routemq.Props
---@field redelivered? boolean
---@field attempt? integer the first attempt's number (ctx.attempt), default 1
---@field replayed? boolean ctx.replayed
---@field retries? "now"|"sleep"|"none" failed attempts with attempts left: run again at once (default), after their real delay, or not

---One message a handler published.
---@class routemq.Published
---@field topic string
---@field payload string
---@field json any the payload decoded as JSON, or nil
---@field qos routemq.QoS
---@field retain boolean
---@field props? routemq.Props

---One line a handler logged.
---@class routemq.LogLine
---@field level "debug"|"info"|"warn"|"error"
---@field msg string

---What `app:dispatch` returns.
---@class routemq.DispatchResult
---@field matched boolean false when no route matches the topic
---@field route? string the pattern of the route that matched
---@field params? table<string, string>
---@field published routemq.Published[] what the handlers published, in order
---@field logs routemq.LogLine[] what they logged, in order
---@field error? string the error of the last attempt, if it failed, with its traceback
---@field ctx? routemq.Context the ctx of the last attempt
---@field ok? boolean true when the message ended in success (after retries, if any)
---@field attempts? integer how many attempts ran
---@field retries? number[] the delay in seconds before each further attempt
---@field errors? string[] the error of each failed attempt, with its traceback
---@field dead_letter? routemq.DeadLetter what the dead-letter store would get; nil unless the message ended without success

---What `app:dispatch` says would go to the dead-letter store.
---@class routemq.DeadLetter
---@field reason "error"|"timeout"|"failed"
---@field error string the last error (the `ctx:fail` reason for "failed")
---@field traceback? string
---@field attempts integer the attempt it ended on

---A route as the application registered it.
---@class routemq.Route
---@field pattern string
---@field filter string the MQTT filter
---@field sub string the subscription topic ($share/<group>/<filter> for shared routes)
---@field qos routemq.QoS
---@field shared boolean
---@field worker_count integer
---@field retained "new"|"always"|"none"
---@field group? string
---@field timeout? number
---@field name string
---@field source string file:line of the router.on call

---An application loaded for tests.
---@class routemq.TestApp
---@field routes routemq.Route[] the route table, in registration order
local TestApp = {}

---Sends a message to the routes, as the runtime would, without a broker.
---@param topic string
---@param msg? routemq.TestMessage
---@return routemq.DispatchResult
function TestApp:dispatch(topic, msg) end

---The route registered with this pattern.
---@param pattern string
---@return routemq.Route?
function TestApp:route(pattern) end

---Runs the timer named `name` once (`router.every`).
---@param name string
function TestApp:tick(name) end

---Options of `testing.app`.
---@class routemq.TestAppOptions
---@field env? table<string, string> environment variables seen by the application
---@field init? boolean run the application's init functions

---@class routemq.testing
local testing = {}

---Loads the application in `dir` (app/routers/*.lua) as the runtime does.
---Raises the load error ("file:line: reason").
---@param dir? string default "."
---@param opts? routemq.TestAppOptions
---@return routemq.TestApp
function testing.app(dir, opts) end

return testing
