/* One sample a second of every route pattern (messages, errors, handler
 * duration p50/p99) and of every slot (messages, errors), kept for
 * MASTER_HISTORY_SECONDS so the console draws the last minutes without a
 * Prometheus. The workers' counters in shared memory are cumulative; a
 * sample is the difference from the previous second's totals, and the
 * quantiles come from the difference of the duration histograms.
 *
 * A route's ring is allocated when it first has traffic: an application of
 * 20,000 routes of which a few are used keeps a few rings. Workers mark the
 * entries they counted (route_stats_touch); only those are read. */
#include "master_console.h"
#include "route_stats.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NB (SHM_DURATION_BUCKETS + 1)
#define H MASTER_HISTORY_SECONDS

typedef struct sample {
    uint32_t messages, errors;
    float p50_ms, p99_ms;       /* 0 when no message ended that second */
} sample;

typedef struct route_hist {
    char pattern[SHM_PATTERN_MAX];
    uint64_t ok, err, b[NB];                 /* this second's counts, being summed */
    sample *ring;                            /* H samples; NULL until it has traffic */
    uint64_t win_messages, win_errors;       /* sums of the ring: the last H seconds */
} route_hist;

/* An entry's counters when the master last read them (low 32 bits: the
 * differences are taken modulo 2^32, a second never counts that many). */
typedef struct entry_prev {
    uint32_t ok, err, b[NB];
} entry_prev;

typedef struct slot_hist {
    uint64_t prev_messages, prev_errors;
    uint32_t messages[H], errors[H];
    int32_t *map;        /* shm route_stats entry -> route_hist index */
    entry_prev *prev;    /* per entry */
    uint32_t mapped, cap;
} slot_hist;

struct master_history {
    route_hist *routes;
    int nroutes, cap;
    int32_t *cells;      /* open addressing: pattern -> routes index, -1 free */
    size_t ncells;
    slot_hist slots[SHM_MAX_SLOTS];
    uint64_t ticks;      /* samples taken; the latest is at (ticks - 1) % H */
    int64_t last_ms;     /* wall clock of the latest sample */
    int64_t tick_ns, tick_max_ns; /* what the latest sample cost the master, and the most since start */
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int rehash(master_history *hist, size_t n)
{
    int32_t *cells = malloc(n * sizeof *cells);
    if (!cells) return -1;
    memset(cells, 0xff, n * sizeof *cells);
    for (int i = 0; i < hist->nroutes; i++) {
        size_t c = hash_str(hist->routes[i].pattern) & (n - 1);
        while (cells[c] >= 0) c = (c + 1) & (n - 1);
        cells[c] = i;
    }
    free(hist->cells);
    hist->cells = cells;
    hist->ncells = n;
    return 0;
}

/* The index of pattern's history, made when new; -1 when out of memory. */
static int route_of(master_history *hist, const char *pattern)
{
    if ((size_t)(hist->nroutes + 1) * 2 > hist->ncells && rehash(hist, hist->ncells ? hist->ncells * 2 : 256)) return -1;
    size_t c = hash_str(pattern) & (hist->ncells - 1);
    for (; hist->cells[c] >= 0; c = (c + 1) & (hist->ncells - 1))
        if (!strcmp(hist->routes[hist->cells[c]].pattern, pattern)) return hist->cells[c];
    if (hist->nroutes == hist->cap) {
        int cap = hist->cap ? hist->cap * 2 : 64;
        route_hist *r = realloc(hist->routes, (size_t)cap * sizeof *r);
        if (!r) return -1;
        hist->routes = r;
        hist->cap = cap;
    }
    route_hist *r = &hist->routes[hist->nroutes];
    memset(r, 0, sizeof *r);
    memcpy(r->pattern, pattern, SHM_PATTERN_MAX);
    r->pattern[SHM_PATTERN_MAX - 1] = 0;
    hist->cells[c] = hist->nroutes;
    return hist->nroutes++;
}

/* Maps the slot's route_stats entries it has not mapped yet (entries only
 * ever get appended, and an entry's pattern never changes). */
static void map_slot(master_history *hist, slot_hist *s, const shm_slot *sh, uint32_t n)
{
    if (n > s->cap) {
        uint32_t cap = s->cap ? s->cap : 64;
        while (cap < n) cap *= 2;
        int32_t *map = realloc(s->map, cap * sizeof *map);
        if (map) s->map = map;
        entry_prev *prev = map ? realloc(s->prev, cap * sizeof *prev) : NULL;
        if (!prev) return;
        s->prev = prev;
        s->cap = cap;
    }
    /* A new entry's counters started at 0 after the master started: its
     * first reading is all new. */
    for (; s->mapped < n; s->mapped++) {
        s->map[s->mapped] = route_of(hist, sh->route_stats[s->mapped].pattern);
        memset(&s->prev[s->mapped], 0, sizeof s->prev[s->mapped]);
    }
}

/* The q-quantile of a (non-cumulative) histogram, interpolated inside its
 * bucket like Prometheus' histogram_quantile; in milliseconds. */
static float quantile_ms(const uint64_t *b, uint64_t total, double q)
{
    if (!total) return 0;
    double rank = q * (double)total, seen = 0;
    for (int i = 0; i < NB; i++) {
        if (seen + (double)b[i] >= rank && b[i]) {
            if (i == SHM_DURATION_BUCKETS) return (float)(route_stats_bound_ns[i - 1] / 1e6);
            double lo = i ? (double)route_stats_bound_ns[i - 1] : 0, hi = (double)route_stats_bound_ns[i];
            return (float)((lo + (hi - lo) * (rank - seen) / (double)b[i]) / 1e6);
        }
        seen += (double)b[i];
    }
    return (float)(route_stats_bound_ns[SHM_DURATION_BUCKETS - 1] / 1e6);
}

/* Adds what the slot's changed entries counted since the last look to
 * their routes' counts of this second. Only entries whose dirty bit the
 * worker set are read: with 64 workers and 2,000 routes, 128,000 entries
 * exist and a second touches a few. */
static void scan_slot(master_history *hist, slot_hist *s, shm_slot *sh)
{
    uint32_t n = atomic_load_explicit(&sh->nroute_stats, memory_order_acquire);
    if (n > SHM_ROUTE_TABLE) n = SHM_ROUTE_TABLE;
    map_slot(hist, s, sh, n);
    for (uint32_t w = 0; w < (s->mapped + 63) / 64; w++) {
        if (!atomic_load_explicit(&sh->route_dirty[w], memory_order_relaxed)) continue;
        uint64_t bits = atomic_exchange_explicit(&sh->route_dirty[w], 0, memory_order_acquire);
        for (; bits; bits &= bits - 1) {
            uint32_t j = w * 64 + (uint32_t)__builtin_ctzll(bits);
            if (j >= s->mapped || s->map[j] < 0) continue;
            const shm_route_stats *e = &sh->route_stats[j];
            entry_prev *p = &s->prev[j];
            route_hist *h = &hist->routes[s->map[j]];
            uint32_t v = (uint32_t)atomic_load_explicit(&e->ok, memory_order_relaxed);
            h->ok += (uint32_t)(v - p->ok);
            p->ok = v;
            v = (uint32_t)atomic_load_explicit(&e->errors, memory_order_relaxed);
            h->err += (uint32_t)(v - p->err);
            p->err = v;
            for (int k = 0; k < NB; k++) {
                v = (uint32_t)atomic_load_explicit(&e->duration[k], memory_order_relaxed);
                h->b[k] += (uint32_t)(v - p->b[k]);
                p->b[k] = v;
            }
        }
    }
}

/* The master's CPU time: what a sample costs it, whatever else runs. */
static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* Puts sample x at ring position at, keeping the window sums. */
static void put_sample(route_hist *h, size_t at, sample x)
{
    h->win_messages += x.messages - (uint64_t)h->ring[at].messages;
    h->win_errors += x.errors - (uint64_t)h->ring[at].errors;
    h->ring[at] = x;
}

void master_history_tick(master *m, int64_t now)
{
    (void)now;
    master_history *hist = m->history;
    int64_t t0 = cpu_ns();
    size_t at = hist->ticks % H;
    for (int i = 0; i < m->nslots && i < SHM_MAX_SLOTS; i++) {
        const shm_slot *sh = &m->shm->slots[i];
        slot_hist *s = &hist->slots[i];
        uint64_t msg = atomic_load_explicit(&sh->messages, memory_order_relaxed);
        uint64_t err = atomic_load_explicit(&sh->errors, memory_order_relaxed);
        s->messages[at] = (uint32_t)(msg - s->prev_messages);
        s->errors[at] = (uint32_t)(err - s->prev_errors);
        s->prev_messages = msg;
        s->prev_errors = err;
    }
    for (int i = 0; i < m->nslots && i < SHM_MAX_SLOTS; i++) scan_slot(hist, &hist->slots[i], &m->shm->slots[i]);
    for (int r = 0; r < hist->nroutes; r++) {
        route_hist *h = &hist->routes[r];
        uint64_t dn = 0;
        for (int k = 0; k < NB; k++) dn += h->b[k];
        if (h->ok + h->err && !h->ring) h->ring = calloc(H, sizeof *h->ring);
        if (h->ring)
            put_sample(h, at, (sample){ .messages = (uint32_t)(h->ok + h->err), .errors = (uint32_t)h->err,
                                        .p50_ms = quantile_ms(h->b, dn, 0.5), .p99_ms = quantile_ms(h->b, dn, 0.99) });
        h->ok = h->err = 0;
        memset(h->b, 0, sizeof h->b);
    }
    master_errors_collect(m);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    hist->last_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    hist->ticks++;
    hist->tick_ns = cpu_ns() - t0;
    if (hist->tick_ns > hist->tick_max_ns) hist->tick_max_ns = hist->tick_ns;
}

/* Writes n numbers of a ring, oldest first (u32 or float). */
static void series_u32(strbuf *b, uint64_t ticks, const uint32_t *ring, size_t stride, int n)
{
    sb_puts(b, "[");
    for (int k = 0; k < n; k++) {
        size_t at = (ticks - (uint64_t)n + (uint64_t)k) % H;
        sb_printf(b, k ? ",%u" : "%u", *(const uint32_t *)((const char *)ring + at * stride));
    }
    sb_puts(b, "]");
}

static void series_ms(strbuf *b, uint64_t ticks, const float *ring, size_t stride, int n)
{
    sb_puts(b, "[");
    for (int k = 0; k < n; k++) {
        size_t at = (ticks - (uint64_t)n + (uint64_t)k) % H;
        sb_printf(b, k ? ",%.3g" : "%.3g", (double)*(const float *)((const char *)ring + at * stride));
    }
    sb_puts(b, "]");
}

typedef struct route_sum {
    int r;
    const char *pattern;     /* the route's (qsort gives the comparison no context) */
    uint64_t messages, errors;
    double p50_ms, p99_ms;   /* message-weighted mean of the seconds' p50; highest second's p99 */
} route_sum;

static int by_messages(const void *a, const void *b)
{
    const route_sum *x = a, *y = b;
    if (x->messages != y->messages) return x->messages < y->messages ? 1 : -1;
    return strcmp(x->pattern, y->pattern);
}

void master_history_json(master *m, int window, int top, int limit, strbuf *b)
{
    const master_history *hist = m->history;
    int n = hist->ticks < (uint64_t)window ? (int)hist->ticks : window;
    sb_printf(b, "{\"window\":%d,\"seconds\":%d,\"interval\":1,\"time_ms\":%lld,\"total\":{\"messages\":", window, n,
              (long long)hist->last_ms);
    /* The instance's totals: the sum of the slots. */
    uint32_t tm[H], te[H];
    memset(tm, 0, sizeof tm);
    memset(te, 0, sizeof te);
    for (int i = 0; i < m->nslots && i < SHM_MAX_SLOTS; i++)
        for (int k = 0; k < H; k++) { tm[k] += hist->slots[i].messages[k]; te[k] += hist->slots[i].errors[k]; }
    series_u32(b, hist->ticks, tm, sizeof *tm, n);
    sb_puts(b, ",\"errors\":");
    series_u32(b, hist->ticks, te, sizeof *te, n);
    sb_puts(b, "},\"workers\":[");
    int first = 1;
    for (int i = 0; i < m->nslots && i < SHM_MAX_SLOTS; i++) {
        if (i >= m->P && m->slots[i].pid <= 0) continue;
        sb_printf(b, "%s{\"slot\":%d,\"messages\":", first ? "" : ",", i);
        series_u32(b, hist->ticks, hist->slots[i].messages, sizeof(uint32_t), n);
        sb_puts(b, ",\"errors\":");
        series_u32(b, hist->ticks, hist->slots[i].errors, sizeof(uint32_t), n);
        sb_puts(b, "}");
        first = 0;
    }
    sb_puts(b, "],\"routes\":[");
    /* Sorting needs each route's messages in the window: the ring's sums
     * when the window holds every sample kept, else a walk of the window. A
     * route without traffic in the ring has none in any window. The
     * quantiles are walked for the routes shown only. */
    route_sum *sums = hist->nroutes ? malloc((size_t)hist->nroutes * sizeof *sums) : NULL;
    int ns = 0, whole = (uint64_t)n >= (hist->ticks < H ? hist->ticks : H);
    for (int r = 0; r < hist->nroutes && sums; r++) {
        const route_hist *h = &hist->routes[r];
        if (!h->ring || !h->win_messages) continue;
        route_sum s = { .r = r, .pattern = h->pattern, .messages = h->win_messages, .errors = h->win_errors };
        if (!whole) {
            s.messages = s.errors = 0;
            for (int k = 0; k < n; k++) {
                const sample *x = &h->ring[(hist->ticks - (uint64_t)n + (uint64_t)k) % H];
                s.messages += x->messages;
                s.errors += x->errors;
            }
        }
        if (s.messages) sums[ns++] = s;
    }
    if (ns) qsort(sums, (size_t)ns, sizeof *sums, by_messages);
    for (int i = 0; i < ns && i < limit; i++) {
        const route_hist *h = &hist->routes[sums[i].r];
        double w50 = 0;
        for (int k = 0; k < n; k++) {
            const sample *x = &h->ring[(hist->ticks - (uint64_t)n + (uint64_t)k) % H];
            w50 += (double)x->p50_ms * x->messages;
            if (x->p99_ms > sums[i].p99_ms) sums[i].p99_ms = x->p99_ms;
        }
        sums[i].p50_ms = w50 / (double)sums[i].messages;
        sb_puts(b, i ? ",{\"route\":" : "{\"route\":");
        sb_json_str(b, h->pattern);
        sb_printf(b, ",\"messages\":%llu,\"errors\":%llu,\"rate\":%.3g,\"error_rate\":%.3g,\"p50_ms\":%.3g,"
                  "\"p99_ms\":%.3g", (unsigned long long)sums[i].messages, (unsigned long long)sums[i].errors,
                  n ? (double)sums[i].messages / n : 0.0, n ? (double)sums[i].errors / n : 0.0, sums[i].p50_ms,
                  sums[i].p99_ms);
        if (i < top) {
            sb_puts(b, ",\"series\":{\"messages\":");
            series_u32(b, hist->ticks, &h->ring[0].messages, sizeof(sample), n);
            sb_puts(b, ",\"errors\":");
            series_u32(b, hist->ticks, &h->ring[0].errors, sizeof(sample), n);
            sb_puts(b, ",\"p50_ms\":");
            series_ms(b, hist->ticks, &h->ring[0].p50_ms, sizeof(sample), n);
            sb_puts(b, ",\"p99_ms\":");
            series_ms(b, hist->ticks, &h->ring[0].p99_ms, sizeof(sample), n);
            sb_puts(b, "}");
        }
        sb_puts(b, "}");
    }
    free(sums);
    sb_printf(b, "],\"routes_active\":%d,\"routes_known\":%d,\"sample_us\":%.1f,\"sample_max_us\":%.1f}\n", ns,
              hist->nroutes, (double)hist->tick_ns / 1000, (double)hist->tick_max_ns / 1000);
}

int master_history_start(master *m)
{
    m->history = calloc(1, sizeof *m->history);
    return m->history ? 0 : -1;
}

void master_history_free(master *m)
{
    master_history *hist = m->history;
    if (!hist) return;
    for (int r = 0; r < hist->nroutes; r++) free(hist->routes[r].ring);
    free(hist->routes);
    free(hist->cells);
    for (int i = 0; i < SHM_MAX_SLOTS; i++) { free(hist->slots[i].map); free(hist->slots[i].prev); }
    free(hist);
    m->history = NULL;
}
