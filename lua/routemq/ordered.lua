-- Routes with `ordered = true` handle the messages of one topic one after
-- the other, in arrival order. Each such route has a table of the topics
-- held by a message in progress: topic -> the messages waiting behind it
-- (an empty list while it runs alone). Plain functions over that table;
-- `start(index, ctx)` is the dispatcher's way to run a message.
local remove = table.remove

local M = {}

-- topics(routes) -> per route index: an empty table of held topics for an
-- ordered route, false for another.
function M.topics(routes)
  local t = {}
  for i, route in ipairs(routes) do
    t[i] = route.ordered and {} or false
  end
  return t
end

-- enter(held, index, ctx, start): ctx starts at once when no other message
-- holds its topic, else waits behind them (leave starts it). A later
-- attempt (attempt > 1) holds its topic already: it starts at once.
function M.enter(held, index, ctx, start)
  local topic = ctx.topic
  local queue = held[topic]
  if ctx.attempt > 1 then
    if not queue then
      held[topic] = {}
    end
    start(index, ctx)
  elseif queue then
    queue[#queue + 1] = ctx
  else
    held[topic] = {}
    start(index, ctx)
  end
end

-- leave(held, index, topic, start): the message holding `topic` has ended
-- (held: false for a route that is not ordered); the next one waiting
-- behind it starts.
function M.leave(held, index, topic, start)
  local queue = held and held[topic]
  if not queue then
    return
  end
  local nxt = queue[1]
  if nxt then
    remove(queue, 1)
    start(index, nxt)
  else
    held[topic] = nil
  end
end

return M
