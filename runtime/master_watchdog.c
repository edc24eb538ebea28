/* The watchdog, run on every tick: SIGKILLs a worker whose handler ran past
 * its route's timeout, whose event loop stopped turning (heartbeat), that
 * never finished starting, or that did not obey a stop within its deadline.
 * The worker refreshes its heartbeat at every turn of its loop but not while
 * a handler runs, so while a handler runs only the handler timeout applies. */
#include "master.h"
#include "log.h"
#include "master_presence.h"

#include <signal.h>
#include <stdio.h>

#define STARTUP_GRACE_NS (10 * NS_PER_S)  /* on top of the heartbeat timeout */

static void kill_process(master_slot *s, kill_cause why)
{
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
static int check_handler(master *m, master_slot *s, shm_slot *sh, const char *who, int64_t now)
{
    int64_t start = atomic_load(&sh->handler_start_ns);
    if (!start) return 0;
    s->busy_seen_ns = now;
    const route_info *r = running_route(s, atomic_load(&sh->handler_route));
    double timeout = r && r->timeout > 0 ? r->timeout : m->cfg->handler_timeout;
    if (now - start <= (int64_t)(timeout * NS_PER_S)) return 1;
    const char *pattern = r ? r->pattern : "?";
    snprintf(s->kill_detail, sizeof s->kill_detail, "handler timeout after %g s on route %s", timeout, pattern);
    log_warn("%s (pid %d): handler on route %s has run %.1f s, past its %g s timeout; killing it", who,
             (int)s->pid, pattern, (double)(now - start) / NS_PER_S, timeout);
    kill_process(s, KILL_HANDLER_TIMEOUT);
    return 1;
}

static void check_heartbeat(master *m, master_slot *s, shm_slot *sh, const char *who, int64_t now)
{
    int64_t limit = (int64_t)(m->cfg->heartbeat_timeout * NS_PER_S);
    if (atomic_load(&sh->state) <= SLOT_STARTING) {
        /* Loading the application may take a while, but not forever. */
        if (now - s->started_ns <= limit + STARTUP_GRACE_NS) return;
        log_warn("%s (pid %d): still starting after %.1f s; killing it", who, (int)s->pid,
                 (double)(now - s->started_ns) / NS_PER_S);
        kill_process(s, KILL_STARTUP);
        return;
    }
    /* A handler that just returned leaves an old heartbeat until the loop
     * turns again: count the last time we saw it busy as a sign of life. */
    int64_t last = atomic_load(&sh->heartbeat_ns);
    if (s->busy_seen_ns > last) last = s->busy_seen_ns;
    if (now - last <= limit) return;
    log_warn("%s (pid %d): no heartbeat for %.1f s (WORKER_HEARTBEAT_TIMEOUT %g s); killing it", who,
             (int)s->pid, (double)(now - last) / NS_PER_S, m->cfg->heartbeat_timeout);
    kill_process(s, KILL_HEARTBEAT);
}

/* 1 when the worker was told to stop and is past its deadline (then killed).
 * A retirement while the instance runs (scale down) drains its session's
 * backlog for as long as that takes: each message it handles moves its
 * deadline, so only one that makes no progress for WORKER_STOP_TIMEOUT is
 * killed. */
static int check_stop_deadline(master *m, master_slot *s, shm_slot *sh, const char *who, int64_t now)
{
    if (s->stop == MSTOP_NONE) return 0;
    if (s->stop == MSTOP_RETIRE && !m->stopping) {
        uint64_t done = atomic_load(&sh->messages);
        if (done != s->stop_progress) {
            s->stop_progress = done;
            s->stop_deadline_ns = now + (int64_t)(m->cfg->stop_timeout * NS_PER_S);
        }
    }
    if (now < s->stop_deadline_ns) return 0;
    log_warn("%s (pid %d) did not stop within %g s (WORKER_STOP_TIMEOUT)%s; killing it", who, (int)s->pid,
             m->cfg->stop_timeout, s->stop == MSTOP_RETIRE && !m->stopping ? " of its last progress" : "");
    kill_process(s, KILL_STOP_TIMEOUT);
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

void master_watchdog_process(master *m, master_slot *s, shm_slot *sh, const char *who, int64_t now)
{
    if (s->pid <= 0 || s->kill != KILL_NONE) return;  /* no process, or already killed */
    if (check_stop_deadline(m, s, sh, who, now)) return;
    if (check_handler(m, s, sh, who, now)) return;
    check_heartbeat(m, s, sh, who, now);
}

void master_watchdog(master *m, int64_t now)
{
    for (int i = 0; i < m->nslots; i++) {
        master_slot *s = &m->slots[i];
        if (s->pid <= 0 || s->kill != KILL_NONE) continue;  /* no process, or already killed */
        char who[32];
        snprintf(who, sizeof who, "worker %d", i);
        check_health(m, i);
        master_watchdog_process(m, s, &m->shm->slots[i], who, now);
    }
    master_adopt_watchdog(m, now);
}
