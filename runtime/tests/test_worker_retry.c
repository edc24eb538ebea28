/* Unit tests for the retry heap (worker_retry.c): records come out in due
 * order (arrival order for equal due times), only once due and only while
 * a handler may start; an ordered route's record is started at once, the
 * others are queued; the loop's wait follows the earliest due; the gauge
 * counts what waits. The worker around it is stubbed here. */
#include "test_util.h"
#include "../worker_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NRECS 200

static shm_rec recs[NRECS];
static char topics[NRECS][32];
static int can_start = 1, can_start_over = 1;
static int queued[NRECS], nqueued, started[NRECS], nstarted;

shm_rec *worker_keep_rec(worker *w, int id) { (void)w; return &recs[id]; }

void worker_keep_open(worker *w, int id, worker_kept *out)
{
    (void)w;
    memset(out, 0, sizeof *out);
    out->msg.topic = topics[id];
    out->msg.tlen = strlen(topics[id]);
}

int worker_can_start(const worker *w) { (void)w; return can_start; }
int worker_can_start_over(const worker *w, int over) { (void)w; return over ? can_start_over : can_start; }
void worker_enqueue(worker *w, int id) { (void)w; queued[nqueued++] = id; }
void worker_start_kept(worker *w, int id) { (void)w; started[nstarted++] = id; }

static void setup(worker *w, route_info *routes)
{
    char err[256];
    memset(w, 0, sizeof *w);
    w->shm = calloc(1, sizeof *w->shm);  /* large, mapped lazily */
    w->keep.max_recs = NRECS;
    w->trie = topic_trie_new();
    routes[0] = (route_info){ .index = 1, .pattern = "ord/{n}", .filter = "ord/+", .ordered = 1 };
    routes[1] = (route_info){ .index = 2, .pattern = "plain/{n}", .filter = "plain/+" };
    w->app.routes = routes;
    w->app.nroutes = 2;
    for (int i = 0; i < 2; i++)
        if (topic_trie_add(w->trie, routes[i].filter, strlen(routes[i].filter), routes[i].index, err, sizeof err))
            printf("trie: %s\n", err);
    if (worker_retry_setup(w)) exit(1);
}

/* Record id on topic t, due at due_ms, arrived `seq`th. */
static void add(worker *w, int id, const char *t, int64_t due_ms, uint64_t seq)
{
    snprintf(topics[id], sizeof topics[id], "%s", t);
    recs[id].due_ms = due_ms;
    recs[id].seq = seq;
    worker_retry_add(w, id);
}

int main(void)
{
    worker w;
    route_info routes[2];
    setup(&w, routes);

    CHECK(worker_retry_wait_ms(&w) == -1, "nothing waits: no wait");
    /* 100 due in the past at shuffled times, 50 an hour away, 1 at 5 s. */
    /* Some of them due at one same time: those come out in arrival order. */
    int64_t now = worker_wall_ms();
    srand(7);
    for (int i = 99; i >= 0; i--)
        add(&w, i, i % 10 == 0 ? "ord/1" : "plain/1", i % 7 == 0 ? now - 1200 : now - 1000 - rand() % 500, (uint64_t)i);
    for (int i = 100; i < 150; i++) add(&w, i, "plain/2", now + 3600000, (uint64_t)i);
    add(&w, 150, "plain/3", now + 5000, 150);
    CHECK(atomic_load(&w.shm->retry_waiting) == 151, "gauge: %u", atomic_load(&w.shm->retry_waiting));
    CHECK(recs[3].state == REC_RETRY, "a waiting record is REC_RETRY");
    CHECK(worker_retry_wait_ms(&w) == 0, "a due record: no wait");

    can_start = can_start_over = 0;
    worker_retry_pump(&w);
    CHECK(nqueued == 0 && nstarted == 0, "nothing moves while no handler may start");

    can_start = 0;  /* at the concurrency bound: ordered ones start, the rest queue */
    can_start_over = 1;
    worker_retry_pump(&w);
    CHECK(nstarted == 10, "ordered ones started at once: %d", nstarted);
    CHECK(nqueued == 90, "the others queued: %d", nqueued);
    int in_order = 1;
    for (int i = 1; i < nqueued; i++) {
        const shm_rec *a = &recs[queued[i - 1]], *b = &recs[queued[i]];
        if (a->due_ms > b->due_ms || (a->due_ms == b->due_ms && a->seq > b->seq)) in_order = 0;
    }
    CHECK(in_order, "queued in due order, ties in arrival order");
    for (int i = 0; i < nstarted; i++) CHECK(started[i] % 10 == 0, "started %d is an ordered one", started[i]);
    CHECK(atomic_load(&w.shm->retry_waiting) == 51, "gauge after: %u", atomic_load(&w.shm->retry_waiting));
    int64_t wait = worker_retry_wait_ms(&w);
    CHECK(wait > 4000 && wait <= 5000, "waits for the earliest: %lld ms", (long long)wait);

    /* The earliest left is the 5 s one, then the hour. */
    CHECK(w.retry.ids[0] == 150, "the heap's top: %d", w.retry.ids[0]);
    nqueued = 0;
    recs[150].due_ms = now - 1;  /* still the smallest: the heap stays valid */
    worker_retry_pump(&w);
    CHECK(nqueued == 1 && queued[0] == 150, "the one due: %d", nqueued ? queued[0] : -1);
    wait = worker_retry_wait_ms(&w);
    CHECK(wait > 3500000, "then the hour: %lld ms", (long long)wait);
    CHECK(atomic_load(&w.shm->retry_waiting) == 50, "gauge at the end: %u", atomic_load(&w.shm->retry_waiting));

    worker_retry_free(&w);
    topic_trie_free(w.trie);
    free(w.shm);

    /* At start: the kept messages of an ordered topic that arrived after
     * its waiting message wait with it; earlier ones, other topics and
     * unordered routes do not. */
    setup(&w, routes);
    add(&w, 160, "ord/1", now + 7000, 5);
    add(&w, 161, "plain/1", now + 9000, 4);
    int64_t due = recs[160].due_ms;
    const char *t[] = { "ord/1", "ord/1", "plain/1", "ord/2", "ord/1", "plain/1" };
    uint64_t seq[] = { 3, 7, 8, 9, 10, 11 };
    int ids[6];
    for (int i = 0; i < 6; i++) {
        ids[i] = 170 + i;
        snprintf(topics[ids[i]], sizeof topics[ids[i]], "%s", t[i]);
        recs[ids[i]].seq = seq[i];
        recs[ids[i]].due_ms = 0;
        recs[ids[i]].state = REC_QUEUED;
    }
    int left = worker_retry_hold_ordered(&w, ids, 6);
    CHECK(left == 4 && ids[0] == 170 && ids[1] == 172 && ids[2] == 173 && ids[3] == 175,
          "left: %d (%d %d %d %d)", left, ids[0], ids[1], ids[2], ids[3]);
    CHECK(recs[171].state == REC_RETRY && recs[171].due_ms == due && recs[174].state == REC_RETRY &&
          recs[174].due_ms == due, "the later ones of ord/1 wait, due with it");
    CHECK(w.retry.n == 4 && w.retry.ids[0] == 160, "the head first: %d", w.retry.ids[0]);
    nqueued = nstarted = 0;
    recs[160].due_ms = recs[171].due_ms = recs[174].due_ms = now - 1;  /* all three due: still the smallest */
    worker_retry_pump(&w);
    CHECK(nstarted == 3 && started[0] == 160 && started[1] == 171 && started[2] == 174,
          "started in arrival order: %d (%d %d %d)", nstarted, started[0], started[1], started[2]);
    worker_retry_free(&w);
    topic_trie_free(w.trie);
    free(w.shm);
    return TEST_SUMMARY("test_worker_retry");
}
