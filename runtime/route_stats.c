/* Binding routes to their counters in a slot's shared memory. */
#include "route_stats.h"

#include <stdlib.h>
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

/* The entry counting what did not fit: the table's last, made on first use. */
static int other_entry(shm_slot *sh, uint32_t n)
{
    if (n == SHM_ROUTE_TABLE - 1) {
        strcpy(sh->route_stats[n].pattern, SHM_ROUTE_OTHER);
        atomic_store_explicit(&sh->nroute_stats, n + 1, memory_order_release);
    }
    return SHM_ROUTE_TABLE - 1;
}

/* Appends key as entry n, or gives the "_other" entry when the table is full. */
static int append(shm_slot *sh, uint32_t n, const char *key)
{
    if (n >= SHM_ROUTE_TABLE - 1) return other_entry(sh, n);
    /* A fresh entry's counters are zero: the mapping starts zeroed and
     * entries are never reused. The pattern is in place before the master
     * can see the entry (release, paired with its acquire load). */
    memcpy(sh->route_stats[n].pattern, key, SHM_PATTERN_MAX);
    atomic_store_explicit(&sh->nroute_stats, n + 1, memory_order_release);
    return (int)n;
}

static void make_key(char key[SHM_PATTERN_MAX], const char *pattern)
{
    memset(key, 0, SHM_PATTERN_MAX);
    strncpy(key, pattern, SHM_PATTERN_MAX - 1);
}

int route_stats_bind(shm_slot *sh, const char *pattern)
{
    char key[SHM_PATTERN_MAX];
    make_key(key, pattern);
    uint32_t n = atomic_load_explicit(&sh->nroute_stats, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(sh->route_stats[i].pattern, key)) return (int)i;
    return append(sh, n, key);
}

static uint32_t hash_key(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Open addressing over entry indexes: finds key's entry, or the free cell
 * where it goes (*found = 0). */
static int32_t *probe(int32_t *cells, size_t mask, const shm_slot *sh, const char *key, int *found)
{
    for (size_t i = hash_key(key) & mask;; i = (i + 1) & mask) {
        if (cells[i] < 0) { *found = 0; return &cells[i]; }
        if (!strcmp(sh->route_stats[cells[i]].pattern, key)) { *found = 1; return &cells[i]; }
    }
}

int route_stats_bind_app(shm_slot *sh, const app_def *a, int16_t *map, int nmap)
{
    int missed = 0;
    for (int i = 0; i < nmap; i++) map[i] = -1;
    /* A hash of the slot's entries: thousands of routes would make one
     * linear search per route quadratic. Without memory, the linear one. */
    uint32_t n = atomic_load_explicit(&sh->nroute_stats, memory_order_acquire);
    size_t size = 64;
    while (size < 2 * ((size_t)n + (size_t)a->nroutes + 1)) size *= 2;
    int32_t *cells = malloc(size * sizeof *cells);
    if (cells) {
        memset(cells, 0xff, size * sizeof *cells);
        int found;
        for (uint32_t i = 0; i < n; i++) {
            int32_t *c = probe(cells, size - 1, sh, sh->route_stats[i].pattern, &found);
            if (!found) *c = (int32_t)i;
        }
    }
    for (int i = 0; i < a->nroutes; i++) {
        const route_info *r = &a->routes[i];
        int e = -1;
        if (r->index < nmap && cells) {
            char key[SHM_PATTERN_MAX];
            int found;
            make_key(key, r->pattern);
            int32_t *c = probe(cells, size - 1, sh, key, &found);
            if (found) e = *c;
            else {
                n = atomic_load_explicit(&sh->nroute_stats, memory_order_relaxed);
                e = append(sh, n, key);
                if (e == (int)n) *c = e;
            }
        } else if (r->index < nmap) {
            e = route_stats_bind(sh, r->pattern);
        }
        if (r->index < nmap) map[r->index] = (int16_t)e;
        missed += e < 0 || e == SHM_ROUTE_TABLE - 1;
    }
    free(cells);
    return missed;
}
