/* /metrics in the Prometheus text format 0.0.4. Per-route counters are the
 * sums over every slot's shm_route_stats entries, matched by pattern: they
 * keep counting across worker restarts and reloads, and a route removed by a
 * reload keeps its final values (a counter never goes back). */
#include "master.h"
#include "version.h"
#include "route_stats.h"

#include <stdlib.h>
#include <string.h>


typedef struct route_total {
    const char *pattern;
    uint64_t ok, errors, dead_lettered, sum_ns;
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

/* Patterns are compared as the slots store them (at most SHM_PATTERN_MAX - 1
 * bytes). NULL when t is full: a worker appended an entry after t was sized;
 * it shows in the next scrape. */
static route_total *find_or_add(route_total *t, int *n, int cap, const char *pattern)
{
    for (int i = 0; i < *n; i++)
        if (!strncmp(t[i].pattern, pattern, SHM_PATTERN_MAX - 1)) return &t[i];
    if (*n >= cap) return NULL;
    t[*n].pattern = pattern;
    return &t[(*n)++];
}

static void add_entry(route_total *t, const shm_route_stats *e)
{
    t->ok += atomic_load_explicit(&e->ok, memory_order_relaxed);
    t->errors += atomic_load_explicit(&e->errors, memory_order_relaxed);
    t->dead_lettered += atomic_load_explicit(&e->dead_lettered, memory_order_relaxed);
    t->sum_ns += atomic_load_explicit(&e->duration_sum_ns, memory_order_relaxed);
    for (int k = 0; k <= SHM_DURATION_BUCKETS; k++)
        t->bucket[k] += atomic_load_explicit(&e->duration[k], memory_order_relaxed);
}

/* The current application's routes first (present from the start, at 0),
 * then whatever else a slot has counted. NULL when out of memory. */
static route_total *collect(const master *m, int *count)
{
    int cap = m->app ? m->app->def.nroutes : 0;
    for (int i = 0; i < m->nslots; i++)
        cap += (int)atomic_load_explicit(&m->shm->slots[i].nroute_stats, memory_order_acquire);
    route_total *t = calloc((size_t)cap + 1, sizeof *t);
    if (!t) return NULL;
    int n = 0;
    for (int i = 0; m->app && i < m->app->def.nroutes; i++) find_or_add(t, &n, cap, m->app->def.routes[i].pattern);
    for (int i = 0; i < m->nslots; i++) {
        const shm_slot *sh = &m->shm->slots[i];
        uint32_t k = atomic_load_explicit(&sh->nroute_stats, memory_order_acquire);
        for (uint32_t j = 0; j < k; j++) {
            route_total *r = find_or_add(t, &n, cap, sh->route_stats[j].pattern);
            if (r) add_entry(r, &sh->route_stats[j]);
        }
    }
    *count = n;
    return t;
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
    static const int states[] = { SLOT_STARTING, SLOT_CONNECTING, SLOT_READY, SLOT_DRAINING };
    int count[4] = { 0 };
    for (int i = 0; i < m->nslots; i++) {
        if (m->slots[i].pid <= 0) continue;
        int st = atomic_load(&m->shm->slots[i].state);
        for (int k = 0; k < 4; k++) count[k] += st == states[k];
    }
    family(b, "routemq_workers", "gauge", "Worker processes by state.");
    for (int k = 0; k < 4; k++)
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
    family(b, "routemq_build_info", "gauge", "Build information; always 1.");
    sb_printf(b, "routemq_build_info{version=\"%s\"} 1\n", ROUTEMQ_VERSION);
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
    histogram(b, t, n);
    free(t);
    workers(b, m);
    master_counters(b, m, duplicates);
}
