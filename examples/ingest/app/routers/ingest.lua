local router = require("routemq.router")
local Ingest = require("app.controllers.ingest")

-- Shared over 2 workers; with WORKER_CONCURRENCY=64 each worker has up to 64
-- readings being inserted at once over its pool of connections.
router.on("sensors/{id}/data", Ingest.store, { qos = 1, shared = true, worker_count = 2, timeout = 5 })
-- Request/reply (MQTT 5 response topic): the latest reading of a sensor.
router.on("sensors/{id}/latest", Ingest.latest, { qos = 1, timeout = 5 })

router.init(Ingest.migrate)                                     -- each worker, before it subscribes
router.every(3600, Ingest.prune, { name = "prune", timeout = 60 }) -- slot 0 only
router.health(Ingest.health, { every = 10, timeout = 5, failures = 3 })
