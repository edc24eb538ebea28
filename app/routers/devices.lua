-- Commands sent to a device, answered with MQTT 5 request/reply.
local router = require("routemq.router")
local Device = require("app.controllers.device")

router.group({ prefix = "devices/{device_id}" }, function(r)
  -- devices/{device_id}/commands/{command}
  r.on("commands/{command}", Device.command, { qos = 1 })
end)
