-- Sensor telemetry and the alerts it raises. The controller, the middleware
-- and their spec are the `routemq new` template's (symbolic links into
-- share/template); this router is the default app's own: its readings are
-- shared by two workers.
local router = require("routemq.router")
local Sensor = require("app.controllers.sensor")

-- Global middleware wraps every route of the app, whichever file declares it.
router.use(require("app.middleware.timing"))

-- Readings are load-balanced over two workers with a shared subscription.
router.on("sensors/{device_id}/data", Sensor.data,
  { shared = true, worker_count = 2, qos = 1 })

router.on("alerts/{device_id}", Sensor.alert, { qos = 1 })
