---@meta routemq.pg
-- LuaLS definitions of require("routemq.pg"): PostgreSQL without blocking the
-- worker (docs/guide.md, "Databases"). Editors only.

---@class routemq.pg.error
---@field sqlstate string? five-character SQLSTATE, e.g. "23505"; "08001" when no connection could be made
---@field message string the primary message
---@field detail string?
---@field hint string?
---@field severity string?

---@class routemq.pg.rows: table<string, any>[]
---@field affected integer rows inserted, updated, deleted or returned

---@class routemq.pg.tx
local Tx = {}

---Runs one statement in the transaction; `$1..$n` parameters.
---@param sql string
---@param ... any parameters: string, number, boolean, nil, pg.null, pg.bytea(s)
---@return routemq.pg.rows? rows
---@return routemq.pg.error? err
function Tx:query(sql, ...) end

---@class routemq.pg.listener
---@field listening boolean whether LISTEN is in force now
local Listener = {}

---Stops listening and closes the listener's connection.
function Listener:close() end

---@class routemq.pg.pool
local Pool = {}

---Runs one statement (or several, without parameters) on a pooled connection.
---@param sql string
---@param ... any parameters `$1..$n`: string, number, boolean, nil, pg.null, pg.bytea(s)
---@return routemq.pg.rows? rows
---@return routemq.pg.error? err
function Pool:query(sql, ...) end

---Runs fn(tx) between BEGIN and COMMIT; rolls back on an error or a failed statement.
---@param fn fun(tx: routemq.pg.tx): ...
---@return any ... fn's results, or nil and the error of the statement that failed
function Pool:transaction(fn) end

---Calls fn(payload, channel, pid) for each NOTIFY on channel; reconnects after a loss.
---@param channel string
---@param fn fun(payload: string, channel: string, pid: integer)
---@return routemq.pg.listener
function Pool:listen(channel, fn) end

---@return { open: integer, idle: integer, waiting: integer }
function Pool:stats() end

---@class routemq.pg
---@field null lightuserdata SQL NULL (cjson.null)
local pg = {}

---@class routemq.pg.pool_options
---@field url string? postgres://user:pass@host:port/db?sslmode=... or "key=value ..."; nil: PG* variables
---@field size integer? connections per worker (10)
---@field idle_timeout number? seconds an idle connection is kept (60)
---@field connect_timeout number? seconds (5)
---@field acquire_timeout number? seconds a query waits for a free connection (30)
---@field log fun(msg: string)? where LISTEN reconnections and cleanup problems are reported

---A pool for this worker; opens nothing until the first query.
---@param opts routemq.pg.pool_options
---@return routemq.pg.pool
function pg.pool(opts) end

---Marks a string to be sent as binary (bytea).
---@param s string
---@return table
function pg.bytea(s) end

return pg
