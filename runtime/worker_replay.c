/* What a previous worker of this slot left unfinished: queued first, in
 * arrival order (ctx.redelivered = true for those whose handler had
 * started), and the dead letter of a message whose handler killed its
 * worker ROUTEMQ_POISON_ATTEMPTS times. */
#include "worker_internal.h"
#include "log.h"
#include "luavm.h"
#include "hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A fingerprint of the application's routes: a keep written under other
 * routes is still handled (it is data), matched by topic with these. */
static uint64_t routes_hash(const worker *w)
{
    uint64_t h = HASH_FNV1A_INIT;
    for (int i = 0; i < w->app.nroutes; i++) {
        const route_info *r = &w->app.routes[i];
        h = hash_fnv1a(h, r->pattern, strlen(r->pattern) + 1);
        h = hash_fnv1a(h, r->sub, strlen(r->sub) + 1);
    }
    return h;
}

void worker_replay_load(worker *w)
{
    keep_hdr *h = w->keep.km.h;
    /* The queue is empty at start and holds every record: they go there directly. */
    int n = worker_keep_init(w, w->queue.ids, w->queue.cap - 1);
    int earlier_run = atomic_load(&h->master_pid) != (int32_t)w->args->master_pid;
    uint64_t app = routes_hash(w);
    int qos0 = 0, k = 0, waiting = 0;
    for (int i = 0; i < n; i++) {
        int id = w->queue.ids[i];
        shm_rec *r = worker_keep_rec(w, id);
        if (r->qos == 0) {
            /* QoS 0 is at-most-once (docs/delivery.md): it goes through the
             * keep only as the worker's queue and is never handled again. */
            worker_keep_release(w, id);
            qos0++;
            continue;
        }
        if (atomic_load_explicit(&r->state, memory_order_acquire) == REC_RETRY) {
            /* A failed attempt waiting for its next: it waits on here, until
             * its due time (not at once), and keeps its ctx.redelivered. */
            worker_retry_add(w, id);
            waiting++;
            continue;
        }
        w->queue.ids[k++] = id;
        /* Left by an earlier run of the instance (kill -9 of the master, a
         * stop past WORKER_STOP_TIMEOUT): acknowledged to the broker long
         * ago, so handled as redelivered. */
        if (earlier_run) r->earlier_run = 1;
        /* Whatever state the previous worker left it in, it starts over here. */
        atomic_store_explicit(&r->state, REC_QUEUED, memory_order_release);
    }
    n = worker_retry_hold_ordered(w, w->queue.ids, k);
    w->queue.head = 0;
    w->queue.tail = n;
    if (qos0)
        log_info("%d QoS 0 message%s a previous worker took %s not handled again (QoS 0 is at-most-once)", qos0,
                 qos0 == 1 ? "" : "s", qos0 == 1 ? "is" : "are");
    if (n && earlier_run)
        log_info("%d message%s kept by an earlier run of the instance will be handled first", n, n == 1 ? "" : "s");
    else if (n)
        log_info("%d message%s a previous worker of this slot did not finish will be handled first", n,
                 n == 1 ? "" : "s");
    if (waiting)
        log_info("%d message%s kept by a previous worker wait%s for %s next attempt", waiting, waiting == 1 ? "" : "s",
                 waiting == 1 ? "s" : "", waiting == 1 ? "its" : "their");
    if ((n || waiting) && h->app_hash && h->app_hash != app)
        log_info("the kept messages were taken by a different version of the application (other routes); they are "
                 "handled with this one's routes, matched by topic");
    atomic_store(&h->master_pid, (int32_t)w->args->master_pid);
    h->app_hash = app;
}

void worker_dead_letter(worker *w, int id, const worker_msg *m)
{
    (void)m;
    shm_rec *r = worker_keep_rec(w, id);
    /* The master recorded how the last worker died (master_reap.c). */
    worker_dlq_put(w, id, "crash", r->reason[0] ? r->reason : "its worker died handling it", NULL);
}
