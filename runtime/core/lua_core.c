/* routemq.core: Lua bindings for the pattern compiler and matcher, ctx:json()'s decoder,
 * plus listdir/monotime.
 * Only LuaJIT's 5.1 API is used, so the same code serves core.so and the runtime's preload. */
#include "json_decode.h"
#include "lua_core.h"
#include "topic_pattern.h"
#include "topic_trie.h"

#include <lauxlib.h>
#include <lua.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CORE_VERSION "0.1.0"
#define MATCHER_MT "routemq.core.matcher"
#define PATTERN_MT "routemq.core.pattern"
#define DIRLIST_MT "routemq.core.dirlist"
#define ERRLEN 256
#define MAX_ROUTE_ID 9007199254740992.0 /* 2^53: larger ids would not survive a Lua number */

/* The routes' param names live in the matcher's environment table (env[index + 1] = names),
 * so they are Lua strings made once at add time instead of on every match. */
typedef struct {
    topic_trie *trie;
    lua_Integer *ids;  /* caller's id per internal route index */
    size_t n, cap;
} core_matcher;

/* C memory held across calls that may raise (out of memory) is owned by a userdata so its
 * __gc releases it whatever happens. */
typedef struct {
    topic_pattern p;
} pattern_box;

typedef struct {
    char **names;
    size_t n, cap;
} dirlist;

static pattern_box *pattern_box_new(lua_State *L)
{
    pattern_box *b = lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, PATTERN_MT);
    lua_setmetatable(L, -2);
    return b;
}

static int pattern_box_gc(lua_State *L)
{
    pattern_box *b = lua_touserdata(L, 1);
    topic_pattern_free(&b->p);
    return 0;
}

/* Push names[i] = param name or false for a raw wildcard. */
static void push_names(lua_State *L, const topic_pattern *p)
{
    lua_createtable(L, p->nwild, 0);
    for (int i = 0; i < p->nwild; i++) {
        if (p->names[i] != NULL)
            lua_pushstring(L, p->names[i]);
        else
            lua_pushboolean(L, 0);
        lua_rawseti(L, -2, i + 1);
    }
}

static int push_fail(lua_State *L, const char *reason)
{
    lua_pushnil(L);
    lua_pushstring(L, reason);
    return 2;
}

/* core.compile(pattern) -> { filter = ..., names = { ... } } | nil, reason */
static int core_compile(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[ERRLEN];
    pattern_box *b = pattern_box_new(L);
    if (topic_pattern_compile(s, len, &b->p, err, sizeof err) != 0)
        return push_fail(L, err);
    lua_createtable(L, 0, 2);
    lua_pushlstring(L, b->p.filter, b->p.filter_len);
    lua_setfield(L, -2, "filter");
    push_names(L, &b->p);
    lua_setfield(L, -2, "names");
    topic_pattern_free(&b->p);
    return 1;
}

/* core.validate_topic(topic) -> true | nil, reason */
static int core_validate_topic(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[ERRLEN];
    if (topic_validate_publish(s, len, err, sizeof err) != 0)
        return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

static core_matcher *check_matcher(lua_State *L)
{
    core_matcher *m = luaL_checkudata(L, 1, MATCHER_MT);
    if (m->trie == NULL)
        luaL_error(L, "matcher already freed");
    return m;
}

/* core.matcher() -> matcher userdata */
static int core_new_matcher(lua_State *L)
{
    core_matcher *m = lua_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    luaL_getmetatable(L, MATCHER_MT);
    lua_setmetatable(L, -2);
    lua_newtable(L);
    lua_setfenv(L, -2);
    m->trie = topic_trie_new();
    if (m->trie == NULL)
        return luaL_error(L, "out of memory");
    return 1;
}

static lua_Integer check_route_id(lua_State *L, int arg)
{
    lua_Number num = luaL_checknumber(L, arg);
    if (!(num >= 1 && num <= MAX_ROUTE_ID) || (lua_Number)(lua_Integer)num != num)
        luaL_argerror(L, arg, "positive integer expected");
    return (lua_Integer)num;
}

/* m:add(pattern, id) -> true | nil, reason */
static int matcher_add(lua_State *L)
{
    core_matcher *m = check_matcher(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    lua_Integer id = check_route_id(L, 3);
    char err[ERRLEN];
    pattern_box *b = pattern_box_new(L);
    if (topic_pattern_compile(s, len, &b->p, err, sizeof err) != 0)
        return push_fail(L, err);
    int existing = topic_trie_find(m->trie, b->p.filter, b->p.filter_len);
    if (existing >= 0) {
        snprintf(err, sizeof err, "duplicate of route %lld", (long long)m->ids[existing]);
        return push_fail(L, err);
    }
    if (m->n >= 0x7FFFFFFF)
        return luaL_error(L, "too many routes");
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        lua_Integer *ids = realloc(m->ids, cap * sizeof *ids);
        if (ids == NULL)
            return luaL_error(L, "out of memory");
        m->ids = ids;
        m->cap = cap;
    }
    /* Everything that may raise happens before the trie changes, so a failure leaves both
     * the trie and the names table consistent. */
    lua_getfenv(L, 1);
    push_names(L, &b->p);
    lua_rawseti(L, -2, (int)m->n + 1);
    if (topic_trie_add(m->trie, b->p.filter, b->p.filter_len, (int)m->n, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_rawseti(L, -2, (int)m->n + 1);
        return push_fail(L, err);
    }
    m->ids[m->n++] = id;
    topic_pattern_free(&b->p);
    lua_pushboolean(L, 1);
    return 1;
}

/* m:match(topic) -> id, params | nil */
static int matcher_match(lua_State *L)
{
    core_matcher *m = check_matcher(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    topic_span caps[TOPIC_MAX_WILDCARDS];
    int ncaps;
    int r = topic_trie_match(m->trie, s, len, caps, TOPIC_MAX_WILDCARDS, &ncaps);
    if (r == TOPIC_NOMEM)
        return luaL_error(L, "out of memory");
    if (r < 0) {
        lua_pushnil(L);
        return 1;
    }
    if (ncaps > TOPIC_MAX_WILDCARDS)
        ncaps = TOPIC_MAX_WILDCARDS;
    lua_pushinteger(L, m->ids[r]);
    lua_getfenv(L, 1);
    lua_rawgeti(L, -1, r + 1);
    int names = lua_gettop(L);
    lua_createtable(L, 0, ncaps);
    for (int i = 0; i < ncaps; i++) {
        lua_rawgeti(L, names, i + 1);
        if (lua_type(L, -1) == LUA_TSTRING && caps[i].ptr != NULL) {
            lua_pushlstring(L, caps[i].ptr, caps[i].len);
            lua_rawset(L, -3);
        } else {
            lua_pop(L, 1);
        }
    }
    /* Stack: id, env, names, params -> id, params. */
    lua_replace(L, names - 1);
    lua_settop(L, names - 1);
    return 2;
}

static int matcher_gc(lua_State *L)
{
    core_matcher *m = lua_touserdata(L, 1);
    topic_trie_free(m->trie);
    free(m->ids);
    memset(m, 0, sizeof *m);
    return 0;
}

static int matcher_tostring(lua_State *L)
{
    core_matcher *m = luaL_checkudata(L, 1, MATCHER_MT);
    lua_pushfstring(L, "routemq.core.matcher (%d routes)", (int)m->n);
    return 1;
}

static int dirlist_gc(lua_State *L)
{
    dirlist *dl = lua_touserdata(L, 1);
    for (size_t i = 0; i < dl->n; i++)
        free(dl->names[i]);
    free(dl->names);
    memset(dl, 0, sizeof *dl);
    return 0;
}

static int dirlist_push(dirlist *dl, const char *name)
{
    if (dl->n == dl->cap) {
        size_t cap = dl->cap ? dl->cap * 2 : 32;
        char **names = realloc(dl->names, cap * sizeof *names);
        if (names == NULL)
            return -1;
        dl->names = names;
        dl->cap = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return -1;
    dl->names[dl->n++] = copy;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: byte order, independent of the locale. */
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* core.listdir(path) -> sorted names | nil, "cannot open <path>: <strerror>" */
static int core_listdir(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    dirlist *dl = lua_newuserdata(L, sizeof *dl);
    memset(dl, 0, sizeof *dl);
    luaL_getmetatable(L, DIRLIST_MT);
    lua_setmetatable(L, -2);
    if (strlen(path) != len) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot open %s: %s", path, strerror(EINVAL));
        return 2;
    }
    DIR *d = opendir(path);
    if (d == NULL) {
        int e = errno;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot open %s: %s", path, strerror(e));
        return 2;
    }
    /* No Lua call may raise while d is open, or the handle would leak. */
    int failed = 0;
    for (;;) {
        errno = 0;
        struct dirent *ent = readdir(d);
        if (ent == NULL) {
            failed = errno;
            break;
        }
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
            continue;
        if (dirlist_push(dl, ent->d_name) != 0) {
            failed = ENOMEM;
            break;
        }
    }
    closedir(d);
    if (failed != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read %s: %s", path, strerror(failed));
        return 2;
    }
    qsort(dl->names, dl->n, sizeof *dl->names, cmp_names);
    lua_createtable(L, (int)dl->n, 0);
    for (size_t i = 0; i < dl->n; i++) {
        lua_pushstring(L, dl->names[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

/* core.monotime() -> seconds (CLOCK_MONOTONIC) */
static int core_monotime(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* core.utf8_valid(s) -> true when s is well-formed UTF-8 (NUL bytes allowed) */
static int core_utf8_valid(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, topic_utf8_valid(s, len));
    return 1;
}

/* core.json_decode(s) -> value | nil, err: ctx:json()'s strict decoder (json_decode.h).
 * Bad input of any type is an error result, never a raised error. */
static int core_json_decode(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING) {
        lua_pushnil(L);
        lua_pushfstring(L, "expected a string to decode, got %s", luaL_typename(L, 1));
        return 2;
    }
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    char err[ERRLEN];
    if (json_decode_push(L, s, len, err, sizeof err) == 0) return 1;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static const luaL_Reg matcher_methods[] = {
    { "add", matcher_add },
    { "match", matcher_match },
    { NULL, NULL },
};

static const luaL_Reg core_funcs[] = {
    { "compile", core_compile },
    { "matcher", core_new_matcher },
    { "validate_topic", core_validate_topic },
    { "listdir", core_listdir },
    { "monotime", core_monotime },
    { "utf8_valid", core_utf8_valid },
    { "json_decode", core_json_decode },
    { NULL, NULL },
};

/* A metatable with only __gc, for the scratch userdata that own C memory. */
static void new_gc_metatable(lua_State *L, const char *name, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

int luaopen_routemq_core(lua_State *L)
{
    new_gc_metatable(L, PATTERN_MT, pattern_box_gc);
    new_gc_metatable(L, DIRLIST_MT, dirlist_gc);

    luaL_newmetatable(L, MATCHER_MT);
    lua_pushcfunction(L, matcher_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, matcher_tostring);
    lua_setfield(L, -2, "__tostring");
    /* Hiding the metatable keeps Lua code from calling __gc twice or swapping methods. */
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_createtable(L, 0, 2);
    luaL_register(L, NULL, matcher_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_createtable(L, 0, 8);
    luaL_register(L, NULL, core_funcs);
    lua_pushliteral(L, CORE_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
