/* The bridge from C to the Lua dispatcher (lua/routemq/dispatch.lua and
 * routemq.worker): its set-up, the pool of handler coroutines a message's
 * handler runs in, and the stepping of the cqueues controller that resumes
 * handlers which wait. What Lua calls back into C is worker_lua.c; what
 * happens to a message before and after its handler runs is worker_dispatch.c. */
#include "worker_internal.h"
#include "log.h"
#include "luavm.h"

#include <errno.h>
#include <lauxlib.h>
#include <string.h>
#include <sys/epoll.h>

static int require_field(lua_State *L, const char *mod, const char *field, char *err, size_t errlen)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, mod);
    if (luavm_pcall(L, 1, 1, err, errlen, NULL, 0)) return -1;
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
    return 0;
}

int worker_coro_setup(worker *w)
{
    char err[2048];
    lua_State *L = w->lua.L;
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

/* ctx.params: the captures of the route's named wildcards; the shared
 * empty table when it names none, so most messages make no table here. */
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
            worker_lua_read_failure(T, 2, &o);
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

void worker_coro_call(worker *w, int id, const worker_msg *m, int rid, const topic_span *caps, int ncaps,
                      int redelivered)
{
    const route_info *r = &w->app.routes[rid - 1];
    shm_rec *rec = worker_keep_rec(w, id);
    lua_State *L = w->lua.L;
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
    /* Only now is Lua code of this message about to run: a death from
     * here is counted against it (master_reap.c). */
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
                if (!lua_toboolean(L, -5)) worker_lua_read_failure(L, lua_gettop(L) - 3, &o);
                worker_handler_end(w, id, &o);
            }
            lua_pop(L, 6);
        }
    }
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
