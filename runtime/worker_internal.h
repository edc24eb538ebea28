/* The worker's state, shared by its files. Not for use outside worker_*.
 *   worker.c             set-up, the event loop, heartbeat, recycling, stopping
 *   worker_mqtt.c        the MQTT connection: set-up, subscriptions, DISCONNECT
 *   worker_connect.c     connect attempts, reconnect backoff, outages
 *   worker_tls.c         TLS to the broker and its handshake errors (w->tls)
 *   worker_dispatch.c    a message around its handler: intake, de-duplication,
 *                        the queue and the pump, completion and accounting
 *   worker_coro.c        the bridge into Lua: handler coroutines (their pool),
 *                        the cqueues controller's steps, init and jobs
 *   worker_keep.c        where a taken message is kept until it is finished
 *   worker_replay.c      what a previous worker of the slot left unfinished
 *   worker_out.c         what handlers publish, tracked until acknowledged
 *   worker_pubconn.c     the second connection, for publishing only
 *   worker_lua.c         the functions Lua calls back (io.publish, io.done, io.log)
 *   worker_props.c       MQTT v5 properties packed for the keep and Lua
 *   worker_adopt_guard.c an adoption worker's check of whose messages come
 * Shared with the master's MQTT client (master_presence.c): mqtt_client.c
 * (epoll registration, the broker's name), backoff.h, log_limit.c.
 * docs/internals.md follows one message and one worker through them. */
#ifndef ROUTEMQ_WORKER_INTERNAL_H
#define ROUTEMQ_WORKER_INTERNAL_H

#include <mosquitto.h>
#include <lua.h>
#include <lauxlib.h>
#include <stdint.h>

#include "app.h"
#include "keep_file.h"
#include "log_limit.h"
#include "topic_pattern.h"
#include "topic_trie.h"
#include "worker.h"
#include "worker_coalesce.h"

enum stop_kind { STOP_NONE = 0, STOP_KEEP, STOP_RETIRE, STOP_RECYCLE };

#define WORKER_THREAD_POOL 64    /* idle handler coroutines kept for reuse */

/* One message on the dispatch path: where its bytes are (libmosquitto's
 * buffer, the arena or a mapped file) and what the broker said of it. */
typedef struct worker_msg {
    const char *topic;
    size_t tlen;
    const void *payload;
    size_t plen;
    const char *props;       /* packed MQTT 5 properties (worker_props.c) */
    size_t props_len;
    int qos, retain;
    int rid;                 /* route index (1-based) it matched when taken */
} worker_msg;

/* A kept message opened for reading (worker_keep_open). */
typedef struct worker_kept {
    worker_msg msg;
    const char *bytes;
} worker_kept;

/* Which records and arena chunks are free: the process's own, rebuilt from
 * the keep file's records at start. */
typedef struct worker_keep_state {
    keep_map km;             /* the slot's keep file, mapped */
    uint32_t max_recs;       /* records in it */
    uint32_t nchunks;        /* arena chunks in it */
    uint64_t *bits;          /* nchunks / 64 words: used chunks */
    uint32_t first_free_word; /* no free chunk below this word of bits */
    uint32_t used_end;       /* no used chunk at or above this one (an upper bound) */
    uint32_t fresh;          /* records below this index have been used */
    int nfree;
    uint32_t *free_stack;    /* max_recs entries */
    uint32_t room_chunks;    /* a run this long must be free to read another message */
    int room;                /* cached worker_keep_has_room, -1: to compute */
} worker_keep_state;

/* The handling of each kept message, in this process: its handler is done
 * and how many of its publishes still wait for the broker. */
typedef struct worker_rec_local {
    uint32_t pending;
    uint8_t done;
    uint8_t ok;              /* its handler succeeded (a replay then leaves the dead-letter store) */
    uint8_t redelivered;     /* the run in progress got ctx.redelivered = true */
} worker_rec_local;

/* Messages kept but not started, in arrival order (a ring of record ids). */
typedef struct worker_queue {
    int *ids;                /* cap entries */
    int cap;                 /* records in the keep + 1 */
    int head, tail;          /* head == tail: empty */
} worker_queue;

/* Kept records waiting for their next attempt (REC_RETRY): a binary
 * min-heap of record ids ordered by the records' due_ms (worker_retry.c). */
typedef struct worker_retry {
    int *ids;                /* cap entries */
    int n, cap;              /* cap: records in the keep */
} worker_retry;

/* How one run of a handler ended, as routemq.dispatch reports it (the
 * coroutine's yield of "fail", or io.done). */
typedef struct worker_outcome {
    int ok;
    const char *err, *tb;    /* a failed run: the error and its traceback (may be NULL) */
    const char *reason;      /* "error" | "timeout" | "failed" (ctx:fail) | "retry" (ctx:retry); NULL: "error" */
    double delay;            /* >= 0: run it again after that many seconds; < 0: final (the dead-letter store) */
} worker_outcome;

/* Publishes the broker has not acknowledged yet (QoS 0: not written yet),
 * by packet id: whose message they belong to and their size. */
typedef struct worker_out_entry {
    int32_t rec;             /* record id, -1: a publish of no message */
    uint32_t bytes;
    uint8_t qos, used;
} worker_out_entry;

/* Publishes outstanding at most, also from code that cannot wait at the
 * bound: below the 65535 MQTT packet ids, with room for SUBSCRIBEs. */
#define WORKER_OUT_MID_LIMIT 60000

typedef struct worker_out {
    worker_out_entry *by_mid;  /* 65536 entries */
    uint32_t count;
    uint64_t bytes;
    uint32_t max_count;      /* WORKER_MAX_OUTGOING */
    uint64_t max_bytes;      /* WORKER_MAX_OUTGOING_MB */
    int over;                /* above a bound: no handler starts and publishes wait until below half of it */
    int wake_fd;             /* eventfd, readable while not over: what waiting publishes poll */
    int waitable;            /* the loop runs: a publish over the bound may wait for acknowledgements */
} worker_out;

/* The Lua state and what the worker calls in it. */
typedef struct worker_lua {
    lua_State *L;
    int call_ref;            /* dispatch's d.call */
    int step_ref;            /* one step of the cqueues controller (routemq.worker) */
    int timeout_ref;         /* seconds until the controller's next timer */
    int init_ref, start_jobs_ref, stop_jobs_ref; /* router.init, router.every and router.health */
    int pollfd_ref;          /* the controller's descriptor, nil until cqueues is loaded */
    int cq_fd;               /* the controller's pollfd, in epoll; -1 none */
    int new_thread_ref, adopt_ref; /* d.new_thread / d.adopt; LUA_NOREF: handlers go through d.call */
    int nthreads;            /* idle handler coroutines in threads[] */
    lua_State *threads[WORKER_THREAD_POOL];
    int thread_refs[WORKER_THREAD_POOL];
    int jobs_stopped;
    int64_t step_due_ns;     /* the controller's next timer, INT64_MAX: none */
    int envelope_ref;        /* routemq.dlq envelope builder */
    int empty_ref;           /* routemq.context.EMPTY: props/params of a message without any */
} worker_lua;

/* A route's subscription on the current connection (worker_mqtt.c). */
typedef struct worker_sub {
    int mid;                 /* packet id of its SUBSCRIBE, 0: none awaits a SUBACK */
    uint8_t delivering;      /* the broker sends copies for it: a copy of the same message sent
                                for a less specific route is redundant (worker_dispatch.c) */
    uint8_t on_suback;       /* becomes delivering with its SUBACK (a session made on this connect) */
} worker_sub;

/* The MQTT connection: libmosquitto's client, its socket in epoll, the
 * subscriptions and the connect attempts (worker_mqtt.c, worker_connect.c). */
typedef struct worker_conn {
    struct mosquitto *mosq;
    char client_id[512];
    int persistent;          /* keep a session (slot_is_persistent in worker_mqtt.c) */
    int sock;                /* fd registered with epoll, -1 when none */
    int sock_events;         /* the events it is registered for */
    int connected;           /* CONNACK received */
    int subs_pending;        /* SUBACKs still awaited */
    int published;           /* a handler queued a publish since the last flush */
    int unsubs_pending;      /* retiring: UNSUBACKs still awaited */
    int nsubs;               /* subscriptions made on the last connect */
    worker_sub *subs;        /* per route, by index - 1 */
    int session_resumed;     /* the broker kept our session */
    int reconnect_pending;   /* a connect attempt is due at next_connect_ns */
    int64_t next_connect_ns;
    double retry_delay;      /* current backoff, seconds */
    int auth_failures;
    int64_t connect_started_ns;  /* a connect attempt awaits its CONNACK since then; 0: none */
    int64_t connected_ns;        /* when the last CONNACK came */
    int64_t last_in_ns;          /* when the socket last had something to read */
    int64_t last_tick_ns;        /* the loop's previous worker_connect_tick */
    int disconnect_noted;        /* the end of this connection was logged already */
    int peer_closed;             /* the broker closed its side (EPOLLRDHUP): read to the end, even at WORKER_CONCURRENCY */
    int taken_over;              /* the broker gave our client id to another connection */
    int adopt_attempts;          /* adoption: connect attempts that failed */
    int short_connections;       /* connections in a row the broker closed soon after CONNACK */
    char abort_why[128];         /* why worker_connect_tick cut the connection, for the log line; "": it did not */
    worker_coalesce coalesce;    /* the socket's SO_RCVLOWAT (worker_coalesce.h) */
} worker_conn;

/* A graceful stop in progress (worker.c). */
typedef struct worker_stop {
    enum stop_kind kind;     /* STOP_NONE: running */
    int64_t since_ns;        /* when it began */
    int64_t drain_since_ns;  /* retiring: when the slot unsubscribed, 0: not draining */
    int gave_up;             /* past the flush deadline: leave with what is left */
    int disconnect_sent;
    int session_ended;       /* the DISCONNECT ended the session (retiring, drained) */
    int master_gone;
    /* Retiring: the broker has stopped sending once it echoes a marker we
     * published to drain_topic after the UNSUBSCRIBEs (worker_mqtt.c). */
    char drain_topic[600];
    char drain_nonce[64];    /* the payload of this connection's marker */
    unsigned drain_attempts; /* markers published: a later one's nonce differs */
    int drained;             /* the marker came back: nothing more is queued for us */
    int64_t unsubacked_ns;   /* when the last UNSUBACK came, 0: awaited */
} worker_stop;

/* What the log of failed connect attempts knows (worker_tls.c). */
typedef struct worker_tls_state {
    log_limit lines;         /* the failures logged, and those not */
    int failures;            /* since the last successful connection */
    int failed;              /* the last attempt's failure was logged (worker_tls_failed) */
    int64_t failure_ns;      /* when the last handshake failure was logged */
    char hint[256];          /* libmosquitto's own "Error: ..." before the OpenSSL one */
} worker_tls_state;

typedef struct worker {
    const worker_args *args;
    const config *cfg;
    shm_slot *shm;
    app_def app;
    topic_trie *trie;
    worker_lua lua;
    worker_conn conn;
    worker_stop stop;
    worker_tls_state tls;
    log_limit errlog;        /* handler errors logged: at most 10 per 10 s, then a count (worker_dispatch.c) */
    int epfd, sigfd;
    int64_t next_misc_ns;
    int64_t last_msg_ns;     /* when the last message was handled */
    int exit_code;

    worker_keep_state keep;
    worker_rec_local *recs;  /* one per record of the keep, by record id */
    worker_queue queue;
    worker_retry retry;
    worker_out out;
    char *props_buf;         /* packing area for a message's properties */
    int16_t *route_stat;     /* route index -> this slot's shm route_stats entry, -1: none (worker_dispatch.c) */
    /* The route match of the message last taken, so that starting it right
     * away does not match its topic again: record id + 1 (0: none; any
     * worker_keep_add clears it), route, captures as offsets into the topic
     * (ptr_set 0: absent). */
    struct {
        int id_plus1, rid, ncaps;
        struct { uint32_t off, len; uint8_t ptr_set; } caps[TOPIC_MAX_WILDCARDS];
    } taken_match;
    int64_t unkept_logged_ns;  /* rate limit of the "cannot keep" error */
    struct worker_pubconn *pub; /* the connection handlers publish on (worker_pubconn.c) */
    struct worker_dlq *dlq;  /* the dead-letter store's handle and what waits for it (worker_dlq.c) */
    int64_t replay_next_ns;  /* when to look for dead letters asked for replay next (worker_dlq_replay.c) */
    int unknown_sub_id_noted;  /* a copy with an identifier of no route was logged */

    uint64_t handled;        /* messages handled by this process */
    uint64_t recycle_after;  /* 0: never */
} worker;

/* worker.c */
void worker_begin_stop(worker *w, enum stop_kind kind); /* graceful stop; the loop ends after DISCONNECT */
void worker_after_message(worker *w);                   /* counts a message; recycles after WORKER_MAX_MESSAGES */

/* worker_mqtt.c */
int worker_mqtt_setup(worker *w);                 /* mosquitto_new, options, callbacks */
void worker_mqtt_connect(worker *w);              /* one connect attempt; schedules the next on failure */
void worker_mqtt_disconnect(worker *w);           /* DISCONNECT, ending the session when retiring */
void worker_mqtt_unsubscribe_all(worker *w);      /* retiring: the broker stops assigning us messages */
/* 1 when msg is a drain marker (ours or a stale one): not an application message. */
int worker_mqtt_drain_marker(worker *w, const struct mosquitto_message *msg);
void worker_mqtt_free(worker *w);

/* worker_connect.c */
void worker_mqtt_schedule_reconnect(worker *w);   /* backoff from MQTT_RETRY_MIN/MAX_DELAY */
int worker_connect_start(worker *w);              /* starts a non-blocking connect attempt; 0 or -1 (logged, retry scheduled) */
void worker_connect_tick(worker *w, int64_t now);  /* connect deadline and the silent-outage watch */
int64_t worker_connect_deadline(worker *w);       /* the next time worker_connect_tick has work, or INT64_MAX */
void worker_connect_failed(worker *w, const char *why); /* logs an attempt that did not get a CONNACK, schedules the retry */
void worker_connect_lost(worker *w, int reason);  /* an established connection ended: log it, reconnect soon */

/* worker_dispatch.c */
void worker_on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props);
int worker_dispatch_setup(worker *w);             /* trie, route statistics, then worker_coro_setup; 0 or -1 logged */
void worker_errlog_flush(worker *w, int64_t now); /* logs how many handler errors the rate limit left out, once their window ends */
void worker_forget_seen(worker *w);               /* the broker has no session for us: packet ids restart */
/* Starts the handlers of queued messages, in arrival order, while allowed. */
void worker_pump(worker *w);
/* 1 when a new handler may start now (connected, not stopping, below the bounds). */
int worker_can_start(const worker *w);
/* The handler of record id has returned (rc 0) or failed for good (err,
 * tb: reason "error", no retry): worker_handler_end with that outcome. */
void worker_handler_done(worker *w, int id, int rc, const char *err, const char *tb);
/* One run of record id's handler ended with o: counted and logged; the
 * record is finished once its publishes are acknowledged too (success),
 * waits for its next attempt (o->delay >= 0), or goes to the dead-letter
 * store (worker_dlq_put). */
void worker_handler_end(worker *w, int id, const worker_outcome *o);
/* 1 when a handler may start now (worker_can_start), but for
 * WORKER_CONCURRENCY when over_concurrency is set. */
int worker_can_start_over(const worker *w, int over_concurrency);
/* Starts kept record id now: the path of a queued message (matched by topic). */
void worker_start_kept(worker *w, int id);
/* Queues kept record id behind the messages taken before. */
void worker_enqueue(worker *w, int id);
/* One of record id's publishes was acknowledged (or given up on). */
void worker_rec_publish_done(worker *w, int id);
/* Record id's handling is over: it is finished (released) once its
 * publishes are acknowledged, at once when none waits. */
void worker_rec_done(worker *w, int id);
int worker_queue_len(const worker *w);

/* worker_keep.c */
/* Maps the slot's keep file, reserving its space, and the process-side
 * tables; 0, or -1 logged (the worker does not start). */
int worker_keep_setup(worker *w);
void worker_keep_free(worker *w);
shm_rec *worker_keep_rec(worker *w, int id);      /* the record of id */
/* Largest message the keep always has room for when reading (MQTT 5:
 * announced to the broker as our Maximum Packet Size). */
uint32_t worker_keep_max_message(const worker *w);
/* Rebuilds the allocation state from the records a previous worker of the
 * slot left; fills ids (up to max) with them in arrival order; returns how many. */
int worker_keep_init(worker *w, int *ids, int max);
int worker_keep_add(worker *w, const worker_msg *m);  /* record id, -1 when it cannot be kept */
void worker_keep_open(worker *w, int id, worker_kept *out); /* its bytes, in the mapped keep */
void worker_keep_release(worker *w, int id);
/* 1 while a record and room for the largest message are free: reading
 * incoming messages stops otherwise (nothing is acknowledged that cannot
 * be kept). */
int worker_keep_has_room(worker *w);
/* Counts a message acknowledged but not kept (routemq_messages_lost_total{reason}). */
void worker_keep_count_lost(worker *w, const char *reason);

/* worker_replay.c */
/* Queues what a previous worker of the slot left unfinished (at start). */
void worker_replay_load(worker *w);
/* Record id's handler killed the worker ROUTEMQ_POISON_ATTEMPTS times (or
 * it was stored already): into the dead-letter store (worker_dlq_put). */
void worker_dead_letter(worker *w, int id, const worker_msg *m);

/* worker_retry.c */
int worker_retry_setup(worker *w);                /* the heap, one entry per record; 0 or -1 logged */
void worker_retry_free(worker *w);
/* Record id (its failures, due_ms set) waits for its next attempt: REC_RETRY,
 * counted in routemq_retry_waiting until it starts. */
void worker_retry_add(worker *w, int id);
/* Starts, or queues, the records whose attempt is due (the loop's turn). */
void worker_retry_pump(worker *w);
/* Milliseconds until the earliest waiting record is due; -1: none waits. */
int64_t worker_retry_wait_ms(const worker *w);
/* At start: the kept messages among ids[0..n) that arrived after a waiting
 * message of the same topic on an ordered route wait with it (they are
 * moved to the heap, due with it, and run right behind it); returns how
 * many ids are left, in order. */
int worker_retry_hold_ordered(worker *w, int *ids, int n);
/* Wall clock, ms since the epoch: what due_ms is measured in (it outlives the process). */
int64_t worker_wall_ms(void);

/* worker_dlq.c: the dead-letter store, from the worker's side */
struct dlq_store;
/* Stores kept message id as a dead letter (reason "error" | "timeout" |
 * "failed" | "crash", err and tb may be NULL), or, when it replays record
 * r->dlq_id, stores that record again (dlq_store_replay_failed); then
 * publishes it to ROUTEMQ_DLQ_TOPIC unless off and finishes it (counted
 * as dead_lettered). attempts recorded: r->attempts + r->failures, + 1 for
 * the run that just failed unless reason is "crash" (the deaths count it).
 * A record already stored (r->dlq set, e.g. by a worker killed before its
 * publish) is not stored twice. 0; -1 when the store cannot be written now:
 * the message stays kept (REC_ACKS) and worker_dlq_retry_due stores it later. */
int worker_dlq_put(worker *w, int id, const char *reason, const char *err, const char *tb);
/* Stores the dead letters that waited for the store (the loop calls it
 * every second; it tries after 1 s, then with a backoff up to 30 s). */
void worker_dlq_retry_due(worker *w);
/* A replay of record dlq_id succeeded: it leaves the store. 0; -1 logged. */
int worker_dlq_replay_done(worker *w, int64_t dlq_id);
/* The worker's store handle, opened (created) on first use; NULL logged. */
struct dlq_store *worker_dlq_store(worker *w);
/* Closes the store (the worker's exit). */
void worker_dlq_free(worker *w);

/* worker_dlq_replay.c */
/* At start: gives back to the store what a previous worker of the slot took
 * for replay and never kept. */
void worker_dlq_replay_start(worker *w);
/* About once a second: takes a few dead letters asked for replay into the
 * keep, as new messages, while there is room and the queue is short. */
void worker_dlq_replay_tick(worker *w, int64_t now);

/* worker_pubconn.c: the second connection, for publishing only. Incoming
 * messages come on w->conn; the acknowledgements of what handlers publish
 * come on this one, so reading incoming messages can stop at the keep's
 * bound without stopping them. */
int worker_pubconn_setup(worker *w);              /* its client (<client id>-out); 0 or -1 logged */
void worker_pubconn_free(worker *w);
struct mosquitto *worker_pubconn_mosq(worker *w); /* what worker_out.c publishes on */
int worker_pubconn_connected(const worker *w);
void worker_pubconn_tick(worker *w, int64_t now); /* connects, reconnects with backoff, keepalive */
void worker_pubconn_update(worker *w);            /* its epoll registration */
int worker_pubconn_event(worker *w, int fd, uint32_t events); /* 1 when fd was its socket */
void worker_pubconn_flush(worker *w);             /* writes what is queued */
/* Writes what is queued and reads the acknowledgements already there:
 * called between incoming packets, so the broker's in-flight window for
 * our publishes (its Receive Maximum, 20 with mosquitto) keeps moving. */
void worker_pubconn_service(worker *w);
void worker_pubconn_disconnect(worker *w);        /* DISCONNECT (ending the session when retiring) */
int worker_pubconn_idle(worker *w);               /* nothing left to write, or no connection */
int64_t worker_pubconn_deadline(worker *w);       /* its next connect attempt, INT64_MAX: none */

/* worker_adopt_guard.c */
void worker_adopt_guard(worker *w, const char *topic); /* adoption: exits, session kept, on a stranger's message */

/* worker_out.c */
int worker_out_setup(worker *w);
void worker_out_free(worker *w);
/* Publishes on behalf of record rec (-1: none); 0, or -1 with *err set. It
 * does not look at the bound: the caller waits first where it can (l_publish). */
int worker_out_publish(worker *w, int rec, const char *topic, const void *payload, size_t plen, int qos,
                       int retain, const mosquitto_property *props, const char **err);
void worker_out_on_publish(struct mosquitto *m, void *ud, int mid, int reason, const mosquitto_property *props);
void worker_out_connection_lost(worker *w);       /* QoS 0 publishes not written are gone */
/* Gives up on every publish not acknowledged (leaving for good); returns how many. */
uint32_t worker_out_abandon(worker *w);

/* worker_coro.c: the bridge into Lua */
/* Makes the Lua dispatcher (routemq.worker.new) and keeps references to
 * what C calls in it; 0, or -1 logged (the worker does not start). */
int worker_coro_setup(worker *w);
/* Runs the handler of running record id (message m, route rid, its
 * wildcard captures) in a pooled coroutine, or through d.call; its end
 * comes to worker_handler_end, now or (a handler that waits) later. */
void worker_coro_call(worker *w, int id, const worker_msg *m, int rid, const topic_span *caps, int ncaps,
                      int redelivered);
/* Steps the cqueues controller once (waiting handlers, timers) under the
 * watchdog's handler clock. */
void worker_step(worker *w);
/* Puts the controller's descriptor in epoll once it exists (cqueues is
 * loaded on demand); 0 ok. */
int worker_watch_controller(worker *w);
/* Milliseconds until the controller wants a step (-1: no timer). */
int worker_step_timeout_ms(worker *w);
/* Runs the app's init functions (router.init), waiting for them; 0 ok. */
int worker_run_init(worker *w);
void worker_jobs(worker *w, int start);           /* starts (1) or stops (0) timers and health checks */

/* worker_lua.c */
void worker_lua_push_io(worker *w);               /* pushes the io table for dispatch.new */
void worker_lua_push_props(worker *w, const char *packed, size_t len); /* ctx.props from packed properties */
/* Reads a failed run's outcome from the values at i.. of L (err, traceback,
 * reason, delay; nil delay: final) into o; its strings stay on L's stack. */
void worker_lua_read_failure(lua_State *L, int i, worker_outcome *o);

#endif
