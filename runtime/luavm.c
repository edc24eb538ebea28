/* LuaJIT state set-up shared by the master (validation) and the workers. */
#include "luavm.h"
#include "lua_core.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int file_exists(const char *dir, const char *rel)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return access(path, R_OK) == 0;
}

/* The directory of the running executable into exe; 0, or -1 with err. */
static int exe_dir(char *exe, size_t len, char *err, size_t errlen)
{
    ssize_t n = readlink("/proc/self/exe", exe, len - 1);
    if (n <= 0) { snprintf(err, errlen, "cannot find own executable"); return -1; }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    return 0;
}

int luavm_find_paths(luavm_paths *p, char *err, size_t errlen)
{
    char exe[PATH_MAX - 32];
    if (exe_dir(exe, sizeof exe, err, errlen)) return -1;
    /* Source tree: build/routemq with lua/ beside build/; installed: bin/routemq. */
    snprintf(p->lua_dir, sizeof p->lua_dir, "%s/../lua", exe);
    snprintf(p->cmod_dir, sizeof p->cmod_dir, "%s/lib", exe);
    if (file_exists(p->lua_dir, "routemq/router.lua")) return 0;
    snprintf(p->lua_dir, sizeof p->lua_dir, "%s/../share/lua/5.1", exe);
    snprintf(p->cmod_dir, sizeof p->cmod_dir, "%s/../lib/lua/5.1", exe);
#ifdef ROUTEMQ_MULTIARCH
    /* The Debian package puts routemq.core in the multiarch directory that
     * Debian's LuaJIT searches (/usr/lib/<triplet>/lua/5.1). */
    if (!file_exists(p->cmod_dir, "routemq/core.so"))
        snprintf(p->cmod_dir, sizeof p->cmod_dir, "%s/../lib/%s/lua/5.1", exe, ROUTEMQ_MULTIARCH);
#endif
    if (file_exists(p->lua_dir, "routemq/router.lua")) return 0;
    snprintf(err, errlen, "cannot find routemq's Lua modules in %s/../lua or %s/../share/lua/5.1", exe, exe);
    return -1;
}

int luavm_find_share(char *dir, size_t len, char *err, size_t errlen)
{
    char exe[PATH_MAX - 32];
    if (exe_dir(exe, sizeof exe, err, errlen)) return -1;
    /* Source tree: build/../share; installed: bin/../share/routemq. */
    snprintf(dir, len, "%s/../share", exe);
    if (file_exists(dir, "template/app/routers")) return 0;
    snprintf(dir, len, "%s/../share/routemq", exe);
    if (file_exists(dir, "template/app/routers")) return 0;
    snprintf(err, errlen, "cannot find routemq's application template in %s/../share or %s/../share/routemq",
             exe, exe);
    return -1;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    /* debug.traceback(msg, 2), fetched without relying on the global being intact. */
    lua_getfield(L, LUA_REGISTRYINDEX, "routemq.traceback");
    lua_pushstring(L, msg);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

lua_State *luavm_new(const luavm_paths *p, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    if (!L) { snprintf(err, errlen, "cannot create a Lua state: out of memory"); return NULL; }
    luaL_openlibs(L);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_setfield(L, LUA_REGISTRYINDEX, "routemq.traceback");
    lua_pop(L, 1);
    /* One handler function for every protected call: pushing a C function
     * allocates a closure each time, on the per-message path. */
    lua_pushcfunction(L, traceback);
    lua_setfield(L, LUA_REGISTRYINDEX, "routemq.msgh");

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", p->lua_dir, p->lua_dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_routemq_core);
    lua_setfield(L, -2, "routemq.core");
    lua_pop(L, 2);
    return L;
}

int luavm_pcall(lua_State *L, int nargs, int nresults, char *err, size_t errlen, char *tb, size_t tblen)
{
    int base = lua_gettop(L) - nargs;
    lua_getfield(L, LUA_REGISTRYINDEX, "routemq.msgh");
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (rc == 0) return 0;
    const char *full = lua_tostring(L, -1);
    if (!full) full = "(no message)";
    const char *cut = strstr(full, "\nstack traceback:");
    size_t mlen = cut ? (size_t)(cut - full) : strlen(full);
    if (err) snprintf(err, errlen, "%.*s", (int)mlen, full);
    if (tb) snprintf(tb, tblen, "%s", cut ? cut + 1 : "");
    lua_pop(L, 1);
    return -1;
}
