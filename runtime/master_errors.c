/* The latest handler errors of every slot, kept by the master: each slot's
 * small ring in shared memory (shm_errors.c) is copied here once a second
 * and when /errors is asked, so errors outlive the worker that had them and
 * the page shows the last MASTER_ERRORS_KEPT of the whole instance. */
#include "master_console.h"
#include "shm_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct kept_error {
    int slot;
    shm_error e;
} kept_error;

struct master_errors {
    kept_error ring[MASTER_ERRORS_KEPT];
    uint64_t count;                 /* errors kept so far; ring[(count - 1) % KEPT] is the latest */
    uint64_t seen[SHM_MAX_SLOTS];   /* per slot: errors of its ring already looked at */
    uint64_t missed;                /* recorded by a worker, overwritten before we copied them */
};

int master_errors_start(master *m)
{
    m->errors = calloc(1, sizeof *m->errors);
    return m->errors ? 0 : -1;
}

void master_errors_free(master *m)
{
    free(m->errors);
    m->errors = NULL;
}

void master_errors_collect(master *m)
{
    master_errors *errs = m->errors;
    for (int i = 0; i < m->nslots && i < SHM_MAX_SLOTS; i++) {
        const shm_slot *sh = &m->shm->slots[i];
        uint64_t n = atomic_load_explicit(&sh->recent_errors.count, memory_order_acquire);
        if (n == errs->seen[i]) continue;
        uint64_t from = errs->seen[i];
        if (n - from > SHM_ERRORS) { errs->missed += n - from - SHM_ERRORS; from = n - SHM_ERRORS; }
        for (uint64_t k = from; k < n; k++) {
            kept_error *d = &errs->ring[errs->count % MASTER_ERRORS_KEPT];
            if (shm_errors_read(sh, k, &d->e)) { errs->missed++; continue; }
            d->slot = i;
            errs->count++;
        }
        errs->seen[i] = n;
    }
}

static void iso_time(int64_t ms, char *out, size_t n)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(ms % 1000));
}

void master_errors_json(master *m, strbuf *b)
{
    master_errors_collect(m);
    const master_errors *errs = m->errors;
    uint64_t shown = errs->count < MASTER_ERRORS_KEPT ? errs->count : MASTER_ERRORS_KEPT;
    sb_printf(b, "{\"total\":%llu,\"missed\":%llu,\"kept\":%d,\"errors\":[", (unsigned long long)errs->count,
              (unsigned long long)errs->missed, MASTER_ERRORS_KEPT);
    for (uint64_t k = 0; k < shown; k++) {
        const kept_error *d = &errs->ring[(errs->count - 1 - k) % MASTER_ERRORS_KEPT];
        char when[40];
        iso_time(d->e.time_ms, when, sizeof when);
        sb_printf(b, "%s{\"time\":\"%s\",\"time_ms\":%lld,\"slot\":%d,\"pid\":%d,\"route\":", k ? "," : "", when,
                  (long long)d->e.time_ms, d->slot, (int)d->e.pid);
        sb_json_str(b, d->e.route);
        sb_puts(b, ",\"topic\":");
        sb_json_str(b, d->e.topic);
        sb_puts(b, ",\"message\":");
        sb_json_str(b, d->e.message);
        sb_puts(b, ",\"traceback\":");
        sb_json_str(b, d->e.traceback);
        sb_puts(b, "}");
    }
    sb_puts(b, "]}\n");
}
