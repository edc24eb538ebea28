-- MySQL/MariaDB from handlers, for spec/e2e/mysql_spec.lua. Each handled
-- message leaves "route<TAB>payload<TAB>pid<TAB>redelivered" in
-- $E2E_OUT/<pid>.rec once its statement has ended.
local router = require("routemq.router")
local mysql = require("routemq.mysql")
local ffi = require("ffi")
ffi.cdef("int getpid(void);")

local db = mysql.pool({ url = os.getenv("DATABASE_URL"), size = tonumber(os.getenv("DB_POOL") or "16") })

local out_dir = os.getenv("E2E_OUT") or "/tmp"
local file
local function record(tag, payload, redelivered)
  if not file then
    file = assert(io.open(out_dir .. "/" .. ffi.C.getpid() .. ".rec", "a"))
    file:setvbuf("no")
  end
  file:write(tag, "\t", payload, "\t", ffi.C.getpid(), "\t", tostring(redelivered), "\n")
end

router.on("my/insert", function(ctx)
  local rows, err = db:query("insert into msgs(payload, pid) values (?, ?)", ctx.payload, ffi.C.getpid())
  if not rows then error(err) end
  assert(rows.affected == 1 and rows.insert_id > 0)
  record("insert", ctx.payload, ctx.redelivered)
end, { qos = 1 })

router.on("my/sleep", function(ctx)
  record("sleep-start", ctx.payload, ctx.redelivered)
  db:query("select sleep(30) /* routemq-spec-sleep */")
  record("sleep-done", ctx.payload, ctx.redelivered)
end, { qos = 1, timeout = 1 })

router.init(function(worker)
  assert(db:query("insert into jobs(kind, worker) values ('init', ?)", worker))
end)
