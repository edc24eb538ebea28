/* The decision of worker_coalesce.h: when to raise and lower SO_RCVLOWAT. */
#include "worker_coalesce.h"

void worker_coalesce_reset(worker_coalesce *c)
{
    *c = (worker_coalesce){ .deadline_ns = INT64_MAX };
}

void worker_coalesce_refused(worker_coalesce *c)
{
    worker_coalesce_reset(c);
    c->holdoff_until_ns = INT64_MAX;
}

enum coalesce_action worker_coalesce_after_read(worker_coalesce *c, size_t bytes, int64_t now, int by_timer)
{
    if (c->raised) {
        if (by_timer && bytes < COALESCE_BYTES) {
            /* Less than the mark within the wait: waiting for it would
             * only delay what comes next. */
            c->raised = 0;
            c->deadline_ns = INT64_MAX;
            c->holdoff_until_ns = now + COALESCE_HOLDOFF_NS;
            c->window_ns = now;
            c->window_bytes = 0;
            return COALESCE_LOWER;
        }
        if (bytes > 0) c->deadline_ns = now + COALESCE_WAIT_NS;
        return COALESCE_KEEP;
    }
    if (now - c->window_ns > COALESCE_WAIT_NS) {
        c->window_ns = now;
        c->window_bytes = 0;
    }
    c->window_bytes += bytes;
    if (c->window_bytes >= COALESCE_BYTES && now >= c->holdoff_until_ns) {
        /* The mark filled within the wait: raised, it will fill again
         * about as fast, so the timer rarely has to read. */
        c->raised = 1;
        c->deadline_ns = now + COALESCE_WAIT_NS;
        return COALESCE_RAISE;
    }
    return COALESCE_KEEP;
}

int64_t worker_coalesce_deadline(const worker_coalesce *c)
{
    return c->raised ? c->deadline_ns : INT64_MAX;
}
