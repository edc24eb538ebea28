/* Per-route counters in the slots' shared memory (shm_route_stats): the
 * worker side binds its routes to entries and counts each handled message
 * with three relaxed atomic adds; the master side reads the bucket bounds. */
#ifndef ROUTEMQ_ROUTE_STATS_H
#define ROUTEMQ_ROUTE_STATS_H

#include "app.h"
#include "shm.h"

/* Upper bounds of the finite histogram buckets, in nanoseconds and as
 * Prometheus `le` labels ("+Inf" follows them). */
extern const int64_t route_stats_bound_ns[SHM_DURATION_BUCKETS];
extern const char *const route_stats_le[SHM_DURATION_BUCKETS + 1];

/* The slot's entry for pattern, appended when the slot has never counted
 * it; the "_other" entry (SHM_ROUTE_TABLE - 1) when the table is full. Only
 * the slot's own worker may call it. */
int route_stats_bind(shm_slot *sh, const char *pattern);

/* Binds every route of a to its entry: map[route index] = entry or -1, for
 * indexes below nmap. Returns how many routes found no entry of their own
 * (counted under "_other", or not at all past nmap). */
int route_stats_bind_app(shm_slot *sh, const app_def *a, int16_t *map, int nmap);

/* One handled message of the route whose entry is e. */
static inline void route_stats_observe(shm_route_stats *e, int64_t ns, int ok)
{
    int b = 0;
    while (b < SHM_DURATION_BUCKETS && ns > route_stats_bound_ns[b]) b++;
    atomic_fetch_add_explicit(ok ? &e->ok : &e->errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->duration[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->duration_sum_ns, (uint64_t)(ns > 0 ? ns : 0), memory_order_relaxed);
}

/* Marks entry e as changed for the master's one-second history, after
 * route_stats_observe: the release orders the counters before the bit
 * (the master takes the word with acquire, then reads the counters). */
static inline void route_stats_touch(shm_slot *sh, int e)
{
    atomic_fetch_or_explicit(&sh->route_dirty[e >> 6], 1ull << (e & 63), memory_order_release);
}

#endif
