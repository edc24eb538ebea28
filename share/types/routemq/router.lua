---@meta routemq.router
-- LuaLS definitions of require("routemq.router") (docs/guide.md).
-- Editors only: routemq never loads this file.

---Options of `router.on`.
---@class routemq.RouteOptions
---@field qos? routemq.QoS subscription QoS, default 0
---@field shared? boolean spread the route over workers with a shared subscription, default false
---@field worker_count? integer workers sharing the route (with `shared`), default 1
---@field group? string share group, default MQTT_GROUP_NAME
---@field middleware? routemq.Middleware[] route middleware, after global and group middleware
---@field timeout? number seconds a handler may run, default WORKER_HANDLER_TIMEOUT
---@field name? string the route's name (default: its pattern)
---@field ordered? boolean handle messages of one topic one after the other, in arrival order
---@field retained? "new"|"always"|"none" retained messages: new subscriptions only (default), always, never
---@field retry? routemq.RetryOptions retries of failed attempts; fields left out come from ROUTEMQ_RETRY_*

---The route option `retry`: a failed attempt (a Lua error, a timeout) is run
---again after min(max_delay, delay * backoff^(attempt-1)) seconds, ±jitter.
---@class routemq.RetryOptions
---@field attempts? integer attempts in all, the first run included (1..1000), default ROUTEMQ_RETRY_ATTEMPTS (1: no retry)
---@field delay? number seconds before the 2nd attempt, default ROUTEMQ_RETRY_DELAY (1)
---@field backoff? number factor between delays (>= 1), default ROUTEMQ_RETRY_BACKOFF (2)
---@field max_delay? number upper bound of a delay in seconds, default ROUTEMQ_RETRY_MAX_DELAY (300)
---@field jitter? number fraction 0..1 each delay is randomly moved by, default 0.1

---What an `on_error` hook gets besides ctx and the error text.
---@class routemq.ErrorInfo
---@field attempt integer the attempt that failed (1 on the first run)
---@field attempts integer the route's attempts in all
---@field final boolean true when no attempt follows: the message goes to the dead-letter store
---@field reason "error"|"timeout"|"failed" a Lua error, the route's timeout, or ctx:fail
---@field traceback? string the Lua traceback of the error
---@field delay? number seconds before the next attempt (nil when final)
---@field route string the route's pattern

---Options of `router.group`.
---@class routemq.GroupOptions
---@field prefix? string pattern prefix of the group's routes, e.g. "devices/{id}"
---@field middleware? routemq.Middleware[]

---Options of `router.every`.
---@class routemq.EveryOptions
---@field name? string the timer's name (metrics, `app:tick(name)`)
---@field workers? "one"|"all" "one": slot 0 of each instance (default); "all": every slot
---@field timeout? number seconds a run may take

---Options of `router.health`.
---@class routemq.HealthOptions
---@field every? number seconds between checks, default 10
---@field timeout? number seconds a check may take, default 5
---@field failures? integer failures in a row before the worker is replaced, default 3

---What a timer function gets.
---@class routemq.Job
---@field log routemq.Log
---@field worker integer the worker slot number
local Job = {}

---Publishes a message. A table payload is sent as JSON.
---@param topic string
---@param payload? string|table
---@param opts? routemq.PublishOptions
---@return boolean ok
function Job:publish(topic, payload, opts) end

---What init and health functions get.
---@class routemq.Worker
---@field slot integer the worker slot number
---@field log routemq.Log

---The `r` handed to a group body: `on`, `use` and `group` under the group's prefix.
---@class routemq.RouterScope
local Scope = {}

---@param pattern string
---@param handler routemq.Handler
---@param opts? routemq.RouteOptions
function Scope.on(pattern, handler, opts) end

---@param mw routemq.Middleware
function Scope.use(mw) end

---@param opts routemq.GroupOptions
---@param body fun(r: routemq.RouterScope)
function Scope.group(opts, body) end

---@class routemq.router
local router = {}

---Registers a route. `{name}` is one topic level, `{name...}` the rest of the
---topic (last), raw `+` and `#` work. Raises "file:line: reason" on a bad
---pattern or option.
---@param pattern string e.g. "sensors/{device_id}/data"
---@param handler routemq.Handler
---@param opts? routemq.RouteOptions
function router.on(pattern, handler, opts) end

---Adds global middleware, applied to every route.
---@param mw routemq.Middleware
function router.use(mw) end

---Routes sharing a prefix and middleware.
---@param opts routemq.GroupOptions
---@param body fun(r: routemq.RouterScope)
function router.group(opts, body) end

---Periodic work: `fn(job)` every `seconds`. A run still going when the next is
---due is skipped and counted.
---@param seconds number
---@param fn fun(job: routemq.Job)
---@param opts? routemq.EveryOptions
function router.every(seconds, fn, opts) end

---Runs `fn(worker)` in each worker after the application loads and before it
---subscribes; it may wait. An error fails that worker's start.
---@param fn fun(worker: routemq.Worker)
function router.init(fn) end

---A health check run in each worker; returning false, raising or timing out
---`failures` times in a row gets the worker replaced.
---@param fn fun(worker: routemq.Worker): boolean?
---@param opts? routemq.HealthOptions
function router.health(fn, opts) end

---Runs `fn(ctx, err, info)` for every failed attempt of every route (a Lua
---error, a timeout, `ctx:fail`; not `ctx:retry`). It runs like a handler and
---may wait; its own errors are logged, never passed to a hook. Several hooks
---all run, in registration order.
---@param fn fun(ctx: routemq.Context, err: string, info: routemq.ErrorInfo)
function router.on_error(fn) end

return router
