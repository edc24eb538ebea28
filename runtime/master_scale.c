/* Scaling: one more or one fewer worker on SIGTTIN / SIGTTOU, auto-scaling
 * on how busy the workers are, and the memory backstop that recycles a
 * worker whose RSS passed WORKER_MAX_MEMORY_MB without it noticing.
 *
 * A new slot gets workers_override = P, so it subscribes every shared route;
 * the workers already running keep their subscriptions. */
#include "master.h"
#include "proc_statm.h"
#include "rundir.h"
#include "log.h"

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#define BUSY_HIGH 0.75
#define BUSY_LOW 0.10
#define HIGH_SAMPLES 3        /* seconds above BUSY_HIGH before adding a worker */
#define LOW_SAMPLES 10        /* seconds below BUSY_LOW before removing one */
#define COOLDOWN_NS (5 * NS_PER_S)

void master_retire_slot(master *m, int i)
{
    master_slot *s = &m->slots[i];
    s->active = 0;
    s->restart_at_ns = 0;
    if (s->pid > 0 && s->kill == KILL_NONE) master_signal_slot(m, i, SIGUSR2, MSTOP_RETIRE);
}

static void activate_slot(master *m, int i)
{
    master_slot *s = &m->slots[i];
    s->active = 1;
    s->quick_deaths = 0;
    /* A worker still retiring in this slot is restarted when it exits; it
     * stops draining and leaves its session (and backlog) to that worker. */
    if (s->pid == 0) master_start_slot(m, i);
    else if (s->stop == MSTOP_RETIRE && s->kill == KILL_NONE) master_signal_slot(m, i, SIGTERM, MSTOP_RETIRE);
}

void master_scale_to(master *m, int n, const char *why)
{
    if (m->stopping) return;
    if (n < 1) {
        log_warn("%s: already at 1 worker", why);
        n = 1;
    }
    if (n > m->nslots) {
        log_warn("%s: at most %d workers (the shared memory was sized at start)", why, m->nslots);
        n = m->nslots;
    }
    if (n == m->P) return;
    int old = m->P;
    m->P = n;
    rundir_write_workers(m->cfg->run_dir, m->P);
    m->override = n;
    log_info("scale (%s): %d -> %d worker%s", why, old, n, n == 1 ? "" : "s");
    for (int i = old; i < n; i++) activate_slot(m, i);
    for (int i = n; i < old; i++) master_retire_slot(m, i);
    m->autoscale.high = m->autoscale.low = 0;
    m->autoscale.cooldown_until_ns = shm_now_ns() + COOLDOWN_NS;
}

void master_scale_by(master *m, int delta, const char *why)
{
    if (m->stopping) return;
    if (master_reloading(m)) {
        m->scale_pending += delta;
        log_info("%s: applied after the reload in progress", why);
        return;
    }
    master_scale_to(m, m->P + delta, why);
}

/* Time a slot has spent in handlers, counting the one running now. */
static uint64_t busy_now(const shm_slot *sh, int64_t now)
{
    uint64_t busy = atomic_load(&sh->busy_ns);
    int64_t start = atomic_load(&sh->handler_start_ns);
    if (start && now > start) busy += (uint64_t)(now - start);
    return busy;
}

/* Mean busy fraction over the live slots since the last sample; -1 when no
 * slot has a baseline yet. */
static double mean_busy(master *m, int64_t now, int64_t wall)
{
    double sum = 0;
    int n = 0;
    for (int i = 0; i < m->P; i++) {
        master_slot *s = &m->slots[i];
        if (s->pid <= 0) continue;
        uint64_t busy = busy_now(&m->shm->slots[i], now);
        /* A new process (or one whose counter went back) sets its baseline first. */
        if (s->busy_valid && busy >= s->busy_prev) {
            double f = (double)(busy - s->busy_prev) / (double)wall;
            sum += f > 1 ? 1 : f;
            n++;
        }
        s->busy_prev = busy;
        s->busy_valid = 1;
    }
    return n ? sum / n : -1;
}

static void autoscale(master *m, int64_t now)
{
    master_autoscale *a = &m->autoscale;
    int64_t wall = now - a->last_ns;
    a->last_ns = now;
    if (wall <= 0 || master_reloading(m)) return;
    double busy = mean_busy(m, now, wall);
    if (busy < 0) return;
    a->high = busy > BUSY_HIGH ? a->high + 1 : 0;
    a->low = busy < BUSY_LOW ? a->low + 1 : 0;
    if (now < a->cooldown_until_ns) return;
    char why[64];
    if (a->high >= HIGH_SAMPLES && m->P < m->cfg->max_count && m->P < m->nslots) {
        snprintf(why, sizeof why, "auto-scale: %.0f%% busy", busy * 100);
        master_scale_to(m, m->P + 1, why);
    } else if (a->low >= LOW_SAMPLES && m->P > m->cfg->min_count) {
        snprintf(why, sizeof why, "auto-scale: %.0f%% busy", busy * 100);
        master_scale_to(m, m->P - 1, why);
    }
}

/* RSS in kB as the kernel sees it now; the worker's own sample in shm is
 * not refreshed while a handler runs, which is when memory grows. */
static uint64_t rss_kb(pid_t pid, const shm_slot *sh)
{
    uint64_t kb = atomic_load(&sh->rss_kb), now_kb;
    if (proc_rss_kb(pid, &now_kb) == 0 && now_kb > kb) kb = now_kb;
    return kb;
}

/* The worker checks its own RSS and recycles itself; this catches one that
 * cannot (growing inside a long handler, or a bug) - gracefully, then by
 * the stop deadline. */
static void memory_backstop(master *m)
{
    for (int i = 0; i < m->nslots; i++) {
        master_slot *s = &m->slots[i];
        if (s->pid <= 0 || s->stop != MSTOP_NONE || s->kill != KILL_NONE) continue;
        shm_slot *sh = &m->shm->slots[i];
        /* One already draining is recycling itself. */
        if (atomic_load(&sh->state) == SLOT_DRAINING) continue;
        uint64_t rss = rss_kb(s->pid, sh);
        if (rss / 1024 <= (uint64_t)m->cfg->max_memory_mb) continue;
        log_warn("worker %d (pid %d): RSS %llu MB is above WORKER_MAX_MEMORY_MB=%ld; recycling it", i,
                 (int)s->pid, (unsigned long long)(rss / 1024), m->cfg->max_memory_mb);
        master_signal_slot(m, i, SIGTERM, MSTOP_RECYCLE_MEMORY);
    }
}

void master_scale_tick(master *m, int64_t now)
{
    if (m->cfg->auto_scale) autoscale(m, now);
    if (m->cfg->max_memory_mb > 0) memory_backstop(m);
}
