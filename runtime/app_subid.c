/* MQTT 5 subscription identifiers of routes: a hash of the route's
 * subscription, never its position among the routes, so that a message the
 * broker queued before a deploy that added, removed or reordered routes
 * still names its route (docs/delivery.md, "Overlapping routes"). */
#include "app.h"
#include "hash.h"

#include <stdlib.h>
#include <string.h>

/* The identifier a route's subscription hashes to with salt (0, then 1, 2 ...
 * while it collides): from its filter with the share group, QoS and retain
 * handling, which the route keeps however the routes are ordered. */
static uint32_t sub_id_of(const route_info *r, uint64_t salt)
{
    uint64_t h = hash_fnv1a(HASH_FNV1A_INIT, r->sub, strlen(r->sub) + 1);
    h = hash_fnv1a_word(h, (uint64_t)r->qos << 8 | (uint64_t)r->retain_handling);
    h = hash_fnv1a_word(h, salt);
    /* FNV's low bits mix poorly: finish with murmur3's avalanche. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return APP_SUB_ID_MIN + (uint32_t)(h % ((uint64_t)APP_SUB_ID_MAX - APP_SUB_ID_MIN + 1));
}

/* Orders routes by their subscription (filters are unique in an app). */
static int by_subscription(const void *x, const void *y)
{
    const route_info *a = *(route_info *const *)x, *b = *(route_info *const *)y;
    int c = strcmp(a->sub, b->sub);
    if (c) return c;
    if (a->qos != b->qos) return a->qos - b->qos;
    return a->retain_handling - b->retain_handling;
}

static const app_def *sort_app;  /* the table by_id sorts indexes of (qsort has no context) */

static int by_id(const void *x, const void *y)
{
    uint32_t a = sort_app->routes[*(const int *)x - 1].sub_id, b = sort_app->routes[*(const int *)y - 1].sub_id;
    return a < b ? -1 : a > b;
}

/* Two subscriptions that hash alike are told apart the same way whatever
 * order the routes load in: in the order of their subscriptions, the first
 * keeps its hash, the next rehashes with the next salt. */
int app_assign_sub_ids(app_def *a)
{
    int n = a->nroutes;
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap *= 2;
    route_info **order = malloc((n ? n : 1) * sizeof *order);
    uint32_t *used = calloc(cap, sizeof *used);  /* open addressing; 0 = empty (ids are never 0) */
    a->by_sub_id = malloc((n ? n : 1) * sizeof *a->by_sub_id);
    if (!order || !used || !a->by_sub_id) { free(order); free(used); return -1; }
    for (int i = 0; i < n; i++) order[i] = &a->routes[i];
    qsort(order, (size_t)n, sizeof *order, by_subscription);
    for (int i = 0; i < n; i++) {
        for (uint64_t salt = 0;; salt++) {
            uint32_t id = sub_id_of(order[i], salt);
            size_t k = id & (cap - 1);
            while (used[k] && used[k] != id) k = (k + 1) & (cap - 1);
            if (used[k]) continue;
            used[k] = id;
            order[i]->sub_id = id;
            break;
        }
    }
    free(order);
    free(used);
    for (int i = 0; i < n; i++) a->by_sub_id[i] = i + 1;
    sort_app = a;
    qsort(a->by_sub_id, (size_t)n, sizeof *a->by_sub_id, by_id);
    sort_app = NULL;
    return 0;
}

int app_route_by_sub_id(const app_def *a, uint32_t id)
{
    int lo = 0, hi = a->nroutes - 1;
    while (a->by_sub_id && lo <= hi) {
        int mid = lo + (hi - lo) / 2, rid = a->by_sub_id[mid];
        uint32_t v = a->routes[rid - 1].sub_id;
        if (v == id) return rid;
        if (v < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

