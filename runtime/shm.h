/* State shared between the master and its workers: one anonymous shared
 * mapping made before the first fork, one slot per worker slot. Workers write
 * their slot with plain atomic stores (no locks, no system calls); the master
 * reads every slot on its timer and after a worker dies. */
#ifndef ROUTEMQ_SHM_H
#define ROUTEMQ_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_MAX_SLOTS   256
#define SHM_REASON_MAX  256
#define SHM_SEEN        4096          /* recent QoS >= 1 deliveries remembered per slot */
#define SHM_ROUTE_STATS (1 << 17)     /* route indexes a worker maps to counters; higher ones are not counted */
#define SHM_ROUTE_TABLE 32767         /* counter entries per slot (pages touched as used); the last is "_other" */
#define SHM_ROUTE_OTHER "_other"      /* the entry counting the patterns met after the table filled up */
#define SHM_PATTERN_MAX 192           /* longer patterns are counted under their first 191 bytes */
#define SHM_DURATION_BUCKETS 16       /* finite histogram buckets (route_stats.c), then +Inf */

enum slot_state {
    SLOT_EMPTY = 0,      /* no worker */
    SLOT_STARTING,       /* forked, loading the application */
    SLOT_CONNECTING,     /* connecting or reconnecting to the broker */
    SLOT_READY,          /* connected and every subscription acknowledged */
    SLOT_DRAINING,       /* stopping: finishing the handler in progress */
    SLOT_REFUSED,        /* connected, but the broker refused a subscription (refused_* below) */
};

/* Exit codes a worker uses to tell the master why it ended. */
enum {
    WORKER_EXIT_OK = 0,         /* stopped, retired or recycled on request */
    WORKER_EXIT_RECYCLE = 10,   /* asks to be replaced (max messages / memory) */
    WORKER_EXIT_BROKER_AUTH = 11, /* the broker refused our credentials: fatal */
    WORKER_EXIT_APP = 12,       /* the application failed to load */
    WORKER_EXIT_INIT = 13,      /* could not set up (out of memory, fds) */
};

/* Messages a worker has taken from the broker and not finished, kept so that
 * a replacement worker (or the next start of the instance) can handle them
 * again if this one dies (libmosquitto acknowledges a message before the
 * handler runs). A message is finished when its handler has returned and the
 * broker has acknowledged every QoS >= 1 message the handler published. Each
 * has a record; its bytes (topic, payload, packed MQTT 5 properties) live in
 * the arena. Records and arena are in the slot's keep file under the run
 * directory (keep_file.h), bounded by WORKER_MAX_KEPT and WORKER_MAX_KEPT_MB. */
#define SHM_CHUNK       128           /* arena allocation unit, bytes */

enum rec_state {
    REC_FREE = 0,
    REC_QUEUED,      /* taken, its handler not started yet */
    REC_RUNNING,     /* its handler runs (or waits) */
    REC_ACKS,        /* handler done; waiting for the broker to acknowledge its publishes */
    REC_RETRY,       /* a failed attempt: waits for its next one at due_ms */
};

typedef struct shm_rec {
    _Atomic uint32_t state;         /* enum rec_state; FREE last on release, non-FREE last on keep */
    uint32_t attempts;              /* deaths while its handler ran; written by the master */
    uint32_t stop_kills;            /* killed at WORKER_STOP_TIMEOUT while it ran; not poison */
    char reason[SHM_REASON_MAX];    /* last death's cause; written by the master */
    uint64_t seq;                   /* arrival order within the slot */
    int64_t started_ns;             /* monotonic, when its handler (last) started */
    int32_t route_index;
    int32_t stat_index;             /* its entry in the slot's route_stats, -1 for none */
    uint8_t qos, retain;
    uint8_t earlier_run;            /* left kept by an earlier run of the instance: handled as redelivered */
    uint8_t dlq;                    /* a dead-letter publish is what it waits for */
    uint8_t started;                /* its handler has run, at least in part */
    uint8_t replayed;               /* taken from the dead-letter store (dlq_id): ctx.replayed */
    uint8_t redelivered;            /* REC_RETRY: ctx.redelivered of its first attempt, which its retries keep */
    uint32_t failures;              /* failed attempts so far (errors, timeouts, ctx:retry); ctx.attempt - 1 */
    int64_t due_ms;                 /* REC_RETRY: wall clock of its next attempt, ms since the epoch */
    int64_t dlq_id;                 /* the dead-letter record it replays; 0: none */
    uint32_t topic_len, payload_len, props_len;
    uint32_t chunk, nchunks;        /* its place in the arena */
} shm_rec;

/* Recent QoS >= 1 deliveries of a slot: (packet id << 48 | content hash),
 * indexed by packet id. After a worker dies the broker resends what it had
 * not seen acknowledged, including messages already handled; those copies
 * are recognised here and skipped. Written only by the slot's worker. */
typedef struct shm_seen {
    uint64_t entry[SHM_SEEN];
} shm_seen;

/* Counters of one route pattern in one slot. Keyed by pattern, not by route
 * index: indexes change on reload, patterns do not, and the entry outlives
 * the process (the next worker of the slot finds it and keeps counting), so
 * the sums the master reports never go back. Written only by the slot's
 * worker with relaxed atomic adds; the master sums every slot's entries. */
typedef struct shm_route_stats {
    char pattern[SHM_PATTERN_MAX];      /* written before the entry is published, never changed */
    _Atomic uint64_t ok, errors, dead_lettered;
    _Atomic uint64_t retries;           /* failed attempts given another one (routemq_retries_total) */
    _Atomic uint64_t duration_sum_ns;   /* handler time of ok + errors */
    _Atomic uint64_t duration[SHM_DURATION_BUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
} shm_route_stats;

#define SHM_TIMERS 32                 /* router.every names a slot counts */
#define SHM_TIMER_NAME 96             /* longer names are counted under their first 95 bytes */

/* Runs of one router.every timer in one slot, keyed by name like
 * shm_route_stats (the entry outlives the process). Written only by the
 * slot's worker; the master sums the slots' entries of a name. */
typedef struct shm_timer_stats {
    char name[SHM_TIMER_NAME];          /* written before the entry is published, never changed */
    _Atomic uint64_t ok, errors, skipped;
} shm_timer_stats;

#define SHM_ERRORS 8                  /* latest handler errors per slot, for the master's /errors */
#define SHM_ERROR_ROUTE 128
#define SHM_ERROR_TOPIC 192
#define SHM_ERROR_MESSAGE 384
#define SHM_ERROR_TRACE 1024

/* One handler error, written by the slot's worker under a sequence lock
 * (odd seq: being written) and copied by the master (shm_errors.c). */
typedef struct shm_error {
    _Atomic uint32_t seq;
    int32_t pid;
    int64_t time_ms;                    /* wall clock, ms since the epoch */
    char route[SHM_ERROR_ROUTE], topic[SHM_ERROR_TOPIC];
    char message[SHM_ERROR_MESSAGE], traceback[SHM_ERROR_TRACE];
} shm_error;

typedef struct shm_errors {
    _Atomic uint64_t count;             /* errors recorded; entry (count - 1) % SHM_ERRORS is the latest */
    shm_error e[SHM_ERRORS];
} shm_errors;

typedef struct shm_slot {
    _Atomic int32_t pid;
    _Atomic int32_t state;              /* enum slot_state */
    _Atomic uint32_t generation;
    _Atomic int64_t started_ns;         /* monotonic, when forked */
    _Atomic int64_t heartbeat_ns;       /* monotonic, last turn of the event loop */
    _Atomic int64_t handler_start_ns;   /* monotonic, 0 when no handler runs */
    _Atomic int32_t handler_route;      /* route index (1-based) of the running handler */
    _Atomic int32_t connected;          /* 1 while the MQTT connection is up */
    _Atomic int64_t ready_ns;           /* monotonic, when it last became READY */
    _Atomic uint64_t messages;          /* handled, whatever the result */
    _Atomic uint64_t errors;            /* handler errors */
    _Atomic uint64_t unmatched;
    _Atomic uint64_t dead_lettered;
    _Atomic uint64_t dlq_trimmed;       /* oldest dead-letter records deleted at ROUTEMQ_DLQ_MAX by this slot's puts */
    _Atomic uint64_t busy_ns;           /* total time spent in handlers */
    _Atomic uint64_t rss_kb;            /* sampled about once a second */
    _Atomic uint64_t duplicates;        /* broker redeliveries skipped */
    _Atomic uint64_t lost_too_large;    /* acknowledged by libmosquitto, too large for the keep (MQTT 3.1.1) */
    _Atomic uint64_t sub_hash;          /* fingerprint of the slot's subscriptions at the broker */
    _Atomic uint32_t kept;              /* records in use */
    _Atomic uint32_t in_progress;       /* handlers started and not done */
    _Atomic uint32_t retry_waiting;     /* kept records waiting for their next attempt (REC_RETRY) */
    _Atomic uint32_t outgoing;          /* publishes not yet acknowledged (or written, QoS 0) */
    _Atomic uint64_t outgoing_bytes;
    _Atomic uint64_t publishes_dropped; /* publishes given up on, each logged */
    _Atomic int32_t stopping_for_good;  /* set by the master: no next worker will replay */
    _Atomic int64_t stop_signal_ns;     /* monotonic, when the master sent the stop signal; 0: none */
    _Atomic int32_t handler_rec;        /* record whose handler code runs now (with handler_start_ns), -1: none */
    _Atomic int32_t health_failed;      /* the user's health check failed its `failures` in a row */
    char health_reason[SHM_REASON_MAX]; /* its last error; written before health_failed is set */
    _Atomic uint32_t unhealthy_runs;    /* health checks failed in a row (for /ready and status) */
    _Atomic uint32_t subs_refused;      /* subscriptions the broker refused since the last connect */
    _Atomic int32_t refused_route;      /* route index (1-based) of the first of them */
    char refused_reason[64];            /* its SUBACK reason code, named; written before subs_refused */
    _Atomic uint32_t ntimer_stats;      /* entries of timer_stats in use; only grows (release store) */
    shm_timer_stats timer_stats[SHM_TIMERS];
    _Atomic uint32_t nroute_stats;      /* entries of route_stats in use; only grows (release store) */
    shm_route_stats route_stats[SHM_ROUTE_TABLE];
    shm_errors recent_errors;           /* the latest handler errors (shm_errors.c) */
    /* Bit e set: route_stats[e] counted a message since the master last
     * looked (master_history.c reads only those). Set by the worker after
     * the counters; taken and cleared by the master. */
    _Atomic uint64_t route_dirty[(SHM_ROUTE_TABLE + 63) / 64];
} shm_slot;

typedef struct shm_area {
    int nslots;
    shm_slot slots[];
} shm_area;

/* Maps the shared area for nslots slots (MAP_SHARED|MAP_ANONYMOUS); NULL on failure. */
shm_area *shm_create(int nslots);
/* Unmaps it. */
void shm_destroy(shm_area *a);
/* Monotonic clock in nanoseconds (vDSO, no system call). */
int64_t shm_now_ns(void);
/* Clears what belongs to one worker process (pid, the handler running,
 * health, outgoing flow, connection, readiness, memory, the stop signal) and
 * sets state; counters, route statistics and kept records carry over to the
 * slot's next worker. The one reset, used when a worker is started and when
 * one is reaped. */
void shm_slot_reset(shm_slot *sh, int state);

#endif
