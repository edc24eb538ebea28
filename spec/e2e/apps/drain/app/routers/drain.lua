local router = require("routemq.router")
local D = require("app.controllers.drain")

-- Three overlapping routes: the broker sends three copies of sensors/<n>/data, the
-- worker handles the one for the most specific route and skips the others.
-- E2E_QOS: the routes' QoS (1 unless set).
local qos = tonumber(os.getenv("E2E_QOS")) or 1
router.on("sensors/{n}/data", D.stamp, { qos = qos })
router.on("sensors/{n}/{m}", D.stamp, { qos = qos })
router.on("sensors/#", D.stamp, { qos = qos })
