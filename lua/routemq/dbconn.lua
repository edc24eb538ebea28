-- What the FFI database connections (routemq.pgconn, routemq.mysqlconn)
-- share: their log and a host name lookup that does not block the worker.
local M = {}

-- log(level, msg): the worker's log line when running in a worker, else stderr.
function M.log(level, msg)
  local w = package.loaded["routemq.worker"]
  local f = type(w) == "table" and w.log
  if f then
    pcall(f, level, msg)
  else
    io.stderr:write(msg, "\n")
  end
end

-- resolve(host, timeout) -> address | nil, err: host itself when it is an
-- address, else its first IPv4 or IPv6 address through cqueues' resolver
-- (the client libraries' own getaddrinfo blocks).
function M.resolve(host, timeout)
  if host:match("^%d+%.%d+%.%d+%.%d+$") or host:find(":", 1, true) then
    return host
  end
  local dns = require("cqueues.dns")
  local record = require("cqueues.dns.record")
  for _, rtype in ipairs({ "A", "AAAA" }) do
    local packet = dns.query(host, rtype, "IN", timeout)
    if packet then
      local rr = packet:grep({ section = "answer", type = record[rtype] })()
      if rr then
        return rr:addr()
      end
    end
  end
  return nil, "cannot resolve host name \"" .. host .. "\""
end

return M
