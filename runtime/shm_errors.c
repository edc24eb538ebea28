/* A sequence lock per entry: the worker never waits for the master, and the
 * master keeps a copy only when the sequence did not move while it copied. */
#include "shm_errors.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

/* Copies s into out (size n), cut at a UTF-8 character boundary. */
static void put(char *out, size_t n, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len >= n) {
        len = n - 1;
        while (len && ((unsigned char)s[len] & 0xC0) == 0x80) len--;
    }
    if (len) memcpy(out, s, len);
    out[len] = 0;
}

void shm_errors_record(shm_slot *sh, const char *route, const char *topic, const char *message, const char *traceback)
{
    shm_errors *es = &sh->recent_errors;
    uint64_t n = atomic_load_explicit(&es->count, memory_order_relaxed);
    shm_error *e = &es->e[n % SHM_ERRORS];
    uint32_t seq = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    e->pid = (int32_t)getpid();
    put(e->route, sizeof e->route, route);
    put(e->topic, sizeof e->topic, topic);
    put(e->message, sizeof e->message, message);
    put(e->traceback, sizeof e->traceback, traceback);
    atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
    atomic_store_explicit(&es->count, n + 1, memory_order_release);
}

int shm_errors_read(const shm_slot *sh, uint64_t n, shm_error *out)
{
    const shm_errors *es = &sh->recent_errors;
    uint64_t count = atomic_load_explicit(&es->count, memory_order_acquire);
    if (n >= count || count - n > SHM_ERRORS) return -1;
    const shm_error *e = &es->e[n % SHM_ERRORS];
    uint32_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
    if (s1 & 1) return -1;
    memcpy((char *)out + sizeof out->seq, (const char *)e + sizeof e->seq, sizeof *e - sizeof e->seq);
    atomic_thread_fence(memory_order_acquire);
    uint32_t s2 = atomic_load_explicit(&e->seq, memory_order_relaxed);
    /* Overwritten meanwhile (the worker went round the ring) or torn. */
    if (s1 != s2 || atomic_load_explicit(&es->count, memory_order_acquire) - n > SHM_ERRORS) return -1;
    out->route[sizeof out->route - 1] = out->topic[sizeof out->topic - 1] = 0;
    out->message[sizeof out->message - 1] = out->traceback[sizeof out->traceback - 1] = 0;
    return 0;
}
