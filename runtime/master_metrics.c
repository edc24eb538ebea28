/* /metrics in the Prometheus text format 0.0.4. Per-route counters are the
 * sums over every slot's shm_route_stats entries, matched by pattern: they
 * keep counting across worker restarts and reloads, and a route removed by a
 * reload keeps its final values (a counter never goes back). */
#include "master.h"
#include "master_dlq.h"
#include "master_presence.h"
#include "version.h"
#include "route_stats.h"

#include <stdlib.h>
#include <string.h>


typedef struct route_total {
    const char *pattern;
    uint64_t ok, errors, dead_lettered, retries, sum_ns;
    uint64_t bucket[SHM_DURATION_BUCKETS + 1];
} route_total;

/* Label values escape backslash, double quote and newline. */
static void label_value(strbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '\\') sb_put(b, "\\\\", 2);
        else if (*s == '"') sb_put(b, "\\\"", 2);
        else if (*s == '\n') sb_put(b, "\\n", 2);
        else sb_put(b, s, 1);
    }
    sb_put(b, "\"", 1);
}

static void family(strbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Routes of an application up to this size are listed from the start, at 0;
 * beyond it only the routes with traffic, so the page stays small. */
#define METRICS_ALL_ROUTES_MAX 256

typedef struct totals {
    route_total *t;
    int n, cap;
    int32_t *cells;   /* open addressing over t by pattern */
    size_t mask;
} totals;

static uint32_t hash_pattern(const char *s)
{
    uint32_t h = 2166136261u;
    for (int i = 0; s[i] && i < SHM_PATTERN_MAX - 1; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Patterns are compared as the slots store them (at most SHM_PATTERN_MAX - 1
 * bytes). NULL when t is full: a worker appended an entry after t was sized;
 * it shows in the next scrape. */
static route_total *find_or_add(totals *a, const char *pattern)
{
    size_t i = hash_pattern(pattern) & a->mask;
    for (; a->cells[i] >= 0; i = (i + 1) & a->mask)
        if (!strncmp(a->t[a->cells[i]].pattern, pattern, SHM_PATTERN_MAX - 1)) return &a->t[a->cells[i]];
    if (a->n >= a->cap) return NULL;
    a->cells[i] = a->n;
    a->t[a->n].pattern = pattern;
    return &a->t[a->n++];
}

static int has_traffic(const shm_route_stats *e)
{
    return atomic_load_explicit(&e->ok, memory_order_relaxed) ||
           atomic_load_explicit(&e->errors, memory_order_relaxed) ||
           atomic_load_explicit(&e->dead_lettered, memory_order_relaxed) ||
           atomic_load_explicit(&e->retries, memory_order_relaxed);
}

static void add_entry(route_total *t, const shm_route_stats *e)
{
    t->ok += atomic_load_explicit(&e->ok, memory_order_relaxed);
    t->errors += atomic_load_explicit(&e->errors, memory_order_relaxed);
    t->dead_lettered += atomic_load_explicit(&e->dead_lettered, memory_order_relaxed);
    t->retries += atomic_load_explicit(&e->retries, memory_order_relaxed);
    t->sum_ns += atomic_load_explicit(&e->duration_sum_ns, memory_order_relaxed);
    for (int k = 0; k <= SHM_DURATION_BUCKETS; k++)
        t->bucket[k] += atomic_load_explicit(&e->duration[k], memory_order_relaxed);
}

/* A small application's routes first (present from the start, at 0), then
 * every pattern a slot has counted messages for, "_other" included. NULL
 * when out of memory. */
static route_total *collect(const master *m, int *count)
{
    int all = m->app && m->app->def.nroutes <= METRICS_ALL_ROUTES_MAX;
    totals a = { .cap = all ? m->app->def.nroutes : 0 };
    for (int i = 0; i < m->nslots; i++) {
        const shm_slot *sh = &m->shm->slots[i];
        uint32_t k = atomic_load_explicit(&sh->nroute_stats, memory_order_acquire);
        for (uint32_t j = 0; j < k; j++) a.cap += has_traffic(&sh->route_stats[j]);
    }
    size_t size = 64;
    while (size < 2 * (size_t)a.cap + 1) size *= 2;
    a.mask = size - 1;
    a.t = calloc((size_t)a.cap + 1, sizeof *a.t);
    a.cells = malloc(size * sizeof *a.cells);
    if (!a.t || !a.cells) { free(a.t); free(a.cells); return NULL; }
    memset(a.cells, 0xff, size * sizeof *a.cells);
    for (int i = 0; all && i < m->app->def.nroutes; i++) find_or_add(&a, m->app->def.routes[i].pattern);
    for (int i = 0; i < m->nslots; i++) {
        const shm_slot *sh = &m->shm->slots[i];
        uint32_t k = atomic_load_explicit(&sh->nroute_stats, memory_order_acquire);
        for (uint32_t j = 0; j < k; j++) {
            if (!has_traffic(&sh->route_stats[j])) continue;
            route_total *r = find_or_add(&a, sh->route_stats[j].pattern);
            if (r) add_entry(r, &sh->route_stats[j]);
        }
    }
    free(a.cells);
    *count = a.n;
    return a.t;
}

static void messages(strbuf *b, const route_total *t, int n, uint64_t unmatched)
{
    static const char *const results[] = { "ok", "error", "dead_lettered" };
    family(b, "routemq_messages_total", "counter", "Messages received, by route pattern and result.");
    for (int i = 0; i < n; i++) {
        const uint64_t v[] = { t[i].ok, t[i].errors, t[i].dead_lettered };
        for (int r = 0; r < 3; r++) {
            sb_puts(b, "routemq_messages_total{route=");
            label_value(b, t[i].pattern);
            sb_printf(b, ",result=\"%s\"} %llu\n", results[r], (unsigned long long)v[r]);
        }
    }
    /* A message that matches no route has no pattern. */
    sb_printf(b, "routemq_messages_total{route=\"\",result=\"unmatched\"} %llu\n", (unsigned long long)unmatched);
}

static void retries(strbuf *b, const route_total *t, int n)
{
    family(b, "routemq_retries_total", "counter",
           "Failed attempts (errors, timeouts, ctx:retry) given another attempt, by route pattern.");
    for (int i = 0; i < n; i++) {
        sb_puts(b, "routemq_retries_total{route=");
        label_value(b, t[i].pattern);
        sb_printf(b, "} %llu\n", (unsigned long long)t[i].retries);
    }
}

static void histogram(strbuf *b, const route_total *t, int n)
{
    family(b, "routemq_handler_duration_seconds", "histogram",
           "Time handlers (with their middleware) took, by route pattern.");
    for (int i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (int k = 0; k <= SHM_DURATION_BUCKETS; k++) {
            cum += t[i].bucket[k];
            sb_puts(b, "routemq_handler_duration_seconds_bucket{route=");
            label_value(b, t[i].pattern);
            sb_printf(b, ",le=\"%s\"} %llu\n", route_stats_le[k], (unsigned long long)cum);
        }
        sb_puts(b, "routemq_handler_duration_seconds_sum{route=");
        label_value(b, t[i].pattern);
        sb_printf(b, "} %.9f\n", (double)t[i].sum_ns / 1e9);
        sb_puts(b, "routemq_handler_duration_seconds_count{route=");
        label_value(b, t[i].pattern);
        sb_printf(b, "} %llu\n", (unsigned long long)cum);
    }
}

static void workers(strbuf *b, const master *m)
{
    static const int states[] = { SLOT_STARTING, SLOT_CONNECTING, SLOT_READY, SLOT_DRAINING, SLOT_REFUSED };
    enum { NSTATES = sizeof states / sizeof states[0] };
    int count[NSTATES] = { 0 };
    for (int i = 0; i < m->nslots; i++) {
        if (m->slots[i].pid <= 0) continue;
        int st = atomic_load(&m->shm->slots[i].state);
        for (int k = 0; k < NSTATES; k++) count[k] += st == states[k];
    }
    family(b, "routemq_workers", "gauge", "Worker processes by state.");
    for (int k = 0; k < NSTATES; k++)
        sb_printf(b, "routemq_workers{state=\"%s\"} %d\n", master_slot_state_name(states[k]), count[k]);
    family(b, "routemq_workers_desired", "gauge", "Worker slots the master keeps running.");
    sb_printf(b, "routemq_workers_desired %d\n", m->P);
    family(b, "routemq_mqtt_connected", "gauge", "1 while the worker of a slot is connected to the broker.");
    for (int i = 0; i < m->nslots; i++) {
        if (i >= m->P && m->slots[i].pid <= 0) continue;
        int c = m->slots[i].pid > 0 && atomic_load(&m->shm->slots[i].connected);
        sb_printf(b, "routemq_mqtt_connected{slot=\"%d\"} %d\n", i, c);
    }
}

/* Messages taken and not finished, and what handlers published that the
 * broker has not acknowledged yet, per slot. */
static void delivery(strbuf *b, const master *m)
{
    static const struct { const char *name, *help; } g[] = {
        { "routemq_in_progress", "Messages whose handler has started and not ended (running or waiting), per slot." },
        { "routemq_kept_messages", "Messages a slot has taken and not finished (kept for replay)." },
        { "routemq_outgoing", "Publishes of a slot the broker has not acknowledged yet." },
        { "routemq_outgoing_bytes", "Bytes of those publishes." },
        { "routemq_retry_waiting", "Messages a slot keeps waiting for their next attempt after a failed one." },
    };
    uint64_t dropped = 0;
    for (int k = 0; k < 5; k++) {
        family(b, g[k].name, "gauge", g[k].help);
        for (int i = 0; i < m->nslots; i++) {
            const shm_slot *sh = &m->shm->slots[i];
            if (i >= m->P && m->slots[i].pid <= 0) continue;
            int up = m->slots[i].pid > 0;
            uint64_t v = k == 0 ? (up ? atomic_load(&sh->in_progress) : 0)
                       : k == 1 ? atomic_load(&sh->kept)
                       : k == 2 ? (up ? atomic_load(&sh->outgoing) : 0)
                       : k == 3 ? (up ? atomic_load(&sh->outgoing_bytes) : 0)
                                : atomic_load(&sh->retry_waiting);
            sb_printf(b, "%s{slot=\"%d\"} %llu\n", g[k].name, i, (unsigned long long)v);
        }
    }
    for (int i = 0; i < m->nslots; i++) dropped += atomic_load(&m->shm->slots[i].publishes_dropped);
    family(b, "routemq_publishes_dropped_total", "counter",
           "Publishes given up on (each logged): refused by the broker, or QoS 0 ones lost with the connection.");
    sb_printf(b, "routemq_publishes_dropped_total %llu\n", (unsigned long long)dropped);
    family(b, "routemq_kept_at_stop_total", "counter",
           "Messages workers had taken and not finished when the instance stopped: kept for the next start, not dropped.");
    sb_printf(b, "routemq_kept_at_stop_total %llu\n", (unsigned long long)m->kept_at_stop);
    uint64_t too_large = 0;
    for (int i = 0; i < m->nslots; i++) too_large += atomic_load(&m->shm->slots[i].lost_too_large);
    family(b, "routemq_messages_lost_total", "counter",
           "Messages acknowledged to the broker and not handled (each logged; docs/delivery.md).");
    sb_printf(b, "routemq_messages_lost_total{reason=\"too_large\"} %llu\n", (unsigned long long)too_large);
}

static void master_counters(strbuf *b, const master *m, uint64_t duplicates)
{
    char why[128];
    family(b, "routemq_worker_restarts_total", "counter", "Worker restarts, by reason.");
    for (int r = 0; r < RESTART_NREASONS; r++)
        sb_printf(b, "routemq_worker_restarts_total{reason=\"%s\"} %llu\n",
                  master_restart_reason_name((restart_reason)r), (unsigned long long)m->restarts_by_reason[r]);
    family(b, "routemq_reloads_total", "counter", "Reloads, by result (failed: the new application did not load).");
    sb_printf(b, "routemq_reloads_total{result=\"ok\"} %llu\n", (unsigned long long)m->reloads_ok);
    sb_printf(b, "routemq_reloads_total{result=\"failed\"} %llu\n", (unsigned long long)m->reloads_failed);
    family(b, "routemq_duplicates_skipped_total", "counter",
           "Broker redeliveries of messages a slot had already taken, skipped.");
    sb_printf(b, "routemq_duplicates_skipped_total %llu\n", (unsigned long long)duplicates);
    family(b, "routemq_ready", "gauge", "1 when every worker slot is connected and subscribed (as /ready).");
    sb_printf(b, "routemq_ready %d\n", master_is_ready(m, why, sizeof why));
    uint64_t adopted_sessions, adopted_messages;
    master_adopt_totals(m, &adopted_sessions, &adopted_messages);
    family(b, "routemq_adopted_sessions_total", "counter",
           "Sessions of lost or stopped instances this instance adopted, drained and ended.");
    sb_printf(b, "routemq_adopted_sessions_total %llu\n", (unsigned long long)adopted_sessions);
    family(b, "routemq_adopted_messages_total", "counter", "Messages handled from adopted sessions.");
    sb_printf(b, "routemq_adopted_messages_total %llu\n", (unsigned long long)adopted_messages);
    master_adopt_refused_metrics(m, b);
    family(b, "routemq_build_info", "gauge", "Build information; always 1.");
    sb_printf(b, "routemq_build_info{version=\"%s\"} 1\n", ROUTEMQ_VERSION);
}

/* routemq_timer_runs_total{name,result}: the slots' entries of each name summed. */
static void timers(strbuf *b, const master *m)
{
    family(b, "routemq_timer_runs_total", "counter",
           "Runs of router.every timers, by name and result (skipped: the previous run was still going).");
    for (int i = 0; i < m->nslots; i++) {
        const shm_slot *sh = &m->shm->slots[i];
        uint32_t n = atomic_load_explicit(&sh->ntimer_stats, memory_order_acquire);
        for (uint32_t j = 0; j < n && j < SHM_TIMERS; j++) {
            const char *name = sh->timer_stats[j].name;
            int seen = 0;  /* an earlier slot printed this name already */
            for (int k = 0; k < i && !seen; k++) {
                const shm_slot *o = &m->shm->slots[k];
                uint32_t on = atomic_load_explicit(&o->ntimer_stats, memory_order_acquire);
                for (uint32_t q = 0; q < on && q < SHM_TIMERS; q++)
                    if (strcmp(o->timer_stats[q].name, name) == 0) { seen = 1; break; }
            }
            if (seen) continue;
            uint64_t ok = 0, errors = 0, skipped = 0;
            for (int k = i; k < m->nslots; k++) {
                const shm_slot *o = &m->shm->slots[k];
                uint32_t on = atomic_load_explicit(&o->ntimer_stats, memory_order_acquire);
                for (uint32_t q = 0; q < on && q < SHM_TIMERS; q++) {
                    if (strcmp(o->timer_stats[q].name, name) != 0) continue;
                    ok += atomic_load(&o->timer_stats[q].ok);
                    errors += atomic_load(&o->timer_stats[q].errors);
                    skipped += atomic_load(&o->timer_stats[q].skipped);
                }
            }
            static const char *const results[] = { "ok", "error", "skipped" };
            uint64_t v[] = { ok, errors, skipped };
            for (int r = 0; r < 3; r++) {
                sb_puts(b, "routemq_timer_runs_total{name=");
                label_value(b, name);
                sb_printf(b, ",result=\"%s\"} %llu\n", results[r], (unsigned long long)v[r]);
            }
        }
    }
}

void master_metrics(const master *m, strbuf *b)
{
    uint64_t unmatched = 0, duplicates = 0;
    for (int i = 0; i < m->nslots; i++) {
        unmatched += atomic_load(&m->shm->slots[i].unmatched);
        duplicates += atomic_load(&m->shm->slots[i].duplicates);
    }
    int n = 0;
    route_total *t = collect(m, &n);
    if (!t) { b->oom = 1; return; }
    messages(b, t, n, unmatched);
    retries(b, t, n);
    histogram(b, t, n);
    free(t);
    workers(b, m);
    delivery(b, m);
    timers(b, m);
    master_counters(b, m, duplicates);
    master_dlq_metrics(m, b);
}
