-- luacheck lua app spec
std = "luajit"
max_line_length = 120

files["spec"] = { std = "+busted" }
files["app/spec"] = { std = "+busted" }
files["examples/*/spec"] = { std = "+busted" }

-- Fixtures that are broken on purpose: the specs check how they fail.
exclude_files = {
  "spec/fixtures/broken/app/routers/*.lua",
}
