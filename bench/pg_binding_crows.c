/* The C counterpart of routemq.pgconn's row conversion, for a measurement only. */
#include <lua.h>
#include <lauxlib.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
static int exec_rows(lua_State *L) {
  PGconn *c = PQconnectdb(luaL_checkstring(L, 1));
  const char *sql = luaL_checkstring(L, 2);
  int n = luaL_checkint(L, 3), total = 0;
  for (int k = 0; k < n; k++) {
    PGresult *res = PQexec(c, sql);
    int nr = PQntuples(res), nf = PQnfields(res);
    lua_createtable(L, nr, 0);
    for (int r = 0; r < nr; r++) {
      lua_createtable(L, 0, nf);
      for (int f = 0; f < nf; f++) {
        lua_pushstring(L, PQfname(res, f));
        if (PQgetisnull(res, r, f)) { lua_pushboolean(L, 0); }
        else {
          Oid t = PQftype(res, f); const char *v = PQgetvalue(res, r, f);
          if (t == 23 || t == 20 || t == 701) lua_pushnumber(L, strtod(v, NULL));
          else if (t == 16) lua_pushboolean(L, v[0] == 't');
          else lua_pushlstring(L, v, PQgetlength(res, r, f));
        }
        lua_rawset(L, -3);
      }
      lua_rawseti(L, -2, r + 1);
    }
    total += nr;
    lua_pop(L, 1);
    PQclear(res);
  }
  PQfinish(c);
  lua_pushinteger(L, total);
  return 1;
}
int luaopen_crows(lua_State *L) { lua_pushcfunction(L, exec_rows); return 1; }
