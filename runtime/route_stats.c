/* Binding routes to their counters in a slot's shared memory. */
#include "route_stats.h"

#include <string.h>

/* Handlers in LuaJIT often take microseconds: the buckets start at 100 us. */
const int64_t route_stats_bound_ns[SHM_DURATION_BUCKETS] = {
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
    100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};
const char *const route_stats_le[SHM_DURATION_BUCKETS + 1] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
};

int route_stats_bind(shm_slot *sh, const char *pattern)
{
    char key[SHM_PATTERN_MAX];
    strncpy(key, pattern, sizeof key - 1);
    key[sizeof key - 1] = 0;
    uint32_t n = atomic_load_explicit(&sh->nroute_stats, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(sh->route_stats[i].pattern, key)) return (int)i;
    if (n >= SHM_ROUTE_STATS) return -1;
    /* A fresh entry's counters are zero: the mapping starts zeroed and
     * entries are never reused. The pattern is in place before the master
     * can see the entry (release, paired with its acquire load). */
    memcpy(sh->route_stats[n].pattern, key, sizeof key);
    atomic_store_explicit(&sh->nroute_stats, n + 1, memory_order_release);
    return (int)n;
}

int route_stats_bind_app(shm_slot *sh, const app_def *a, int16_t *map, int nmap)
{
    int missed = 0;
    for (int i = 0; i < nmap; i++) map[i] = -1;
    for (int i = 0; i < a->nroutes; i++) {
        const route_info *r = &a->routes[i];
        int e = r->index < nmap ? route_stats_bind(sh, r->pattern) : -1;
        if (r->index < nmap) map[r->index] = (int16_t)e;
        missed += e < 0;
    }
    return missed;
}
