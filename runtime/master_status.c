/* What `routemq status` shows, /status serves and /ready decides, built from
 * the master's own records and the workers' shared-memory slots. One view of
 * each slot feeds both renderings, so the table and the JSON never disagree.
 * Nothing here reads the configuration's credentials. */
#include "master.h"
#include "master_dlq.h"
#include "keep_file.h"
#include "version.h"

#include <stdio.h>
#include <string.h>
#include <time.h>


typedef struct slot_view {
    int slot;
    int pid;
    uint32_t generation;
    const char *state;
    int connected;
    double uptime_s;
    uint64_t messages, errors, unmatched, dead_lettered, restarts, rss_kb;
    const char *inflight_route;  /* NULL: no handler running */
    double inflight_s;
    uint32_t in_progress, kept, outgoing;  /* handlers running; messages not finished; publishes unacknowledged */
    uint32_t retry_waiting;                /* kept messages waiting for their next attempt */
    uint64_t outgoing_bytes, publishes_dropped;
    uint32_t refused;            /* subscriptions the broker refused; the first: */
    const char *refused_route, *refused_sub, *refused_reason;
    const char *last_restart;    /* NULL: never restarted */
    const char *last_restart_reason;
    double last_restart_ago_s;
} slot_view;

typedef struct totals {
    uint64_t messages, errors, unmatched, dead_lettered, duplicates, restarts, publishes_dropped;
} totals;

const char *master_slot_state_name(int state)
{
    switch (state) {
    case SLOT_STARTING: return "starting";
    case SLOT_CONNECTING: return "connecting";
    case SLOT_READY: return "ready";
    case SLOT_DRAINING: return "draining";
    case SLOT_REFUSED: return "refused";
    default: return "empty";
    }
}

/* A slot is shown while it is meant to run or still has a process. */
static int listed(const master *m, int i)
{
    return i < m->P || m->slots[i].pid > 0;
}

/* The route of slot i's first refused subscription, NULL when none. */
static const route_info *refused_route(const master *m, int i)
{
    const master_slot *s = &m->slots[i];
    const shm_slot *sh = &m->shm->slots[i];
    int rid = atomic_load(&sh->refused_route);
    if (s->pid <= 0 || !atomic_load(&sh->subs_refused) || !s->app || rid < 1 || rid > s->app->def.nroutes) return NULL;
    return &s->app->def.routes[rid - 1];
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void view_slot(const master *m, int i, int64_t now, slot_view *v)
{
    const master_slot *s = &m->slots[i];
    const shm_slot *sh = &m->shm->slots[i];
    memset(v, 0, sizeof *v);
    v->slot = i;
    v->pid = s->pid;
    v->generation = s->generation;
    v->restarts = s->restarts;
    v->messages = atomic_load(&sh->messages);
    v->errors = atomic_load(&sh->errors);
    v->unmatched = atomic_load(&sh->unmatched);
    v->dead_lettered = atomic_load(&sh->dead_lettered);
    v->publishes_dropped = atomic_load(&sh->publishes_dropped);
    v->kept = atomic_load(&sh->kept);
    v->retry_waiting = atomic_load(&sh->retry_waiting);
    if (s->last_restart_ns) {
        v->last_restart = s->last_restart;
        v->last_restart_reason = master_restart_reason_name(s->last_restart_reason);
        v->last_restart_ago_s = (double)(now - s->last_restart_ns) / NS_PER_S;
    }
    if (s->pid <= 0) {
        v->state = m->stopping ? "stopped" : s->restart_at_ns ? "restarting" : "down";
        return;
    }
    v->state = master_slot_state_name(atomic_load(&sh->state));
    v->connected = atomic_load(&sh->connected) != 0;
    v->uptime_s = (double)(now - s->started_ns) / NS_PER_S;
    v->rss_kb = atomic_load(&sh->rss_kb);
    v->in_progress = atomic_load(&sh->in_progress);
    v->outgoing = atomic_load(&sh->outgoing);
    v->outgoing_bytes = atomic_load(&sh->outgoing_bytes);
    const route_info *r = refused_route(m, i);
    if (r) {
        v->refused = atomic_load(&sh->subs_refused);
        v->refused_route = r->pattern;
        v->refused_sub = r->sub;
        v->refused_reason = sh->refused_reason;
    }
    /* With WORKER_CONCURRENCY > 1 several handlers are in progress, most of
     * them waiting: show the oldest one's route (with 1: the running one). */
    int64_t start = 0;
    int route = 0;
    char path[4200];
    keep_map km;
    keep_file_path(path, sizeof path, m->cfg->run_dir, i, NULL);
    if (keep_file_map(&km, path) == 0) {
        uint32_t used = atomic_load(&km.h->used);
        for (uint32_t j = 0; j < used && j < km.h->max_recs; j++) {
            const shm_rec *r = &km.rec[j];
            if (atomic_load_explicit(&r->state, memory_order_acquire) != REC_RUNNING) continue;
            if (!start || r->started_ns < start) { start = r->started_ns; route = r->route_index; }
        }
        keep_file_unmap(&km);
    }
    if (start && s->app && route >= 1 && route <= s->app->def.nroutes) {
        v->inflight_route = s->app->def.routes[route - 1].pattern;
        v->inflight_s = now > start ? (double)(now - start) / NS_PER_S : 0;
    }
}

static void sum_totals(const master *m, totals *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < m->nslots; i++) {
        const shm_slot *sh = &m->shm->slots[i];
        t->messages += atomic_load(&sh->messages);
        t->errors += atomic_load(&sh->errors);
        t->unmatched += atomic_load(&sh->unmatched);
        t->dead_lettered += atomic_load(&sh->dead_lettered);
        t->duplicates += atomic_load(&sh->duplicates);
        t->publishes_dropped += atomic_load(&sh->publishes_dropped);
    }
    for (int r = 0; r < RESTART_NREASONS; r++) t->restarts += m->restarts_by_reason[r];
}

static const char *master_state(const master *m)
{
    return m->stopping ? "stopping" : master_reloading(m) ? "reloading" : "running";
}

int master_is_ready(const master *m, char *why, size_t n)
{
    if (m->stopping) { snprintf(why, n, "stopping"); return 0; }
    for (int i = 0; i < m->P; i++) {
        const master_slot *s = &m->slots[i];
        const shm_slot *sh = &m->shm->slots[i];
        int state = atomic_load(&sh->state);
        if (s->pid <= 0) { snprintf(why, n, "worker %d is not running", i); return 0; }
        const route_info *r = refused_route(m, i);
        if (r) {
            uint32_t more = atomic_load(&sh->subs_refused) - 1;
            snprintf(why, n, "worker %d: the broker refused the subscription of route '%s' (%s): %.63s%s", i,
                     r->pattern, r->sub, sh->refused_reason, more ? " (and of other routes)" : "");
            return 0;
        }
        if (state != SLOT_READY) { snprintf(why, n, "worker %d is %s", i, master_slot_state_name(state)); return 0; }
        if (!atomic_load(&sh->connected)) { snprintf(why, n, "worker %d is not connected", i); return 0; }
        if (atomic_load(&sh->unhealthy_runs) || atomic_load(&sh->health_failed)) {
            snprintf(why, n, "worker %d is unhealthy: its health check failed %u time%s in a row", i,
                     atomic_load(&sh->unhealthy_runs), atomic_load(&sh->unhealthy_runs) == 1 ? "" : "s");
            return 0;
        }
    }
    snprintf(why, n, "%d worker%s ready", m->P, m->P == 1 ? "" : "s");
    return 1;
}

/* 1 when the Lua files under app/ are no longer those the current generation
 * was loaded from (a walk and a stat per file; only changed files are read). */
static int app_changed_on_disk(const master *m)
{
    if (!m->app || !m->app->def.snap) return 0;
    return app_snapshot_changed(m->app->def.snap, m->cfg->app_dir);
}

static void json_slot(strbuf *b, const slot_view *v)
{
    sb_printf(b, "{\"slot\":%d,\"pid\":%d,\"generation\":%u,\"state\":\"%s\",\"connected\":%s,"
              "\"uptime_seconds\":%.3f,\"messages\":%llu,\"errors\":%llu,\"unmatched\":%llu,"
              "\"dead_lettered\":%llu,\"restarts\":%llu,\"rss_kb\":%llu,",
              v->slot, v->pid, v->generation, v->state, v->connected ? "true" : "false", v->uptime_s,
              (unsigned long long)v->messages, (unsigned long long)v->errors, (unsigned long long)v->unmatched,
              (unsigned long long)v->dead_lettered, (unsigned long long)v->restarts, (unsigned long long)v->rss_kb);
    if (v->last_restart) {
        sb_printf(b, "\"last_restart\":{\"reason\":\"%s\",\"text\":", v->last_restart_reason);
        sb_json_str(b, v->last_restart);
        sb_printf(b, ",\"seconds_ago\":%.3f},", v->last_restart_ago_s);
    } else {
        sb_puts(b, "\"last_restart\":null,");
    }
    sb_printf(b, "\"in_progress\":%u,\"kept\":%u,\"retry_waiting\":%u,\"outgoing\":%u,\"outgoing_bytes\":%llu,"
              "\"publishes_dropped\":%llu,",
              v->in_progress, v->kept, v->retry_waiting, v->outgoing, (unsigned long long)v->outgoing_bytes,
              (unsigned long long)v->publishes_dropped);
    sb_puts(b, "\"refused\":");
    if (v->refused) {
        sb_printf(b, "{\"count\":%u,\"route\":", v->refused);
        sb_json_str(b, v->refused_route);
        sb_puts(b, ",\"subscription\":");
        sb_json_str(b, v->refused_sub);
        sb_puts(b, ",\"reason\":");
        sb_json_str(b, v->refused_reason);
        sb_puts(b, "}");
    } else {
        sb_puts(b, "null");
    }
    sb_puts(b, ",\"in_flight\":");
    if (!v->inflight_route) { sb_puts(b, "null}"); return; }
    sb_puts(b, "{\"route\":");
    sb_json_str(b, v->inflight_route);
    sb_printf(b, ",\"seconds\":%.3f}}", v->inflight_s);
}

void master_status_json(const master *m, strbuf *b)
{
    int64_t now = shm_now_ns();
    char why[512];
    totals t;
    sum_totals(m, &t);
    int ready = master_is_ready(m, why, sizeof why);
    sb_printf(b, "{\"version\":\"%s\",\"pid\":%d,\"state\":\"%s\",\"ready\":%s,\"ready_reason\":", ROUTEMQ_VERSION,
              (int)m->pid, master_state(m), ready ? "true" : "false");
    sb_json_str(b, why);
    sb_puts(b, ",\"app\":");
    sb_json_str(b, m->cfg->app_dir);
    sb_puts(b, ",\"broker\":");
    char broker[600];
    snprintf(broker, sizeof broker, "%s:%d", m->cfg->broker, m->cfg->port);
    sb_json_str(b, broker);
    sb_puts(b, ",\"instance\":");
    sb_json_str(b, m->cfg->instance);
    sb_printf(b, ",\"uptime_seconds\":%.3f,\"generation\":%u,\"workers\":%d,", (double)(now - m->started_ns) / NS_PER_S,
              m->app ? m->app->generation : 0, m->P);
    sb_printf(b, "\"totals\":{\"messages\":%llu,\"errors\":%llu,\"unmatched\":%llu,\"dead_lettered\":%llu,"
              "\"duplicates\":%llu,\"restarts\":%llu,\"publishes_dropped\":%llu},", (unsigned long long)t.messages,
              (unsigned long long)t.errors, (unsigned long long)t.unmatched, (unsigned long long)t.dead_lettered,
              (unsigned long long)t.duplicates, (unsigned long long)t.restarts, (unsigned long long)t.publishes_dropped);
    long dlq_n;
    int64_t dlq_oldest;
    if (master_dlq_summary(m, &dlq_n, &dlq_oldest) < 0) sb_puts(b, "\"dead_letters\":null,");
    else if (dlq_oldest)
        sb_printf(b, "\"dead_letters\":{\"count\":%ld,\"oldest_seconds\":%.0f},", dlq_n,
                  (double)(wall_ms() - dlq_oldest) / 1000);
    else sb_printf(b, "\"dead_letters\":{\"count\":%ld,\"oldest_seconds\":null},", dlq_n);
    sb_puts(b, "\"restarts_by_reason\":{");
    for (int r = 0; r < RESTART_NREASONS; r++)
        sb_printf(b, "%s\"%s\":%llu", r ? "," : "", master_restart_reason_name((restart_reason)r),
                  (unsigned long long)m->restarts_by_reason[r]);
    sb_printf(b, "},\"reloads\":{\"ok\":%llu,\"failed\":%llu},\"app_changed_on_disk\":%s,\"slots\":[",
              (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed,
              app_changed_on_disk(m) ? "true" : "false");
    int first = 1;
    for (int i = 0; i < m->nslots; i++) {
        if (!listed(m, i)) continue;
        slot_view v;
        view_slot(m, i, now, &v);
        if (!first) sb_puts(b, ",");
        first = 0;
        json_slot(b, &v);
    }
    sb_puts(b, "]}\n");
}

/* 42s, 3m07s, 5h02m, 2d04h */
static const char *duration(double s, char *out, size_t n)
{
    long t = (long)s;
    if (t < 60) snprintf(out, n, "%lds", t);
    else if (t < 3600) snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
    else if (t < 86400) snprintf(out, n, "%ldh%02ldm", t / 3600, t % 3600 / 60);
    else snprintf(out, n, "%ldd%02ldh", t / 86400, t % 86400 / 3600);
    return out;
}

static void table_row(strbuf *b, const slot_view *v)
{
    char up[32], pid[16], rss[32], inflight[64];
    snprintf(pid, sizeof pid, v->pid > 0 ? "%d" : "-", v->pid);
    if (v->pid > 0) duration(v->uptime_s, up, sizeof up);
    else snprintf(up, sizeof up, "-");
    if (v->rss_kb) snprintf(rss, sizeof rss, "%.1f MB", (double)v->rss_kb / 1024);
    else snprintf(rss, sizeof rss, "-");
    if (v->inflight_route) snprintf(inflight, sizeof inflight, "%.20s %.1fs", v->inflight_route, v->inflight_s);
    else snprintf(inflight, sizeof inflight, "-");
    sb_printf(b, "%4d  %-8s %4u  %-10s %-8s %10llu %8llu  %-26s %6u %6u %8llu  %s\n", v->slot, pid, v->generation,
              v->state, up, (unsigned long long)v->messages, (unsigned long long)v->errors, inflight, v->kept,
              v->outgoing, (unsigned long long)v->restarts, rss);
}

void master_status_table(const master *m, strbuf *b)
{
    int64_t now = shm_now_ns();
    char up[32], why[512];
    totals t;
    sum_totals(m, &t);
    int ready = master_is_ready(m, why, sizeof why);
    sb_printf(b, "routemq %s  master %d  up %s  %s, %s\n", ROUTEMQ_VERSION, (int)m->pid,
              duration((double)(now - m->started_ns) / NS_PER_S, up, sizeof up), master_state(m),
              ready ? "ready" : why);
    sb_printf(b, "app      %s\n", m->cfg->app_dir);
    sb_printf(b, "broker   %s:%d\n", m->cfg->broker, m->cfg->port);
    sb_printf(b, "workers  %d (application generation %u)\n", m->P, m->app ? m->app->generation : 0);
    if (app_changed_on_disk(m))
        sb_printf(b, "app/ changed on disk since generation %u; run routemq reload\n", m->app->generation);
    int any = 0;
    for (int r = 0; r < RESTART_NREASONS; r++) {
        if (!m->restarts_by_reason[r]) continue;
        sb_printf(b, "%s %s %llu", any ? "," : "restarts", master_restart_reason_name((restart_reason)r),
                  (unsigned long long)m->restarts_by_reason[r]);
        any = 1;
    }
    if (any) sb_puts(b, "\n");
    sb_printf(b, "totals   messages %llu  errors %llu  unmatched %llu  dead-lettered %llu  restarts %llu  "
              "reloads %llu ok, %llu failed  publishes dropped %llu\n", (unsigned long long)t.messages,
              (unsigned long long)t.errors, (unsigned long long)t.unmatched, (unsigned long long)t.dead_lettered,
              (unsigned long long)t.restarts, (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed,
              (unsigned long long)t.publishes_dropped);
    long dlq_n;
    int64_t dlq_oldest;
    int dlq = master_dlq_summary(m, &dlq_n, &dlq_oldest);
    if (dlq < 0) sb_printf(b, "dead letters: the store %s cannot be read\n", m->cfg->dlq_store);
    else if (dlq_n)
        sb_printf(b, "dead letters  %ld in the store, the oldest %s old (routemq dlq list)\n", dlq_n,
                  duration((double)(wall_ms() - dlq_oldest) / 1000, up, sizeof up));
    sb_puts(b, "\n");
    sb_printf(b, "%4s  %-8s %4s  %-10s %-8s %10s %8s  %-26s %6s %6s %8s  %s\n", "SLOT", "PID", "GEN", "STATE", "UP",
              "MESSAGES", "ERRORS", "IN-FLIGHT", "KEPT", "OUT", "RESTARTS", "RSS");
    for (int i = 0; i < m->nslots; i++) {
        if (!listed(m, i)) continue;
        slot_view v;
        view_slot(m, i, now, &v);
        table_row(b, &v);
    }
    /* Below the table: a refused subscription needs its route and reason in full. */
    for (int i = 0; i < m->nslots; i++) {
        if (!listed(m, i)) continue;
        slot_view v;
        view_slot(m, i, now, &v);
        if (!v.refused) continue;
        sb_printf(b, "slot %d: the broker refused the subscription of route '%s' (%s): %s", i, v.refused_route,
                  v.refused_sub, v.refused_reason);
        if (v.refused > 1) sb_printf(b, " (%u subscriptions refused; the log names each)", v.refused);
        sb_puts(b, "\n");
    }
}
