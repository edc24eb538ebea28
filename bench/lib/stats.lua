-- min / median / p90 / max of a list of numbers.
local M = {}

function M.summary(values)
  local v = {}
  for _, x in ipairs(values) do
    if type(x) == "number" and x == x then
      v[#v + 1] = x
    end
  end
  table.sort(v)
  local n = #v
  if n == 0 then
    return { n = 0 }
  end
  local median = n % 2 == 1 and v[(n + 1) / 2] or (v[n / 2] + v[n / 2 + 1]) / 2
  -- p90: nearest rank.
  local p90 = v[math.max(1, math.ceil(0.9 * n))]
  return { n = n, min = v[1], median = median, p90 = p90, max = v[n] }
end

return M
