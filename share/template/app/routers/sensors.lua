-- Routes: every file in app/routers is loaded, in name order, and tells
-- routemq which topics to subscribe to and which function handles each.
local router = require("routemq.router")
local Sensor = require("app.controllers.sensor")

-- Global middleware wraps every route of the application.
router.use(require("app.middleware.timing"))

-- {device_id} matches one topic level and arrives as ctx.params.device_id.
-- shared = true with worker_count = N would spread this route over N workers.
router.on("sensors/{device_id}/data", Sensor.data, { qos = 1 })

-- The alerts Sensor.data raises come back here.
router.on("alerts/{device_id}", Sensor.alert, { qos = 1 })
