-- libpq's functions as LuaJIT FFI declarations, and the library loaded once
-- (Debian libpq5): what routemq.pgconn and routemq.pgvalue call.
local ffi = require("ffi")

ffi.cdef [[
  typedef struct pg_conn PGconn;
  typedef struct pg_result PGresult;
  typedef struct pgNotify { char *relname; int be_pid; char *extra; struct pgNotify *next; } PGnotify;
  typedef struct { char *keyword; char *envvar; char *compiled; char *val; char *label; char *dispchar;
                   int dispsize; } PQconninfoOption;
  typedef void (*PQnoticeProcessor)(void *arg, const char *message);
  PQnoticeProcessor PQsetNoticeProcessor(PGconn *conn, PQnoticeProcessor proc, void *arg);
  PQconninfoOption *PQconninfoParse(const char *conninfo, char **errmsg);
  void PQconninfoFree(PQconninfoOption *connOptions);
  PGconn *PQconnectStartParams(const char *const *keywords, const char *const *values, int expand_dbname);
  int PQconnectPoll(PGconn *conn);
  int PQstatus(const PGconn *conn);
  int PQsocket(const PGconn *conn);
  char *PQerrorMessage(const PGconn *conn);
  void PQfinish(PGconn *conn);
  int PQsetnonblocking(PGconn *conn, int arg);
  int PQsendQuery(PGconn *conn, const char *query);
  int PQsendQueryParams(PGconn *conn, const char *command, int nParams, const unsigned int *paramTypes,
                        const char *const *paramValues, const int *paramLengths, const int *paramFormats,
                        int resultFormat);
  int PQsendPrepare(PGconn *conn, const char *stmtName, const char *query, int nParams,
                    const unsigned int *paramTypes);
  int PQsendQueryPrepared(PGconn *conn, const char *stmtName, int nParams, const char *const *paramValues,
                          const int *paramLengths, const int *paramFormats, int resultFormat);
  int PQflush(PGconn *conn);
  int PQconsumeInput(PGconn *conn);
  int PQisBusy(PGconn *conn);
  PGresult *PQgetResult(PGconn *conn);
  int PQresultStatus(const PGresult *res);
  char *PQresultErrorField(const PGresult *res, int fieldcode);
  int PQntuples(const PGresult *res);
  int PQnfields(const PGresult *res);
  char *PQfname(const PGresult *res, int field_num);
  unsigned int PQftype(const PGresult *res, int field_num);
  char *PQgetvalue(const PGresult *res, int tup_num, int field_num);
  int PQgetlength(const PGresult *res, int tup_num, int field_num);
  int PQgetisnull(const PGresult *res, int tup_num, int field_num);
  char *PQcmdTuples(PGresult *res);
  void PQclear(PGresult *res);
  int PQtransactionStatus(const PGconn *conn);
  int PQbackendPID(const PGconn *conn);
  void *PQgetCancel(PGconn *conn);
  void PQfreeCancel(void *cancel);
  PGnotify *PQnotifies(PGconn *conn);
  void PQfreemem(void *ptr);
  unsigned char *PQunescapeBytea(const unsigned char *strtext, size_t *retbuflength);
  char *PQescapeIdentifier(PGconn *conn, const char *str, size_t len);
  int getpid(void);
  /* libpq-int.h's struct pg_cancel, stable since 9.x: SockAddr then be_pid, be_key. */
  struct routemq_pg_cancel { struct { uint64_t addr[16]; uint32_t salen; } raddr; int be_pid; int be_key; };
]]

local ok_load, pq = pcall(ffi.load, "libpq.so.5")
if not ok_load then
  ok_load, pq = pcall(ffi.load, "pq")
end
if not ok_load then
  error("routemq.pg: cannot load libpq (install the Debian package libpq5): " .. tostring(pq), 0)
end

-- Declared apart: other modules may have declared them already.
for _, decl in ipairs({ "int dup(int fd);", "int close(int fd);", "double strtod(const char *s, char **end);",
  "struct pollfd { int fd; short events; short revents; };",
  "int poll(struct pollfd *fds, unsigned long n, int ms);" }) do
  pcall(ffi.cdef, decl)
end


return pq
