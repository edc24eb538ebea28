#include "master_policy.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

static const char *const reason_names[RESTART_NREASONS] = {
    [RESTART_EXIT] = "exit",
    [RESTART_SIGNAL] = "signal",
    [RESTART_HANDLER_TIMEOUT] = "handler_timeout",
    [RESTART_HEARTBEAT] = "heartbeat",
    [RESTART_STARTUP] = "startup",
    [RESTART_RECYCLE] = "recycle",
    [RESTART_RECYCLE_MEMORY] = "recycle_memory",
    [RESTART_HEALTH] = "health",
    [RESTART_APP_ERROR] = "app_error",
};

const char *master_restart_reason_name(restart_reason r)
{
    return r >= 0 && r < RESTART_NREASONS ? reason_names[r] : "unknown";
}

void master_describe_status(int status, char *out, size_t n)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *abbrev = sigabbrev_np(sig);
        if (abbrev) snprintf(out, n, "signal %d (SIG%s)", sig, abbrev);
        else snprintf(out, n, "signal %d (signal %d)", sig, sig);
    } else {
        snprintf(out, n, "exit %d", WEXITSTATUS(status));
    }
}

restart_reason master_classify_death(kill_cause kill, stop_cause stop, int status)
{
    if (kill == KILL_HANDLER_TIMEOUT) return RESTART_HANDLER_TIMEOUT;
    if (kill == KILL_HEARTBEAT) return RESTART_HEARTBEAT;
    if (kill == KILL_STARTUP) return RESTART_STARTUP;
    if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_RECYCLE) return RESTART_RECYCLE;
    if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_APP) return RESTART_APP_ERROR;
    if (stop == MSTOP_RECYCLE_MEMORY) return RESTART_RECYCLE_MEMORY;
    if (stop == MSTOP_HEALTH) return RESTART_HEALTH;
    return WIFSIGNALED(status) ? RESTART_SIGNAL : RESTART_EXIT;
}

void master_reason_text(restart_reason r, int status, char *out, size_t n)
{
    switch (r) {
    case RESTART_HANDLER_TIMEOUT: snprintf(out, n, "watchdog: handler timeout"); break;
    case RESTART_HEARTBEAT: snprintf(out, n, "watchdog: heartbeat"); break;
    case RESTART_STARTUP: snprintf(out, n, "watchdog: stuck starting"); break;
    case RESTART_RECYCLE: snprintf(out, n, "recycle"); break;
    case RESTART_RECYCLE_MEMORY: snprintf(out, n, "recycle: memory"); break;
    case RESTART_HEALTH: snprintf(out, n, "health check"); break;
    case RESTART_APP_ERROR: snprintf(out, n, "app_error: the application did not load"); break;
    default: master_describe_status(status, out, n); break;
    }
}

int64_t master_restart_delay(int *quick_deaths, restart_reason r, int64_t lived, int64_t max_delay)
{
    if (r == RESTART_RECYCLE || r == RESTART_RECYCLE_MEMORY || lived >= POLICY_HEALTHY_NS) {
        *quick_deaths = 0;
        return 0;
    }
    int k = (*quick_deaths)++;
    if (k == 0) return 0;
    int64_t d = POLICY_BACKOFF_MIN_NS;
    for (int j = 1; j < k && d < max_delay; j++) d *= 2;
    return d < max_delay ? d : max_delay;
}

static int clamp_auto(const config *cfg, int p)
{
    if (p < cfg->min_count) p = cfg->min_count;
    if (p > cfg->max_count) p = cfg->max_count;
    return p;
}

/* --workers / WORKER_COUNT win; with auto-scale a count the scaler chose
 * stays (within its bounds); otherwise the routes decide, so counts changed
 * in the routers take effect on reload (and a SIGTTIN/SIGTTOU adjustment is
 * dropped, as gunicorn does on HUP). */
int master_plan_workers(app_def *def, int base_override, const config *cfg, int keep, int nslots,
                        int *override, int *wanted)
{
    *override = base_override;
    if (cfg->auto_scale && keep) *override = clamp_auto(cfg, keep);
    if (*override) app_override_workers(def, *override);
    int p = app_slot_count(def);
    if (cfg->auto_scale && clamp_auto(cfg, p) != p) p = *override = clamp_auto(cfg, p);
    *wanted = p;
    if (nslots > 0 && p > nslots) p = *override = nslots;
    if (*override) app_override_workers(def, *override);
    return p;
}

int master_plan_slots(int workers, int max_count, int min_slots)
{
    int n = min_slots;
    if (workers > n) n = workers;
    if (max_count > n) n = max_count;
    return n > SHM_MAX_SLOTS ? SHM_MAX_SLOTS : n;
}
