-- Request/reply commands: a client publishes to devices/<id>/commands/<name>
-- with an MQTT 5 response_topic (and usually correlation_data) and gets the
-- result there.
local M = {}

-- Each command takes the ctx and returns the reply object.
local commands = {
  ping = function(ctx)
    return { ok = true, device = ctx.params.device_id }
  end,
  echo = function(ctx)
    return { ok = true, device = ctx.params.device_id, echo = ctx.payload }
  end,
}

-- devices/{device_id}/commands/{command}: run the command, reply with its result.
function M.command(ctx)
  if not ctx.props.response_topic then
    -- Nowhere to answer (e.g. an MQTT 3.1.1 client): say so instead of failing.
    ctx.log.warn("command '", ctx.params.command, "' for ", ctx.params.device_id,
      " has no response_topic; ignored")
    return
  end
  local run = commands[ctx.params.command]
  if not run then
    ctx:reply({ ok = false, error = "unknown command '" .. ctx.params.command .. "'" })
    return
  end
  ctx:reply(run(ctx))
end

return M
