/* Fuzz target: ctx:json()'s decoder (json_scan.c, json_decode.c). Whatever a client
 * publishes must be refused with a reason or decoded without a crash or an out-of-bounds
 * read, into exactly one value; and what it accepts, lua-cjson (the decoder it replaced,
 * more lenient) must accept too and decode to the same value. */
#include "json_decode.h"
#include "json_scan.h"

#include <lauxlib.h>
#include <lualib.h>
#include <sanitizer/lsan_interface.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static lua_State *L;

/* same(a, b): deep equality that tells -0 from 0; cjson's decode in the registry. */
static const char *SETUP =
    "local cjson_decode = require('cjson.safe').new().decode\n"
    "local function same(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) == 'number' then return a == b and (a ~= 0 or 1 / a == 1 / b) end\n"
    "  if type(a) ~= 'table' then return a == b end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "return function(text, ours) return same(ours, (cjson_decode(text))) end\n";

/* lua-cjson mallocs its configuration, which only LuaJIT's own heap (not malloc's, so
 * not scanned by LeakSanitizer) points to: made with leak checking off, it is not
 * reported as leaked while the state lives on. */
static void setup(void)
{
    __lsan_disable();
    L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    if (luaL_dostring(L, SETUP) != 0) {
        fprintf(stderr, "fuzz_jsondec: %s (is lua-cjson installed?)\n", lua_tostring(L, -1));
        abort();
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.agrees");
    __lsan_enable();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L) setup();
    lua_settop(L, 0);
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.agrees");
    /* As the worker does: the payload is a Lua string, so a '\0' follows it. */
    lua_pushlstring(L, (const char *)data, size);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    char err[256] = "";
    int top = lua_gettop(L);
    if (json_decode_push(L, s, len, err, sizeof err) != 0) {
        if (!err[0] || lua_gettop(L) != top) __builtin_trap(); /* says why, pushes nothing */
        size_t n;
        if (json_scan(s, len, NULL, 0, &n, NULL, 0) == 0) __builtin_trap(); /* one verdict */
        return 0;
    }
    if (lua_gettop(L) != top + 1) __builtin_trap();
    if (lua_pcall(L, 2, 1, 0) != 0 || !lua_toboolean(L, -1)) __builtin_trap();
    lua_settop(L, 0);
    return 0;
}
