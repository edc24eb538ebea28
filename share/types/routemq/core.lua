---@meta routemq.core
-- LuaLS definitions of the public part of require("routemq.core"), the C
-- module shared with the runtime. Editors only.

---@class routemq.core
local core = {}

---Seconds from a monotonic clock (with fractions), for measuring durations.
---@return number
function core.monotime() end

---Checks a topic name for publishing.
---@param topic string
---@return boolean ok
---@return string? reason why it is not valid
function core.validate_topic(topic) end

return core
