/* The functions the dispatcher calls back into the worker (the io table:
 * io.publish, io.done, io.log...), the values a handler's end hands to C,
 * and MQTT v5 properties to and from Lua tables. Calls from C into Lua
 * (handler coroutines, the cqueues controller) are worker_coro.c. */
#include "worker_internal.h"
#include "log.h"
#include "worker_props.h"

#include <lauxlib.h>
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>

static worker *upworker(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static const char *opt_field_str(lua_State *L, int t, const char *k, size_t *len)
{
    lua_getfield(L, t, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
    lua_pop(L, 1);  /* the string stays alive: the table still holds it */
    return s;
}

/* Builds outgoing properties from the table at index t; 0 ok, -1 with err. */
static int props_from_lua(lua_State *L, int t, mosquitto_property **out, const char **err)
{
    size_t n;
    const char *s;
    int rc = MOSQ_ERR_SUCCESS;
    if ((s = opt_field_str(L, t, "content_type", &n))) rc |= mosquitto_property_add_string(out, MQTT_PROP_CONTENT_TYPE, s);
    if ((s = opt_field_str(L, t, "response_topic", &n))) rc |= mosquitto_property_add_string(out, MQTT_PROP_RESPONSE_TOPIC, s);
    if ((s = opt_field_str(L, t, "correlation_data", &n)))
        rc |= mosquitto_property_add_binary(out, MQTT_PROP_CORRELATION_DATA, s, (uint16_t)n);
    lua_getfield(L, t, "message_expiry");
    if (lua_isnumber(L, -1)) rc |= mosquitto_property_add_int32(out, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, (uint32_t)lua_tonumber(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, t, "user");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_isstring(L, -1)) {
                /* lua_tostring on a number key would confuse lua_next: copy the value only. */
                rc |= mosquitto_property_add_string_pair(out, MQTT_PROP_USER_PROPERTY, lua_tostring(L, -2),
                                                         lua_tostring(L, -1));
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (rc != MOSQ_ERR_SUCCESS) { *err = "invalid MQTT properties"; return -1; }
    return 0;
}

/* io.publish(topic, payload, qos, retain, props, token, nowait) -> true |
 * nil, err | false: over the outgoing bound, wait (io.wait_outgoing) and call
 * again; nowait: the caller cannot wait, publish anyway. token: the record
 * id of the message whose handler publishes (ctx._token), which then is
 * finished only once the broker has this publish. */
static int l_publish(lua_State *L)
{
    worker *w = upworker(L);
    if (w->out.over && w->out.waitable && !lua_toboolean(L, 7)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    size_t plen;
    const char *topic = luaL_checkstring(L, 1);
    const char *payload = luaL_optlstring(L, 2, "", &plen);
    int qos = luaL_optint(L, 3, 0);
    int retain = lua_toboolean(L, 4);
    int rec = lua_isnumber(L, 6) ? (int)lua_tointeger(L, 6) : -1;
    /* A token of a message already finished (a coroutine that outlived its
     * handler) ties the publish to nothing. */
    if (rec < 0 || rec >= (int)w->keep.max_recs || w->recs[rec].done ||
        atomic_load_explicit(&worker_keep_rec(w, rec)->state, memory_order_relaxed) != REC_RUNNING)
        rec = -1;
    mosquitto_property *props = NULL;
    const char *err = NULL;
    if (lua_istable(L, 5) && w->cfg->protocol == 5 && props_from_lua(L, 5, &props, &err)) {
        mosquitto_property_free_all(&props);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    int rc = worker_out_publish(w, rec, topic, payload, plen, qos, retain, props, &err);
    mosquitto_property_free_all(&props);
    if (rc) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* io.outgoing_fd() -> a descriptor readable while outgoing is below the
 * bound (what io.wait_outgoing polls). */
static int l_outgoing_fd(lua_State *L)
{
    lua_pushinteger(L, upworker(L)->out.wake_fd);
    return 1;
}

/* io.log(level, msg, ctx) */
static int l_log(lua_State *L)
{
    const char *level = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    int lvl = log_level_parse(level);
    if (lvl < 0) lvl = LOGL_INFO;
    if (!log_enabled(lvl)) return 0;
    log_fields f = { 0 };
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "topic");
        f.topic = lua_tostring(L, -1);
        lua_getfield(L, 3, "route");
        if (lua_istable(L, -1)) lua_getfield(L, -1, "pattern");
        f.route = lua_tostring(L, -1);
    }
    log_with(lvl, &f, "%s", msg);
    return 0;
}

/* io.done(token, ok, err, traceback, reason, delay): a handler started by
 * d.call ended; a failed run with a delay (seconds) is tried again then,
 * without one it goes to the dead-letter store (worker_handler_end). */
static int l_done(lua_State *L)
{
    worker *w = upworker(L);
    if (!lua_isnumber(L, 1)) return 0;  /* not a message of ours */
    int id = (int)lua_tointeger(L, 1);
    if (id < 0 || id >= (int)w->keep.max_recs || w->recs[id].done ||
        atomic_load_explicit(&worker_keep_rec(w, id)->state, memory_order_relaxed) != REC_RUNNING)
        return 0;
    worker_outcome o = { .ok = lua_toboolean(L, 2) };
    if (!o.ok) {
        lua_settop(L, 6);
        worker_lua_read_failure(L, 3, &o);
    }
    worker_handler_end(w, id, &o);
    return 0;
}

void worker_lua_read_failure(lua_State *L, int i, worker_outcome *o)
{
    o->ok = 0;
    o->err = lua_tostring(L, i) ? lua_tostring(L, i) : "(no message)";
    o->tb = lua_tostring(L, i + 1);
    if (o->tb && !o->tb[0]) o->tb = NULL;
    o->reason = lua_type(L, i + 2) == LUA_TSTRING ? lua_tostring(L, i + 2) : "error";
    o->delay = lua_isnumber(L, i + 3) && lua_tonumber(L, i + 3) >= 0 ? lua_tonumber(L, i + 3) : -1;
}

/* io.resume(route_index, token): a waiting handler's code (route 0: a
 * timer's, init's or the health check's) runs again now. The watchdog
 * times that slice against the route's timeout, and a death now is counted
 * against that message only. */
static int l_resume(lua_State *L)
{
    worker *w = upworker(L);
    int rid = (int)luaL_optinteger(L, 1, 0);
    int id = lua_isnumber(L, 2) ? (int)lua_tointeger(L, 2) : -1;
    atomic_store_explicit(&w->shm->handler_route, rid, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_rec, id, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_start_ns, shm_now_ns(), memory_order_release);
    return 0;
}

/* io.timer(name, "ok"|"error"|"skipped"): one run of a router.every timer,
 * counted for routemq_timer_runs_total. */
static int l_timer(lua_State *L)
{
    worker *w = upworker(L);
    const char *name = luaL_checkstring(L, 1);
    const char *result = luaL_checkstring(L, 2);
    shm_slot *sh = w->shm;
    uint32_t n = atomic_load_explicit(&sh->ntimer_stats, memory_order_acquire);
    shm_timer_stats *e = NULL;
    for (uint32_t i = 0; i < n && i < SHM_TIMERS; i++)
        if (strncmp(sh->timer_stats[i].name, name, SHM_TIMER_NAME - 1) == 0) { e = &sh->timer_stats[i]; break; }
    if (!e) {
        if (n >= SHM_TIMERS) return 0;  /* counted nowhere: more timer names than a slot keeps */
        e = &sh->timer_stats[n];
        snprintf(e->name, sizeof e->name, "%s", name);
        atomic_store_explicit(&sh->ntimer_stats, n + 1, memory_order_release);
    }
    if (strcmp(result, "ok") == 0) atomic_fetch_add_explicit(&e->ok, 1, memory_order_relaxed);
    else if (strcmp(result, "skipped") == 0) atomic_fetch_add_explicit(&e->skipped, 1, memory_order_relaxed);
    else atomic_fetch_add_explicit(&e->errors, 1, memory_order_relaxed);
    return 0;
}

/* io.health(ok, err, failures_in_a_row, limit): one user health check. */
static int l_health(lua_State *L)
{
    worker *w = upworker(L);
    int ok = lua_toboolean(L, 1);
    uint32_t n = (uint32_t)luaL_optinteger(L, 3, 0);
    uint32_t limit = (uint32_t)luaL_optinteger(L, 4, 3);
    atomic_store(&w->shm->unhealthy_runs, ok ? 0 : n);
    if (!ok && n >= limit && !atomic_load(&w->shm->health_failed)) {
        snprintf(w->shm->health_reason, sizeof w->shm->health_reason, "%s",
                 lua_tostring(L, 2) ? lua_tostring(L, 2) : "health check failed");
        atomic_store_explicit(&w->shm->health_failed, 1, memory_order_release);
        log_error("health check failed %u times in a row: %s; asking the master for a replacement", n,
                  w->shm->health_reason);
    }
    return 0;
}

void worker_lua_push_io(worker *w)
{
    static const struct { const char *name; lua_CFunction fn; } fns[] = {
        { "publish", l_publish }, { "log", l_log }, { "done", l_done },
        { "resume", l_resume }, { "health", l_health }, { "timer", l_timer },
        { "outgoing_fd", l_outgoing_fd },
    };
    static const char *const levels[] = { "debug", "info", "warn", "error" };
    lua_State *L = w->lua.L;
    lua_createtable(L, 0, 10);
    lua_pushstring(L, levels[w->cfg->log_level]);
    lua_setfield(L, -2, "level");
    /* The defaults of every route's retry option (ROUTEMQ_RETRY_*). */
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, w->cfg->msg_retry_attempts);
    lua_setfield(L, -2, "attempts");
    lua_pushnumber(L, w->cfg->msg_retry_delay);
    lua_setfield(L, -2, "delay");
    lua_pushnumber(L, w->cfg->msg_retry_backoff);
    lua_setfield(L, -2, "backoff");
    lua_pushnumber(L, w->cfg->msg_retry_max_delay);
    lua_setfield(L, -2, "max_delay");
    lua_setfield(L, -2, "retry");
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        lua_pushlightuserdata(L, w);
        lua_pushcclosure(L, fns[i].fn, 1);
        lua_setfield(L, -2, fns[i].name);
    }
}

/* Pushes ctx.props from packed properties (worker_props.c): a new table
 * when there are any, else the shared read-only empty table. */
void worker_lua_push_props(worker *w, const char *packed, size_t len)
{
    lua_State *L = w->lua.L;
    if (!len) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.empty_ref);
        return;
    }
    lua_createtable(L, 0, 4);
    const char *at = packed, *end = packed + len, *a, *b;
    size_t alen, blen;
    int id;
    while (worker_props_next(&at, end, &id, &a, &alen, &b, &blen)) {
        switch (id) {
        case MQTT_PROP_CONTENT_TYPE: lua_pushlstring(L, a, alen); lua_setfield(L, -2, "content_type"); break;
        case MQTT_PROP_RESPONSE_TOPIC: lua_pushlstring(L, a, alen); lua_setfield(L, -2, "response_topic"); break;
        case MQTT_PROP_CORRELATION_DATA: lua_pushlstring(L, a, alen); lua_setfield(L, -2, "correlation_data"); break;
        case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL: {
            uint32_t u32 = 0;
            if (alen == 4) memcpy(&u32, a, 4);
            lua_pushnumber(L, u32);
            lua_setfield(L, -2, "message_expiry");
            break;
        }
        case MQTT_PROP_USER_PROPERTY:
            lua_getfield(L, -1, "user");
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, -1);
                lua_setfield(L, -3, "user");
            }
            lua_pushlstring(L, a, alen);
            lua_pushlstring(L, b, blen);
            lua_rawset(L, -3);
            lua_pop(L, 1);
            break;
        default:
            break;
        }
    }
}
