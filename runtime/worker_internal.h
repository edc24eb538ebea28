/* The worker's state, shared by its files (worker.c: set-up and the event
 * loop; worker_mqtt.c: the connection; worker_dispatch.c: messages into Lua;
 * worker_lua.c: the functions Lua calls back). Not for use outside worker_*. */
#ifndef ROUTEMQ_WORKER_INTERNAL_H
#define ROUTEMQ_WORKER_INTERNAL_H

#include <mosquitto.h>
#include <lua.h>
#include <lauxlib.h>
#include <stdint.h>

#include "app.h"
#include "topic_pattern.h"
#include "topic_trie.h"
#include "worker.h"

enum stop_kind { STOP_NONE = 0, STOP_KEEP, STOP_RETIRE, STOP_RECYCLE };

typedef struct worker {
    const worker_args *args;
    const config *cfg;
    shm_slot *shm;
    lua_State *L;
    app_def app;
    topic_trie *trie;
    int call_ref;            /* dispatch's d.call */
    int envelope_ref;        /* routemq.dlq envelope builder */
    int empty_ref;           /* shared read-only empty table for props/params */

    struct mosquitto *mosq;
    char client_id[512];
    int persistent;          /* this slot holds a qos >= 1 route: keep a session */
    int epfd, sigfd;
    int sock;                /* fd registered with epoll, -1 when none */
    int sock_events;         /* the events it is registered for */
    int connected;           /* CONNACK received */
    int subs_pending;        /* SUBACKs still awaited */
    int published;           /* a handler queued a publish since the last flush */
    int unsubs_pending;      /* retiring: UNSUBACKs still awaited */
    int64_t drain_since_ns;  /* retiring: when the slot unsubscribed, 0: not draining */
    int64_t last_msg_ns;     /* when the last message was handled */
    int nsubs;               /* subscriptions made on the last connect */
    int session_resumed;     /* the broker kept our session */
    int reconnect_pending;   /* a connect attempt is due at next_connect_ns */
    int64_t next_connect_ns;
    double retry_delay;      /* current backoff, seconds */
    int auth_failures;
    int64_t next_misc_ns;
    int64_t connect_started_ns;  /* a connect attempt awaits its CONNACK since then; 0: none */
    int64_t connected_ns;        /* when the last CONNACK came */
    int64_t last_in_ns;          /* when the socket last had something to read */
    int64_t last_tick_ns;        /* the loop's previous worker_connect_tick */
    int disconnect_noted;        /* the end of this connection was logged already */
    int taken_over;              /* the broker gave our client id to another connection */
    int adopt_attempts;          /* adoption: connect attempts that failed */
    int short_connections;       /* connections in a row the broker closed soon after CONNACK */

    enum stop_kind stopping;
    int disconnect_sent;
    int exit_code;
    int master_gone;

    uint64_t handled;        /* messages handled by this process */
    uint64_t recycle_after;  /* 0: never */

    int64_t errlog_window_ns;
    int errlog_count;
    int errlog_suppressed;
} worker;

/* worker.c */
void worker_begin_stop(worker *w, enum stop_kind kind); /* graceful stop; the loop ends after DISCONNECT */
void worker_after_message(worker *w);                   /* counts a message; recycles after WORKER_MAX_MESSAGES */

/* worker_mqtt.c */
int worker_mqtt_setup(worker *w);                 /* mosquitto_new, options, callbacks */
void worker_mqtt_connect(worker *w);              /* one connect attempt; schedules the next on failure */
void worker_mqtt_schedule_reconnect(worker *w);   /* backoff from MQTT_RETRY_MIN/MAX_DELAY */
void worker_mqtt_disconnect(worker *w);           /* DISCONNECT, ending the session when retiring */
void worker_mqtt_unsubscribe_all(worker *w);      /* retiring: the broker stops assigning us messages */
void worker_mqtt_free(worker *w);

/* worker_connect.c */
int worker_connect_start(worker *w);              /* starts a non-blocking connect attempt; 0 or -1 (logged, retry scheduled) */
void worker_connect_tick(worker *w, int64_t now);  /* connect deadline and the silent-outage watch */
int64_t worker_connect_deadline(worker *w);       /* the next time worker_connect_tick has work, or INT64_MAX */
void worker_connect_failed(worker *w, const char *why); /* logs an attempt that did not get a CONNACK, schedules the retry */
void worker_connect_lost(worker *w, int reason);  /* an established connection ended: log it, reconnect soon */

/* worker_dispatch.c */
void worker_on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props);
/* Runs route `rid`'s handler on one message. A redelivered message is
 * already in the in-flight record; a fresh one is copied there first. */
void worker_dispatch(worker *w, int rid, const char *topic, size_t tlen, const void *payload, size_t plen,
                     int qos, int retain, const mosquitto_property *props, const topic_span *caps, int ncaps,
                     int redelivered, int mid, uint64_t hash);

int worker_dispatch_setup(worker *w);             /* trie, d.call and helper refs */
void worker_forget_seen(worker *w);               /* the broker has no session for us: packet ids restart */

/* worker_replay.c */
void worker_replay_inflight(worker *w);           /* after CONNACK: redeliver or dead-letter */

/* worker_lua.c */
void worker_lua_push_io(worker *w);               /* pushes the io table for dispatch.new */
void worker_lua_push_props(worker *w, const char *packed, size_t len); /* ctx.props from packed properties */

#endif
