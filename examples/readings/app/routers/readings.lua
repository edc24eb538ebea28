local router = require("routemq.router")
local Readings = require("app.controllers.readings")

-- Shared over 2 workers; each may have WORKER_CONCURRENCY readings in flight.
-- ordered: the readings of one sensor reach the API in the order they came.
router.on("readings/{sensor}", Readings.store,
  { qos = 1, shared = true, worker_count = 2, ordered = true, timeout = 10 })
