-- Dead-letter tests: every message on die/{n} kills its worker (a poison
-- message), so after ROUTEMQ_POISON_ATTEMPTS deaths it goes to the store.
local router = require("routemq.router")
local ffi = require("ffi")

router.on("die/{n}", function()
  ffi.cast("int*", 0)[0] = 1
end, { qos = 1 })
