/* ctx:json()'s decoder: a JSON text into Lua values, the same values lua-cjson gives
 * (objects and arrays as tables, null as the light userdata cjson.null, numbers as
 * Lua numbers), from a strict checker (json_scan.h) and tables made at their final size. */
#ifndef ROUTEMQ_JSON_DECODE_H
#define ROUTEMQ_JSON_DECODE_H

#include <lua.h>
#include <stddef.h>

/* Pushes the value of the JSON text s[0..len); s[len] must be readable and '\0' (as in
 * every Lua string). 0, or -1 with "<problem> at character <n>" in err and nothing
 * pushed. Raises only what Lua raises when memory runs out. */
int json_decode_push(lua_State *L, const char *s, size_t len, char *err, size_t errlen);

#endif
