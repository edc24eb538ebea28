-- luacheck .  (Debian package lua-check)
std = "luajit"
max_line_length = 120
exclude_files = { ".routemq/**" }
files["spec"] = { std = "+busted" }
