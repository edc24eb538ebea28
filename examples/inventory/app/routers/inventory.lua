local router = require("routemq.router")
local Stock = require("app.controllers.stock")

router.use(require("app.middleware.tenant"))

router.group({ prefix = "inventory/{sku}" }, function(r)
  r.on("get", Stock.get, { qos = 1 })
  r.on("adjust", Stock.adjust, { shared = true, worker_count = 4, qos = 1, timeout = 5 })
end)
