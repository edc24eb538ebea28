/* The shared mapping itself. Pages of the in-flight buffers are touched only
 * when a slot handles a large message, so idle workers stay small. */
#include "shm.h"
#include "clock.h"

#include <sys/mman.h>
#include <time.h>

shm_area *shm_create(int nslots)
{
    size_t size = sizeof(shm_area) + (size_t)nslots * sizeof(shm_slot);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
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
