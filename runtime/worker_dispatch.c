/* Messages into Lua: match the topic, skip the broker's resends, keep the
 * message in shared memory while its handler runs, and call the dispatcher
 * under a traceback handler. (Replaying what a dead worker left: worker_replay.c.) */
#include "worker_internal.h"
#include "log.h"
#include "luavm.h"
#include "worker_props.h"
#include "route_stats.h"
#include "hash.h"
#include "shm_errors.h"

#include <errno.h>
#include <lauxlib.h>
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#define PROPS_MAX (64 * 1024)  /* packed MQTT 5 properties kept with a message */

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
    if (missed) log_warn("%d route%s counted under route=\"" SHM_ROUTE_OTHER "\": this slot has counted %d patterns "
                         "already", missed, missed == 1 ? " is" : "s are", SHM_ROUTE_TABLE - 1);
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

int worker_dispatch_setup(worker *w)
{
    char err[2048];
    lua_State *L = w->lua.L;
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
    w->props_buf = malloc(PROPS_MAX);
    if (!w->props_buf) { log_error("out of memory"); return -1; }
    /* g = require("routemq.worker").new(app, io, slot): d.call, the
     * controller's step/timeout/pollfd, init and jobs. */
    if (require_field(L, "routemq.worker", "new", err, sizeof err)) goto fail;
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->app.app_ref);
    worker_lua_push_io(w);
    lua_pushinteger(L, w->args->slot);
    if (luavm_pcall(L, 3, 1, err, sizeof err, NULL, 0)) goto fail;
    static const char *const fields[] = { "call", "step", "timeout", "init", "start_jobs", "stop_jobs", "pollfd" };
    int *refs[] = { &w->lua.call_ref, &w->lua.step_ref, &w->lua.timeout_ref, &w->lua.init_ref, &w->lua.start_jobs_ref,
                    &w->lua.stop_jobs_ref, &w->lua.pollfd_ref };
    for (int i = 0; i < 7; i++) {
        lua_getfield(L, -1, fields[i]);
        if (!lua_isfunction(L, -1)) { snprintf(err, sizeof err, "routemq.worker: no %s function", fields[i]); goto fail; }
        *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_getfield(L, -1, "new_thread");
    if (lua_isfunction(L, -1)) {
        w->lua.new_thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_getfield(L, -1, "adopt");
        w->lua.adopt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (require_field(L, "routemq.dlq", "envelope", err, sizeof err)) goto fail;
    w->lua.envelope_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* ctx.params and ctx.props of a message without any: the one frozen
     * empty table the Lua side uses too. */
    if (require_field(L, "routemq.context", "EMPTY", err, sizeof err)) goto fail;
    if (!lua_istable(L, -1)) { snprintf(err, sizeof err, "routemq.context: no EMPTY table"); goto fail; }
    w->lua.empty_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
fail:
    log_error("cannot set up the dispatcher: %s", err);
    return -1;
}

/* 1 when a handler error line may be logged now: at most 10 per 10 s,
 * the rest counted (and summed up by worker.c's periodic). */
static int errlog_allow(worker *w)
{
    int64_t now = shm_now_ns();
    if (now - w->errlog.window_ns > 10000000000LL) {
        w->errlog.window_ns = now;
        w->errlog.count = 0;
    }
    if (++w->errlog.count > 10) { w->errlog.suppressed++; return 0; }
    return 1;
}

static void log_handler_error(worker *w, const route_info *r, const char *topic, const char *err, const char *tb)
{
    /* Every error reaches /errors, also those the log's rate limit drops. */
    shm_errors_record(w->shm, r ? r->pattern : "?", topic, err, tb);
    if (!errlog_allow(w)) return;
    log_with(LOGL_ERROR, &(log_fields){ .route = r ? r->pattern : "?", .topic = topic, .error = err, .traceback = tb },
             "handler error");
}

static void push_params(worker *w, const route_info *r, const topic_span *caps, int ncaps)
{
    lua_State *L = w->lua.L;
    int named = 0;
    for (int i = 0; i < r->nwild; i++) named += r->names[i] != NULL;
    if (!named) { lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.empty_ref); return; }
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
    uint64_t h = hash_fnv1a(HASH_FNV1A_INIT, topic, tlen);
    h = hash_fnv1a_word(h, plen);
    return hash_fnv1a(h, payload, plen < 4096 ? plen : 4096);
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
    return mid > 0 && w->keep.km.h->seen.entry[(unsigned)mid % SHM_SEEN] == seen_entry(mid, hash);
}

/* Called once the message is kept in the in-flight record: a death between
 * the two then leads to a replay, never to a skipped resend. */
static void seen_remember(worker *w, int mid, uint64_t hash)
{
    if (mid > 0) w->keep.km.h->seen.entry[(unsigned)mid % SHM_SEEN] = seen_entry(mid, hash);
}

void worker_forget_seen(worker *w)
{
    memset(&w->keep.km.h->seen, 0, sizeof w->keep.km.h->seen);
}

/* A message taken and not started yet waits here, in arrival order. */
void worker_enqueue(worker *w, int id)
{
    worker_queue *q = &w->queue;
    q->ids[q->tail] = id;
    q->tail = (q->tail + 1) % q->cap;
}

static int dequeue(worker *w)
{
    worker_queue *q = &w->queue;
    if (q->head == q->tail) return -1;
    int id = q->ids[q->head];
    q->head = (q->head + 1) % q->cap;
    return id;
}

int worker_queue_len(const worker *w)
{
    const worker_queue *q = &w->queue;
    return (q->tail - q->head + q->cap) % q->cap;
}

int worker_can_start(const worker *w)
{
    return worker_can_start_over(w, 0);
}

int worker_can_start_over(const worker *w, int over_concurrency)
{
    if (!w->conn.connected || !worker_pubconn_connected(w) || w->out.over ||
        (!over_concurrency &&
         atomic_load_explicit(&w->shm->in_progress, memory_order_relaxed) >= (uint32_t)w->cfg->concurrency))
        return 0;
    switch (w->stop.kind) {
    case STOP_NONE: return 1;
    case STOP_RETIRE: return 1;  /* handles the share the broker queued for it, then leaves */
    default:
        /* A stop with a next worker leaves what it has not started to that
         * worker; when the whole instance stops, nobody would. */
        return atomic_load_explicit(&w->shm->stopping_for_good, memory_order_relaxed) && !w->stop.gave_up;
    }
}

/* The message is finished: handled and its publishes acknowledged. */
static void finish(worker *w, int id)
{
    shm_rec *r = worker_keep_rec(w, id);
    if (r->dlq) {
        atomic_fetch_add(&w->shm->dead_lettered, 1);
        /* The entry recorded with the message: valid in this slot whatever
         * the route table of the worker that took it. */
        if (r->stat_index >= 0 && r->stat_index < SHM_ROUTE_TABLE)
            atomic_fetch_add(&w->shm->route_stats[r->stat_index].dead_lettered, 1);
    }
    int64_t replay = w->recs[id].ok ? r->dlq_id : 0;
    memset(&w->recs[id], 0, sizeof w->recs[id]);
    worker_keep_release(w, id);
    /* After the release: a death in between replays it once more (the
     * store still has it), never drops it from the store unhandled. */
    if (replay > 0) worker_dlq_replay_done(w, replay);
}

void worker_rec_done(worker *w, int id)
{
    w->recs[id].done = 1;
    if (w->recs[id].pending == 0) finish(w, id);
}

void worker_rec_publish_done(worker *w, int id)
{
    worker_rec_local *l = &w->recs[id];
    if (l->pending > 0) l->pending--;
    if (l->done && l->pending == 0) finish(w, id);
}

/* Counts a handler run of `took` ns on route rid; `error`: an error or a
 * timeout (routemq_messages_total{result="error"}, logged), else a
 * success (result="ok") or neither (a failed attempt that is not an error:
 * ctx:retry, ctx:fail). */
static void account(worker *w, int rid, int stat, int64_t took, int error, int counted, const char *topic,
                    size_t tlen, const char *err, const char *tb)
{
    const route_info *route = rid >= 1 && rid <= w->app.nroutes ? &w->app.routes[rid - 1] : NULL;
    w->last_msg_ns = shm_now_ns();
    atomic_fetch_add_explicit(&w->shm->messages, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->shm->busy_ns, (uint64_t)took, memory_order_relaxed);
    if (stat >= 0 && counted) route_stats_observe(&w->shm->route_stats[stat], took, !error);
    if (stat >= 0 && counted) route_stats_touch(w->shm, stat);
    if (error) {
        atomic_fetch_add_explicit(&w->shm->errors, 1, memory_order_relaxed);
        char t[LOG_TOPIC_BUF];
        log_handler_error(w, route, log_topic(t, sizeof t, topic, tlen), err, tb);
    }
}

static const char *route_name(const worker *w, int rid)
{
    return rid >= 1 && rid <= w->app.nroutes ? w->app.routes[rid - 1].pattern : "?";
}

/* A failed attempt gets another one after delay seconds: the record stays
 * kept, its concurrency slot is free (the caller gave it back), and it
 * waits in the retry heap (worker_retry.c). */
static void schedule_retry(worker *w, int id, double delay, int redelivered)
{
    shm_rec *r = worker_keep_rec(w, id);
    if (delay > 86400.0 * 365) delay = 86400.0 * 365;
    r->failures++;
    r->due_ms = worker_wall_ms() + (int64_t)(delay * 1000.0 + 0.5);
    r->redelivered = (uint8_t)redelivered;
    /* Its next run is a retry, not the redelivery of an unfinished one. */
    r->started = 0;
    if (r->stat_index >= 0 && r->stat_index < SHM_ROUTE_TABLE) {
        atomic_fetch_add_explicit(&w->shm->route_stats[r->stat_index].retries, 1, memory_order_relaxed);
        route_stats_touch(w->shm, r->stat_index);
    }
    worker_retry_add(w, id);
}

void worker_handler_end(worker *w, int id, const worker_outcome *o)
{
    shm_rec *r = worker_keep_rec(w, id);
    int64_t took = shm_now_ns() - r->started_ns;
    int redelivered = w->recs[id].redelivered;
    atomic_fetch_sub_explicit(&w->shm->in_progress, 1, memory_order_relaxed);
    worker_rec_local *l = &w->recs[id];
    if (o->ok) {
        account(w, r->route_index, r->stat_index, took, 0, 1, NULL, 0, NULL, NULL);
        l->done = 1;
        l->ok = 1;
        if (l->pending == 0) finish(w, id);
        else atomic_store_explicit(&r->state, REC_ACKS, memory_order_release);
        worker_after_message(w);
        return;
    }
    const char *reason = o->reason ? o->reason : "error";
    int error = !strcmp(reason, "error") || !strcmp(reason, "timeout");
    worker_kept k;
    worker_keep_open(w, id, &k);
    char t[LOG_TOPIC_BUF];
    log_topic(t, sizeof t, k.msg.topic, k.msg.tlen);
    /* Each failed run of an error counts as today (result="error"); a
     * ctx:retry or ctx:fail is no error of the handler's. */
    account(w, r->route_index, r->stat_index, took, error, error, k.msg.topic, k.msg.tlen,
            o->err ? o->err : "(no message)", o->tb);
    if (!strcmp(reason, "failed") && errlog_allow(w))
        log_with(LOGL_WARN, &(log_fields){ .route = route_name(w, r->route_index), .topic = t, .error = o->err },
                 "the handler gave the message up (ctx:fail); it goes to the dead-letter store");
    worker_after_message(w);
    if (o->delay >= 0) {
        log_with(LOGL_DEBUG, &(log_fields){ .route = route_name(w, r->route_index), .topic = t },
                 "attempt %u failed (%s); the next one in %.3g s", r->failures + 1, reason, o->delay);
        schedule_retry(w, id, o->delay, redelivered);
        return;
    }
    /* Final: the dead-letter store takes it, and the record is finished
     * once stored and its publishes are acknowledged. A store that cannot
     * be written now keeps it waiting (worker_dlq.c logs that, rate-limited). */
    worker_dlq_put(w, id, reason, o->err, o->tb);
}

void worker_handler_done(worker *w, int id, int rc, const char *err, const char *tb)
{
    worker_outcome o = { .ok = rc == 0, .err = err, .tb = tb, .reason = "error", .delay = -1 };
    worker_handler_end(w, id, &o);
}

/* An idle handler coroutine (dispatch's d.new_thread), or a new one; its
 * registry ref in *ref. NULL when none can be made. */
static lua_State *thread_get(worker *w, int *ref)
{
    if (w->lua.nthreads > 0) {
        w->lua.nthreads--;
        *ref = w->lua.thread_refs[w->lua.nthreads];
        return w->lua.threads[w->lua.nthreads];
    }
    lua_State *L = w->lua.L;
    char err[1024];
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.new_thread_ref);
    if (luavm_pcall(L, 0, 1, err, sizeof err, NULL, 0)) { log_error("cannot make a handler coroutine: %s", err); return NULL; }
    lua_State *T = lua_tothread(L, -1);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return T;
}

static void thread_put(worker *w, lua_State *T, int ref)
{
    if (w->lua.nthreads < WORKER_THREAD_POOL) {
        w->lua.threads[w->lua.nthreads] = T;
        w->lua.thread_refs[w->lua.nthreads] = ref;
        w->lua.nthreads++;
    } else {
        luaL_unref(w->lua.L, LUA_REGISTRYINDEX, ref);
    }
}

#define CALL_ARGS 12  /* index, topic, payload, qos, retain, dup, props, redelivered, params, token, attempt, replayed */

/* Reads a failed run's outcome from values at i.. of L: err, traceback,
 * reason, delay (nil: final). The strings stay on L's stack. */
static void read_failure(lua_State *L, int i, worker_outcome *o)
{
    o->ok = 0;
    o->err = lua_tostring(L, i) ? lua_tostring(L, i) : "(no message)";
    o->tb = lua_tostring(L, i + 1);
    if (o->tb && !o->tb[0]) o->tb = NULL;
    o->reason = lua_type(L, i + 2) == LUA_TSTRING ? lua_tostring(L, i + 2) : "error";
    o->delay = lua_isnumber(L, i + 3) && lua_tonumber(L, i + 3) >= 0 ? lua_tonumber(L, i + 3) : -1;
}

/* Runs d.call's CALL_ARGS arguments (on top of w->lua.L) in a handler
 * coroutine resumed from here: no Lua-level resume for a handler that does
 * not wait. It ends in a yield of true (returned), "fail" with err,
 * traceback, reason, delay (the handler failed: dispatch caught it), false
 * (queued behind its topic: io.done later), a cqueues poll request (it
 * waits: d.adopt hands it to the controller, io.done later) or an error
 * (of the dispatcher itself: the coroutine is dead). */
static void run_in_thread(worker *w, int id)
{
    lua_State *L = w->lua.L;
    int ref;
    lua_State *T = thread_get(w, &ref);
    if (!T) {
        lua_pop(L, CALL_ARGS);
        worker_handler_done(w, id, -1, "out of memory for a handler coroutine", NULL);
        return;
    }
    if (!lua_checkstack(T, CALL_ARGS + 2)) {
        lua_pop(L, CALL_ARGS);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        worker_handler_done(w, id, -1, "out of memory for a handler coroutine's stack", NULL);
        return;
    }
    lua_xmove(L, T, CALL_ARGS);
    int st = lua_resume(T, CALL_ARGS);
    if (st == LUA_YIELD) {
        int n = lua_gettop(T);
        if (n >= 1 && lua_type(T, 1) == LUA_TBOOLEAN) {
            int finished = lua_toboolean(T, 1);
            lua_settop(T, 0);
            thread_put(w, T, ref);
            if (finished) worker_handler_done(w, id, 0, NULL, NULL);
            return;
        }
        if (n >= 1 && lua_type(T, 1) == LUA_TSTRING && !strcmp(lua_tostring(T, 1), "fail")) {
            worker_outcome o;
            lua_settop(T, 5);
            read_failure(T, 2, &o);
            /* The strings live on T's stack until it is cleared. */
            worker_handler_end(w, id, &o);
            lua_settop(T, 0);
            thread_put(w, T, ref);
            return;
        }
        char err[1024];
        if (!lua_checkstack(L, n + 4)) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            worker_handler_done(w, id, -1, "a handler's poll request is too large", NULL);
            return;
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.adopt_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);  /* the controller holds it now */
        lua_xmove(T, L, n);
        if (luavm_pcall(L, 1 + n, 2, err, sizeof err, NULL, 0)) {
            worker_handler_done(w, id, -1, err, NULL);
            return;
        }
        if (!lua_toboolean(L, -2))
            worker_handler_done(w, id, -1, lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot wait", NULL);
        lua_pop(L, 2);
        return;
    }
    /* The dispatcher raised (or the coroutine ended): it is dead, drop it. */
    const char *msg = lua_tostring(T, -1);
    if (!msg) msg = lua_isnil(T, -1) && st == 0 ? "handler coroutine ended" : "(error object is not a string)";
    luaL_traceback(L, T, msg, 0);
    const char *full = lua_tostring(L, -1);
    const char *cut = full ? strstr(full, "\nstack traceback:") : NULL;
    char err[2048];
    snprintf(err, sizeof err, "%.*s", cut ? (int)(cut - full) : (int)strlen(msg), cut ? full : msg);
    worker_handler_done(w, id, -1, err, cut ? cut + 1 : NULL);
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* Runs the handler of record id on its kept bytes; the record is finished
 * by worker_handler_done. */
static void call_handler(worker *w, int id, const worker_msg *m, int rid, const topic_span *caps, int ncaps,
                         int redelivered)
{
    const route_info *r = &w->app.routes[rid - 1];
    shm_rec *rec = worker_keep_rec(w, id);
    lua_State *L = w->lua.L;
    rec->route_index = rid;
    if (rec->stat_index < 0) rec->stat_index = stat_of(rid);
    rec->started = 1;
    w->recs[id].redelivered = (uint8_t)redelivered;
    rec->started_ns = shm_now_ns();
    atomic_store_explicit(&rec->state, REC_RUNNING, memory_order_release);
    atomic_fetch_add_explicit(&w->shm->in_progress, 1, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_route, rid, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_start_ns, rec->started_ns, memory_order_release);

    if (w->lua.new_thread_ref == LUA_NOREF) lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.call_ref);
    lua_pushinteger(L, rid);
    lua_pushlstring(L, m->topic, m->tlen);
    lua_pushlstring(L, m->plen ? m->payload : "", m->plen);
    lua_pushinteger(L, m->qos);
    lua_pushboolean(L, m->retain);
    lua_pushboolean(L, 0);  /* libmosquitto does not expose the DUP flag */
    worker_lua_push_props(w, m->props, m->props_len);
    lua_pushboolean(L, redelivered);
    push_params(w, r, caps, ncaps);
    lua_pushinteger(L, id);
    lua_pushinteger(L, (lua_Integer)rec->failures + 1);
    lua_pushboolean(L, rec->replayed);
    atomic_store_explicit(&w->shm->handler_rec, id, memory_order_relaxed);
    if (w->lua.new_thread_ref != LUA_NOREF) {
        run_in_thread(w, id);
    } else {
        char err[2048], tb[8192];
        /* d.call runs the handler until it ends -> true, ok, err,
         * traceback, reason, delay; or until it first waits -> false, and
         * io.done (worker_lua.c) reports its end later. An error here is
         * d.call's own (the handler's are caught inside). */
        int rc = luavm_pcall(L, CALL_ARGS, 6, err, sizeof err, tb, sizeof tb);
        if (rc) {
            if (!w->recs[id].done && atomic_load(&rec->state) == REC_RUNNING) worker_handler_done(w, id, rc, err, tb);
        } else {
            if (lua_toboolean(L, -6)) {
                worker_outcome o = { .ok = 1 };
                if (!lua_toboolean(L, -5)) read_failure(L, lua_gettop(L) - 3, &o);
                worker_handler_end(w, id, &o);
            }
            lua_pop(L, 6);
        }
    }
    atomic_store_explicit(&w->shm->handler_start_ns, 0, memory_order_release);
    atomic_store_explicit(&w->shm->handler_rec, -1, memory_order_relaxed);
}

int worker_watch_controller(worker *w)
{
    if (w->lua.cq_fd >= 0) return 0;
    lua_State *L = w->lua.L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.pollfd_ref);
    if (luavm_pcall(L, 0, 1, NULL, 0, NULL, 0)) return -1;
    int fd = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : -1;
    lua_pop(L, 1);
    if (fd < 0) return 0;
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev)) { log_error("epoll: %s", strerror(errno)); return -1; }
    w->lua.cq_fd = fd;
    return 0;
}

void worker_step(worker *w)
{
    lua_State *L = w->lua.L;
    if (w->lua.cq_fd < 0) return;
    char err[2048];
    /* Waiting handlers and timers run inside the step: the watchdog's clock
     * runs, against WORKER_HANDLER_TIMEOUT until io.resume names the route. */
    atomic_store_explicit(&w->shm->handler_route, 0, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_rec, -1, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_start_ns, shm_now_ns(), memory_order_release);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.step_ref);
    int rc = luavm_pcall(L, 0, 2, err, sizeof err, NULL, 0);
    atomic_store_explicit(&w->shm->handler_start_ns, 0, memory_order_release);
    atomic_store_explicit(&w->shm->handler_rec, -1, memory_order_relaxed);
    if (rc) { log_error("cqueues controller: %s", err); return; }
    if (!lua_toboolean(L, -2)) log_error("cqueues controller: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 2);
}

int worker_step_timeout_ms(worker *w)
{
    lua_State *L = w->lua.L;
    if (w->lua.cq_fd < 0) return -1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.timeout_ref);
    if (luavm_pcall(L, 0, 1, NULL, 0, NULL, 0)) return -1;
    int ms = -1;
    if (lua_isnumber(L, -1)) {
        double t = lua_tonumber(L, -1);
        ms = t <= 0 ? 0 : t > 1e6 ? 1000000000 : (int)(t * 1000.0 + 0.999);
    }
    lua_pop(L, 1);
    return ms;
}

int worker_run_init(worker *w)
{
    lua_State *L = w->lua.L;
    char err[2048], tb[8192];
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.init_ref);
    lua_pushnumber(L, w->cfg->handler_timeout);
    if (luavm_pcall(L, 1, 3, err, sizeof err, tb, sizeof tb)) {
        log_with(LOGL_ERROR, &(log_fields){ .traceback = tb[0] ? tb : NULL }, "init failed: %s", err);
        return -1;
    }
    int ok = lua_toboolean(L, -3);
    if (!ok)
        log_with(LOGL_ERROR, &(log_fields){ .traceback = lua_tostring(L, -1) }, "init failed: %s",
                 lua_tostring(L, -2) ? lua_tostring(L, -2) : "?");
    lua_pop(L, 3);
    return ok ? 0 : -1;
}

void worker_jobs(worker *w, int start)
{
    lua_State *L = w->lua.L;
    char err[2048];
    if (!start) {
        if (w->lua.jobs_stopped) return;
        w->lua.jobs_stopped = 1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, start ? w->lua.start_jobs_ref : w->lua.stop_jobs_ref);
    if (luavm_pcall(L, 0, 0, err, sizeof err, NULL, 0)) log_error("timers: %s", err);
}

/* Reading stops while the keep lacks a record or room for the largest
 * message (worker_keep_has_room), and with MQTT 5 the broker is told that
 * largest size (Maximum Packet Size): a message that cannot be kept can then
 * only be one larger than that under MQTT 3.1.1, which has no way to say it.
 * libmosquitto has acknowledged it already: it is counted
 * (routemq_messages_lost_total{reason="too_large"}) and logged (at most
 * every 10 s). */
static void run_unkept(worker *w, const worker_msg *m, int rid)
{
    char t[LOG_TOPIC_BUF];
    worker_keep_count_lost(w, "too_large");
    int64_t now = shm_now_ns();
    if (now - w->unkept_logged_ns < 10000000000LL) return;
    w->unkept_logged_ns = now;
    log_error("%s (route %s): a message of %zu bytes is larger than the keep can hold (%u bytes with "
              "WORKER_MAX_KEPT_MB=%ld); it is lost: raise WORKER_MAX_KEPT_MB, or use MQTT 5 so the broker does not "
              "send it", log_topic(t, sizeof t, m->topic, m->tlen), w->app.routes[rid - 1].pattern,
              m->tlen + m->plen + m->props_len, worker_keep_max_message(w), w->cfg->max_kept_mb);
}

/* Starts the handler of kept message id (or dead-letters it). */
void worker_start_kept(worker *w, int id)
{
    shm_rec *rec = worker_keep_rec(w, id);
    worker_kept k;
    worker_keep_open(w, id, &k);
    int redelivered = rec->started || rec->earlier_run || rec->redelivered;
    /* rec->dlq: stored by a worker that died before finishing it. */
    if (rec->dlq || rec->attempts >= (uint32_t)w->cfg->poison_attempts) {
        worker_dead_letter(w, id, &k.msg);
        return;
    }
    topic_span caps[TOPIC_MAX_WILDCARDS];
    int ncaps = 0;
    int rid = topic_trie_match(w->trie, k.msg.topic, k.msg.tlen, caps, TOPIC_MAX_WILDCARDS, &ncaps);
    if (rid <= 0) {
        char t[LOG_TOPIC_BUF], why[LOG_TOPIC_BUF + 64];
        log_topic(t, sizeof t, k.msg.topic, k.msg.tlen);
        if (rec->failures || rec->dlq_id > 0) {
            /* A failing message is never dropped: the store keeps it. */
            snprintf(why, sizeof why, "no route matches %s any more", t);
            worker_dlq_put(w, id, rec->failures ? "error" : "failed", why, NULL);
            return;
        }
        log_warn("the kept message on %s matches no route any more; dropped", t);
        finish(w, id);
        return;
    }
    if (rec->started) {
        char t[LOG_TOPIC_BUF];
        log_warn("redelivering the message on %s a previous worker did not finish (%s)",
                 log_topic(t, sizeof t, k.msg.topic, k.msg.tlen), rec->reason[0] ? rec->reason : "no reason recorded");
    }
    call_handler(w, id, &k.msg, rid, caps, ncaps, redelivered);
}

#define PUMP_BUDGET_NS 20000000  /* then signals and timers get their turn; the loop pumps again at once */

void worker_pump(worker *w)
{
    int64_t until = shm_now_ns() + PUMP_BUDGET_NS;
    for (int i = 0; worker_can_start(w); i++) {
        if ((i & 15) == 15 && shm_now_ns() > until) return;
        int id = dequeue(w);
        if (id < 0) return;
        worker_start_kept(w, id);
    }
}

/* Whether to handle this copy of a message whose most specific route is rid.
 * With overlapping routes the broker sends one copy per matching
 * subscription, each with its subscription's identifier (MQTT 5): the copy
 * for rid is handled. Another copy, for a less specific route or with an
 * identifier no route of this application has (queued for the routes of an
 * earlier deploy), is skipped when rid's own copy comes too: this slot holds
 * rid's subscription and it delivers (worker_sub). A copy for a less
 * specific route is also skipped when rid is another slot's route (that
 * slot handles it). Otherwise its topic decides: it is handled. A copy
 * without identifier (MQTT 3.1.1) is handled. A retained message (retain
 * set: sent because a subscription was made) comes once per subscription
 * made, each copy with its own identifier: only rid's own is handled (none,
 * when rid's retained option asked for none). */
static int copy_to_handle(worker *w, const mosquitto_property *props, int rid, int retained)
{
    uint32_t id;
    int any = 0, known = 0;
    const mosquitto_property *p = props;
    for (int skip = 0; (p = mosquitto_property_read_varint(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &id, skip));
         skip = 1) {
        int r = app_route_by_sub_id(&w->app, id);
        if (r == rid) {
            w->conn.subs[rid - 1].delivering = 1;
            return 1;
        }
        any = 1;
        if (r > 0) known = 1;
        else if (!w->unknown_sub_id_noted) {
            w->unknown_sub_id_noted = 1;
            log_info("the broker delivers messages for subscription identifier %u, which no route of this application "
                     "has (a route removed or changed since they were queued): they are matched by their topic", id);
        }
    }
    if (!any) return 1;
    if (!app_slot_subscribes(&w->app.routes[rid - 1], w->args->slot)) return !known;
    if (retained && known) return 0;
    return !w->conn.subs[rid - 1].delivering;
}

static void take_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
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
        char t[LOG_TOPIC_BUF];
        log_debug("%s: the broker resent message %d, already taken by this slot; skipped",
                  log_topic(t, sizeof t, msg->topic, tlen), msg->mid);
        return;
    }
    int rid = topic_trie_match(w->trie, msg->topic, tlen, caps, TOPIC_MAX_WILDCARDS, &ncaps);
    if (rid <= 0) {
        atomic_fetch_add_explicit(&w->shm->unmatched, 1, memory_order_relaxed);
        char t[LOG_TOPIC_BUF];
        log_debug("no route matches %s", log_topic(t, sizeof t, msg->topic, tlen));
        return;
    }
    if (props && !copy_to_handle(w, props, rid, msg->retain)) {
        char t[LOG_TOPIC_BUF];
        log_debug("%s: copy for another subscription skipped (route %s gets its own)",
                  log_topic(t, sizeof t, msg->topic, tlen), w->app.routes[rid - 1].pattern);
        return;
    }
    worker_msg kept = {
        .topic = msg->topic, .tlen = tlen, .payload = msg->payload, .plen = (size_t)msg->payloadlen,
        .qos = msg->qos, .retain = msg->retain, .rid = rid,
    };
    if (props) {
        size_t n = worker_props_pack(props, w->props_buf, PROPS_MAX);
        char t[LOG_TOPIC_BUF];
        if (n == (size_t)-1)
            log_warn("%s: MQTT 5 properties larger than %d bytes are not kept", log_topic(t, sizeof t, msg->topic, tlen),
                     PROPS_MAX);
        else { kept.props = w->props_buf; kept.props_len = n; }
    }
    int id = worker_keep_add(w, &kept);
    if (id < 0) {
        run_unkept(w, &kept, rid);
        return;
    }
    worker_keep_rec(w, id)->stat_index = stat_of(rid);
    seen_remember(w, mid, hash);
    worker_enqueue(w, id);
    worker_pump(w);
}

void worker_on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    if (!worker_mqtt_drain_marker(ud, msg)) {
        worker_adopt_guard(ud, msg->topic);
        take_message(m, ud, msg, props);
    }
    /* libmosquitto's loop_read goes on reading packets until errno says
     * EAGAIN after one: what the handler or libmosquitto's own wake-up
     * writes left behind must not end the batch (nor decide anything here:
     * read_socket peeks). */
    errno = 0;
}
