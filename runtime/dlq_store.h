/* The dead-letter store: messages that ended without success (attempts
 * exhausted, ctx:fail, poison), in an SQLite database (WAL) owned by the
 * instance: <run dir>/dead-letters.db unless ROUTEMQ_DLQ_STORE says where.
 * Workers add records and replay them; `routemq dlq` and the admin HTTP
 * endpoint list, show, delete and ask for replays. Every process opens its
 * own handle; SQLite's locking serialises the writers. */
#ifndef ROUTEMQ_DLQ_STORE_H
#define ROUTEMQ_DLQ_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct dlq_store dlq_store;

/* Where a record is in its life. */
enum dlq_state {
    DLQ_STORED = 0,      /* dead, waiting for an operator */
    DLQ_REPLAY_ASKED,    /* `routemq dlq replay` or POST /dlq/replay asked for it */
    DLQ_REPLAYING,       /* a worker took it (owner) and handles it as a new message */
};

/* One record. Strings and blobs point into the store's row buffer when read
 * (valid until the callback returns) or at the caller's memory when written. */
typedef struct dlq_entry {
    int64_t id;              /* assigned by the store */
    int64_t time_ms;         /* wall clock of the (last) failure, ms since the epoch */
    const char *topic;
    size_t topic_len;
    const char *route;       /* the route's pattern as the application wrote it */
    const void *payload;     /* exact bytes */
    size_t payload_len;
    int qos, retain;
    const void *props;       /* MQTT 5 properties, packed as worker_props_pack does; may be NULL */
    size_t props_len;
    int attempts;            /* runs it had, crashes and errors together */
    const char *reason;      /* "error" | "timeout" | "crash" | "failed" */
    const char *error;       /* the last error message; may be NULL */
    const char *traceback;   /* its traceback; may be NULL */
    int replays;             /* times it was replayed and failed again */
    int state;               /* enum dlq_state */
    const char *owner;       /* DLQ_REPLAYING: the worker that took it; else NULL */
} dlq_entry;

/* Which records a list, delete or replay is about. */
typedef struct dlq_filter {
    const char *route;       /* NULL: every route */
    int64_t since_ms;        /* 0: any time */
    int64_t before_id;       /* 0: from the newest; else only ids below (paging) */
    long limit;              /* 0: no limit */
} dlq_filter;

typedef int (*dlq_each_fn)(const dlq_entry *e, void *arg);  /* nonzero stops the walk */

/* Opens (creating when create is set: file 0600, schema, WAL) the store at
 * path. 0 and *out; -1 with the reason, naming the path, in err. Without
 * create a missing file is -1 with errno ENOENT. */
int dlq_store_open(const char *path, int create, dlq_store **out, char *err, size_t errlen);
/* Closes it; NULL is fine. */
void dlq_store_close(dlq_store *s);
/* The last error's text (for a call that returned -1). */
const char *dlq_store_error(const dlq_store *s);

/* Adds e (its id and state are ignored) and commits; then, while the store
 * holds more than max records, deletes the oldest and adds their number to
 * *dropped (may be NULL). 0 and *id (may be NULL); -1 on error. */
int dlq_store_put(dlq_store *s, const dlq_entry *e, long max, int64_t *id, long *dropped);
/* Calls fn for the records f selects, newest first. 0; -1 on error. */
int dlq_store_list(dlq_store *s, const dlq_filter *f, dlq_each_fn fn, void *arg);
/* Calls fn for record id. 1 found, 0 not found, -1 on error. */
int dlq_store_get(dlq_store *s, int64_t id, dlq_each_fn fn, void *arg);
/* Records in the store, and how many of them f selects (f may be NULL). */
int dlq_store_count(dlq_store *s, const dlq_filter *f, long *count);
/* The time of the first record stored (the lowest id) in *time_ms, 0 when
 * the store is empty. 0; -1 on error. */
int dlq_store_oldest(dlq_store *s, int64_t *time_ms);
/* Calls fn(route, count) for each route with records. 0; -1 on error. */
int dlq_store_count_routes(dlq_store *s, int (*fn)(const char *route, long count, void *arg), void *arg);

/* Deletes the n records of ids (all: every record f selects instead). The
 * number deleted in *done. 0; -1 on error. */
int dlq_store_delete(dlq_store *s, const int64_t *ids, int n, int all, const dlq_filter *f, long *done);
/* Asks for a replay of those records (state DLQ_STORED -> DLQ_REPLAY_ASKED);
 * the number asked in *done. 0; -1 on error. */
int dlq_store_ask_replay(dlq_store *s, const int64_t *ids, int n, int all, const dlq_filter *f, long *done);

/* A worker takes up to limit records asked for replay (-> DLQ_REPLAYING,
 * owner) in one transaction and gets each through fn, oldest first. When fn
 * returns nonzero (it cannot take that one now), that record and the rest
 * stay DLQ_REPLAY_ASKED and the walk ends. 0; -1. */
int dlq_store_claim(dlq_store *s, const char *owner, long limit, dlq_each_fn fn, void *arg);
/* Gives back what owner took and did not keep (DLQ_REPLAYING -> DLQ_REPLAY_ASKED),
 * except the n ids in keep (still in the worker's keep). 0; -1. */
int dlq_store_unclaim(dlq_store *s, const char *owner, const int64_t *keep, int n);
/* A replay succeeded: the record leaves the store. 0 (also when it was deleted meanwhile); -1. */
int dlq_store_replay_done(dlq_store *s, int64_t id);
/* A replay failed for good: the record is stored again with e's attempts,
 * reason, error, traceback and time, replays + 1. 0; -1. */
int dlq_store_replay_failed(dlq_store *s, int64_t id, const dlq_entry *e);

#endif
