-- The soak application (spec/soak/soak.lua): one route of each kind under load.
local router = require("routemq.router")
local C = require("app.controllers.soak")

local shared = tonumber(os.getenv("SOAK_SHARED_WORKERS") or "3")

router.on("soak/plain/{n}", C.plain, { qos = 1 })
router.on("soak/shared/{n}", C.plain, { qos = 1, shared = true, worker_count = shared })
router.on("soak/ordered/{t}", C.ordered, { qos = 1, ordered = true })
router.on("soak/fan/{n}", C.fan, { qos = 1, shared = true, worker_count = shared })
router.on("soak/wait/{n}", C.wait, { qos = 1, shared = true, worker_count = shared })
router.on("soak/state/{k}", C.state, { qos = 1 })
