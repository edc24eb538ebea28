/* Loading the application and reading its route table into C. */
#include "app.h"
#include "log.h"
#include "luavm.h"
#include "strbuf.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

static char *field_str(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *s = lua_tostring(L, -1);
    char *r = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return r;
}

static double field_num(lua_State *L, int t, const char *k, double def)
{
    lua_getfield(L, t, k);
    double r = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : def;
    lua_pop(L, 1);
    return r;
}

static int field_bool(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    int r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

static int read_route(lua_State *L, int t, route_info *r)
{
    r->index = (int)field_num(L, t, "index", 0);
    r->pattern = field_str(L, t, "pattern");
    r->filter = field_str(L, t, "filter");
    r->sub = field_str(L, t, "sub");
    r->group = field_str(L, t, "group");
    r->name = field_str(L, t, "name");
    r->source = field_str(L, t, "source");
    r->qos = (int)field_num(L, t, "qos", 0);
    r->shared = field_bool(L, t, "shared");
    r->worker_count = (int)field_num(L, t, "worker_count", 1);
    r->timeout = field_num(L, t, "timeout", 30);
    r->ordered = field_bool(L, t, "ordered");
    char *retained = field_str(L, t, "retained");
    r->retain_handling = !retained || !strcmp(retained, "new") ? 1 : !strcmp(retained, "always") ? 0 : 2;
    free(retained);
    lua_getfield(L, t, "names");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    r->names = calloc(n + 1, sizeof *r->names);
    r->nwild = n;
    for (int i = 0; r->names && i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        if (lua_type(L, -1) == LUA_TSTRING) r->names[i] = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!r->pattern || !r->filter || !r->sub || !r->group || !r->name || !r->names) return -1;
    return 0;
}

void app_note_protocol(const app_def *a, int protocol)
{
    if (protocol == 5) return;
    strbuf b;
    sb_init(&b);
    int n = 0;
    for (int i = 0; i < a->nroutes; i++) {
        const route_info *r = &a->routes[i];
        /* Shared subscriptions get no retained messages at all. */
        if (r->shared || r->retain_handling == 0) continue;
        sb_printf(&b, "%s'%s' (\"%s\")", n++ ? ", " : "", r->pattern, r->retain_handling == 1 ? "new" : "none");
    }
    if (n)
        log_warn("MQTT 3.1.1 has no retain handling: route%s %s get%s the broker's retained messages at every subscribe "
                 "(each worker start, reload and reconnect), not as %s retained option says; use MQTT_PROTOCOL=5, or "
                 "retained = \"always\"", n == 1 ? "" : "s", b.oom || !b.p ? "?" : b.p, n == 1 ? "s" : "",
                 n == 1 ? "its" : "their");
    sb_free(&b);
}

int app_load(lua_State *L, const config *cfg, app_def *a, char *err, size_t errlen, char *tb, size_t tblen)
{
    memset(a, 0, sizeof *a);
    a->app_ref = LUA_NOREF;
    lua_getglobal(L, "require");
    lua_pushstring(L, "routemq.app");
    if (luavm_pcall(L, 1, 1, err, errlen, tb, tblen)) return -1;
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_pushstring(L, cfg->app_dir);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, cfg->group_name);
    lua_setfield(L, -2, "group_name");
    lua_pushnumber(L, cfg->handler_timeout);
    lua_setfield(L, -2, "handler_timeout");
    const app_snapshot *snap = app_snapshot_current();
    if (snap) {
        /* files = { ["app/routers/x.lua"] = source }: the loader reads nothing under app/ from disk. */
        lua_createtable(L, 0, snap->nfiles);
        for (int i = 0; i < snap->nfiles; i++) {
            lua_pushlstring(L, snap->files[i].data, snap->files[i].len);
            lua_setfield(L, -2, snap->files[i].path);
        }
        lua_setfield(L, -2, "files");
    }
    if (luavm_pcall(L, 2, 3, err, errlen, tb, tblen)) return -1;
    if (lua_isnil(L, -3)) {
        snprintf(err, errlen, "%s", lua_tostring(L, -2) ? lua_tostring(L, -2) : "cannot load the application");
        if (tb) snprintf(tb, tblen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
        lua_pop(L, 3);
        return -1;
    }
    lua_pop(L, 2);
    int t = lua_gettop(L);
    lua_getfield(L, t, "routes");
    int n = (int)lua_objlen(L, -1);
    a->routes = calloc(n ? n : 1, sizeof *a->routes);
    if (!a->routes) { lua_settop(L, t - 1); snprintf(err, errlen, "out of memory"); return -1; }
    a->nroutes = n;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -1, i + 1);
        int rc = read_route(L, lua_gettop(L), &a->routes[i]);
        lua_pop(L, 1);
        if (rc) { lua_settop(L, t - 1); app_free(a); snprintf(err, errlen, "out of memory"); return -1; }
    }
    lua_pop(L, 1);
    if (app_assign_sub_ids(a)) { lua_settop(L, t - 1); app_free(a); snprintf(err, errlen, "out of memory"); return -1; }
    a->jobs_text = field_str(L, t, "jobs_text");
    a->app_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int app_load_table(const luavm_paths *paths, const config *cfg, app_def *a, char *err, size_t errlen,
                   char *tb, size_t tblen)
{
    if (tb && tblen) tb[0] = 0;
    memset(a, 0, sizeof *a);
    a->app_ref = LUA_NOREF;
    app_snapshot *snap = app_snapshot_read(cfg->app_dir, err, errlen);
    if (!snap) return -1;
    lua_State *L = luavm_new(paths, err, errlen);
    if (!L) { app_snapshot_free(snap); return -1; }
    const app_snapshot *prev = app_snapshot_current();
    app_snapshot_use(snap);
    int rc = app_load(L, cfg, a, err, errlen, tb, tblen);
    app_snapshot_use(prev);
    lua_close(L);
    a->app_ref = LUA_NOREF;  /* it referred to the state just closed */
    if (rc) app_snapshot_free(snap);
    else a->snap = snap;
    return rc;
}

void app_free(app_def *a)
{
    for (int i = 0; i < a->nroutes; i++) {
        route_info *r = &a->routes[i];
        free(r->pattern); free(r->filter); free(r->sub); free(r->group);
        free(r->name); free(r->source);
        for (int k = 0; r->names && k < r->nwild; k++) free(r->names[k]);
        free(r->names);
    }
    free(a->routes);
    a->routes = NULL;
    free(a->by_sub_id);
    a->by_sub_id = NULL;
    a->nroutes = 0;
    free(a->jobs_text);
    a->jobs_text = NULL;
    app_snapshot_free(a->snap);
    a->snap = NULL;
}

/* The one JSON string writer (strbuf.c), onto a stream. */
static void json_str(FILE *out, const char *s)
{
    strbuf b;
    sb_init(&b);
    sb_json_str(&b, s);
    fputs(b.oom || !b.p ? "null" : b.p, out);
    sb_free(&b);
}

void app_print_routes(const app_def *a, FILE *out, int json)
{
    if (json) {
        fputs("[", out);
        for (int i = 0; i < a->nroutes; i++) {
            const route_info *r = &a->routes[i];
            fputs(i ? ",\n {" : "\n {", out);
            fputs("\"pattern\":", out); json_str(out, r->pattern);
            fputs(",\"subscription\":", out); json_str(out, r->sub);
            fprintf(out, ",\"qos\":%d,\"shared\":%s,\"worker_count\":%d,\"group\":",
                    r->qos, r->shared ? "true" : "false", r->worker_count);
            json_str(out, r->group);
            fputs(",\"name\":", out); json_str(out, r->name);
            fprintf(out, ",\"retained\":\"%s\",\"subscription_identifier\":%u",
                    r->retain_handling == 1 ? "new" : r->retain_handling ? "none" : "always", r->sub_id);
            fprintf(out, ",\"timeout\":%g,\"source\":", r->timeout);
            json_str(out, r->source ? r->source : "");
            fputs("}", out);
        }
        fputs(a->nroutes ? "\n]\n" : "]\n", out);
        return;
    }
    int wp = 7, ws = 12;
    for (int i = 0; i < a->nroutes; i++) {
        int lp = (int)strlen(a->routes[i].pattern), ls = (int)strlen(a->routes[i].sub);
        if (lp > wp) wp = lp;
        if (ls > ws) ws = ls;
    }
    fprintf(out, "%-*s  %-*s  %3s  %-6s  %7s  %s\n", wp, "PATTERN", ws, "SUBSCRIPTION", "QOS",
            "SHARED", "WORKERS", "GROUP");
    for (int i = 0; i < a->nroutes; i++) {
        const route_info *r = &a->routes[i];
        fprintf(out, "%-*s  %-*s  %3d  %-6s  %7d  %s\n", wp, r->pattern, ws, r->sub, r->qos,
                r->shared ? "yes" : "no", r->shared ? r->worker_count : 1, r->shared ? r->group : "-");
    }
    if (a->jobs_text && a->jobs_text[0]) fprintf(out, "\n%s", a->jobs_text);
}
