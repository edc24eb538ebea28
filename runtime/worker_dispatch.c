/* Messages into Lua: match the topic, skip the broker's resends, keep the
 * message in shared memory while its handler runs, and call the dispatcher
 * under a traceback handler. (Replaying what a dead worker left: worker_replay.c.) */
#include "worker_internal.h"
#include "log.h"
#include "luavm.h"
#include "worker_props.h"
#include "route_stats.h"

#include <errno.h>
#include <lauxlib.h>
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>

/* Route index -> entry of this slot's shm route_stats (-1: not counted per
 * route). One worker per process, so a file-level table is the worker's own;
 * an application with more routes than a slot can count keeps the rest in
 * the slot totals only. */
static int16_t route_stat[SHM_ROUTE_STATS + 1];

static int stat_of(int rid)
{
    return rid >= 1 && rid <= SHM_ROUTE_STATS ? route_stat[rid] : -1;
}

static void bind_route_stats(worker *w)
{
    int missed = route_stats_bind_app(w->shm, &w->app, route_stat, SHM_ROUTE_STATS + 1);
    if (missed) log_warn("%d route%s not counted per route: this slot has counted %d patterns already", missed,
                         missed == 1 ? " is" : "s are", SHM_ROUTE_STATS);
}

static int require_field(lua_State *L, const char *mod, const char *field, char *err, size_t errlen)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, mod);
    if (luavm_pcall(L, 1, 1, err, errlen, NULL, 0)) return -1;
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
    return 0;
}

static int readonly(lua_State *L)
{
    return luaL_error(L, "this table is read-only (ctx.props and ctx.params of a message without any)");
}

int worker_dispatch_setup(worker *w)
{
    char err[2048];
    lua_State *L = w->L;
    w->trie = topic_trie_new();
    if (!w->trie) { log_error("out of memory"); return -1; }
    for (int i = 0; i < w->app.nroutes; i++) {
        route_info *r = &w->app.routes[i];
        if (topic_trie_add(w->trie, r->filter, strlen(r->filter), r->index, err, sizeof err)) {
            log_error("route %s: %s", r->pattern, err);
            return -1;
        }
    }
    bind_route_stats(w);
    /* d = require("routemq.dispatch").new(app, io, slot); keep d.call */
    if (require_field(L, "routemq.dispatch", "new", err, sizeof err)) goto fail;
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->app.app_ref);
    worker_lua_push_io(w);
    lua_pushinteger(L, w->args->slot);
    if (luavm_pcall(L, 3, 1, err, sizeof err, NULL, 0)) goto fail;
    lua_getfield(L, -1, "call");
    if (!lua_isfunction(L, -1)) { snprintf(err, sizeof err, "routemq.dispatch: no call function"); goto fail; }
    w->call_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    if (require_field(L, "routemq.dlq", "envelope", err, sizeof err)) goto fail;
    w->envelope_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_newtable(L);
    lua_pushcfunction(L, readonly);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
    w->empty_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
fail:
    log_error("cannot set up the dispatcher: %s", err);
    return -1;
}

static void log_handler_error(worker *w, const route_info *r, const char *topic, const char *err, const char *tb)
{
    int64_t now = shm_now_ns();
    if (now - w->errlog_window_ns > 10000000000LL) {
        w->errlog_window_ns = now;
        w->errlog_count = 0;
    }
    if (++w->errlog_count > 10) { w->errlog_suppressed++; return; }
    log_with(LOGL_ERROR, &(log_fields){ .route = r->pattern, .topic = topic, .error = err, .traceback = tb },
             "handler error");
}

static void push_params(worker *w, const route_info *r, const topic_span *caps, int ncaps)
{
    lua_State *L = w->L;
    int named = 0;
    for (int i = 0; i < r->nwild; i++) named += r->names[i] != NULL;
    if (!named) { lua_rawgeti(L, LUA_REGISTRYINDEX, w->empty_ref); return; }
    lua_createtable(L, 0, named);
    for (int i = 0; i < r->nwild && i < ncaps; i++) {
        if (!r->names[i] || !caps[i].ptr) continue;
        lua_pushlstring(L, caps[i].ptr, caps[i].len);
        lua_setfield(L, -2, r->names[i]);
    }
}

/* FNV-1a over the topic, the payload's length and its first 4 KiB. */
static uint64_t content_hash(const char *topic, size_t tlen, const void *payload, size_t plen)
{
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = (const unsigned char *)topic;
    for (size_t i = 0; i < tlen; i++) h = (h ^ p[i]) * 1099511628211ULL;
    h = (h ^ plen) * 1099511628211ULL;
    p = payload;
    for (size_t i = 0; i < plen && i < 4096; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* Deliveries are remembered as (packet id << 48 | content hash) at the
 * packet id's index. Packet ids are reused only after 65535 others, so the
 * same id with the same content within SHM_SEEN deliveries is a resend. */
static uint64_t seen_entry(int mid, uint64_t hash)
{
    return ((uint64_t)(uint16_t)mid << 48) | (hash & 0xFFFFFFFFFFFFULL);
}

static int seen_before(worker *w, int mid, uint64_t hash)
{
    return mid > 0 && w->shm->seen.entry[(unsigned)mid % SHM_SEEN] == seen_entry(mid, hash);
}

/* Called once the message is kept in the in-flight record: a death between
 * the two then leads to a replay, never to a skipped resend. */
static void seen_remember(worker *w, int mid, uint64_t hash)
{
    if (mid > 0) w->shm->seen.entry[(unsigned)mid % SHM_SEEN] = seen_entry(mid, hash);
}

void worker_forget_seen(worker *w)
{
    memset(&w->shm->seen, 0, sizeof w->shm->seen);
}

void worker_dispatch(worker *w, int rid, const char *topic, size_t tlen, const void *payload, size_t plen,
                     int qos, int retain, const mosquitto_property *props, const topic_span *caps, int ncaps,
                     int redelivered, int mid, uint64_t hash)
{
    const route_info *r = &w->app.routes[rid - 1];
    shm_inflight *in = &w->shm->inflight;
    lua_State *L = w->L;
    if (!redelivered) {
        in->route_index = rid;
        in->stat_index = stat_of(rid);
        in->qos = (uint8_t)qos;
        in->retain = (uint8_t)retain;
        in->topic_len = (uint32_t)tlen;
        in->payload_len = (uint32_t)plen;
        in->attempts = 0;
        in->reason[0] = 0;
        in->complete = tlen + plen <= SHM_MSG_MAX;
        in->props_len = 0;
        if (in->complete) {
            memcpy(in->data, topic, tlen);
            if (plen) memcpy(in->data + tlen, payload, plen);
            size_t n = props ? worker_props_pack(props, in->data + tlen + plen, SHM_MSG_MAX - tlen - plen) : 0;
            if (n == (size_t)-1) in->complete = 0;
            else in->props_len = (uint32_t)n;
        }
    }
    /* ctx.props comes from the packed copy; a message too large to keep
     * packs its properties into a buffer of its own. */
    const char *packed = in->data + tlen + plen;
    size_t packed_len = in->complete ? in->props_len : 0;
    char *own = NULL;
    if (!in->complete && props && (own = malloc(SHM_MSG_MAX))) {
        packed_len = worker_props_pack(props, own, SHM_MSG_MAX);
        if (packed_len == (size_t)-1) packed_len = 0;
        packed = own;
    }
    atomic_store_explicit(&in->active, 1, memory_order_release);
    seen_remember(w, mid, hash);
    int64_t t0 = shm_now_ns();
    atomic_store_explicit(&w->shm->handler_route, rid, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_start_ns, t0, memory_order_release);

    lua_rawgeti(L, LUA_REGISTRYINDEX, w->call_ref);
    lua_pushinteger(L, rid);
    lua_pushlstring(L, topic, tlen);
    lua_pushlstring(L, payload ? payload : "", plen);
    lua_pushinteger(L, qos);
    lua_pushboolean(L, retain);
    lua_pushboolean(L, 0);  /* libmosquitto does not expose the DUP flag */
    worker_lua_push_props(w, packed, packed_len);
    free(own);
    lua_pushboolean(L, redelivered);
    push_params(w, r, caps, ncaps);
    char err[2048], tb[8192];
    int rc = luavm_pcall(L, 9, 0, err, sizeof err, tb, sizeof tb);

    int64_t t1 = shm_now_ns();
    w->last_msg_ns = t1;
    atomic_store_explicit(&w->shm->handler_start_ns, 0, memory_order_release);
    atomic_store_explicit(&in->active, 0, memory_order_release);
    atomic_fetch_add_explicit(&w->shm->messages, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->shm->busy_ns, (uint64_t)(t1 - t0), memory_order_relaxed);
    int si = stat_of(rid);
    if (si >= 0) route_stats_observe(&w->shm->route_stats[si], t1 - t0, rc == 0);
    if (rc) {
        atomic_fetch_add_explicit(&w->shm->errors, 1, memory_order_relaxed);
        char t[1024];
        snprintf(t, sizeof t, "%.*s", (int)tlen, topic);
        log_handler_error(w, r, t, err, tb);
    }
    worker_after_message(w);
}

static int delivered_for(const mosquitto_property *props, int rid)
{
    int id, n = 0, hit = 0;
    const mosquitto_property *p = props;
    for (int skip = 0; (p = mosquitto_property_read_varint(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER,
                                                           (uint32_t *)&id, skip)); skip = 1) {
        n++;
        if (id == rid) hit = 1;
    }
    return n == 0 || hit;
}

void worker_on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    worker *w = ud;
    topic_span caps[TOPIC_MAX_WILDCARDS];
    int ncaps = 0;
    size_t tlen = strlen(msg->topic);
    uint64_t hash = msg->qos > 0 ? content_hash(msg->topic, tlen, msg->payload, (size_t)msg->payloadlen) : 0;
    int mid = msg->qos > 0 ? msg->mid : 0;
    if (seen_before(w, mid, hash)) {
        atomic_fetch_add_explicit(&w->shm->duplicates, 1, memory_order_relaxed);
        log_debug("%s: the broker resent message %d, already taken by this slot; skipped", msg->topic, msg->mid);
        errno = 0;
        return;
    }
    int rid = topic_trie_match(w->trie, msg->topic, tlen, caps, TOPIC_MAX_WILDCARDS, &ncaps);
    if (rid <= 0) {
        atomic_fetch_add_explicit(&w->shm->unmatched, 1, memory_order_relaxed);
        log_debug("no route matches %s", msg->topic);
        return;
    }
    /* With overlapping routes the broker delivers one copy per subscription;
     * only the copy sent for the most specific route is handled. */
    if (props && !delivered_for(props, rid)) {
        log_debug("%s: copy for a less specific overlapping route skipped", msg->topic);
        return;
    }
    worker_dispatch(w, rid, msg->topic, tlen, msg->payload, (size_t)msg->payloadlen, msg->qos, msg->retain, props,
             caps, ncaps, 0, mid, hash);
    errno = 0;  /* see read_socket() */
}
