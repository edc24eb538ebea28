-- Every message must say which tenant it is for (MQTT 5 user property).
return function(ctx, next)
  local tenant = ctx.props.user and ctx.props.user.tenant
  if not tenant then
    ctx.log.warn("rejected: no tenant user property")
    return
  end
  ctx.tenant = tenant
  return next()
end
