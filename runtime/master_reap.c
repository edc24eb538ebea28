/* What happens when a worker exits: reap it, name the reason, record the
 * death on its in-flight message, and restart the slot - at once the first
 * time, with exponential backoff while it keeps dying young. */
#include "master.h"
#include "keep_file.h"
#include "master_policy.h"
#include "cli.h"
#include "devbroker.h"
#include "master_presence.h"
#include "log.h"
#include "worker.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *signame(int sig, char *buf, size_t n)
{
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev) snprintf(buf, n, "SIG%s", abbrev);
    else snprintf(buf, n, "signal %d", sig);
    return buf;
}

/* A worker that did not end on purpose: its in-flight message counts a death. */
static int died_abnormally(int status)
{
    if (WIFSIGNALED(status)) return 1;
    return WEXITSTATUS(status) != WORKER_EXIT_OK && WEXITSTATUS(status) != WORKER_EXIT_RECYCLE &&
           WEXITSTATUS(status) != WORKER_EXIT_SESSION_KEPT;
}

static const char *route_pattern(const master_app *a, int index)
{
    if (a && index >= 1 && index <= a->def.nroutes) return a->def.routes[index - 1].pattern;
    return "?";
}

static void inflight_reason(const master *m, const master_slot *s, int status, char *out, size_t n)
{
    char sn[32];
    if (s->kill == KILL_HANDLER_TIMEOUT && s->kill_detail[0]) snprintf(out, n, "%s", s->kill_detail);
    else if (s->kill == KILL_HEARTBEAT)
        snprintf(out, n, "worker hung: no heartbeat for %g s", m->cfg->heartbeat_timeout);
    else if (s->kill == KILL_STOP_TIMEOUT)
        snprintf(out, n, "worker killed: did not stop within %g s", m->cfg->stop_timeout);
    else if (WIFSIGNALED(status))
        snprintf(out, n, "worker killed by signal %d (%s)", WTERMSIG(status), signame(WTERMSIG(status), sn, sizeof sn));
    else
        snprintf(out, n, "worker exited with code %d", WEXITSTATUS(status));
}

/* Records the death on the messages the worker left unfinished. Only the
 * master writes attempts and reasons, and only while no worker runs in the
 * slot; the fork of the replacement orders these writes before it. Only a
 * handler that was running when its worker died abnormally counts a death
 * (poison); a kill at WORKER_STOP_TIMEOUT does not. */
static void record_kept(master *m, int i, int status)
{
    master_slot *s = &m->slots[i];
    char path[4200];
    keep_map km;
    keep_file_path(path, sizeof path, m->cfg->run_dir, i, NULL);
    if (keep_file_map(&km, path)) return;  /* the worker did not get as far as its keep */
    uint32_t used = atomic_load(&km.h->used);
    int abnormal = died_abnormally(status), stop_kill = s->kill == KILL_STOP_TIMEOUT;
    int kept = 0;
    char reason[SHM_REASON_MAX];
    inflight_reason(m, s, status, reason, sizeof reason);
    /* With WORKER_CONCURRENCY > 1 several handlers are in progress, most of
     * them waiting: only the one whose code was running when the worker
     * died counts a death (the worker names it in handler_rec while its
     * code runs); the others are just handled again. */
    shm_slot *sh = &m->shm->slots[i];
    int on_cpu = atomic_load(&sh->handler_start_ns) ? atomic_load(&sh->handler_rec) : -1;
    for (uint32_t j = 0; j < used && j < km.h->max_recs; j++) {
        shm_rec *r = &km.rec[j];
        uint32_t state = atomic_load(&r->state);
        if (state == REC_FREE) continue;
        kept++;
        if (state != REC_RUNNING || !abnormal || m->stopping) continue;
        const char *route = route_pattern(s->app, r->route_index);
        snprintf(r->reason, sizeof r->reason, "%s", reason);
        if ((int)j != on_cpu) continue;
        if (stop_kill) {
            r->stop_kills++;
            log_warn("worker %d was killed at WORKER_STOP_TIMEOUT handling a message on route %s; the next worker "
                     "handles it again (not counted as a failed attempt)", i, route);
            continue;
        }
        r->attempts++;
        log_warn("worker %d died handling a message on route %s (attempt %u of %d): %s", i, route, r->attempts,
                 m->cfg->poison_attempts, reason);
    }
    keep_file_unmap(&km);
    if (!kept) return;
    atomic_store(&m->shm->slots[i].kept, (uint32_t)kept);
    if (m->stopping) {
        /* Nothing is dropped: the keep file stays in the run directory, and
         * the next start on it handles them first. */
        m->kept_at_stop += (uint64_t)kept;
        log_warn("worker %d stopped with %d unfinished message%s; %s kept for the next start on this run directory "
                 "(in %s), which handles %s first", i, kept, kept == 1 ? "" : "s", kept == 1 ? "it stays" : "they stay",
                 path, kept == 1 ? "it" : "them");
        return;
    }
    if (!s->active)
        log_warn("worker %d retired with %d unfinished message%s; they are handled only if the slot is started "
                 "again", i, kept, kept == 1 ? "" : "s");
    else if (!abnormal)
        log_info("worker %d left %d unfinished message%s; the next worker of the slot handles them", i, kept,
                 kept == 1 ? "" : "s");
}

static void restart(master *m, int i, int status, kill_cause kill, stop_cause stop, int64_t lived, pid_t pid)
{
    master_slot *s = &m->slots[i];
    restart_reason r = master_classify_death(kill, stop, status);
    char why[96];
    master_reason_text(r, status, why, sizeof why);
    int64_t delay = master_restart_delay(&s->quick_deaths, r, lived, m->restart_max_delay_ns);
    s->restarts++;
    m->restarts_by_reason[r]++;
    snprintf(s->last_restart, sizeof s->last_restart, "%s", why);
    s->last_restart_reason = r;
    s->last_restart_ns = shm_now_ns();
    int planned = r == RESTART_RECYCLE || r == RESTART_RECYCLE_MEMORY;
    if (delay == 0) {
        if (planned) log_info("worker %d (pid %d) exited: %s; restarting", i, (int)pid, why);
        else log_warn("worker %d (pid %d) exited: %s; restarting", i, (int)pid, why);
        master_start_slot(m, i);
        return;
    }
    log_warn("worker %d (pid %d) exited: %s after %lld ms, %d times in a row; restarting in %lld ms", i, (int)pid,
             why, (long long)(lived / NS_PER_MS), s->quick_deaths,
             (long long)(delay / NS_PER_MS));
    s->restart_at_ns = shm_now_ns() + delay;
}

/* The worker of slot i has ended with status; decide what comes next. */
static void on_worker_exit(master *m, int i, int status)
{
    master_slot *s = &m->slots[i];
    shm_slot *sh = &m->shm->slots[i];
    pid_t pid = s->pid;
    int64_t lived = shm_now_ns() - s->started_ns;
    kill_cause kill = s->kill;
    stop_cause stop = s->stop;
    char what[64];
    master_describe_status(status, what, sizeof what);

    record_kept(m, i, status);
    s->pid = 0;
    s->kill = KILL_NONE;
    s->stop = MSTOP_NONE;
    s->stop_deadline_ns = 0;
    master_app_unref(s->app);
    s->app = NULL;
    shm_slot_reset(sh, SLOT_EMPTY);

    if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_BROKER_AUTH) {
        log_error("worker %d: the broker %s:%d refused our credentials (MQTT_USERNAME / MQTT_PASSWORD); stopping",
                  i, m->cfg->broker, m->cfg->port);
        master_begin_stop(m, EXIT_UNREACHABLE);
        return;
    }
    int session_kept = WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_SESSION_KEPT;
    if (m->stopping) {
        log_info("worker %d (pid %d) stopped: %s", i, (int)pid, session_kept ? "its session is kept" : what);
        /* A handover that could not end a session: the record says the
         * sessions are kept, so the next start or another instance takes
         * what is queued there. */
        if (session_kept) master_presence_set_stopping(m, 1);
        return;
    }
    if (!s->active) {
        if (session_kept)
            log_warn("worker %d (pid %d) retired with its session kept: what is queued in it waits for the slot "
                     "to start again", i, (int)pid);
        else
            log_info("worker %d (pid %d) retired: %s", i, (int)pid, what);
        return;
    }
    if (stop == MSTOP_RELOAD || stop == MSTOP_RETIRE) {
        /* Replaced by a reload, or scaled back up while it was retiring. */
        log_info("worker %d (pid %d) stopped for %s: %s", i, (int)pid,
                 stop == MSTOP_RELOAD ? "reload" : "a new generation", what);
        master_start_slot(m, i);
        return;
    }
    restart(m, i, status, kill, stop, lived, pid);
}

static int slot_of(const master *m, pid_t pid)
{
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i].pid == pid) return i;
    return -1;
}

void master_reap(master *m)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno == EINTR) continue;
        if (pid <= 0) return;  /* none left that has exited (0), or no children (ECHILD) */
        int i = slot_of(m, pid);
        if (i >= 0) { on_worker_exit(m, i, status); continue; }
        if (master_adopt_reaped(m, pid, status)) continue;
        char what[64];
        master_describe_status(status, what, sizeof what);
        if (devbroker_owns(pid)) log_error("the private mosquitto (pid %d) ended: %s", (int)pid, what);
        else log_debug("reaped unknown child %d: %s", (int)pid, what);
    }
}

void master_restart_due(master *m, int64_t now)
{
    for (int i = 0; i < m->nslots; i++) {
        master_slot *s = &m->slots[i];
        if (!s->restart_at_ns || now < s->restart_at_ns) continue;
        s->restart_at_ns = 0;
        if (s->active && s->pid == 0) master_start_slot(m, i);
    }
}

int64_t master_next_restart(const master *m)
{
    int64_t next = INT64_MAX;
    if (m->stopping) return next;
    for (int i = 0; i < m->nslots; i++)
        if (m->slots[i].restart_at_ns && m->slots[i].restart_at_ns < next) next = m->slots[i].restart_at_ns;
    return next;
}
