/* The shared mapping itself. Pages of the kept-message records and arena are
 * touched only as a slot uses them, so idle workers stay small; NORESERVE
 * because most of the mapping is never touched. */
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

void shm_keep_file_name(char *out, size_t n, int master_pid, int slot, uint64_t seq)
{
    snprintf(out, n, "/routemq.%d.%d.%llu", master_pid, slot, (unsigned long long)seq);
}

void shm_keep_unlink_all(shm_keep *k, int master_pid, int slot)
{
    uint32_t used = atomic_load(&k->used);
    for (uint32_t i = 0; i < used && i < SHM_RECS; i++) {
        shm_rec *r = &k->rec[i];
        if (atomic_load(&r->state) == REC_FREE) continue;
        if (r->external) {
            char name[96];
            shm_keep_file_name(name, sizeof name, master_pid, slot, r->seq);
            shm_unlink(name);
        }
        atomic_store(&r->state, REC_FREE);
    }
}
