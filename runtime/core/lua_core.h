/* The routemq.core Lua module: pattern compiler, topic matcher and small OS helpers. */
#ifndef ROUTEMQ_LUA_CORE_H
#define ROUTEMQ_LUA_CORE_H

#include <lua.h>

/* lua_CFunction opener: pushes the routemq.core module table and returns 1. */
int luaopen_routemq_core(lua_State *L);

#endif
