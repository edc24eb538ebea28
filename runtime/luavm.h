/* LuaJIT states for the runtime: paths, the routemq.core preload and calls
 * protected by a traceback handler. */
#ifndef ROUTEMQ_LUAVM_H
#define ROUTEMQ_LUAVM_H

#include <limits.h>
#include <stddef.h>
#include <lua.h>

typedef struct luavm_paths {
    char lua_dir[PATH_MAX];   /* holds routemq/router.lua */
    char cmod_dir[PATH_MAX];  /* holds routemq/core.so, for busted run by `routemq test` */
} luavm_paths;

/* Finds routemq's Lua modules from the executable's own location (source tree
 * build/ or an installed prefix). 0 ok; -1 with the places searched in err. */
int luavm_find_paths(luavm_paths *p, char *err, size_t errlen);
/* Finds routemq's data directory (template/ for `routemq new`, types/ for
 * editors) from the executable's location. 0 ok; -1 with err. */
int luavm_find_share(char *dir, size_t len, char *err, size_t errlen);
/* A new state with the standard libraries, package.path set for routemq's
 * modules and routemq.core preloaded. NULL with err on failure. */
lua_State *luavm_new(const luavm_paths *p, char *err, size_t errlen);
/* lua_pcall with a traceback handler. On error returns -1, leaves nothing on
 * the stack and writes the message to err and, when tb is not NULL, the
 * traceback to tb. */
int luavm_pcall(lua_State *L, int nargs, int nresults, char *err, size_t errlen, char *tb, size_t tblen);

#endif
