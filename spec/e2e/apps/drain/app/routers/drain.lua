local router = require("routemq.router")
local D = require("app.controllers.drain")

-- Three overlapping routes: the broker sends three copies of sensors/<n>/data, the
-- worker handles the one for the most specific route and skips the others.
router.on("sensors/{n}/data", D.stamp, { qos = 1 })
router.on("sensors/{n}/{m}", D.stamp, { qos = 1 })
router.on("sensors/#", D.stamp, { qos = 1 })
