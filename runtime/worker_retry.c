/* Messages waiting for their next attempt after a failed one (REC_RETRY).
 * They stay in the keep (so they survive the worker and the master, and
 * count toward its bound: an outage slows intake rather than growing
 * memory); their due times, wall clock in the record, are ordered here in
 * a binary min-heap of record ids. The event loop sleeps no longer than the
 * earliest due time; a due record is queued like a message just taken, or,
 * on an ordered route, started at once: the later messages of its topic
 * wait behind it in the dispatcher and may hold every concurrency slot. */
#include "worker_internal.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t worker_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int worker_retry_setup(worker *w)
{
    w->retry.cap = (int)w->keep.max_recs;
    w->retry.n = 0;
    w->retry.ids = calloc((size_t)w->retry.cap + 1, sizeof *w->retry.ids);
    if (w->retry.ids) return 0;
    log_error("out of memory");
    return -1;
}

void worker_retry_free(worker *w)
{
    free(w->retry.ids);
    w->retry.ids = NULL;
    w->retry.n = 0;
}

/* Earlier due first; the same due time in arrival order. */
static int before(worker *w, int a, int b)
{
    const shm_rec *x = worker_keep_rec(w, a), *y = worker_keep_rec(w, b);
    return x->due_ms != y->due_ms ? x->due_ms < y->due_ms : x->seq < y->seq;
}

static void gauge(worker *w)
{
    atomic_store_explicit(&w->shm->retry_waiting, (uint32_t)w->retry.n, memory_order_relaxed);
}

void worker_retry_add(worker *w, int id)
{
    worker_retry *h = &w->retry;
    if (h->n >= h->cap) return;  /* cannot happen: one entry per record at most */
    atomic_store_explicit(&worker_keep_rec(w, id)->state, REC_RETRY, memory_order_release);
    int i = h->n++;
    h->ids[i] = id;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!before(w, h->ids[i], h->ids[p])) break;
        int t = h->ids[i]; h->ids[i] = h->ids[p]; h->ids[p] = t;
        i = p;
    }
    gauge(w);
}

static int pop(worker *w)
{
    worker_retry *h = &w->retry;
    int top = h->ids[0];
    h->ids[0] = h->ids[--h->n];
    for (int i = 0;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && before(w, h->ids[l], h->ids[m])) m = l;
        if (r < h->n && before(w, h->ids[r], h->ids[m])) m = r;
        if (m == i) break;
        int t = h->ids[i]; h->ids[i] = h->ids[m]; h->ids[m] = t;
        i = m;
    }
    gauge(w);
    return top;
}

int64_t worker_retry_wait_ms(const worker *w)
{
    if (!w->retry.n) return -1;
    int64_t d = worker_keep_rec((worker *)w, w->retry.ids[0])->due_ms - worker_wall_ms();
    return d < 0 ? 0 : d;
}

/* The route a kept record would run on now (matched by topic, as start does). */
static int ordered_route(worker *w, int id)
{
    worker_kept k;
    topic_span caps[TOPIC_MAX_WILDCARDS];
    int ncaps = 0;
    worker_keep_open(w, id, &k);
    int rid = topic_trie_match(w->trie, k.msg.topic, k.msg.tlen, caps, TOPIC_MAX_WILDCARDS, &ncaps);
    return rid >= 1 && rid <= w->app.nroutes && w->app.routes[rid - 1].ordered;
}

void worker_retry_pump(worker *w)
{
    if (!w->retry.n || !worker_can_start_over(w, 1)) return;
    int64_t now = worker_wall_ms();
    while (w->retry.n && worker_keep_rec(w, w->retry.ids[0])->due_ms <= now && worker_can_start_over(w, 1)) {
        int id = pop(w);
        /* Behind what was taken before it, like a new message: a retry does
         * not overtake the flow, nor wait for the whole backlog. */
        if (ordered_route(w, id)) worker_start_kept(w, id);
        else worker_enqueue(w, id);
    }
}

/* A waiting message of an ordered route, at start: its topic's later kept
 * messages must not run before it. */
typedef struct ordered_head {
    const char *topic;
    uint32_t tlen;
    uint64_t seq;
    int64_t due_ms;
} ordered_head;

static int head_cmp(const void *a, const void *b)
{
    const ordered_head *x = a, *y = b;
    uint32_t n = x->tlen < y->tlen ? x->tlen : y->tlen;
    int c = memcmp(x->topic, y->topic, n);
    if (c) return c;
    if (x->tlen != y->tlen) return x->tlen < y->tlen ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

int worker_retry_hold_ordered(worker *w, int *ids, int n)
{
    worker_retry *h = &w->retry;
    ordered_head *heads = NULL;
    int nheads = 0;
    for (int i = 0; i < h->n; i++) {
        int id = h->ids[i];
        if (!ordered_route(w, id)) continue;
        if (!heads && !(heads = malloc((size_t)h->n * sizeof *heads))) {
            log_error("out of memory: the kept messages of ordered routes may run before a retry of their topic");
            return n;
        }
        worker_kept k;
        worker_keep_open(w, id, &k);
        const shm_rec *r = worker_keep_rec(w, id);
        heads[nheads++] = (ordered_head){ k.msg.topic, (uint32_t)k.msg.tlen, r->seq, r->due_ms };
    }
    if (!nheads) return n;
    /* By topic, then arrival: the earliest waiting message of a topic first. */
    qsort(heads, (size_t)nheads, sizeof *heads, head_cmp);
    int kept = 0, held = 0;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        worker_kept k;
        worker_keep_open(w, id, &k);
        ordered_head key = { k.msg.topic, (uint32_t)k.msg.tlen, 0, 0 };
        /* The first head of this topic (seq 0 sorts before all of them). */
        int lo = 0, hi = nheads;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (head_cmp(&heads[mid], &key) < 0) lo = mid + 1;
            else hi = mid;
        }
        shm_rec *r = worker_keep_rec(w, id);
        if (lo < nheads && heads[lo].tlen == key.tlen && !memcmp(heads[lo].topic, key.topic, key.tlen) &&
            heads[lo].seq < r->seq && ordered_route(w, id)) {
            /* Due with the message it arrived after: the heap's tie-break
             * (arrival order) then starts it right behind that one, and the
             * dispatcher queues it behind the topic it holds. */
            r->due_ms = heads[lo].due_ms;
            worker_retry_add(w, id);
            held++;
            continue;
        }
        ids[kept++] = id;
    }
    free(heads);
    if (held)
        log_info("%d kept message%s of ordered routes wait%s behind an earlier message of %s topic waiting for its "
                 "next attempt", held, held == 1 ? "" : "s", held == 1 ? "s" : "", held == 1 ? "its" : "their");
    return kept;
}
