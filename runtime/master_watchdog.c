/* The watchdog, run on every tick: SIGKILLs a worker whose handler ran past
 * its route's timeout, whose event loop stopped turning (heartbeat), that
 * never finished starting, or that did not obey a stop within its deadline.
 * The worker refreshes its heartbeat at every turn of its loop but not while
 * a handler runs, so while a handler runs only the handler timeout applies. */
#include "master.h"
#include "log.h"

#include <signal.h>
#include <stdio.h>

#define STARTUP_GRACE_NS (10 * NS_PER_S)  /* on top of the heartbeat timeout */

static void kill_slot(master *m, int i, kill_cause why)
{
    master_slot *s = &m->slots[i];
    kill(s->pid, SIGKILL);
    s->kill = why;
}

/* The route the handler runs, in the table the worker was started with. */
static const route_info *running_route(const master_slot *s, int index)
{
    if (!s->app || index < 1 || index > s->app->def.nroutes) return NULL;
    return &s->app->def.routes[index - 1];
}

/* 1 when a handler is running (then the heartbeat is not checked). */
static int check_handler(master *m, int i, int64_t now)
{
    master_slot *s = &m->slots[i];
    shm_slot *sh = &m->shm->slots[i];
    int64_t start = atomic_load(&sh->handler_start_ns);
    if (!start) return 0;
    s->busy_seen_ns = now;
    const route_info *r = running_route(s, atomic_load(&sh->handler_route));
    double timeout = r && r->timeout > 0 ? r->timeout : m->cfg->handler_timeout;
    if (now - start <= (int64_t)(timeout * NS_PER_S)) return 1;
    const char *pattern = r ? r->pattern : "?";
    snprintf(s->kill_detail, sizeof s->kill_detail, "handler timeout after %g s on route %s", timeout, pattern);
    log_warn("worker %d (pid %d): handler on route %s has run %.1f s, past its %g s timeout; killing it", i,
             (int)s->pid, pattern, (double)(now - start) / NS_PER_S, timeout);
    kill_slot(m, i, KILL_HANDLER_TIMEOUT);
    return 1;
}

static void check_heartbeat(master *m, int i, int64_t now)
{
    master_slot *s = &m->slots[i];
    shm_slot *sh = &m->shm->slots[i];
    int64_t limit = (int64_t)(m->cfg->heartbeat_timeout * NS_PER_S);
    if (atomic_load(&sh->state) <= SLOT_STARTING) {
        /* Loading the application may take a while, but not forever. */
        if (now - s->started_ns <= limit + STARTUP_GRACE_NS) return;
        log_warn("worker %d (pid %d): still starting after %.1f s; killing it", i, (int)s->pid,
                 (double)(now - s->started_ns) / NS_PER_S);
        kill_slot(m, i, KILL_STARTUP);
        return;
    }
    /* A handler that just returned leaves an old heartbeat until the loop
     * turns again: count the last time we saw it busy as a sign of life. */
    int64_t last = atomic_load(&sh->heartbeat_ns);
    if (s->busy_seen_ns > last) last = s->busy_seen_ns;
    if (now - last <= limit) return;
    log_warn("worker %d (pid %d): no heartbeat for %.1f s (WORKER_HEARTBEAT_TIMEOUT %g s); killing it", i,
             (int)s->pid, (double)(now - last) / NS_PER_S, m->cfg->heartbeat_timeout);
    kill_slot(m, i, KILL_HEARTBEAT);
}

/* 1 when the worker was told to stop and is past its deadline (then killed). */
static int check_stop_deadline(master *m, int i, int64_t now)
{
    master_slot *s = &m->slots[i];
    if (s->stop == MSTOP_NONE || now < s->stop_deadline_ns) return 0;
    log_warn("worker %d (pid %d) did not stop within %g s (WORKER_STOP_TIMEOUT); killing it", i, (int)s->pid,
             m->cfg->stop_timeout);
    kill_slot(m, i, KILL_STOP_TIMEOUT);
    return 1;
}

/* The application's health check (router.health) failed its `failures`
 * in a row: replace the worker gracefully, its messages finish first. */
static void check_health(master *m, int i)
{
    master_slot *s = &m->slots[i];
    shm_slot *sh = &m->shm->slots[i];
    if (s->stop != MSTOP_NONE || !atomic_load_explicit(&sh->health_failed, memory_order_acquire)) return;
    log_warn("worker %d (pid %d): its health check failed: %s; replacing it", i, (int)s->pid, sh->health_reason);
    master_signal_slot(m, i, SIGTERM, MSTOP_HEALTH);
}

void master_watchdog(master *m, int64_t now)
{
    for (int i = 0; i < m->nslots; i++) {
        master_slot *s = &m->slots[i];
        if (s->pid <= 0 || s->kill != KILL_NONE) continue;  /* no process, or already killed */
        check_health(m, i);
        if (check_stop_deadline(m, i, now)) continue;
        if (check_handler(m, i, now)) continue;
        check_heartbeat(m, i, now);
    }
}
