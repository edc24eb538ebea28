/* Route tables and hot reload. SIGHUP loads the application again in a fresh
 * Lua state; only when that works are the workers replaced, one slot at a
 * time (drain the old worker, start the new one on the same client id, wait
 * until it is ready), so shared routes keep being served throughout. The
 * replacement is a small state machine stepped from the event loop. */
#include "master.h"
#include "master_console.h"
#include "master_policy.h"
#include "rundir.h"
#include "log.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READY_WAIT_NS (5 * NS_PER_S)

int master_reloading(const master *m)
{
    return m->reload.phase != RELOAD_IDLE;
}

/* The outcome of reload seq, for systemd and for the `routemq reload`
 * clients waiting for it. */
static void report(master *m, uint64_t seq, int ok, const char *msg)
{
    master_notify_reloaded(m, ok ? "reloaded" : "reload failed; running the previous application");
    master_control_reload_done(m, seq, ok, msg);
    master_console_reload_done(m, seq, ok, msg);
}

void master_reload_abort(master *m)
{
    if (m->reload.phase != RELOAD_IDLE) log_info("reload abandoned: stopping");
    if (m->reload.phase != RELOAD_IDLE || m->reload.pending)
        master_control_reload_done(m, UINT64_MAX, 0, "reload abandoned: the master is stopping");
    m->reload.phase = RELOAD_IDLE;
    m->reload.pending = 0;
}

static void start_reload(master *m)
{
    master_reload *r = &m->reload;
    char err[4096];
    app_def def;
    uint64_t seq = ++m->reload_seq;
    master_notify_reloading(m);
    if (master_load_app(&m->paths, m->cfg, &def, err, sizeof err)) {
        m->reloads_failed++;
        log_error("reload failed: %s; the workers keep running the previous application", err);
        report(m, seq, 0, err);
        return;
    }
    int override, wanted;
    int new_p = master_plan_workers(&def, m->base_override, m->cfg, m->override ? m->P : 0, m->nslots,
                                    &override, &wanted);
    if (wanted > new_p)
        log_warn("reload: %d workers wanted, only %d slots exist; running %d", wanted, m->nslots, new_p);
    master_app *a = master_app_new(&def, m->app_generation + 1);
    if (!a) {
        m->reloads_failed++;
        log_error("reload failed: out of memory");
        report(m, seq, 0, "out of memory");
        return;
    }
    m->app_generation++;
    master_app_unref(m->app);
    m->app = a;
    m->override = override;
    m->reloads_ok++;
    log_info("reload: generation %u, %d worker%s", a->generation, new_p, new_p == 1 ? "" : "s");
    app_note_protocol(&a->def, m->cfg->protocol);
    *r = (master_reload){ .phase = RELOAD_NEXT, .old_p = m->P, .new_p = new_p, .started_ns = shm_now_ns(),
                          .seq = seq };
    /* New slots start at once: more capacity while the old ones cycle. */
    for (int i = m->P; i < new_p; i++) {
        m->slots[i].active = 1;
        m->slots[i].quick_deaths = 0;
        if (m->slots[i].pid == 0) master_start_slot(m, i);
    }
}

void master_reload_request(master *m)
{
    if (m->stopping) return;
    if (master_reloading(m)) {
        if (!m->reload.pending) log_info("reload queued: a reload is in progress");
        m->reload.pending = 1;
        return;
    }
    start_reload(m);
}

/* Slots beyond the new count are retired last, so that the routes they
 * serve stay served while the lower slots are replaced. */
static void finish(master *m, int64_t now)
{
    master_reload *r = &m->reload;
    for (int i = r->new_p; i < r->old_p; i++) master_retire_slot(m, i);
    m->P = r->new_p;
    rundir_write_workers(m->cfg->run_dir, m->P);
    r->phase = RELOAD_IDLE;
    char msg[128];
    snprintf(msg, sizeof msg, "generation %u, %d worker%s, in %lld ms", m->app->generation, m->P,
             m->P == 1 ? "" : "s", (long long)((now - r->started_ns) / NS_PER_MS));
    log_info("reload: generation %u done in %lld ms", m->app->generation,
             (long long)((now - r->started_ns) / NS_PER_MS));
    report(m, r->seq, 1, msg);
    if (r->pending) {
        r->pending = 0;
        start_reload(m);
    }
    if (!master_reloading(m) && m->scale_pending) {
        int delta = m->scale_pending;
        m->scale_pending = 0;
        master_scale_to(m, m->P + delta, "queued SIGTTIN/SIGTTOU");
    }
    if (!master_reloading(m) && m->scale_to_pending) {
        int n = m->scale_to_pending;
        m->scale_to_pending = 0;
        master_scale_to(m, n, "queued routemq scale");
    }
}

/* Tells the next slot that still runs an old generation to drain. A slot
 * without a process, already stopping, or already restarted with the new
 * table needs nothing: its next start uses the new application. */
static void next_slot(master *m, int64_t now)
{
    master_reload *r = &m->reload;
    int n = r->old_p < r->new_p ? r->old_p : r->new_p;
    for (; r->slot < n; r->slot++) {
        master_slot *s = &m->slots[r->slot];
        if (s->pid <= 0 || s->stop != MSTOP_NONE || s->kill != KILL_NONE || s->app == m->app) continue;
        r->old_pid = s->pid;
        if (master_signal_slot(m, r->slot, SIGTERM, MSTOP_RELOAD)) continue;
        r->phase = RELOAD_WAIT_EXIT;
        return;
    }
    finish(m, now);
}

/* One step; 1 when the phase changed and another step may follow at once. */
static int step(master *m, int64_t now)
{
    master_reload *r = &m->reload;
    master_slot *s = &m->slots[r->slot];
    switch (r->phase) {
    case RELOAD_NEXT:
        next_slot(m, now);
        return r->phase != RELOAD_NEXT && r->phase != RELOAD_IDLE;
    case RELOAD_WAIT_EXIT:
        if (s->pid == r->old_pid) return 0;  /* still draining (the watchdog enforces the deadline) */
        if (s->pid > 0) {
            r->phase = RELOAD_WAIT_READY;
            r->deadline_ns = now + READY_WAIT_NS;
        } else {
            r->slot++;  /* could not start it now; the restart logic retries */
            r->phase = RELOAD_NEXT;
        }
        return 1;
    case RELOAD_WAIT_READY: {
        /* A slot whose subscription the broker refused will not be ready
         * (it says why in status): no use waiting for it. */
        int state = atomic_load(&m->shm->slots[r->slot].state);
        if (s->pid > 0 && state != SLOT_READY && state != SLOT_REFUSED && now < r->deadline_ns) return 0;
        if (s->pid > 0 && now >= r->deadline_ns)
            log_warn("reload: worker %d not ready after %lld s; going on", r->slot, READY_WAIT_NS / NS_PER_S);
        r->slot++;
        r->phase = RELOAD_NEXT;
        return 1;
    }
    default:
        return 0;
    }
}

void master_reload_tick(master *m, int64_t now)
{
    while (master_reloading(m) && step(m, now)) {}
}
