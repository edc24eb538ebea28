---@meta routemq.mysql
-- LuaLS definitions of require("routemq.mysql"): MySQL and MariaDB without
-- blocking the worker (docs/guide.md, "Databases"). Editors only.

---@class routemq.mysql.error
---@field errno integer? the server's or the client library's error number, e.g. 1062
---@field sqlstate string?
---@field message string

---@class routemq.mysql.rows: table<string, any>[]
---@field affected integer
---@field insert_id integer the AUTO_INCREMENT value of an insert

---@class routemq.mysql.tx
local Tx = {}

---@param sql string
---@param ... any `?` parameters: string, number, boolean, nil, mysql.null
---@return routemq.mysql.rows? rows
---@return routemq.mysql.error? err
function Tx:query(sql, ...) end

---@class routemq.mysql.pool
local Pool = {}

---@param sql string
---@param ... any `?` parameters: string, number, boolean, nil, mysql.null
---@return routemq.mysql.rows? rows
---@return routemq.mysql.error? err
function Pool:query(sql, ...) end

---@param fn fun(tx: routemq.mysql.tx): ...
---@return any ...
function Pool:transaction(fn) end

---@return { open: integer, idle: integer, waiting: integer }
function Pool:stats() end

---@class routemq.mysql
---@field null lightuserdata SQL NULL (cjson.null)
local mysql = {}

---A pool for this worker; opens nothing until the first query.
---@param opts { url: string, size: integer?, idle_timeout: number?, connect_timeout: number?, acquire_timeout: number?, log: fun(msg: string)? }
---@return routemq.mysql.pool
function mysql.pool(opts) end

return mysql
