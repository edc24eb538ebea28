local router = require("routemq.router")
local F = require("app.controllers.fanout")

local workers = tonumber(os.getenv("E2E_SHARED_WORKERS") or "1")

router.on("fan/{n}", F.fan, { shared = true, worker_count = workers, qos = 1 })
router.on("slowfan/{n}", F.slow_fan, { qos = 1, timeout = 30 })
router.on("big/{n}", F.too_big, { qos = 1 })
router.on("huge/{n}", F.crash_once, { qos = 1 })
