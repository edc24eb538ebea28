/* The functions the dispatcher calls back into the worker (io.publish and
 * io.log), and MQTT v5 properties to and from Lua tables. */
#include "worker_internal.h"
#include "log.h"

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

/* io.publish(topic, payload, qos, retain, props) -> true | nil, err */
static int l_publish(lua_State *L)
{
    worker *w = upworker(L);
    size_t plen;
    const char *topic = luaL_checkstring(L, 1);
    const char *payload = luaL_optlstring(L, 2, "", &plen);
    int qos = luaL_optint(L, 3, 0);
    int retain = lua_toboolean(L, 4);
    mosquitto_property *props = NULL;
    const char *err = NULL;
    if (lua_istable(L, 5) && w->cfg->protocol == 5 && props_from_lua(L, 5, &props, &err)) {
        mosquitto_property_free_all(&props);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    int rc = mosquitto_publish_v5(w->mosq, NULL, topic, (int)plen, payload, qos, retain, props);
    mosquitto_property_free_all(&props);
    w->published = 1;
    if (rc != MOSQ_ERR_SUCCESS) {
        lua_pushnil(L);
        lua_pushstring(L, mosquitto_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
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

void worker_lua_push_io(worker *w)
{
    lua_State *L = w->L;
    static const char *const levels[] = { "debug", "info", "warn", "error" };
    lua_createtable(L, 0, 3);
    lua_pushstring(L, levels[w->cfg->log_level]);
    lua_setfield(L, -2, "level");
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, l_publish, 1);
    lua_setfield(L, -2, "publish");
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, l_log, 1);
    lua_setfield(L, -2, "log");
}

/* Pushes ctx.props for incoming properties: a new table when the message
 * carries any the user can see, else the shared read-only empty table. */
int worker_lua_push_props(worker *w, const mosquitto_property *props, int *sub_ids, int max_ids, int *nids)
{
    lua_State *L = w->L;
    int made = 0;
    for (const mosquitto_property *p = props; p; p = mosquitto_property_next(p)) {
        int id = mosquitto_property_identifier(p);
        char *s = NULL, *v = NULL;
        void *bin = NULL;
        uint16_t blen = 0;
        uint32_t u32 = 0;
        if (id == MQTT_PROP_SUBSCRIPTION_IDENTIFIER) continue;
        if (!made) { lua_createtable(L, 0, 4); made = 1; }
        switch (id) {
        case MQTT_PROP_CONTENT_TYPE:
            if (mosquitto_property_read_string(p, id, &s, false)) { lua_pushstring(L, s); lua_setfield(L, -2, "content_type"); }
            break;
        case MQTT_PROP_RESPONSE_TOPIC:
            if (mosquitto_property_read_string(p, id, &s, false)) { lua_pushstring(L, s); lua_setfield(L, -2, "response_topic"); }
            break;
        case MQTT_PROP_CORRELATION_DATA:
            if (mosquitto_property_read_binary(p, id, &bin, &blen, false)) {
                lua_pushlstring(L, bin, blen);
                lua_setfield(L, -2, "correlation_data");
            }
            break;
        case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
            if (mosquitto_property_read_int32(p, id, &u32, false)) { lua_pushnumber(L, u32); lua_setfield(L, -2, "message_expiry"); }
            break;
        case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR:
            break;
        case MQTT_PROP_USER_PROPERTY:
            if (mosquitto_property_read_string_pair(p, id, &s, &v, false)) {
                lua_getfield(L, -1, "user");
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    lua_newtable(L);
                    lua_pushvalue(L, -1);
                    lua_setfield(L, -3, "user");
                }
                lua_pushstring(L, v);
                lua_setfield(L, -2, s);
                lua_pop(L, 1);
            }
            break;
        default:
            break;
        }
        free(s);
        free(v);
        free(bin);
    }
    if (!made) lua_rawgeti(L, LUA_REGISTRYINDEX, w->empty_ref);
    (void)sub_ids; (void)max_ids; if (nids) *nids = 0;
    return 0;
}
