-- The benchmark handler: decodes the JSON payload (ctx:json()) and reads one
-- field, its sequence number "seq". What the driver needs to know is kept in
-- a small file mapped into memory, one per worker process
-- ($BENCH_OUT/w-<pid>.bin), so recording costs a few memory stores per
-- message and no system call:
--   doubles [0] count, [1] realtime µs of the first message, [2] of the
--   latest one, [3] pid, [4] seq map size, [5] messages whose seq is
--   outside the map, [6] 1 when the "wait" handler could not wait;
--   then BENCH_SEQMAP bytes: byte s is 1 once seq s was handled (lost and
--   duplicated messages are found from the union of all workers' maps).
-- Without BENCH_OUT the handler only decodes and counts.
local ffi = require("ffi")

pcall(ffi.cdef, [[
  typedef struct { long tv_sec; long tv_nsec; } routemq_bench_timespec;
  int clock_gettime(int clk, routemq_bench_timespec *ts);
  int open(const char *path, int flags, int mode);
  int ftruncate(int fd, long length);
  void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
  int close(int fd);
  int getpid(void);
]])

local C = ffi.C
local CLOCK_REALTIME = 0
local O_RDWR, O_CREAT, O_TRUNC = 2, 64, 512
local PROT_RW, MAP_SHARED = 3, 1
local HEADER = 64 -- bytes: 8 doubles

local out_dir = os.getenv("BENCH_OUT")
local map_size = tonumber(os.getenv("BENCH_SEQMAP") or "0") or 0

local ts = ffi.new("routemq_bench_timespec")
local rec, seqmap -- double *, uint8_t *; nil until the first message
local count = 0

local function open_record()
  local pid = C.getpid()
  local path = out_dir .. "/w-" .. pid .. ".bin"
  local size = HEADER + map_size
  local fd = C.open(path, O_RDWR + O_CREAT + O_TRUNC, 420)
  if fd < 0 then
    out_dir = nil
    error("bench: cannot create " .. path)
  end
  C.ftruncate(fd, size)
  local p = C.mmap(nil, size, PROT_RW, MAP_SHARED, fd, 0)
  C.close(fd)
  if ffi.cast("intptr_t", p) == -1 then
    out_dir = nil
    error("bench: cannot map " .. path)
  end
  rec = ffi.cast("double *", p)
  seqmap = ffi.cast("uint8_t *", p) + HEADER
  rec[3] = pid
  rec[4] = map_size
end

local function stamp()
  if not rec then
    open_record()
  end
  C.clock_gettime(CLOCK_REALTIME, ts)
  local now_us = tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) * 1e-3
  if count == 1 then
    rec[1] = now_us
  end
  rec[2] = now_us
  rec[0] = count
end

local Bench = {}

-- The benchmark's handler: ctx:json(), read "seq", record.
function Bench.data(ctx)
  local doc = ctx:json()
  local seq = doc and doc.seq
  count = count + 1
  if not out_dir then
    return
  end
  if type(seq) == "number" and seq >= 0 and seq < map_size then
    if not rec then
      open_record()
    end
    seqmap[seq] = 1
  elseif rec then
    rec[5] = rec[5] + 1
  end
  stamp()
end

-- request/reply: answer on the request's response topic at the route's QoS.
function Bench.reply(ctx)
  ctx:reply(ctx.payload, { qos = ctx.qos })
end

-- BENCH_HANDLER=wait: the handler waits BENCH_WAIT_MS (default 10) with
-- cqueues.sleep, then does what Bench.data does. That only means something
-- when the runtime runs handlers on a cqueues controller (WORKER_CONCURRENCY);
-- elsewhere cqueues.sleep would block the whole worker, so the handler does
-- not wait and marks its record (double [6] = 1): the driver then reports the
-- scenario as not available in this build.
-- cqueues is loaded on the first message only, so that the other scenarios'
-- memory figures do not include it.
local wait_s = (tonumber(os.getenv("BENCH_WAIT_MS") or "") or 10) / 1000
local data = Bench.data
local cqueues

local function wait_then_data(ctx)
  if cqueues == nil then
    local ok, mod = pcall(require, "cqueues")
    cqueues = ok and mod or false
  end
  if cqueues and cqueues.running() then
    cqueues.sleep(wait_s)
  elseif out_dir then
    if not rec then
      open_record()
    end
    rec[6] = 1
  end
  return data(ctx)
end

-- Variants for bench/profile.sh (BENCH_HANDLER): what the runtime costs
-- without the handler's work, and what recording costs.
local json_data = Bench.data
local variants = {
  json = json_data,
  noop = function() end,
  count = function()
    count = count + 1
    if out_dir then
      stamp()
    end
  end,
  wait = wait_then_data,
  -- What a handler that publishes costs: one QoS 1 message per message, the
  -- message finished once the broker has acknowledged it.
  publish = function(ctx)
    json_data(ctx)
    ctx:publish("bench/echo", ctx.payload, { qos = 1 })
  end,
  json_only = function(ctx)
    local doc = ctx:json()
    local _ = doc and doc.seq
  end,
}
-- BENCH_HANDLER=pg | luasql: each message inserts its seq into table
-- bench_rows of PostgreSQL BENCH_DATABASE_URL, then does what Bench.data
-- does: through routemq.pg (a pool of BENCH_PG_POOL connections, default 16,
-- waiting through cqueues) or through the blocking lua-sql-postgres (one
-- connection, the worker stopped for each insert).
local pg_db, sql_conn
variants.pg = function(ctx)
  if not pg_db then
    pg_db = require("routemq.pg").pool({ url = os.getenv("BENCH_DATABASE_URL"),
      size = tonumber(os.getenv("BENCH_PG_POOL") or "") or 16 })
  end
  local doc = ctx:json()
  assert(pg_db:query("insert into bench_rows(seq) values ($1)", doc.seq))
  return json_data(ctx)
end
variants.luasql = function(ctx)
  if not sql_conn then
    local env = require("luasql.postgres").postgres()
    local url = os.getenv("BENCH_DATABASE_URL")
    sql_conn = assert(env:connect(url))
  end
  local doc = ctx:json()
  assert(sql_conn:execute("insert into bench_rows(seq) values (" .. math.floor(tonumber(doc.seq)) .. ")"))
  return json_data(ctx)
end
Bench.data = variants[os.getenv("BENCH_HANDLER") or "json"] or Bench.data

return Bench
