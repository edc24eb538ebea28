/* Makes routemq.core loadable as core.so. The opener lives in the static corelib (the
 * runtime executable links it too); a static lib member is only linked when referenced,
 * so this reference pulls lua_core.o in, and its symbols keep default visibility. */
#include "lua_core.h"

int (*const routemq_core_module_opener)(lua_State *L) = luaopen_routemq_core;
