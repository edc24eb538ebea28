/* The shared mapping itself. Pages of the route tables are touched only as a
 * slot uses them, so idle workers stay small; NORESERVE because most of the
 * mapping is never touched. (Kept messages live in files: keep_file.c.) */
#include "shm.h"
#include "clock.h"

#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

shm_area *shm_create(int nslots)
{
    size_t size = sizeof(shm_area) + (size_t)nslots * sizeof(shm_slot);
    /* Mostly never touched (route tables, in-flight buffers): no reservation,
     * or the size of the route tables alone could be refused. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    shm_area *a = p;
    a->nslots = nslots;
    return a;
}

void shm_destroy(shm_area *a)
{
    if (a) munmap(a, sizeof(shm_area) + (size_t)a->nslots * sizeof(shm_slot));
}

int64_t shm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

void shm_slot_reset(shm_slot *sh, int state)
{
    atomic_store(&sh->pid, 0);
    atomic_store(&sh->handler_start_ns, 0);
    atomic_store(&sh->handler_route, 0);
    atomic_store(&sh->handler_rec, -1);
    atomic_store(&sh->health_failed, 0);
    atomic_store(&sh->unhealthy_runs, 0);
    atomic_store(&sh->in_progress, 0);
    atomic_store(&sh->outgoing, 0);
    atomic_store(&sh->outgoing_bytes, 0);
    atomic_store(&sh->connected, 0);
    atomic_store(&sh->ready_ns, 0);
    atomic_store(&sh->rss_kb, 0);
    atomic_store(&sh->stop_signal_ns, 0);
    atomic_store(&sh->state, state);
}
