/* Stand-ins for the dead-letter store's worker side (worker_dlq.c, built
 * on another branch) so this branch builds and runs alone: weak, so the
 * real ones win once both are in. A final failure is released, as before
 * the store existed. Remove once worker_dlq.c is merged. */
#include "worker_internal.h"

#include <string.h>

__attribute__((weak)) int worker_dlq_put(worker *w, int id, const char *reason, const char *err, const char *tb)
{
    (void)reason, (void)err, (void)tb;
    memset(&w->recs[id], 0, sizeof w->recs[id]);
    worker_keep_release(w, id);
    return 0;
}

__attribute__((weak)) void worker_dlq_replay_done(worker *w, int64_t dlq_id)
{
    (void)w, (void)dlq_id;
}
