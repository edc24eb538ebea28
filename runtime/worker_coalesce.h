/* When the worker lets a fast stream gather in its socket before it wakes.
 *
 * On loopback and fast links a worker that reads as soon as a packet lands
 * wakes once every one or two messages: each wake-up costs the worker an
 * epoll round and a read, and costs the broker, whose write() has to wake
 * it, more than the message itself (docs/benchmarks.md, "More workers").
 * While the stream brings at least COALESCE_BYTES within COALESCE_WAIT_NS,
 * the worker raises the socket's SO_RCVLOWAT to COALESCE_BYTES, so the
 * kernel wakes it once that much is there, and reads by itself once
 * COALESCE_WAIT_NS has passed without it: no message waits longer than
 * that for being read. A read of the timer that finds less than
 * COALESCE_BYTES (the stream slowed, or a broker waits for our
 * acknowledgements) lowers it again, and it is not raised again for
 * COALESCE_HOLDOFF_NS. The decision is pure (no system calls): the worker
 * applies it (worker.c) and test_worker_coalesce.c checks it. */
#ifndef ROUTEMQ_WORKER_COALESCE_H
#define ROUTEMQ_WORKER_COALESCE_H

#include <stddef.h>
#include <stdint.h>

#define COALESCE_BYTES 512               /* a few small messages */
#define COALESCE_WAIT_NS 1000000LL        /* 1 ms */
#define COALESCE_HOLDOFF_NS 100000000LL   /* 100 ms */

typedef struct worker_coalesce {
    int raised;                /* SO_RCVLOWAT is COALESCE_BYTES */
    int64_t window_ns;         /* not raised: start of the window bytes are counted in */
    size_t window_bytes;
    int64_t holdoff_until_ns;  /* not raised before this */
    int64_t deadline_ns;       /* raised: read without waiting for the socket at this time */
} worker_coalesce;

enum coalesce_action { COALESCE_KEEP, COALESCE_RAISE, COALESCE_LOWER };

/* A new connection: its socket starts with SO_RCVLOWAT 1. */
void worker_coalesce_reset(worker_coalesce *c);

/* The socket refused SO_RCVLOWAT (not TCP): lowered, and never raised again
 * on this connection; it keeps waking at every byte. */
void worker_coalesce_refused(worker_coalesce *c);

/* After a read that brought `bytes` from the socket at `now` (by_timer: the
 * read was made because the deadline passed, not because the socket was
 * ready): what to do with SO_RCVLOWAT. */
enum coalesce_action worker_coalesce_after_read(worker_coalesce *c, size_t bytes, int64_t now, int by_timer);

/* When the loop must read the socket without waiting for it; INT64_MAX when not raised. */
int64_t worker_coalesce_deadline(const worker_coalesce *c);

#endif
