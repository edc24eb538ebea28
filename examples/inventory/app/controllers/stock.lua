-- Stock per tenant and SKU, in this worker's memory (see README).
local M = {}

local stock = {}

local function key(ctx) return ctx.tenant .. "/" .. ctx.params.sku end

-- inventory/{sku}/get: reply with the current quantity.
function M.get(ctx)
  ctx:reply({ sku = ctx.params.sku, quantity = stock[key(ctx)] or 0 })
end

-- inventory/{sku}/adjust: {"delta": n}; never below zero.
function M.adjust(ctx)
  local body, err = ctx:json()
  if type(body) ~= "table" or type(body.delta) ~= "number" then
    ctx.log.warn("bad adjustment: ", err or "no numeric delta")
    return
  end
  local k = key(ctx)
  local q = math.max(0, (stock[k] or 0) + body.delta)
  stock[k] = q
  ctx:publish("inventory/" .. ctx.params.sku .. "/changed", { quantity = q, tenant = ctx.tenant }, { qos = 1 })
end

return M
