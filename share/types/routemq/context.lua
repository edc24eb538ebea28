---@meta
-- LuaLS definitions of the message context handed to handlers and
-- middleware (docs/guide.md). Editors only: routemq never loads this file.

---@alias routemq.QoS 0|1|2

---MQTT 5 properties of a message.
---@class routemq.Props
---@field content_type? string
---@field response_topic? string
---@field correlation_data? string binary safe
---@field message_expiry? integer seconds
---@field user? table<string, string> user properties

---Options of `ctx:publish`, `ctx:reply` and `job:publish`.
---@class routemq.PublishOptions
---@field qos? routemq.QoS default 0
---@field retain? boolean default false
---@field props? routemq.Props

---Logger tagged with the worker, and with the route and topic of a message.
---Arguments are concatenated with tostring.
---@class routemq.Log
---@field debug fun(...: any)
---@field info fun(...: any)
---@field warn fun(...: any)
---@field error fun(...: any)

---The route a message matched. `tostring(ctx.route)` is its pattern.
---@class routemq.RouteView
---@field pattern string e.g. "sensors/{device_id}/data"
---@field name string the route's `name` option, or its pattern
---@field filter string the MQTT filter, e.g. "sensors/+/data"
---@field qos routemq.QoS

---The message context: one per message.
---@class routemq.Context
---@field topic string the concrete topic the message came on
---@field params table<string, string> the pattern's named parameters, e.g. params.device_id
---@field payload string the raw payload (binary safe)
---@field qos routemq.QoS as received
---@field retain boolean as received
---@field dup boolean as received (always false: libmosquitto does not expose it)
---@field redelivered boolean true when the runtime replays a message whose handler did not finish
---@field attempt integer 1 on the first run; 2, 3... on retries (route option `retry`)
---@field replayed boolean true when the message was replayed from the dead-letter store
---@field props routemq.Props MQTT 5 properties (an empty table when none)
---@field route routemq.RouteView the route that matched
---@field worker integer the worker slot number
---@field log routemq.Log logger tagged with worker, route and topic
local Context = {}

---The payload decoded as strict JSON (RFC 8259; cached), null as cjson.null. Never raises.
---@return any value decoded value, or nil on bad JSON
---@return string? err why the payload is not JSON
function Context:json() end

---Publishes a message. A table payload is sent as JSON. Raises on a bad topic,
---payload or option.
---@param topic string
---@param payload? string|table
---@param opts? routemq.PublishOptions
---@return boolean ok
function Context:publish(topic, payload, opts) end

---Publishes to the request's `response_topic` with its `correlation_data`.
---Raises when the message has no response_topic.
---@param payload? string|table
---@param opts? routemq.PublishOptions
---@return boolean ok
function Context:reply(payload, opts) end

---Ends the handler now and runs the message again after `seconds` (default:
---the route's backoff delay), without logging an error. It uses up an
---attempt: at the last one the message goes to the dead-letter store
---(reason "error"). Not available in an on_error hook.
---@param seconds? number
function Context:retry(seconds) end

---Ends the handler now and sends the message to the dead-letter store with
---`reason` (reason "failed"), whatever attempts are left. The on_error hooks
---run. Not available in an on_error hook.
---@param reason string
function Context:fail(reason) end

---A handler: `function(ctx)`.
---@alias routemq.Handler fun(ctx: routemq.Context): any

---Middleware: `function(ctx, next)`; not calling `next()` stops the chain.
---@alias routemq.Middleware fun(ctx: routemq.Context, next: fun(): any): any
